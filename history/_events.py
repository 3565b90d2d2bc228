"""The event union: every fact a run's history can hold.

Each event is a frozen, tagged ``msgspec.Struct``; the tag (``type``) is the class name, so a
stored history reads the same in MessagePack, in an exported JSON file and in a debugger.

Evolution rules (see docs/decisions.md): a new event type may be added at any time; a new field
only with a default; a field's type never changes and a field is never removed or renamed. The
encoder and decoder are built once per process.

Activity and timer events carry ``seq``: the per-run, per-kind sequence number of the command
that created them, assigned by the workflow code in the order it issues commands. Replay
matches commands to events by ``(kind, seq)``, which is what makes a recorded history replay
identically whatever order concurrent results arrived in.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final, TypeAlias

import msgspec

from ._policy import RetryPolicy

__all__ = [
    "ActivityCancelled",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityHeartbeat",
    "ActivityScheduled",
    "ActivityTimedOut",
    "AnyEvent",
    "CancelRequested",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowStarted",
    "Event",
    "Failure",
    "MarkerRecorded",
    "Payload",
    "SignalReceived",
    "TimeoutType",
    "TimerCancelled",
    "TimerFired",
    "TimerStarted",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowContinuedAsNew",
    "WorkflowFailed",
    "WorkflowStarted",
    "WorkflowTaskFailed",
    "WorkflowTerminated",
    "WorkflowReset",
    "RunOrigin",
    "WorkflowTimedOut",
    "decode_event",
    "decode_events_json",
    "encode_event",
    "encode_events_json",
]


class Payload(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One encoded user value. ``encoding`` names the codec that produced ``data``."""

    encoding: str
    data: bytes


class Failure(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An exception as recorded: enough to show it to an operator and to rebuild an error."""

    type: str
    message: str
    stack: str = ""
    non_retryable: bool = False
    details: tuple[Payload, ...] = ()
    cause: Failure | None = None
    classification: str | None = None
    """The failure class the runtime acted on (``transient``, ``permanent``,
    ``resource_exhaustion``, ``timeout``, ``unknown``); ``None`` in histories recorded before
    failures were classified, and for failures that are not an activity attempt's."""


class TimeoutType(enum.Enum):
    START_TO_CLOSE = "start_to_close"
    SCHEDULE_TO_CLOSE = "schedule_to_close"
    HEARTBEAT = "heartbeat"


class Event(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True, gc=False
):
    """Common header. ``event_id`` is assigned by the store: 1, 2, 3 … with no gaps.

    Fields equal to their default are not written (``omit_defaults``), which is why a
    default, once released, never changes.
    """

    event_id: int = 0
    timestamp: datetime


class RunOrigin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Where a copied history came from: ``kind`` is ``reset``, ``fork``, ``recover`` or
    ``import``; ``event_id`` is the last event of ``run_id`` the copy was cut after (before
    trimming unfinished steps)."""

    kind: str
    run_id: str
    event_id: int = 0
    reason: str = ""
    copied: int = 0
    """How many events after ``WorkflowStarted`` the copy holds: the run's own events start
    at ``copied + 2``."""
    failure_class: str | None = None
    """For a recovery: the class of the failure recovered from (``transient`` …)."""


class WorkflowStarted(Event, frozen=True, kw_only=True, tag=True):
    workflow_type: str
    workflow_id: str
    task_queue: str
    args: tuple[Payload, ...] = ()
    seed: int = 0
    """Seeds ``workflow.random()``; recorded so every replay draws the same numbers."""
    run_timeout: float | None = None
    """Seconds this run may take before it ends TIMED_OUT."""
    execution_deadline: datetime | None = None
    """When the whole execution (this run and the runs it continues as) ends TIMED_OUT."""
    parent_run_id: str | None = None
    """Set for a child workflow: the run to tell when this one closes."""
    parent_seq: int = 0
    continued_from: str | None = None
    """The run this one continues (continue-as-new)."""
    origin: RunOrigin | None = None
    """Set when this run was made from a copy of another run's history (reset, fork,
    recover, import): where the copy came from and why."""


class WorkflowCompleted(Event, frozen=True, kw_only=True, tag=True):
    result: Payload


class WorkflowFailed(Event, frozen=True, kw_only=True, tag=True):
    failure: Failure


class WorkflowTimedOut(Event, frozen=True, kw_only=True, tag=True):
    """The run passed its run timeout or its execution's deadline."""

    timeout_type: str
    """``"run"`` or ``"execution"``."""
    deadline: datetime


class WorkflowTerminated(Event, frozen=True, kw_only=True, tag=True):
    """Stopped from outside without running any more of its code."""

    reason: str = ""


class WorkflowReset(Event, frozen=True, kw_only=True, tag=True):
    """Closed by an operator's reset: ``new_run_id`` carries on from a copy of this run's
    history up to ``to_event_id``."""

    new_run_id: str
    to_event_id: int
    reason: str = ""


class WorkflowContinuedAsNew(Event, frozen=True, kw_only=True, tag=True):
    """The run ended by starting a fresh run of the same workflow id (a new history)."""

    new_run_id: str
    args: tuple[Payload, ...] = ()


