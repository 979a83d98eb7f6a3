"""The official FC SDKs, pointed at the emulator, are accepted and get their own models back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alibabacloud_fc20230330 import models as fc3_models
from alibabacloud_fc20230330.client import Client as Fc3Client
from alibabacloud_fc_open20210406 import models as fc2_models
from alibabacloud_fc_open20210406.client import Client as Fc2Client
from alibabacloud_tea_openapi import models as openapi_models

from tests.conftest import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    STS_KEY_ID,
    STS_SECRET,
    STS_TOKEN,
    EmulatorFactory,
)

TIMELINE = [
    {"at_s": 0, "status": "Enqueued"},
    {"at_s": 1, "status": "Running"},
    {"at_s": 2, "status": "Failed", "error": "UnhandledInvocationError"},
]


def _config(port: int, **extra: Any) -> openapi_models.Config:
    fields: dict[str, Any] = {
        "access_key_id": ACCESS_KEY_ID,
        "access_key_secret": ACCESS_KEY_SECRET,
        "endpoint": f"127.0.0.1:{port}",
        "protocol": "http",
    }
    fields.update(extra)
    return openapi_models.Config(**fields)


async def test_fc2_sdk_async_get_list_stop(start_emulator: EmulatorFactory) -> None:
    """The 2021-04-06 SDK's async methods (ACS3 signing) get, list and stop through the emulator."""
    emu = await start_emulator(
        invocations=[
            {"id": "job-1", "timeline": TIMELINE},
            {"id": "job-2", "timeline": [{"at_s": 0, "status": "Running"}]},
        ]
    )
    emu.clock.advance(5)
    client = Fc2Client(_config(emu.emulator.port))
    got = await client.get_stateful_async_invocation_async(
        "demo-service",
        "demo-function",
        "job-1",
        fc2_models.GetStatefulAsyncInvocationRequest(qualifier="LATEST"),
    )
    assert got.status_code == 200
    assert got.body.status == "Failed"
    assert got.body.invocation_error_message == "UnhandledInvocationError"
    assert [event.status for event in got.body.events] == ["Enqueued", "Running", "Failed"]

    listed = await client.list_stateful_async_invocations_async(
        "demo-service",
        "demo-function",
        fc2_models.ListStatefulAsyncInvocationsRequest(
            limit=1, include_payload=True, invocation_id_prefix="job-", sort_order_by_time="asc"
        ),
    )
    assert [i.invocation_id for i in listed.body.invocations] == ["job-1"]
    assert listed.body.next_token

    await client.stop_stateful_async_invocation_async(
        "demo-service", "demo-function", "job-2", fc2_models.StopStatefulAsyncInvocationRequest()
    )
    stopped = await client.get_stateful_async_invocation_async(
        "demo-service", "demo-function", "job-2", fc2_models.GetStatefulAsyncInvocationRequest()
    )
    assert stopped.body.status == "Stopped"
    assert emu.stats.get("denied", 0) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"access_key_id": STS_KEY_ID, "access_key_secret": STS_SECRET, "security_token": STS_TOKEN},
        {"signature_algorithm": "v2"},
    ],
    ids=["acs3", "acs3-sts", "roa-v2"],
)
async def test_fc2_sdk_sync_client(start_emulator: EmulatorFactory, extra: dict[str, Any]) -> None:
    """The SDK's blocking client is accepted too, with STS and with its optional ROA v2 signing."""
    emu = await start_emulator(invocations=[{"id": "job-1", "timeline": TIMELINE}])
    client = Fc2Client(_config(emu.emulator.port, **extra))
    got = await asyncio.to_thread(
        client.get_stateful_async_invocation,
        "demo-service",
        "demo-function",
        "job-1",
        fc2_models.GetStatefulAsyncInvocationRequest(qualifier="LATEST"),
    )
    assert got.body.status == "Enqueued"
    assert got.body.invocation_id == "job-1"


async def test_sdk_with_a_wrong_secret_is_refused(start_emulator: EmulatorFactory) -> None:
    """The emulator really checks the SDK's signature: a wrong secret is a 403."""
    emu = await start_emulator(invocations=[{"id": "job-1", "timeline": TIMELINE}])
    client = Fc2Client(_config(emu.emulator.port, access_key_secret="wrong"))
    with pytest.raises(Exception, match="SignatureNotMatch"):
        await client.get_stateful_async_invocation_async(
            "demo-service", "demo-function", "job-1", fc2_models.GetStatefulAsyncInvocationRequest()
        )
    assert emu.stats["denied"] == 1


async def test_fc3_sdk_get_and_list_async_tasks(start_emulator: EmulatorFactory) -> None:
    """The 2023-03-30 SDK gets and lists async tasks through the emulator."""
    emu = await start_emulator(
        invocations=[{"id": "task-1", "api": "fc3", "service": None, "timeline": TIMELINE}]
    )
    emu.clock.advance(5)
    client = Fc3Client(_config(emu.emulator.port))
    got = await client.get_async_task_async(
        "demo-function", "task-1", fc3_models.GetAsyncTaskRequest(qualifier="LATEST")
    )
    assert got.body.status == "Failed"
    assert got.body.task_id == "task-1"
    assert got.body.task_error_message == "UnhandledInvocationError"
    listed = await client.list_async_tasks_async(
        "demo-function", fc3_models.ListAsyncTasksRequest(prefix="task-", limit=10)
    )
    assert [task.task_id for task in listed.body.tasks] == ["task-1"]
