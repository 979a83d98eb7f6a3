"""Per-sink limits on their own: the token bucket's arithmetic from tables, the sink base class
holding ``concurrency`` and the rate gates on a clock the test moves, and the config keys
(defaults per kind, bounds, the ``max_in_flight`` alias, unknown keys still refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter, ValidationError

from watcher.config.delivery import SinkSettings, WebhookSinkSettings
from watcher.config.load import ConfigError, load_config
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Transition
from watcher.delivery.hold import RateWindow, TokenBucket, burst_of, refill, token_wait_s
from watcher.delivery.sinks import SERIAL, Batching, Outgoing, Sink, SinkError
from watcher.delivery.sinks.base import Timer
from watcher.delivery.sinks.registry import build_sink

ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


@pytest.mark.parametrize(
    ("rate", "expected"), [(0.1, 1.0), (1.0, 1.0), (2.0, 2.0), (5.0, 5.0), (20.0, 20.0)]
)
def test_burst_is_one_seconds_worth_and_at_least_one(rate: float, expected: float) -> None:
    assert burst_of(rate) == expected


@pytest.mark.parametrize(
    ("tokens", "elapsed_s", "rate", "expected"),
    [
        (0.0, 0.0, 2.0, 0.0),
        (0.0, 0.5, 2.0, 1.0),
        (0.0, 10.0, 2.0, 2.0),  # never more than the burst
        (1.5, 0.1, 2.0, 1.7),
        (-1.0, 1.0, 2.0, 1.0),  # a debt is paid in time
        (0.0, 3.0, 1 / 3, 1.0),  # DingTalk's pace: one every 3 s
        (1.0, -5.0, 2.0, 1.0),  # a clock that went back adds nothing
    ],
)
def test_refill(tokens: float, elapsed_s: float, rate: float, expected: float) -> None:
    assert refill(tokens, elapsed_s, rate) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tokens", "rate", "expected"),
    [
        (1.0, 2.0, 0.0),
        (2.0, 2.0, 0.0),
        (0.0, 2.0, 0.5),
        (0.5, 1.0, 0.5),
        (-1.0, 2.0, 1.0),
        (0.0, 0.1, 10.0),
        (1 - 1e-12, 2.0, 0.0),  # float dust after sleeping the exact wait
    ],
)
def test_token_wait_s(tokens: float, rate: float, expected: float) -> None:
    assert token_wait_s(tokens, rate) == pytest.approx(expected)


class FakeTime:
    """A clock that moves only when told, and a sleep that moves it by what was asked."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.t += delay_s
        await asyncio.sleep(0)

    def timer(self) -> Timer:
        return Timer(now=self.now, sleep=self.sleep)


# (seconds to advance, then: "send" records one, or the expected (wait_s, room))
BUCKET_SCRIPT: list[tuple[float, str | tuple[float, int]]] = [
    (0.0, (0.0, 2)),  # starts full: a quiet sink may burst one second's worth
    (0.0, "send"),
    (0.0, "send"),
    (0.0, (0.5, 0)),
    (0.25, (0.25, 0)),
    (0.25, (0.0, 1)),
    (0.0, "send"),
    (5.0, (0.0, 2)),
]


def test_token_bucket_follows_its_clock() -> None:
    time = FakeTime()
    bucket = TokenBucket(2.0, time.now)
    for advance, step in BUCKET_SCRIPT:
        time.t += advance
        if step == "send":
            bucket.record()
        else:
            assert (bucket.wait_s(), bucket.room()) == pytest.approx(step)


def test_rate_window_room_counts_the_last_minute() -> None:
    time = FakeTime()
    window = RateWindow(3, time.now)
    assert window.room() == 3
    window.record()
    window.record()
    assert window.room() == 1
    time.t = 59.9
    assert window.room() == 1
    time.t = 60.0
    assert window.room() == 3


