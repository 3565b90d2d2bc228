"""A run's history as an operator reads it: a timeline of steps and a table of events.

A raw history answers "what was recorded, in which order"; the questions asked during an
incident are different: which step is slow, how many attempts did it take, what did it fail
with, where is the run waiting now. :func:`build_timeline` folds the events into one
:class:`Step` per activity and per timer, with offsets from the workflow's start, and
:func:`timeline_lines` draws them as a text Gantt chart. :func:`history_rows` keeps one row
per event but says what each one means. Everything here is a pure function of the events, so
the CLI, the demo and tests render the same thing.

Times are what the history can prove, which bounds how precise a chart can be:

* an attempt has no "started" event (eager execution records an activity's scheduling and
  its outcome in one commit), so attempt 1 is drawn from the time the workflow issued the
  command and attempt *n* from the retry time recorded with attempt *n-1*'s failure. After a
  worker crash the bar therefore covers the time no worker was running it, which is the
  honest reading: that is how long the step took.
* an activity still in flight on a worker is not in the history yet; it appears once its
  outcome is recorded.

Payloads are decoded (JSON-like) and truncated for display; ``--json`` output shows them
whole (:func:`event_to_json`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec

from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    Failure,
    Payload,
    PayloadConverter,
    PerduraError,
    RunStatus,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
)

__all__ = [
    "Attempt",
    "HistoryRow",
    "Outcome",
    "Segment",
    "Step",
    "StepKind",
    "Timeline",
    "build_timeline",
    "event_to_json",
    "format_duration",
    "format_failure",
    "format_offset",
    "format_payload",
    "history_rows",
    "timeline_lines",
    "timeline_text",
]

PAYLOAD_WIDTH: Final = 60
"""Characters of one decoded payload shown in a table or chart before it is cut."""

_converter: Final = PayloadConverter()


class StepKind(enum.Enum):
    ACTIVITY = "activity"
    TIMER = "timer"


class Outcome(enum.Enum):
    """Where a step, or one attempt of it, stands."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    RETRYING = "retrying"
    RUNNING = "running"
    WAITING = "waiting"
    FIRED = "fired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One recorded attempt of an activity; offsets are seconds from the workflow's start."""

    number: int
    start: float
    end: float
    outcome: Outcome
    detail: str = ""
    retry_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Step:
    """One activity or timer. ``end`` is ``None`` while it is still open."""

    kind: StepKind
    seq: int
    name: str
    call: str
    start: float
    end: float | None
    outcome: Outcome
    attempts: tuple[Attempt, ...] = ()
    result: str = ""
    due: float | None = None
    """When an open step next needs a worker: a timer's fire time, an activity's retry."""

    @property
    def label(self) -> str:
        return (
            f"#{self.seq} {self.name}"
            if self.kind is StepKind.ACTIVITY
            else f"T{self.seq} {self.name}"
        )


@dataclass(frozen=True, kw_only=True)
class Timeline:
    workflow_type: str
    workflow_id: str
    started_at: datetime
    status: RunStatus
    """RUNNING, COMPLETED or FAILED: what the history itself says."""
    call: str
    span: float
    """Seconds the chart covers: to the close, or for an open run to ``now``."""
    end: float | None = None
    result: str = ""
    failure: str = ""
    steps: tuple[Step, ...] = ()
    task_failures: tuple[tuple[float, str], ...] = ()


# -- formatting values ---------------------------------------------------------------------


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def format_payload(payload: Payload, width: int = PAYLOAD_WIDTH) -> str:
    """A payload as compact JSON, cut to ``width`` characters."""
    try:
        value = _converter.decode(payload)
        text = msgspec.json.encode(value).decode()
    except (PerduraError, TypeError, msgspec.EncodeError):
        text = f"<{payload.encoding} payload, {len(payload.data)} bytes, not decodable>"
    return _truncate(text, width)


def _call(name: str, args: Sequence[Payload], width: int = PAYLOAD_WIDTH) -> str:
    return f"{name}({', '.join(format_payload(a, width) for a in args)})"


def format_failure(failure: Failure, width: int = 100) -> str:
    """``Type: message`` on one line (the first line of the message)."""
    message = failure.message.strip().splitlines()[0] if failure.message.strip() else ""
    text = f"{failure.type}: {message}" if message else failure.type
    return _truncate(text, width)


def format_duration(seconds: float) -> str:
    """A length of time, as short as its size allows: ``0.21s``, ``12.5s``, ``2m05s``,
    ``1h02m``, ``3d00h``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_offset(seconds: float) -> str:
    """An offset from the workflow's start: ``+1.41s``."""
    return f"+{format_duration(seconds)}"


def _timer_name(duration: float) -> str:
    """``sleep 2s``, ``sleep 3d``: the duration as the code most likely wrote it."""
    if duration < 60:
        return f"sleep {duration:g}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if duration % size == 0:
            return f"sleep {int(duration // size)}{unit}"
    return f"sleep {format_duration(duration)}"


# -- the timeline --------------------------------------------------------------------------


@dataclass(eq=False)
class _Open:
    """A step under construction while the events are folded."""

    kind: StepKind
    seq: int
    name: str
    call: str
    start: float
    order: int
    outcome: Outcome
    end: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    next_start: float = 0.0
    result: str = ""
    due: float | None = None

    def freeze(self) -> Step:
        return Step(
            kind=self.kind,
            seq=self.seq,
            name=self.name,
            call=self.call,
            start=self.start,
            end=self.end,
            outcome=self.outcome,
            attempts=tuple(self.attempts),
            result=self.result,
            due=self.due,
        )


def build_timeline(events: Sequence[AnyEvent], *, now: datetime | None = None) -> Timeline:
    """Fold a history into steps. ``now`` bounds the chart of an open run (default: its last
    event); a closed run is charted to its close."""
    if not events or not isinstance(events[0], WorkflowStarted):
        raise PerduraError("a history must start with a WorkflowStarted event")
    started = events[0]
    origin = started.timestamp

    def at(moment: datetime) -> float:
        return (moment - origin).total_seconds()

    activities: dict[int, _Open] = {}
    timers: dict[int, _Open] = {}
    task_failures: list[tuple[float, str]] = []
    status, result, failure, end = RunStatus.RUNNING, "", "", None
    for order, event in enumerate(events):
        if isinstance(event, ActivityScheduled):
            start = at(event.scheduled_at or event.timestamp)
            activities[event.seq] = _Open(
                kind=StepKind.ACTIVITY,
                seq=event.seq,
                name=event.activity_type,
                call=_call(event.activity_type, event.args),
                start=start,
                order=order,
                outcome=Outcome.RUNNING,
                next_start=start,
            )
        elif isinstance(event, ActivityCompleted | ActivityFailed | ActivityTimedOut):
            step = activities.get(event.seq)
            if step is None:
                continue
            stamp = at(event.timestamp)
            if isinstance(event, ActivityCompleted):
                outcome, detail = Outcome.COMPLETED, format_payload(event.result)
                step.result = detail
            elif isinstance(event, ActivityFailed):
                outcome, detail = Outcome.FAILED, format_failure(event.failure)
            else:
                outcome, detail = Outcome.TIMED_OUT, f"{event.timeout_type.value} timeout"
            retry_at = None
            if not isinstance(event, ActivityCompleted) and event.retry_at is not None:
                retry_at = at(event.retry_at)
            step.attempts.append(
                Attempt(
                    number=event.attempt,
                    start=min(step.next_start, stamp),
                    end=stamp,
                    outcome=outcome,
                    detail=detail,
                    retry_at=retry_at,
                )
            )
            if retry_at is not None:
                step.outcome, step.next_start, step.due = Outcome.RETRYING, retry_at, retry_at
            else:
                step.outcome, step.end, step.due = outcome, stamp, None
        elif isinstance(event, ActivityHeartbeat):
            step = activities.get(event.seq)
            if step is not None and step.outcome is Outcome.RETRYING:
                step.outcome, step.due = Outcome.RUNNING, None
        elif isinstance(event, TimerStarted):
            timers[event.seq] = _Open(
                kind=StepKind.TIMER,
                seq=event.seq,
                name=_timer_name(event.duration),
                call=_timer_name(event.duration),
                start=at(event.timestamp),
                order=order,
                outcome=Outcome.WAITING,
                due=at(event.fire_at),
            )
        elif isinstance(event, TimerFired | TimerCancelled):
            step = timers.get(event.seq)
            if step is not None:
                step.end, step.due = at(event.timestamp), None
                fired = isinstance(event, TimerFired)
                step.outcome = Outcome.FIRED if fired else Outcome.CANCELLED
        elif isinstance(event, WorkflowTaskFailed):
            task_failures.append((at(event.timestamp), format_failure(event.failure)))
        elif isinstance(event, WorkflowCompleted):
            status, end = RunStatus.COMPLETED, at(event.timestamp)
            result = format_payload(event.result, 2 * PAYLOAD_WIDTH)
        elif isinstance(event, WorkflowFailed):
            status, end = RunStatus.FAILED, at(event.timestamp)
            failure = format_failure(event.failure)

    last = at(events[-1].timestamp)
    if end is not None:
        span = end
    else:
        span = max(last, at(now)) if now is not None else last
    opened = sorted([*activities.values(), *timers.values()], key=lambda s: (s.start, s.order))
    return Timeline(
        workflow_type=started.workflow_type,
        workflow_id=started.workflow_id,
        started_at=origin,
        status=status,
        call=_call(started.workflow_type, started.args),
        span=max(span, 1e-3),
        end=end,
        result=result,
        failure=failure,
        steps=tuple(step.freeze() for step in opened),
        task_failures=tuple(task_failures),
    )


# -- drawing -------------------------------------------------------------------------------

Segment = tuple[str, str]
"""A run of text and the name of its style: ``ok``, ``fail``, ``warn``, ``run``, ``timer``,
``wait``, ``dim``, ``head`` or ``""``. Plain output ignores styles; rich output colours them."""


class _Mark(enum.Enum):
    """What one cell of a bar shows."""

    COMPLETED = enum.auto()
    FAILED = enum.auto()
    TIMED_OUT = enum.auto()
    RUNNING = enum.auto()
    WAIT = enum.auto()
    TIMER = enum.auto()
    OPEN = enum.auto()


_ASCII: Final[dict[_Mark, str]] = {
    _Mark.COMPLETED: "#",
    _Mark.FAILED: "x",
    _Mark.TIMED_OUT: "t",
    _Mark.RUNNING: "~",
    _Mark.WAIT: ".",
    _Mark.TIMER: "=",
    _Mark.OPEN: ">",
}
_UNICODE: Final[dict[_Mark, str]] = {
    _Mark.COMPLETED: "█",
    _Mark.FAILED: "█",
    _Mark.TIMED_OUT: "█",
    _Mark.RUNNING: "▒",
    _Mark.WAIT: "·",
    _Mark.TIMER: "░",
    _Mark.OPEN: "▸",
}
_MARK_STYLE: Final[dict[_Mark, str]] = {
    _Mark.COMPLETED: "ok",
    _Mark.FAILED: "fail",
    _Mark.TIMED_OUT: "warn",
    _Mark.RUNNING: "run",
    _Mark.WAIT: "dim",
    _Mark.TIMER: "timer",
    _Mark.OPEN: "run",
}
_ATTEMPT_MARK: Final[dict[Outcome, _Mark]] = {
    Outcome.COMPLETED: _Mark.COMPLETED,
    Outcome.FAILED: _Mark.FAILED,
    Outcome.TIMED_OUT: _Mark.TIMED_OUT,
}
_OUTCOME_STYLE: Final[dict[Outcome, str]] = {
    Outcome.COMPLETED: "ok",
    Outcome.FIRED: "ok",
    Outcome.FAILED: "fail",
    Outcome.TIMED_OUT: "warn",
    Outcome.CANCELLED: "warn",
    Outcome.RETRYING: "warn",
    Outcome.RUNNING: "run",
    Outcome.WAITING: "run",
}


class _Bar:
    """A row of ``width`` cells covering ``span`` seconds; later marks overwrite earlier."""

    def __init__(self, width: int, span: float) -> None:
        self.width = width
        self.span = span
        self.cells: list[_Mark | None] = [None] * width

    def mark(self, start: float, end: float, mark: _Mark) -> None:
        first = min(int(start / self.span * self.width), self.width - 1)
        last = min(max(math.ceil(end / self.span * self.width), first + 1), self.width)
        for index in range(max(first, 0), last):
            self.cells[index] = mark

    def segments(self, chars: dict[_Mark, str]) -> list[Segment]:
        out: list[Segment] = []
        for mark in self.cells:
            text = " " if mark is None else chars[mark]
            style = "" if mark is None else _MARK_STYLE[mark]
            if out and out[-1][1] == style:
                out[-1] = (out[-1][0] + text, style)
            else:
                out.append((text, style))
        return out


def _bar(step: Step, span: float, width: int, chars: dict[_Mark, str]) -> list[Segment]:
    bar = _Bar(width, span)
    if step.kind is StepKind.TIMER:
        if step.end is not None:
            bar.mark(step.start, step.end, _Mark.TIMER)
        else:
            bar.mark(step.start, span, _Mark.TIMER)
            bar.mark(span, span, _Mark.OPEN)
        return bar.segments(chars)
    previous_end: float | None = None
    for attempt in step.attempts:
        if previous_end is not None and attempt.start > previous_end:
            bar.mark(previous_end, attempt.start, _Mark.WAIT)
        bar.mark(attempt.start, attempt.end, _ATTEMPT_MARK[attempt.outcome])
        previous_end = attempt.end
    if step.end is None:
        if step.outcome is Outcome.RETRYING and previous_end is not None:
            bar.mark(previous_end, min(step.due or span, span), _Mark.WAIT)
            if step.due is not None and step.due < span:
                bar.mark(step.due, span, _Mark.RUNNING)
        else:
            bar.mark(step.attempts[-1].end if step.attempts else step.start, span, _Mark.RUNNING)
        bar.mark(span, span, _Mark.OPEN)
    return bar.segments(chars)


