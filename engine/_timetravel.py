"""Recover, reset and fork: new runs made from a copy of an old run's history.

History is never rewritten. Each of these operations starts a *new* run whose history is a
prefix of the old one (its origin recorded in the new ``WorkflowStarted``), and the worker
that claims it replays the prefix like after any crash, skipping every step recorded there.

Cutting a history anywhere would leave steps half-recorded: an activity scheduled but not
finished, retried twice already, or a child started with no outcome. Those are trimmed from
the copy, so the new run schedules them afresh — with a fresh retry budget, which is exactly
what recovering a failed step needs. Replay treats a trimmed step like code that had not
reached it yet: no event to match, so it is recorded anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from history import (
    CLOSING_EVENTS,
    ActivityCancelled,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    PerduraError,
    RunOrigin,
    WorkflowFailed,
    WorkflowStarted,
)

__all__ = ["CopiedHistory", "TimeTravelError", "copy_prefix", "failure_class_at", "recovery_cut"]

_ActivityEvent = (
    ActivityScheduled | ActivityCompleted | ActivityFailed | ActivityTimedOut | ActivityHeartbeat
)


class TimeTravelError(PerduraError):
    """A recover, reset or fork that cannot be done (bad event id, wrong run status)."""


@dataclass(frozen=True)
class CopiedHistory:
    """What the new run starts from: its ``WorkflowStarted`` and the events after it."""

    started: WorkflowStarted
    events: tuple[Event, ...]


def copy_prefix(
    history: Sequence[AnyEvent],
    upto_event_id: int,
    origin: RunOrigin,
    *,
    workflow_id: str | None = None,
    keep_parent: bool = False,
) -> CopiedHistory:
    """The events ``1..upto_event_id`` of ``history`` as a new run's history, with unfinished
    activities and children left out (see the module docstring).

    ``workflow_id`` renames the run (a fork); ``keep_parent`` keeps the link to a parent
    workflow, which only a reset wants: its successor owes the parent the outcome.
    """
    last = len(history)
    if not 1 <= upto_event_id <= last:
        raise TimeTravelError(
            f"event id {upto_event_id} is outside the run's history (events 1..{last})"
        )
    prefix = list(history[:upto_event_id])
    closing = next((e for e in prefix if type(e) in CLOSING_EVENTS), None)
    if closing is not None:
        raise TimeTravelError(
            f"event {closing.event_id} ({type(closing).__name__}) closes the run; "
            f"choose an event before it"
        )
    first = prefix[0]
    if not isinstance(first, WorkflowStarted):
        raise TimeTravelError("the history does not start with WorkflowStarted")

    finished_activities: set[int] = set()
    finished_children: set[int] = set()
    for event in prefix:
        if isinstance(event, ActivityCompleted | ActivityCancelled) or (
            isinstance(event, ActivityFailed | ActivityTimedOut) and event.retry_at is None
        ):
            finished_activities.add(event.seq)
        elif isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            finished_children.add(event.seq)

    kept: list[Event] = []
    for event in prefix[1:]:
        if isinstance(event, _ActivityEvent) and event.seq not in finished_activities:
            continue
        if isinstance(event, ChildWorkflowStarted) and event.seq not in finished_children:
            continue
        kept.append(msgspec.structs.replace(event, event_id=len(kept) + 2))

    started = msgspec.structs.replace(
        first,
        event_id=1,
        workflow_id=workflow_id or first.workflow_id,
        origin=msgspec.structs.replace(origin, copied=len(kept)),
        parent_run_id=first.parent_run_id if keep_parent else None,
        parent_seq=first.parent_seq if keep_parent else 0,
    )
    return CopiedHistory(started=started, events=tuple(kept))


def recovery_cut(history: Sequence[AnyEvent]) -> int:
    """Where to cut a failed run's history so that its failing step runs again.

    Just before the last step that failed for good (an activity out of retries, a child that
    failed); if the workflow code failed on its own, just before its failure, so that the
    current code runs from there.
    """
    last = history[-1]
    if not isinstance(last, WorkflowFailed):
        raise TimeTravelError(f"the run did not fail (its last event is {type(last).__name__})")
    for event in reversed(history[:-1]):
        if isinstance(event, ActivityFailed | ActivityTimedOut) and event.retry_at is None:
            return event.event_id - 1
        if isinstance(event, ChildWorkflowFailed):
            return event.event_id - 1
        if isinstance(event, ActivityCompleted | ChildWorkflowCompleted):
            break  # a step succeeded after any earlier failure: the code itself failed
    return last.event_id - 1


def failure_class_at(history: Sequence[AnyEvent], cut: int) -> str | None:
    """The class recorded for the failure a recovery cut at ``cut`` recovers from: that of
    the failing step (the event just after the cut), else of the run's own failure."""
    failing = history[cut] if cut < len(history) else None
    if isinstance(failing, ActivityFailed | ChildWorkflowFailed):
        if failing.failure.classification is not None:
            return failing.failure.classification
    if isinstance(failing, ActivityTimedOut):
        return "timeout"
    last = history[-1]
    if isinstance(last, WorkflowFailed):
        return last.failure.classification
    return None