def transition(invocation_id: str) -> Transition:
    ref = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), invocation_id)
    result = decide.diff(
        None, Invocation.model_validate({"status": "Failed"}), ref=ref, observed_ms=0
    )
    return result.transitions[-1]


class Stamping(Sink):
    """A sink that stamps each delivery with the time it started; ``fail`` makes it raise."""

    def __init__(self, time: FakeTime, batching: Batching = SERIAL, **limits: Any) -> None:
        super().__init__("stamping", batching, timer=time.timer(), **limits)
        self.time = time
        self.delivered: list[tuple[float, str]] = []
        self.fail = False

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        for item in batch:
            self.delivered.append((self.time.now(), item.transition.ref.invocation_id))
        if self.fail:
            raise SinkError("receiver said no", retryable=True)


def one(invocation_id: str) -> list[Outgoing]:
    return [Outgoing(transition(invocation_id))]


async def test_sends_at_once_are_paced_in_order() -> None:
    """Five sends at once with a rate of 2/s: the burst of two, then one every half second."""
    time = FakeTime()
    sink = Stamping(time, Batching(max_in_flight=5), rate_per_s=2.0)
    await asyncio.gather(*(sink.send(one(f"job-{i}")) for i in range(5)))
    assert sink.delivered == [
        (0.0, "job-0"),
        (0.0, "job-1"),
        (0.5, "job-2"),
        (1.0, "job-3"),
        (1.5, "job-4"),
    ]
    assert time.sleeps == [0.5, 0.5, 0.5]


async def test_the_stricter_gate_holds() -> None:
    """A robot's 3-a-minute window under a generous 10/s bucket: the fourth waits a minute."""
    time = FakeTime()
    sink = Stamping(time, rate_per_s=10.0, per_minute=3)
    for i in range(3):
        await sink.send(one(f"job-{i}"))
    assert (sink.wait_s(), sink.room()) == (60.0, 0)
    await sink.send(one("job-3"))
    assert [at for at, _ in sink.delivered] == [0.0, 0.0, 0.0, 60.0]


async def test_a_failed_send_spends_the_rate_and_frees_its_slot() -> None:
    """The receiver counted the failed request; the slot is free for the next send."""
    time = FakeTime()
    sink = Stamping(time, rate_per_s=1.0)
    sink.fail = True
    with pytest.raises(SinkError):
        await sink.send(one("a"))
    assert sink.room() == 0
    assert sink.wait_s() == pytest.approx(1.0)
    time.t += 1.0
    assert sink.room() == 1


