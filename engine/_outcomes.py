"""How a run's closing event reads to its parent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from history import (
    AnyEvent,
    AppendRequest,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Failure,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)

__all__ = ["child_outcome", "open_children", "parent_close_notices"]


def child_outcome(
    seq: int, closing: Event, stamp: datetime
) -> ChildWorkflowCompleted | ChildWorkflowFailed:
    """The event the parent records (as child ``seq``) when the child closes with ``closing``."""
    if isinstance(closing, WorkflowCompleted):
        return ChildWorkflowCompleted(timestamp=stamp, seq=seq, result=closing.result)
    if isinstance(closing, WorkflowFailed):
        status, failure = "failed", closing.failure
    elif isinstance(closing, WorkflowCancelled):
        status = "cancelled"
        failure = Failure(type="WorkflowCancelled", message=closing.reason or "cancelled")
    elif isinstance(closing, WorkflowTimedOut):
        status = "timed_out"
        failure = Failure(type="WorkflowTimedOut", message=f"{closing.timeout_type} timeout")
    elif isinstance(closing, WorkflowTerminated):
        status = "terminated"
        failure = Failure(type="WorkflowTerminated", message=closing.reason or "terminated")
    else:
        raise TypeError(f"{type(closing).__name__} does not close a run")
    return ChildWorkflowFailed(timestamp=stamp, seq=seq, status=status, failure=failure)


def parent_close_notices(
    workflow_id: str, children: Iterable[tuple[str, str]], stamp: datetime, now: float
) -> list[AppendRequest]:
    """What closing parent ``workflow_id`` does to its open ``(run id, parent-close policy)``
    children, as appends in the parent's closing transaction. A child that continued as new
    is reached in the run that continues it."""
    reason = f"parent {workflow_id!r} closed"
    notices: list[AppendRequest] = []
    for run_id, policy in children:
        if policy == "terminate":
            notice: Event = WorkflowTerminated(timestamp=stamp, reason=reason)
        elif policy == "request_cancel":
            notice = CancelRequested(timestamp=stamp, reason=reason)
        else:
            continue
        notices.append(
            AppendRequest(
                run_id=run_id, events=[notice], now=now, wake=True, follow_continuations=True
            )
        )
    return notices


def open_children(history: Sequence[AnyEvent]) -> list[tuple[str, str]]:
    """``(run id, parent-close policy)`` of the children a history started and has no
    outcome of yet."""
    started = {e.seq: e for e in history if isinstance(e, ChildWorkflowStarted)}
    for event in history:
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            started.pop(event.seq, None)
    return [(e.run_id, e.parent_close_policy) for e in started.values()]
