"""The store protocol: what the engine needs from a durable log, and nothing more.

Every backend (SQLite embedded, PostgreSQL for scale-out) implements :class:`Store` and passes
the same conformance suite. The protocol is shaped around three invariants:

* **Fenced appends.** ``append`` writes events (and the tasks they create) in one transaction
  or not at all. An owner's append names the event id it expects to come next and its fencing
  token; if either moved, the request fails with a conflict and nothing is written, so two
  workers can never both extend one history.
* **Runs are their own workflow-task queue.** A run that has work to do carries a ``wake_at``
  time; a worker claims ready runs with a lease and a fresh fencing token, renews the lease
  while it works, and releases the run (with the time it next needs a worker) in the same
  transaction as its last append. A lease that expires makes the run claimable again.
* **Tables are projections of the log.** Run status, close time and pending timers are derived
  by the store from the events appended, so they can never disagree with the history.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from ._errors import StoreError
from ._events import (
    AnyEvent,
    Event,
    Payload,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowTimedOut,
)

__all__ = [
    "CLOSING_EVENTS",
    "ActivityTask",
    "ActivityTaskSpec",
    "AppendRequest",
    "AppendResult",
    "Durability",
    "NewRun",
    "RunClaim",
    "RunInfo",
    "RunQuery",
    "RunStatus",
    "Store",
    "TimerInfo",
]


class RunStatus(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"
    RESET = "reset"

    @property
    def is_open(self) -> bool:
        return self is RunStatus.RUNNING

    @property
    def has_successor(self) -> bool:
        """Another run carries this one on (continue-as-new, reset): the run's last event
        names it (``new_run_id``)."""
        return self is RunStatus.CONTINUED_AS_NEW or self is RunStatus.RESET


CLOSING_EVENTS: dict[type[Event], RunStatus] = {
    WorkflowCompleted: RunStatus.COMPLETED,
    WorkflowFailed: RunStatus.FAILED,
    WorkflowCancelled: RunStatus.CANCELLED,
    WorkflowTimedOut: RunStatus.TIMED_OUT,
    WorkflowTerminated: RunStatus.TERMINATED,
    WorkflowContinuedAsNew: RunStatus.CONTINUED_AS_NEW,
    WorkflowReset: RunStatus.RESET,
}
"""The events that close a run, and the status each leaves it in."""


class Durability(enum.Enum):
    """SQLite ``synchronous`` level. FULL survives power loss; NORMAL (WAL) survives a process
    crash but may lose the last transactions on power loss."""

    FULL = "full"
    NORMAL = "normal"


class RunInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One run as the store indexes it (a projection of its history)."""

    run_id: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    started_at: datetime
    closed_at: datetime | None = None
    history_length: int = 0
    owner: str | None = None
    lease_expires_at: float | None = None
    wake_at: float | None = None


class TimerInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    run_id: str
    seq: int
    fire_at: datetime


class RunQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for listing runs; every field narrows, ``None`` means any."""

    workflow_id: str | None = None
    workflow_type: str | None = None
    status: RunStatus | None = None
    task_queue: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    limit: int = 100
    offset: int = 0


class RunClaim(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A run leased to one worker; ``fence`` must accompany every append it makes."""

    run_id: str
    fence: int
    workflow_type: str
    history_length: int


class ActivityTaskSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An activity attempt to be run by a worker polling ``task_queue`` (not eagerly)."""

    seq: int
    task_queue: str
    attempt: int
    visible_at: float
    payload: Payload
    """The engine's own description of the attempt; opaque to the store."""