async def test_a_cancelled_hold_sends_nothing_and_frees_its_slot() -> None:
    """Shutdown while a send is held: nothing goes out, the row stays for later, no slot leaks."""

    class StuckTime(FakeTime):
        async def sleep(self, delay_s: float) -> None:
            await asyncio.Event().wait()

    time = StuckTime()
    sink = Stamping(time, rate_per_s=1.0)
    await sink.send(one("a"))
    held = asyncio.ensure_future(sink.send(one("b")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.room() == 0
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    assert [name for _, name in sink.delivered] == ["a"]
    time.t += 1.0
    assert sink.room() == 1


def test_no_limits_by_default() -> None:
    sink = Stamping(FakeTime())
    assert sink.wait_s() == 0.0
    assert sink.room() == 1


# kind -> (concurrency, rate_limit_per_s, max_per_minute or None)
DEFAULTS: dict[str, tuple[int, float | None, int | None]] = {
    "webhook": (16, None, None),
    "alertmanager": (1, None, None),
    "file": (1, None, None),
    "dingtalk": (1, None, 20),
    "wecom": (1, None, 20),
    "feishu": (1, 5.0, 100),
    "slack": (1, 1.0, 60),
}


def entry_of(kind: str, **extra: Any) -> Any:
    where = {"path": "/tmp/t.jsonl"} if kind == "file" else {"url": "http://127.0.0.1:9/x"}
    return ADAPTER.validate_python({"name": "s", "type": kind, **where, **extra})


@pytest.mark.parametrize("kind", sorted(DEFAULTS))
async def test_defaults_per_kind_reach_the_sink(
    kind: str, http_session: aiohttp.ClientSession
) -> None:
    """Each kind's documented defaults, and a configured concurrency becomes the sink's."""
    entry = entry_of(kind)
    per_minute = getattr(entry, "max_per_minute", None)
    assert (entry.concurrency, entry.rate_limit_per_s, per_minute) == DEFAULTS[kind]
    sink = build_sink(entry_of(kind, concurrency=4, rate_limit_per_s=0.5), http_session, None)
    assert sink.batching.max_in_flight == 4
    assert sink.room() == 1  # the bucket's burst: one send, at 0.5/s
    assert sink.wait_s() == 0.0


def test_the_old_name_max_in_flight_still_works() -> None:
    assert entry_of("webhook", max_in_flight=3).concurrency == 3
    assert entry_of("webhook", concurrency=3) == entry_of("webhook", max_in_flight=3)
    with pytest.raises(ValidationError, match="not both"):
        entry_of("webhook", max_in_flight=3, concurrency=4)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"concurrency": 0}, "greater than or equal to 1"),
        ({"concurrency": 257}, "less than or equal to 256"),
        ({"concurrency": "lots"}, "valid integer"),
        ({"max_in_flight": 0}, "greater than or equal to 1"),
        ({"rate_limit_per_s": 0}, "greater than 0"),
        ({"rate_limit_per_s": -1}, "greater than 0"),
        ({"rate_limit_per_s": 10_001}, "less than or equal to 10000"),
    ],
)
def test_limit_bounds(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        entry_of("webhook", **extra)


@pytest.mark.parametrize("kind", ["slack", "feishu"])
def test_a_default_rate_can_be_turned_off(kind: str) -> None:
    assert entry_of(kind, rate_limit_per_s=None).rate_limit_per_s is None


CONFIG = """\
fc:
  account_id: "1234567890123456"
  region: cn-hangzhou
state:
  path: /var/lib/fc-watcher/state.db
watch:
  - service: media
    function: transcode
    invocations: [a]
sinks:
  - name: log
    type: log
  - name: hook
    type: webhook
    url: http://127.0.0.1:9/hook
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "concurrency", "rate"),
    [
        ("", 16, None),
        ("    max_in_flight: 4\n", 4, None),
        ("    concurrency: 4\n    rate_limit_per_s: 2.5\n", 4, 2.5),
    ],
)
def test_config_file_accepts_the_limits(
    tmp_path: Path, extra: str, concurrency: int, rate: float | None
) -> None:
    (_, hook) = load_config(write(tmp_path, CONFIG + extra), env={}).config.sinks
    assert isinstance(hook, WebhookSinkSettings)
    assert (hook.concurrency, hook.rate_limit_per_s) == (concurrency, rate)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (CONFIG + "    concurrancy: 4\n", "sinks[1].concurrancy: Extra inputs are not permitted"),
        (CONFIG + "    concurrency: 0\n", "sinks[1].concurrency: Input should be greater than"),
        (CONFIG + "    max_in_flight: 0\n", "sinks[1].max_in_flight: Input should be greater"),
        (
            CONFIG + "    max_in_flight: 2\n    concurrency: 2\n",
            "sinks[1]: give concurrency or its old name max_in_flight, not both",
        ),
        # The log sink has no receiver to protect, so it has no limits to set.
        (
            CONFIG.replace("type: log\n", "type: log\n    concurrency: 2\n"),
            "sinks[0].concurrency: Extra inputs are not permitted",
        ),
    ],
)
def test_config_file_refuses_with_the_key_named(tmp_path: Path, text: str, problem: str) -> None:
    """Refused with the key's YAML path, as an operator wrote it."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems
