"""Runs, histories and timelines as the API shows them: pure functions of stored data.

The CLI's views (``engine._timeline``) already say what each event means and fold a history
into steps; these functions reuse them and add what a picture needs on top: child runs as
steps of their own, and signals, cancel requests and failed workflow tasks as markers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from history import (
    AnyEvent,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Failure,
    MarkerRecorded,
    PayloadConverter,
    RunInfo,
    SignalReceived,
    TimerInfo,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)

from .._client import describe_history
from .._graph_view import describe_graph_run
from .._timeline import (
    Step,
    StepKind,
    build_timeline,
    event_to_json,
    format_failure,
    format_payload,
    history_rows,
)
from ._schemas import (
    ExecutionDetail,
    ExecutionSummary,
    FailureView,
    GraphView,
    HistoryEvent,
    HistoryPage,
    OriginView,
    PendingActivityView,
    PendingTimerView,
    TimelineAttempt,
    TimelineMarker,
    TimelineStep,
    TimelineView,
)

__all__ = [
    "execution_detail",
    "execution_summary",
    "failure_view",
    "graph_view",
    "heartbeat_progress",
    "history_page",
    "timeline_view",
]

_CLOSING = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowTerminated,
    WorkflowTimedOut,
    WorkflowReset,
    WorkflowContinuedAsNew,
)


def execution_summary(info: RunInfo) -> ExecutionSummary:
    return ExecutionSummary(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        workflow_type=info.workflow_type,
        task_queue=info.task_queue,
        status=info.status,
        started_at=info.started_at,
        closed_at=info.closed_at,
        history_length=info.history_length,
    )


def failure_view(failure: Failure | None) -> FailureView | None:
    if failure is None:
        return None
    return FailureView(
        type=failure.type,
        message=failure.message,
        stack=failure.stack,
        non_retryable=failure.non_retryable,
        cause=failure_view(failure.cause),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def heartbeat_progress(details: Sequence[Any]) -> float | None:
    """Progress in [0, 1] read off an activity's last heartbeat details, if it reports one.

    Recognised: a first detail that is a number in [0, 1]; or a mapping with ``progress``
    in [0, 1]; or a mapping with ``done``, ``completed`` or ``current`` and a positive
    ``total``. Anything else is not progress, and the details are shown as they are.
    """
    if not details:
        return None
    first = details[0]
    number = _number(first)
    if number is not None:
        return number if 0.0 <= number <= 1.0 else None
    if not isinstance(first, Mapping):
        return None
    progress = _number(first.get("progress"))
    if progress is not None and 0.0 <= progress <= 1.0:
        return progress
    total = _number(first.get("total"))
    for key in ("done", "completed", "current"):
        done = _number(first.get(key))
        if done is not None and total is not None and total > 0:
            return min(max(done / total, 0.0), 1.0)
    return None


def execution_detail(
    info: RunInfo,
    history: Sequence[AnyEvent],
    timers: list[TimerInfo],
    converter: PayloadConverter,
    extensions: dict[str, Any],
) -> ExecutionDetail:
    description = describe_history(info, history, timers, converter)
    started = history[0] if history and isinstance(history[0], WorkflowStarted) else None
    last = history[-1] if history else None
    args: list[Any] = []
    if started is not None:
        args = event_to_json(started)["args"]
    result: Any = None
    if isinstance(last, WorkflowCompleted):
        result = event_to_json(last)["result"]
    successor = None
    if isinstance(last, WorkflowContinuedAsNew | WorkflowReset):
        successor = last.new_run_id
    origin = None
    if started is not None and started.origin is not None:
        o = started.origin
        origin = OriginView(kind=o.kind, run_id=o.run_id, event_id=o.event_id, reason=o.reason)
    return ExecutionDetail(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        workflow_type=info.workflow_type,
        task_queue=info.task_queue,
        status=info.status,
        started_at=info.started_at,
        closed_at=info.closed_at,
        history_length=info.history_length,
        owner=info.owner,
        lease_expires_at=_from_epoch(info.lease_expires_at),
        wake_at=_from_epoch(info.wake_at),
        args=args,
        pending_activities=[
            PendingActivityView(
                seq=p.seq,
                activity_type=p.activity_type,
                attempt=p.attempt,
                retry_at=p.retry_at,
                last_heartbeat_at=p.last_heartbeat_at,
                last_heartbeat_details=list(msgspec.to_builtins(p.last_heartbeat_details)),
                progress=heartbeat_progress(p.last_heartbeat_details),
                last_failure=failure_view(p.last_failure),
            )
            for p in description.pending_activities
        ],
        pending_timers=[
            PendingTimerView(seq=t.seq, fire_at=t.fire_at) for t in description.pending_timers
        ],
        last_task_failure=failure_view(description.last_task_failure),
        failure=failure_view(description.failure),
        cancel_reason=description.cancel_reason,
        has_result=isinstance(last, WorkflowCompleted),
        result=result,
        parent_run_id=None if started is None else started.parent_run_id,
        continued_from=None if started is None else started.continued_from,
        successor_run_id=successor,
        origin=origin,
        extensions=extensions,
    )


def _from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def graph_view(info: RunInfo, history: Sequence[AnyEvent]) -> GraphView | None:
    """The built-in ``graph`` extension: a graph run's shape, what it is running or waiting
    for and its states (``describe_graph_run``), or ``None`` for any other run.

    The description is converted to :class:`GraphView` so the response matches the schema
    the OpenAPI document publishes for it; a description that no longer fits raises, and the
    extension then shows the error instead of data the document does not promise.
    """
    description = describe_graph_run(history)
    if description.get("graph") is None:
        return None
    return msgspec.convert(description, GraphView)


# -- history -------------------------------------------------------------------------------


def _summary(event: AnyEvent, details: str) -> str:
    """The CLI's description of an event, completed for the events it leaves blank."""
    if details:
        return details
    if isinstance(event, SignalReceived):
        args = ", ".join(format_payload(a, 40) for a in event.args)
        return f"{event.name}({args})"
    if isinstance(event, CancelRequested | WorkflowCancelled | WorkflowTerminated):
        return f"reason: {event.reason}" if event.reason else ""
    if isinstance(event, ChildWorkflowStarted):
        return f"#{event.seq} {event.workflow_type} {event.workflow_id} (run {event.run_id})"
    if isinstance(event, ChildWorkflowCompleted):
        return f"#{event.seq} -> {format_payload(event.result)}"
    if isinstance(event, ChildWorkflowFailed):
        return f"#{event.seq} {event.status}: {format_failure(event.failure)}"
    if isinstance(event, WorkflowReset):
        text = f"reset to event {event.to_event_id}; continues as run {event.new_run_id}"
        return f"{text} ({event.reason})" if event.reason else text
    if isinstance(event, WorkflowContinuedAsNew):
        return f"continues as run {event.new_run_id}"
    if isinstance(event, WorkflowTimedOut):
        return f"{event.timeout_type} timeout"
    if isinstance(event, MarkerRecorded):
        return f"{event.kind} {event.name or event.seq}"
    return ""


def history_page(
    info: RunInfo, events: Sequence[AnyEvent], *, after_event_id: int, limit: int
) -> HistoryPage:
    rows = history_rows(events)
    chosen = [
        (event, row)
        for event, row in zip(events, rows, strict=True)
        if event.event_id > after_event_id
    ][:limit]
    last_id = chosen[-1][0].event_id if chosen else after_event_id
    more = bool(events) and events[-1].event_id > last_id
    return HistoryPage(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        history_length=len(events),
        events=[
            HistoryEvent(
                event_id=event.event_id,
                type=row.type,
                timestamp=row.time,
                offset_seconds=row.offset,
                summary=_summary(event, row.details),
                attributes=event_to_json(event),
            )
            for event, row in chosen
        ],
        next_after_event_id=last_id if more else None,
    )


# -- timeline ------------------------------------------------------------------------------


def _step(step: Step) -> TimelineStep:
    return TimelineStep(
        kind="activity" if step.kind is StepKind.ACTIVITY else "timer",
        seq=step.seq,
        label=step.label,
        name=step.name,
        call=step.call,
        start=step.start,
        end=step.end,
        outcome=step.outcome.value,
        attempts=[
            TimelineAttempt(
                number=a.number,
                start=a.start,
                end=a.end,
                outcome=a.outcome.value,
                detail=a.detail,
                retry_at=a.retry_at,
            )
            for a in step.attempts
        ],
        result=step.result,
        due=step.due,
    )


def timeline_view(info: RunInfo, events: Sequence[AnyEvent], *, now: datetime) -> TimelineView:
    """The run's steps (activities, timers, child runs) and markers, with offsets from its
    start. An open run is drawn up to ``now``."""
    timeline = build_timeline(events, now=now if info.status.is_open else None)
    origin = timeline.started_at

    def at(moment: datetime) -> float:
        return (moment - origin).total_seconds()

    steps = [_step(step) for step in timeline.steps]
    children: dict[int, TimelineStep] = {}
    markers: list[TimelineMarker] = []
    for event in events:
        if isinstance(event, ChildWorkflowStarted):
            children[event.seq] = TimelineStep(
                kind="child",
                seq=event.seq,
                label=f"C{event.seq} {event.workflow_type}",
                name=event.workflow_type,
                call=f"{event.workflow_type} {event.workflow_id}",
                start=at(event.timestamp),
                end=None,
                outcome="running",
                attempts=[],
                result="",
                due=None,
                child_workflow_id=event.workflow_id,
                child_run_id=event.run_id,
            )
        elif isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            child = children.get(event.seq)
            if child is not None:
                child.end = at(event.timestamp)
                if isinstance(event, ChildWorkflowCompleted):
                    child.outcome, child.result = "completed", format_payload(event.result)
                else:
                    child.outcome = event.status.replace("_", " ")
                    child.result = format_failure(event.failure)
        elif isinstance(event, SignalReceived):
            args = ", ".join(format_payload(a, 30) for a in event.args)
            markers.append(_marker("signal", event, at, f"signal {event.name}({args})"))
        elif isinstance(event, CancelRequested):
            text = f"cancel requested: {event.reason}" if event.reason else "cancel requested"
            markers.append(_marker("cancel_requested", event, at, text))
        elif isinstance(event, WorkflowTaskFailed):
            text = f"workflow task failed: {format_failure(event.failure)}"
            markers.append(_marker("task_failed", event, at, text))
        elif isinstance(event, _CLOSING):
            summary = _summary(event, "")
            text = type(event).__name__ + (f": {summary}" if summary else "")
            markers.append(_marker("closed", event, at, text))
    ordered = sorted([*steps, *children.values()], key=lambda s: s.start)
    span = timeline.span
    last = at(events[-1].timestamp)
    if info.status.is_open:
        span = max(span, at(now), last)
    else:
        span = max(span, last)
    return TimelineView(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        workflow_type=info.workflow_type,
        status=info.status,
        started_at=origin,
        span=max(span, 1e-3),
        end=None if info.status.is_open else last,
        call=timeline.call,
        result=timeline.result,
        failure=timeline.failure,
        steps=ordered,
        markers=markers,
    )


def _marker(kind: Any, event: AnyEvent, at: Any, label: str) -> TimelineMarker:
    return TimelineMarker(
        kind=kind, event_id=event.event_id, offset=at(event.timestamp), label=label
    )