class ChildWorkflowStarted(Event, frozen=True, kw_only=True, tag=True):
    seq: int
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    parent_close_policy: str = "terminate"


class ChildWorkflowCompleted(Event, frozen=True, kw_only=True, tag=True):
    seq: int
    result: Payload


class ChildWorkflowFailed(Event, frozen=True, kw_only=True, tag=True):
    """The child ended without a result (``status``: failed, cancelled, timed_out,
    terminated) or could not be started (``status``: start_failed)."""

    seq: int
    status: str
    failure: Failure


class WorkflowTaskFailed(Event, frozen=True, kw_only=True, tag=True):
    """Workflow code could not make progress (a sandbox violation, or code that no longer
    matches this history). Not an outcome: the run stays open and is retried, so a deploy
    that fixes the code lets it continue. Recorded once per streak of identical failures."""

    failure: Failure


class ActivityScheduled(Event, frozen=True, kw_only=True, tag=True):
    seq: int
    activity_type: str
    task_queue: str
    args: tuple[Payload, ...] = ()
    retry_policy: RetryPolicy = RetryPolicy()
    start_to_close_timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    scheduled_at: datetime | None = None
    """When the workflow issued the command (eager execution records it with the result)."""


class ActivityCompleted(Event, frozen=True, kw_only=True, tag=True):
    seq: int
    attempt: int
    result: Payload


class ActivityFailed(Event, frozen=True, kw_only=True, tag=True):
    """One attempt failed. With ``retry_at`` the activity retries then; without, it is final."""

    seq: int
    attempt: int
    failure: Failure
    retry_at: datetime | None = None


class ActivityTimedOut(Event, frozen=True, kw_only=True, tag=True):
    """One attempt timed out. With ``retry_at`` the activity retries then; without, it is final."""

    seq: int
    attempt: int
    timeout_type: TimeoutType
    retry_at: datetime | None = None
    next_start_to_close_timeout: float | None = None
    """Set when the timeout policy raised the start-to-close timeout of the next attempt: the
    value that attempt runs with (recorded, so every worker retries it the same way)."""


class ActivityHeartbeat(Event, frozen=True, kw_only=True, tag=True):
    """Progress reported by a running attempt; a retried attempt reads the latest details."""

    seq: int
    attempt: int
    details: tuple[Payload, ...] = ()


class ActivityCancelled(Event, frozen=True, kw_only=True, tag=True):
    """The workflow stopped waiting for the activity (its await was cancelled): final."""

    seq: int


class SignalReceived(Event, frozen=True, kw_only=True, tag=True):
    """A message for the run's ``@workflow.signal`` handler ``name``; delivered in order."""

    name: str
    args: tuple[Payload, ...] = ()


class CancelRequested(Event, frozen=True, kw_only=True, tag=True):
    """Someone asked the run to stop; the code sees ``CancelledError`` at its current await."""

    reason: str = ""


class WorkflowCancelled(Event, frozen=True, kw_only=True, tag=True):
    """The run ended because it was cancelled (and let the cancellation end it)."""

    reason: str = ""


class MarkerRecorded(Event, frozen=True, kw_only=True, tag=True):
    """A fact the code asked to remember: a side effect's value, or a patch (version) id.

    ``kind`` is ``"side_effect"`` (``seq`` numbers them, ``value`` or ``failure`` holds the
    outcome) or ``"patch"`` (``name`` is the patch id).
    """

    kind: str
    name: str = ""
    seq: int = 0
    value: Payload | None = None
    failure: Failure | None = None


class TimerStarted(Event, frozen=True, kw_only=True, tag=True):
    seq: int
    fire_at: datetime
    duration: float


class TimerFired(Event, frozen=True, kw_only=True, tag=True):
    seq: int


class TimerCancelled(Event, frozen=True, kw_only=True, tag=True):
    seq: int


AnyEvent: TypeAlias = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowTaskFailed
    | ActivityScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityTimedOut
    | ActivityHeartbeat
    | TimerStarted
    | TimerFired
    | TimerCancelled
    | ActivityCancelled
    | SignalReceived
    | CancelRequested
    | WorkflowCancelled
    | MarkerRecorded
    | WorkflowTimedOut
    | WorkflowTerminated
    | WorkflowReset
    | WorkflowContinuedAsNew
    | ChildWorkflowStarted
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
)

_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final[msgspec.msgpack.Decoder[Any]] = msgspec.msgpack.Decoder(AnyEvent)
_json_encoder: Final = msgspec.json.Encoder()
_json_list_decoder: Final = msgspec.json.Decoder(list[AnyEvent])


def encode_event(event: Event) -> bytes:
    """Storage form of one event (MessagePack)."""
    return _msgpack_encoder.encode(event)


def decode_event(data: bytes) -> AnyEvent:
    """Inverse of :func:`encode_event`; raises ``msgspec.DecodeError`` on damaged bytes."""
    event: AnyEvent = _msgpack_decoder.decode(data)
    return event


def encode_events_json(events: list[Any]) -> bytes:
    return _json_encoder.encode(events)


def decode_events_json(data: bytes) -> list[AnyEvent]:
    return _json_list_decoder.decode(data)
