"""One renderer for every sink: a transition (or a group of them) becomes a ``Message``.

Chat sinks turn a ``Message`` into their own markup; the webhook and Alertmanager sinks use
its title and summary. Pure: no I/O, no clock.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.core.invocation import Api
from watcher.core.model import Transition, TransitionType
from watcher.core.text import GROUP_ERROR_BYTES, MESSAGE_TEXT_BYTES, truncate

TEMPLATE_FIELDS = frozenset(
    {
        "id",
        "type",
        "status",
        "previousStatus",
        "service",
        "function",
        "qualifier",
        "invocationId",
        "retries",
        "error",
        "eventId",
        "eventStatus",
        "eventDetail",
        "detail",
        "observed",
        "region",
        "console",
        "severity",
    }
)
GROUP_LINES = 20


def check_template(template: str) -> None:
    """Raise ``ValueError`` naming any placeholder the renderer does not know."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"template is malformed ({exc}); escape braces as {{{{ and }}}}") from None
    unknown = sorted(name for name in names if name not in TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(
            f"template uses unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(TEMPLATE_FIELDS))}"
        )


@dataclass(frozen=True, slots=True)
class Message:
    """What any sink shows a person."""

    title: str
    lines: tuple[str, ...]
    severity: str
    link: str | None = None

    @property
    def text(self) -> str:
        """Title and lines as plain text (a fallback for every sink)."""
        return "\n".join((self.title, *self.lines))


def console_url(transition: Transition, region: str | None) -> str | None:
    """The function's page in the FC console, when the region is known."""
    if not region:
        return None
    fn = transition.ref.function_ref
    if fn.api is Api.FC3:
        return f"https://fcnext.console.aliyun.com/{region}/functions/{fn.function}"
    return (
        f"https://fc.console.aliyun.com/fc/service/{region}/{fn.service}/function/"
        f"{fn.function}/detail"
    )


def _fields(transition: Transition, region: str | None, severity: str) -> dict[str, str]:
    fn = transition.ref.function_ref
    summary = transition.invocation
    event = transition.event
    return {
        "id": transition.id,
        "type": transition.type.value,
        "status": transition.status or "",
        "previousStatus": transition.previous_status or "",
        "service": fn.service or "",
        "function": fn.function,
        "qualifier": fn.qualifier or "",
        "invocationId": transition.ref.invocation_id,
        "retries": str(summary.already_retried_times) if summary else "",
        "error": truncate(summary.error_message, MESSAGE_TEXT_BYTES) if summary else "",
        "eventId": str(event.event_id) if event else "",
        "eventStatus": event.status if event else "",
        "eventDetail": truncate(event.event_detail, MESSAGE_TEXT_BYTES) if event else "",
        "detail": truncate(transition.detail, MESSAGE_TEXT_BYTES),
        "observed": datetime.fromtimestamp(transition.observed_ms / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "region": region or "",
        "console": console_url(transition, region) or "",
        "severity": severity,
    }


def _where(transition: Transition) -> str:
    fn = transition.ref.function_ref
    return "/".join(part for part in (fn.service, fn.function) if part)


def title_of(transition: Transition) -> str:
    """One line that says what happened."""
    who = f"{_where(transition)} {transition.ref.invocation_id}"
    kind = transition.type
    if kind is TransitionType.STATUS_CHANGED:
        retries = transition.invocation.already_retried_times if transition.invocation else 0
        after = f" after {retries} retries" if retries and transition.status == "Failed" else ""
        return f"{who}: {transition.status}{after}"
    if kind is TransitionType.EVENT and transition.event is not None:
        return f"{who}: event {transition.event.event_id} {transition.event.status}"
    if kind is TransitionType.NOT_FOUND:
        return f"{who}: not found"
    if kind is TransitionType.POLL_FAILING:
        return f"{who}: polling is failing"
    if kind is TransitionType.STUCK:
        return f"{who}: stuck in {transition.status}"
    return f"{who}: polling recovered"


def render(
    transition: Transition,
    *,
    region: str | None = None,
    severity: str = "warning",
    template: str | None = None,
) -> Message:
    """The message for one transition."""
    fields = _fields(transition, region, severity)
    link = fields["console"] or None
    if template is not None:
        text = template.format_map(fields)
        first, _, rest = text.partition("\n")
        return Message(first, tuple(rest.splitlines()), severity, link)
    lines: list[str] = []
    if transition.previous_status and transition.type is TransitionType.STATUS_CHANGED:
        lines.append(f"status: {transition.previous_status} -> {transition.status}")
    summary = transition.invocation
    if summary is not None:
        if summary.already_retried_times:
            lines.append(f"retries: {summary.already_retried_times}")
        if fields["error"]:
            lines.append(f"error: {fields['error']}")
        if summary.payload_excerpt:
            lines.append(f"payload: {truncate(summary.payload_excerpt, MESSAGE_TEXT_BYTES)}")
    if fields["eventDetail"]:
        lines.append(f"detail: {fields['eventDetail']}")
    if fields["detail"]:
        lines.append(fields["detail"])
    if fn_qualifier := transition.ref.function_ref.qualifier:
        lines.append(f"qualifier: {fn_qualifier}")
    return Message(title_of(transition), tuple(lines), severity, link)


def _outcome(transition: Transition) -> str:
    if transition.type is TransitionType.STATUS_CHANGED:
        return (transition.status or "unknown").lower()
    return transition.type.value.removeprefix("invocation.").replace("_", " ")


def render_group(
    transitions: Sequence[Transition],
    *,
    region: str | None = None,
    severity: str = "warning",
    template: str | None = None,
) -> Message:
    """One message for a burst: "12 invocations of transcode failed", then a line each."""
    if len(transitions) == 1:
        return render(transitions[0], region=region, severity=severity, template=template)
    outcomes = Counter(_outcome(t) for t in transitions)
    functions = sorted({t.ref.function_ref.function for t in transitions})
    invocations = len({t.ref.key for t in transitions})
    of = functions[0] if len(functions) == 1 else f"{len(functions)} functions"
    if len(outcomes) == 1:
        title = f"{invocations} invocations of {of}: {next(iter(outcomes))}"
    else:
        title = f"{len(transitions)} transitions of {of}: " + ", ".join(
            f"{count} {outcome}" for outcome, count in outcomes.most_common()
        )
    lines = []
    for transition in transitions[:GROUP_LINES]:
        one = render(transition, region=region, severity=severity, template=template)
        error = transition.invocation.error_message if transition.invocation else ""
        error = truncate(error, GROUP_ERROR_BYTES)
        lines.append(f"- {one.title}" + (f" ({error})" if error and not template else ""))
    if len(transitions) > GROUP_LINES:
        lines.append(f"- and {len(transitions) - GROUP_LINES} more")
    links = {console_url(t, region) for t in transitions}
    link = links.pop() if len(links) == 1 else None
    return Message(title, tuple(lines), severity, link)