def timeline_lines(
    timeline: Timeline, *, bar_width: int = 40, unicode: bool = False
) -> list[list[Segment]]:
    """The chart, one list of styled segments per line. ``unicode`` draws with block
    characters (for terminals); the default is ASCII, safe in any pipe or log file."""
    chars = _UNICODE if unicode else _ASCII
    span = timeline.span
    lines: list[list[Segment]] = []
    if timeline.end is not None:
        state = f"{timeline.status.value} in {format_duration(timeline.end)}"
    else:
        state = f"running for {format_duration(span)}"
    lines.append(
        [
            (timeline.workflow_type, "head"),
            (f"  {timeline.workflow_id}  ", ""),
            (state, "fail" if timeline.status is RunStatus.FAILED else "ok"),
            (f"  (started {timeline.started_at:%Y-%m-%d %H:%M:%S} UTC)", "dim"),
        ]
    )
    outcome_line = timeline.call
    if timeline.result:
        outcome_line += f" -> {timeline.result}"
    elif timeline.failure:
        outcome_line += f" failed: {timeline.failure}"
    lines.append([(f"  {outcome_line}", "dim")])
    lines.append([])

    labels = [_truncate(step.label, 28) for step in timeline.steps]
    name_width = max([len("STEP"), *map(len, labels)])
    starts = [format_offset(step.start) for step in timeline.steps]
    ends = [_end_text(step) for step in timeline.steps]
    start_width = max([len("START"), *map(len, starts)])
    end_width = max([len("END"), *map(len, ends)])
    left = "0s"
    right = format_duration(span)
    scale = left + " " * max(bar_width - len(left) - len(right), 1) + right
    header = (
        f"{'STEP':<{name_width}}  ATTEMPTS  {'OUTCOME':<9}  "
        f"{'START':>{start_width}}  {'END':>{end_width}}  |{scale}|"
    )
    lines.append([(header, "head")])
    for step, label, start, end_text in zip(timeline.steps, labels, starts, ends, strict=True):
        attempts = str(len(step.attempts)) if step.kind is StepKind.ACTIVITY else "-"
        if step.kind is StepKind.ACTIVITY and step.end is None and step.outcome is Outcome.RUNNING:
            attempts = str(len(step.attempts) + 1)
        line: list[Segment] = [
            (f"{label:<{name_width}}  {attempts:>8}  ", ""),
            (f"{step.outcome.value:<9}", _OUTCOME_STYLE[step.outcome]),
            (f"  {start:>{start_width}}  {end_text:>{end_width}}  |", ""),
            *_bar(step, span, bar_width, chars),
            ("|", ""),
        ]
        lines.append(line)
    if not timeline.steps:
        lines.append([("(no activities or timers recorded yet)", "dim")])

    lines.append([])
    for step in timeline.steps:
        lines.extend(_step_details(step))
    for offset, text in timeline.task_failures:
        lines.append([(f"! {format_offset(offset)} workflow task failed: {text}", "fail")])
    legend = (
        f"{chars[_Mark.COMPLETED]} attempt  {chars[_Mark.FAILED]} failed attempt  "
        f"{chars[_Mark.TIMED_OUT]} timed out  {chars[_Mark.WAIT]} waiting to retry  "
        f"{chars[_Mark.TIMER]} timer  {chars[_Mark.RUNNING]}{chars[_Mark.OPEN]} still open"
    )
    lines.append([(legend, "dim")])
    if timeline.end is None:
        lines.append([("(an activity in flight appears once its outcome is recorded)", "dim")])
    return lines


def _end_text(step: Step) -> str:
    if step.end is not None:
        return format_offset(step.end)
    if step.due is not None:
        return f"due {format_offset(step.due)}"
    return "-"


def _step_details(step: Step) -> list[list[Segment]]:
    if step.kind is StepKind.TIMER:
        if step.outcome is Outcome.WAITING and step.due is not None:
            return [[(f"T{step.seq} {step.name}, fires at {format_offset(step.due)}", "")]]
        when = format_offset(step.end) if step.end is not None else "?"
        return [[(f"T{step.seq} {step.name}, {step.outcome.value} at {when}", "")]]
    head: list[Segment] = [(f"#{step.seq} {step.call}", "")]
    if step.result:
        head.append((f" -> {step.result}", "ok"))
    lines = [head]
    if len(step.attempts) > 1 or any(a.outcome is not Outcome.COMPLETED for a in step.attempts):
        for attempt in step.attempts:
            text = (
                f"    attempt {attempt.number}  {format_offset(attempt.start)}.."
                f"{format_offset(attempt.end)}  {attempt.outcome.value}"
            )
            if attempt.outcome is not Outcome.COMPLETED:
                text += f": {attempt.detail}"
            if attempt.retry_at is not None:
                text += f" (retry at {format_offset(attempt.retry_at)})"
            lines.append([(text, _OUTCOME_STYLE[attempt.outcome])])
    return lines


def timeline_text(timeline: Timeline, *, bar_width: int = 40, unicode: bool = False) -> str:
    """The chart as plain text."""
    lines = timeline_lines(timeline, bar_width=bar_width, unicode=unicode)
    return "\n".join("".join(text for text, _ in line).rstrip() for line in lines)


