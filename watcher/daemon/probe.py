"""``fc-watcher check --probe-sinks``: can this host reach each sink at all?

A sink whose host does not resolve is retried, quietly, until its rows dead-letter after
``max_age_s`` (a day by default). The probe says so up front: it resolves each network sink's
host (``getaddrinfo`` under a time bound) and, with ``connect``, opens a TCP connection to it
and closes it at once. Nothing is sent (no TLS handshake, no request), so no receiver sees a
test alert and no secret leaves the host; URLs are shown redacted (robot URLs carry their
token), and headers and secrets are never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from watcher.config.delivery import SinkSettings
from watcher.delivery.sinks._http import redact_url

PROBE_TIMEOUT_S = 5.0
"""Per sink, resolving and connecting together: a check must not hang on a dead resolver."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One sink's answer: ``ok``, and one line of why."""

    sink: str
    type: str
    target: str
    """The URL, redacted to scheme://host[:port]/..."""
    ok: bool
    detail: str


def _endpoint(sink: SinkSettings) -> tuple[str, str, int] | None:
    """(redacted URL, host, port) of a sink that sends over the network, else None."""
    url = getattr(sink, "url", None)
    if not isinstance(url, SecretStr):
        return None
    text = url.get_secret_value()
    parts = urlsplit(text)
    default_port = 443 if parts.scheme == "https" else 80
    return redact_url(text), parts.hostname or "", parts.port or default_port


async def _connect_any(addresses: Sequence[tuple[str, int]]) -> str:
    """Connect to the first of ``addresses`` that accepts, close at once; its ``host:port``.
    None accepting raises the last address's error."""
    error: OSError = OSError("no address")
    for host, port in addresses:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            error = exc
            continue
        writer.close()
        # It was accepted: how the close goes is not the probe's question.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    raise error


async def probe_sink(sink: SinkSettings, *, connect: bool, timeout_s: float) -> ProbeResult:
    """Resolve the sink's host and, with ``connect``, open a TCP connection to it."""
    try:
        endpoint = _endpoint(sink)
    except ValueError:  # a port that is not a number: the URL says no more without its secret
        return ProbeResult(sink.name, sink.type, "(url)", False, "the URL's port is not valid")
    if endpoint is None:
        return ProbeResult(sink.name, sink.type, "-", True, "not probed (no host)")
    target, host, port = endpoint

    def result(ok: bool, detail: str) -> ProbeResult:
        return ProbeResult(sink.name, sink.type, target, ok, detail)

    phase = "resolving"
    try:
        async with asyncio.timeout(timeout_s):
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys((str(i[4][0]), int(i[4][1])) for i in infos))
            if not connect:
                return result(True, f"ok: resolves ({len(addresses)} address(es))")
            phase = "connecting"
            reached = await _connect_any(addresses)
    except TimeoutError:
        return result(False, f"timed out {phase} (after {timeout_s:g} s)")
    except socket.gaierror as exc:
        return result(False, f"does not resolve ({exc.strerror})")
    except ConnectionRefusedError:
        return result(False, "refused (nothing listens on that port)")
    except OSError as exc:
        return result(False, f"cannot connect ({exc.strerror or exc})")
    return result(True, f"ok: connects ({reached})")


async def probe_sinks(
    sinks: Sequence[SinkSettings], *, connect: bool = True, timeout_s: float = PROBE_TIMEOUT_S
) -> list[ProbeResult]:
    """Probe every sink but ``log`` at once; the results in config order."""
    probed = [sink for sink in sinks if sink.type != "log"]
    return list(
        await asyncio.gather(
            *(probe_sink(sink, connect=connect, timeout_s=timeout_s) for sink in probed)
        )
    )


def probe_lines(results: Sequence[ProbeResult]) -> list[str]:
    """One aligned line per sink, after a title."""
    if not results:
        return ["sink probes: no sink to probe (only log sinks)"]
    rows = [(r.sink, r.type, r.target, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "sink probes (nothing is sent):",
        *(f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows),
    ]
