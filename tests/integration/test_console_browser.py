"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (both paths given, so Selenium Manager never looks for or downloads
anything), against a console served on a loopback port from a real state DB.

What a person sees: the failed invocation and its error on the overview, its page one click
away, a transition committed meanwhile appearing without a reload; and that no script in the
data ran. Screenshots go to the test's folder; ``FC_WATCHER_DOCS_SCREENSHOT=1`` also writes
the overview of a demo-like state to docs/console.png.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.test_console_page import (
    FN,
    add_silence,
    failed_polls,
    fc_body,
    fc_event,
    page_url,
    record,
    serve_console,
    settle_outbox,
    succeeded_polls,
    wall_ms,
)
from tests.programs import find_program
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.store.records import SinkHealthRecord
from watcher.store.sqlite import SqliteStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).parents[2]
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '"><img src=x onerror="window.__pwned=2">'
T = TypeVar("T")


async def call(work: Callable[..., T], *args: Any) -> T:
    """A blocking Selenium call on a worker thread: the console answers on this loop."""
    return await asyncio.to_thread(work, *args)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium through chromedriver, both Debian's, found on this machine."""
    chromium = find_program("chromium", package="chromium", also=("chromium-browser",))
    driver_path = find_program("chromedriver", package="chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # and should Selenium Manager ever run: no network
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver: WebDriver, selector: str, text: str, timeout_s: float = 15) -> None:
    WebDriverWait(driver, timeout_s).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text)
    )


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def assert_no_script_ran(driver: WebDriver) -> None:
    """The data's scripts did not run, and none even tried (the CSP would have logged it)."""
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    logged = [str(entry["message"]) for entry in entries]
    assert not [line for line in logged if "Content Security Policy" in line], logged


async def test_a_person_sees_the_failure_follows_it_and_the_page_keeps_itself_current(
    tmp_path: Path, browser: WebDriver
) -> None:
    """The overview shows the failed invocation with its error as text; its link opens its
    page; a transition committed meanwhile appears there without a reload; no data ran."""
    now = wall_ms()
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        ref = InvocationRef(FN, "job-pwn")
        error = f"render failed: {XSS_SCRIPT} {XSS_IMG}"
        polls = failed_polls(now - 120_000, error=error, detail=XSS_IMG, payload=XSS_SCRIPT)
        snapshot = await record(store, ref, polls, labels={"team": XSS_IMG})
        await record(store, InvocationRef(FN, "job-ok"), succeeded_polls(now - 60_000))
        async with serve_console(store.path, refresh_s=0.5) as served:
            await call(browser.get, served.url + "/")
            await call(wait_for_text, browser, "#failures", "job-pwn")
            assert error in text_of(browser, "#failures")
            assert_no_script_ran(browser)
            await call(browser.save_screenshot, str(tmp_path / "overview.png"))
            link = browser.find_element(By.LINK_TEXT, "job-pwn")
            await call(link.click)
            await call(wait_for_text, browser, "#error", "render failed")
            assert browser.current_url == served.url + page_url(ref.key)
            assert text_of(browser, "#error") == error
            browser.execute_script("window.__marker = 42")
            final = polls[-1][1]
            events = [
                fc_event(e.event_id, e.status, e.timestamp_ms, e.event_detail) for e in final.events
            ]
            events.append(fc_event(5, "DestinationSucceeded", now, "on-failure destination"))
            later = [(now, fc_body("Failed", events=events, retries=2, error=error))]
            await record(store, ref, later, previous=snapshot)
            await call(wait_for_text, browser, "#timeline", "DestinationSucceeded")
            assert browser.execute_script("return window.__marker") == 42  # never reloaded
            assert "on-failure destination" in text_of(browser, "#timeline")
            assert text_of(browser, "#live-state").startswith("live")
            assert_no_script_ran(browser)
            await call(browser.save_screenshot, str(tmp_path / "invocation.png"))
    finally:
        await store.close()


_FUNCTIONS = [
    FunctionRef(Api.FC2, "transcode", "media", "LATEST"),
    FunctionRef(Api.FC2, "thumbnail", "media", "LATEST"),
    FunctionRef(Api.FC3, "billing-export", None, "prod"),
    FunctionRef(Api.FC3, "notify-user", None, None),
]
_ERRORS = [
    "ffmpeg exited with code 1: Invalid data found when processing input",
    "Task timed out after 600.00 seconds",
    "oss: service returned error: StatusCode=404, ErrorCode=NoSuchKey",
    "MemoryError: cannot allocate 512 MiB for frame buffer",
]


async def demo_state(store: SqliteStore, now_ms: int) -> None:
    """Six hours of a small fleet: mostly successes, some failures after retries, a few
    running; the webhook retrying, the DingTalk robot's circuit open, one dead letter."""
    rng = random.Random(3)
    for n in range(160):
        fn = _FUNCTIONS[n % len(_FUNCTIONS)]
        start_ms = now_ms - 6 * 3_600_000 + n * 130_000 + rng.randint(0, 60_000)
        ref = InvocationRef(fn, f"{fn.function[:5]}-{n:04d}-{rng.randrange(16**6):06x}")
        payload = f'{{"object": "oss://media-in/{n:04d}.mp4"}}'
        if n % 9 == 4:
            polls = failed_polls(start_ms, error=_ERRORS[n % 4], payload=payload)
            await record(store, ref, polls, alert_sinks=("webhook", "dingtalk"))
            mode = {"dead": "webhook"} if n == 4 else {"retrying": "webhook"} if n > 130 else {}
            await settle_outbox(store, start_ms + 61_000, error="HTTP 502 Bad Gateway", **mode)
        elif n > 150:
            running = [(start_ms, fc_body("Running", events=[fc_event(1, "Started", start_ms)]))]
            await record(store, ref, running)
        else:
            await record(store, ref, succeeded_polls(start_ms, payload=payload))
    await store.mark_sent([row.seq for row in await store.pending("log", 10_000)], now_ms)
    outage = SinkHealthRecord(
        "dingtalk", False, now_ms - 900_000, now_ms - 950_000, "connect timeout after 5.0 s"
    )
    await store.save_sink_health(outage)
    await add_silence(
        store,
        {"function": "thumbnail", "status": ["Failed"]},
        starts_ms=now_ms - 1_800_000,
        ends_ms=now_ms + 1_800_000,
        comment="thumbnail deploy in progress",
    )


async def test_overview_of_a_demo_like_state_for_the_docs(
    tmp_path: Path, browser: WebDriver
) -> None:
    """The overview as a person sees it on a demo-like state: counts, the day's failures, the
    chart, the sinks. Kept in the test's folder; docs/console.png when asked."""
    now = wall_ms()
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        await demo_state(store, now)
        async with serve_console(store.path) as served:
            await call(browser.get, served.url + "/")
            await call(wait_for_text, browser, "#sinks", "circuit open")
            assert "backing off" in text_of(browser, "#sinks")
            assert "ffmpeg exited with code 1" in text_of(browser, "#failures")
            height = int(browser.execute_script("return document.body.scrollHeight"))
            await call(browser.set_window_size, 1400, min(height + 200, 4000))
            shot = tmp_path / "console.png"
            await call(browser.save_screenshot, str(shot))
    finally:
        await store.close()
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("FC_WATCHER_DOCS_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "console.png").write_bytes(shot.read_bytes())