class ActivityTask(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    task_id: int
    run_id: str
    seq: int
    attempt: int
    task_queue: str
    payload: Payload
    lease_expires_at: float


class NewRun(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A run to create: its ``WorkflowStarted`` and, for a run made from a copy of another
    history (reset, fork, recover, import, migration), the events after it — renumbered
    from 2, with status and pending timers projected from them exactly as an append would —
    and the activity tasks it had waiting on other queues."""

    run_id: str
    started: WorkflowStarted
    history: tuple[Event, ...] = ()
    activity_tasks: tuple[ActivityTaskSpec, ...] = ()

    @property
    def closes(self) -> bool:
        """The copied history closes the run: it is created closed, and never counts as its
        workflow id's open run."""
        return any(type(event) in CLOSING_EVENTS for event in self.history)


class AppendRequest(msgspec.Struct, kw_only=True):
    """One run's share of an append.

    ``expected_next_event_id`` and ``fence`` are the owner's preconditions; an external writer
    (a signal, a remote activity's result, a timer service) leaves both ``None`` and its events
    go after whatever the history holds. ``release`` gives the run up and sets its ``wake_at``
    to exactly the given time (``None``: only an external event wakes it); ``wake`` marks an
    external event as needing the owner's attention now.
    """

    run_id: str
    events: Sequence[Event]
    now: float
    expected_next_event_id: int | None = None
    fence: int | None = None
    release: bool = False
    wake_at: float | None = None
    wake: bool = False
    activity_tasks: Sequence[ActivityTaskSpec] = ()
    finish_activity_task: tuple[int, str] | None = None
    """``(task_id, worker)``: delete that task, and refuse the append if it is not leased by
    ``worker`` any more (another attempt took it over)."""
    start_runs: Sequence[NewRun] = ()
    """Runs to create in the same transaction (children, or the continuation of this run).
    If one's workflow id already has an open run (other than the one this append closes),
    the whole request is refused with ``WorkflowAlreadyRunningError``."""
    linked: Sequence[AppendRequest] = ()
    """External appends to other runs made in the same transaction (a child telling its
    parent it closed, a parent cancelling its children); one whose run has closed is
    skipped."""
    follow_continuations: bool = False
    """If the run continued as new, append to the run that continues its chain instead (a
    parent-close policy reaches a child that continued as new). Used for linked appends."""


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """``next_event_id`` after the append, or the error that refused it."""

    run_id: str
    next_event_id: int = 0
    events: tuple[AnyEvent, ...] = ()
    error: StoreError | None = None

    def unwrap(self) -> AppendResult:
        if self.error is not None:
            raise self.error
        return self


@runtime_checkable
class Store(Protocol):
    """A durable, append-only event log with run leases and activity tasks."""

    url: str

    async def close(self) -> None: ...

    async def create_run(
        self,
        run_id: str,
        started: WorkflowStarted,
        *,
        now: float,
        history: Sequence[Event] = (),
        activity_tasks: Sequence[ActivityTaskSpec] = (),
    ) -> RunInfo:
        """Insert a run with its first event (and a copied ``history`` after it, see
        :class:`NewRun`), ready to be claimed at ``now`` if it is open.

        Raises ``WorkflowAlreadyRunningError`` when the workflow id has an open run and the
        new one would be open too; ``RunAlreadyExistsError`` when ``run_id`` is taken.
        """
        ...

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Apply each request atomically; one request's conflict does not affect the others."""
        ...

    async def read_history(self, run_id: str, *, after_event_id: int = 0) -> list[AnyEvent]: ...

    async def get_run(self, run_id: str) -> RunInfo: ...

    async def find_run(self, workflow_id: str) -> RunInfo:
        """The newest run of a workflow id (the open one, if any)."""
        ...

    async def list_runs(self, query: RunQuery) -> list[RunInfo]: ...

    async def count_runs(self, query: RunQuery) -> int: ...

    async def pending_timers(self, run_id: str | None = None) -> list[TimerInfo]: ...

    async def wait_for_run(self, run_id: str, max_wait: float) -> AnyEvent | None:
        """Return soon after the run closes, or after ``max_wait`` seconds.

        A close made through this store object wakes waiters at once; a close made by another
        process within a fraction of a second (SQLite looks every 0.2 s while anyone waits;
        PostgreSQL is told by LISTEN/NOTIFY). A hint for waiters, not a guarantee: callers
        re-read the run unless they get the closing event, which a store may return when the
        close was appended through it (it was committed: nothing to read back).
        """
        ...

    async def claim_runs(
        self, task_queue: str, *, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[RunClaim]:
        """Lease up to ``limit`` ready runs of the queue; each claim increments the fence.

        A run whose lease expired is claimable by any other owner, never by its own: an
        owner renews its leases (``renew_leases``) and gives runs up with ``release_owner``.
        """
        ...

    async def renew_leases(self, owner: str, *, until: float) -> set[str]:
        """Extend every lease ``owner`` holds; return the run ids it still owns."""
        ...

    async def release_owner(self, owner: str) -> int:
        """Drop every lease held under ``owner`` (a restarted worker's previous incarnation)."""
        ...

    async def next_wake_at(
        self,
        task_queue: str,
        *,
        runs: bool = True,
        activity_tasks: bool = True,
        owner: str | None = None,
    ) -> float | None:
        """Earliest time something of the queue becomes claimable: an unleased run's
        ``wake_at``, a held lease's expiry, an unleased activity task's ``visible_at``.

        A poller asks only about what it can take — ``runs=False`` without workflows,
        ``activity_tasks=False`` without activities, ``owner`` to leave out its own leases
        (it never claims them) — so that work it cannot take does not wake it over and over.
        """
        ...

    async def reschedule_run(self, run_id: str, *, now: float) -> RunInfo:
        """Take an open run away from whoever holds it, at once: drop its lease (the next
        claim's new fence shuts the old owner out), make it claimable at ``now``, and make its
        leased activity tasks visible again. ``RunClosedError`` if the run has closed."""
        ...

    async def list_activity_tasks(self, run_id: str) -> list[ActivityTaskSpec]:
        """The run's activity tasks waiting on other queues (for describe and migration)."""
        ...

    async def claim_activity_tasks(
        self, task_queue: str, *, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[ActivityTask]:
        """Lease up to ``limit`` visible activity tasks; an expired lease counts as visible."""
        ...

    async def renew_activity_tasks(
        self, owner: str, task_ids: list[int], *, until: float
    ) -> set[int]:
        """Extend the leases of those tasks still held by ``owner``; return their ids."""
        ...
