"""How a run's closing event reads to its parent."""

from __future__ import annotations

from datetime import datetime

from history import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    Event,
    Failure,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
)

__all__ = ["child_outcome"]


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
