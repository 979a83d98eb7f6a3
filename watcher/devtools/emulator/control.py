"""The emulator's dev-only control requests under ``/-/``: reading a run-time submission.

``POST /-/submit`` takes one invocation in the scenario's own shape (``InvocationSpec``: ``api``,
``service``, ``function``, ``id``, ``qualifier``, ``payload``, ``timeline``...) with its times in
seconds from the submission, so "now" is 0. Paths under ``/-/`` are not signed: the emulator
only ever listens on loopback. Pure: the app passes in the body and the clock's reading.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from watcher.core.invocation import Api
from watcher.devtools.emulator.auth import Denial
from watcher.devtools.emulator.scenario import InvocationSpec


def _later(value: Any, now_s: float) -> Any:
    """``value`` moved from submission time to scenario time, if it is a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return now_s + value
    return value  # let validation report it


def parse_submission(body: bytes, now_s: float) -> InvocationSpec | Denial:
    """The invocation a ``/-/submit`` body describes, placed at ``now_s``; or a 400."""
    try:
        document = json.loads(body)
    except ValueError:
        return Denial(400, "InvalidArgument", "the body is not JSON")
    if not isinstance(document, dict):
        return Denial(400, "InvalidArgument", "the body must be a JSON object")
    document["appears_at_s"] = _later(document.get("appears_at_s", 0.0), now_s)
    timeline = document.get("timeline")
    if isinstance(timeline, list):
        document["timeline"] = [
            {**step, "at_s": _later(step.get("at_s"), now_s)} if isinstance(step, dict) else step
            for step in timeline
        ]
    try:
        return InvocationSpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return Denial(400, "InvalidArgument", f"{where}: {first['msg']}")


def already_exists(api: Api, invocation_id: str) -> Denial:
    """The 409 for an id that is taken, as FC answers a second invocation with the same id."""
    code = "StatefulAsyncInvocationAlreadyExists" if api is Api.FC2 else "AsyncTaskAlreadyExists"
    return Denial(409, code, f"'{invocation_id}' already exists")