# -- the history table ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HistoryRow:
    event_id: int
    time: datetime
    offset: float
    type: str
    details: str


def history_rows(events: Sequence[AnyEvent]) -> list[HistoryRow]:
    """One row per event, its details in words (payloads decoded and cut short)."""
    if not events:
        return []
    origin = events[0].timestamp
    names: dict[int, str] = {}
    rows = []
    for event in events:
        if isinstance(event, ActivityScheduled):
            names[event.seq] = event.activity_type
        rows.append(
            HistoryRow(
                event_id=event.event_id,
                time=event.timestamp,
                offset=(event.timestamp - origin).total_seconds(),
                type=type(event).__name__,
                details=_details(event, names, origin),
            )
        )
    return rows


def _details(event: AnyEvent, names: dict[int, str], origin: datetime) -> str:
    def at(moment: datetime) -> str:
        return format_offset((moment - origin).total_seconds())

    if isinstance(event, WorkflowStarted):
        return f"{_call(event.workflow_type, event.args)} on queue {event.task_queue!r}"
    if isinstance(event, ActivityScheduled):
        options = []
        if event.start_to_close_timeout is not None:
            options.append(f"start_to_close={event.start_to_close_timeout:g}s")
        if event.schedule_to_close_timeout is not None:
            options.append(f"schedule_to_close={event.schedule_to_close_timeout:g}s")
        if event.heartbeat_timeout is not None:
            options.append(f"heartbeat={event.heartbeat_timeout:g}s")
        if event.retry_policy.maximum_attempts:
            options.append(f"max_attempts={event.retry_policy.maximum_attempts}")
        text = f"#{event.seq} {_call(event.activity_type, event.args)}"
        return f"{text}  {' '.join(options)}" if options else text
    if isinstance(event, ActivityCompleted):
        name = names.get(event.seq, "?")
        return f"#{event.seq} {name} attempt {event.attempt} -> {format_payload(event.result)}"
    if isinstance(event, ActivityFailed | ActivityTimedOut):
        name = names.get(event.seq, "?")
        reason = (
            format_failure(event.failure)
            if isinstance(event, ActivityFailed)
            else f"{event.timeout_type.value} timeout"
        )
        then = f"retry at {at(event.retry_at)}" if event.retry_at is not None else "final"
        return f"#{event.seq} {name} attempt {event.attempt}: {reason}; {then}"
    if isinstance(event, ActivityHeartbeat):
        name = names.get(event.seq, "?")
        details = ", ".join(format_payload(d, 30) for d in event.details)
        return f"#{event.seq} {name} attempt {event.attempt} ({details})"
    if isinstance(event, TimerStarted):
        return f"T{event.seq} {_timer_name(event.duration)}, fires at {at(event.fire_at)}"
    if isinstance(event, TimerFired | TimerCancelled):
        return f"T{event.seq}"
    if isinstance(event, WorkflowCompleted):
        return f"-> {format_payload(event.result)}"
    if isinstance(event, WorkflowFailed | WorkflowTaskFailed):
        return format_failure(event.failure)
    return ""


# -- JSON ----------------------------------------------------------------------------------


def event_to_json(event: AnyEvent) -> dict[str, Any]:
    """An event as plain JSON-ready data: ``type`` first, payloads decoded in full.

    Undecodable payloads keep their bytes (base64) and encoding, so nothing is hidden.
    """
    out: dict[str, Any] = {"type": type(event).__name__}
    for name in event.__struct_fields__:
        out[name] = _jsonable(getattr(event, name))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Payload):
        try:
            return msgspec.to_builtins(_converter.decode(value))
        except (PerduraError, TypeError):
            return {"encoding": value.encoding, "data": msgspec.to_builtins(value.data)}
    if isinstance(value, msgspec.Struct):
        return {name: _jsonable(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    return msgspec.to_builtins(value)
