"""The client: start runs, find them, wait for their results, read their histories.

The client writes nothing but a run's first event; everything after that is the workers'.
Waiting for a result reads the run's status from the store: in the same process as the worker
it wakes as soon as the run closes (the store tells it); across processes it polls with a
bounded backoff.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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
    AppendConflictError,
    AppendRequest,
    CancelRequested,
    Event,
    Failure,
    NewRun,
    PayloadConverter,
    PerduraError,
    RunClosedError,
    RunInfo,
    RunOrigin,
    RunQuery,
    RunStatus,
    SignalReceived,
    Store,
    TimerInfo,
    WorkflowAlreadyRunningError,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
    dump_history,
    load_history,
)

from ._classify import run_failure_class
from ._clock import Clock, SystemClock, to_datetime
from ._config import PerduraConfig
from ._definitions import Registry, workflow_definition
from ._errors import (
    WorkflowCancelledError,
    WorkflowFailureError,
    WorkflowTerminatedError,
    WorkflowTimedOutError,
)
from ._failure import error_from_failure
from ._outcomes import child_outcome, open_children, parent_close_notices
from ._query import QueryError, answer_query
from ._timetravel import (
    CopiedHistory,
    TimeTravelError,
    copy_prefix,
    failure_class_at,
    recovery_cut,
)

#: Longest wait in ``result()`` between two looks at a run that is still open.
RESULT_RECHECK_SECONDS = 2.0

_FINAL_EVENTS: frozenset[type] = frozenset(
    kind for kind, status in CLOSING_EVENTS.items() if not status.has_successor
)
"""Closing events that end a chain (no successor: not continue-as-new, not reset)."""

__all__ = ["Client", "PendingActivity", "WorkflowDescription", "WorkflowHandle"]


@dataclass(frozen=True, kw_only=True)
class PendingActivity:
    seq: int
    activity_type: str
    attempt: int
    retry_at: datetime | None
    last_heartbeat_at: datetime | None
    last_heartbeat_details: tuple[Any, ...]
    last_failure: Failure | None


@dataclass(frozen=True, kw_only=True)
class WorkflowDescription:
    """A run's status and what it is waiting on, derived from its history."""

    info: RunInfo
    pending_activities: list[PendingActivity]
    pending_timers: list[TimerInfo]
    last_task_failure: Failure | None
    failure: Failure | None
    cancel_reason: str | None = None
    """The reason of the run's first cancel request, if it had one."""
    failure_class: str | None = None
    """For a FAILED run, the class of its failure (``transient``, ``permanent``,
    ``resource_exhaustion``, ``timeout``, ``unknown``): see docs/operating.md."""

    @property
    def status(self) -> RunStatus:
        return self.info.status


class Client:
    """Entry point for starting and inspecting workflow runs on a store."""

    def __init__(
        self,
        store: Store,
        *,
        converter: PayloadConverter | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        workflows: Iterable[object] = (),
        config: PerduraConfig | None = None,
    ) -> None:
        self.store = store
        self.config = config if config is not None else PerduraConfig.from_env()
        """Defaults (``execution_timeout`` of runs started without one): docs/operating.md."""
        self.converter = converter or PayloadConverter()
        self.clock: Clock = clock or SystemClock()
        self._random = random.Random(seed)
        self._listeners: list[Any] = []
        self.registry = Registry(workflows)
        """Workflow code this client can replay to answer queries (``workflows=``)."""

    def add_listener(self, listener: Any) -> None:
        """Objects with ``notify(run_id=None)`` told when this client starts a run (workers);
        those with ``run_created(run_id, started)`` also get each new run's first event."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def start_workflow(
        self,
        workflow: object,
        *args: Any,
        id: str,
        task_queue: str = "default",
        execution_timeout: float | timedelta | None = None,
        run_timeout: float | timedelta | None = None,
    ) -> WorkflowHandle:
        """Record a new run of ``workflow``; a worker polling ``task_queue`` will run it.

        ``execution_timeout`` bounds the whole execution, across continue-as-new;
        ``run_timeout`` bounds each run (seconds or ``timedelta``). Past either, the run
        ends TIMED_OUT.

        Raises ``WorkflowAlreadyRunningError`` when ``id`` has an open run, and
        ``PayloadEncodeError`` naming the argument that cannot be encoded; either way
        nothing is written.
        """
        if not id:
            raise ValueError("workflow id must be a non-empty string")
        run_timeout = _timeout_seconds(run_timeout, "run_timeout")
        execution_timeout = _timeout_seconds(execution_timeout, "execution_timeout")
        if execution_timeout is None:
            execution_timeout = self.config.execution_timeout
        if isinstance(workflow, str):
            name, names = workflow, [f"argument {i + 1}" for i in range(len(args))]
            result_type: Any = None
        else:
            definition = workflow_definition(workflow)
            name = definition.name
            if len(args) > len(definition.param_names):
                raise TypeError(
                    f"workflow {name!r} takes {len(definition.param_names)} argument(s), "
                    f"{len(args)} given"
                )
            names = [f"argument {n!r} of workflow {name!r}" for n in definition.param_names]
            result_type = definition.return_type
        payloads = self.converter.encode_all(args, names[: len(args)])
        now = self.clock.now()
        run_id = self.new_run_id()
        started = WorkflowStarted(
            timestamp=to_datetime(now),
            workflow_type=name,
            workflow_id=id,
            task_queue=task_queue,
            args=payloads,
            seed=self._random.getrandbits(63),
            run_timeout=run_timeout,
            execution_deadline=(
                None if execution_timeout is None else to_datetime(now + execution_timeout)
            ),
        )
        await self.store.create_run(run_id, started, now=now)
        self._announce_created(run_id, msgspec.structs.replace(started, event_id=1))
        self.notify_listeners()
        return WorkflowHandle(self, id, run_id, result_type=result_type)

    async def execute_workflow(
        self,
        workflow: object,
        *args: Any,
        id: str,
        task_queue: str = "default",
        result_type: Any = None,
    ) -> Any:
        handle = await self.start_workflow(workflow, *args, id=id, task_queue=task_queue)
        if result_type is None and not isinstance(workflow, str):
            result_type = workflow_definition(workflow).return_type
        return await handle.result(result_type=result_type)

    async def signal_with_start(
        self,
        workflow: object,
        *args: Any,
        id: str,
        task_queue: str = "default",
        signal: str,
        signal_args: Sequence[Any] = (),
    ) -> WorkflowHandle:
        """Deliver ``signal`` to the open run of ``id``, starting that run first if there is
        none. Either way the signal is recorded exactly once."""
        for _ in range(10):
            try:
                handle = await self.start_workflow(workflow, *args, id=id, task_queue=task_queue)
            except WorkflowAlreadyRunningError as exc:
                handle = WorkflowHandle(self, id, exc.run_id)
            try:
                await handle.signal(signal, *signal_args)
            except RunClosedError:
                continue  # it closed between our look and our signal: start a new run
            return handle
        raise PerduraError(f"workflow {id!r} kept closing while signal {signal!r} was sent")

    async def append_external(self, run_id: str, event: Event) -> None:
        """Record an event from outside the run (a signal, a cancel request) and wake it."""
        [result] = await self.store.append(
            [AppendRequest(run_id=run_id, events=[event], now=self.clock.now(), wake=True)]
        )
        result.unwrap()
        self.notify_listeners(run_id)

    def _announce_created(self, run_id: str, started: WorkflowStarted) -> None:
        """Hand a new run's first event, as stored, to in-process workers that take
        ``run_created``: the one that claims the run need not read it back."""
        for listener in self._listeners:
            created = getattr(listener, "run_created", None)
            if created is not None:
                created(run_id, started)

    def notify_listeners(self, run_id: str | None = None) -> None:
        """Tell in-process workers that a run was started (``None``) or changed."""
        for listener in self._listeners:
            listener.notify(run_id)

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle:
        return WorkflowHandle(self, workflow_id, run_id)

    def new_run_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    async def import_history(
        self, data: bytes, *, workflow_id: str | None = None
    ) -> WorkflowHandle:
        """Store a history exported with :meth:`WorkflowHandle.export` (from this store or
        another) and return a handle on it.

        A closed run is stored exactly as exported, under its own run id, so that replaying
        it here is replaying the original. An open run gets a new run id and continues on
        whichever worker polls its task queue: its unfinished steps are left out of the copy
        and run again (see ``reset``). ``workflow_id`` stores it under another workflow id.
        Raises ``HistoryFileError`` for a file that is not an export, and
        ``RunAlreadyExistsError`` if the run is already in this store.
        """
        exported = load_history(data)
        events = exported.events
        started = events[0]
        assert isinstance(started, WorkflowStarted)
        now = self.clock.now()
        if type(events[-1]) in CLOSING_EVENTS:
            if workflow_id is not None:
                started = msgspec.structs.replace(started, workflow_id=workflow_id)
            info = await self.store.create_run(
                exported.run_id, started, now=now, history=events[1:]
            )
        else:
            origin = RunOrigin(kind="import", run_id=exported.run_id, event_id=len(events))
            copy = copy_prefix(events, len(events), origin, workflow_id=workflow_id)
            info = await self.store.create_run(
                self.new_run_id(), copy.started, now=now, history=copy.events
            )
            self.notify_listeners()
        return WorkflowHandle(self, info.workflow_id, info.run_id)

    async def list_runs(self, query: RunQuery | None = None) -> list[RunInfo]:
        return await self.store.list_runs(query or RunQuery())

    async def count_runs(self, query: RunQuery | None = None) -> int:
        return await self.store.count_runs(query or RunQuery())


class WorkflowHandle:
    """A workflow id (and optionally one run of it) to wait on and inspect."""

    def __init__(
        self, client: Client, workflow_id: str, run_id: str | None, *, result_type: Any = None
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.result_type = result_type
        """What :meth:`result` decodes to by default: the workflow's return annotation when
        the handle came from ``start_workflow``, else plain JSON-like values."""

    def __repr__(self) -> str:
        return f"WorkflowHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    async def run_info(self) -> RunInfo:
        store = self.client.store
        if self.run_id is not None:
            return await store.get_run(self.run_id)
        return await store.find_run(self.workflow_id)

    async def history(self) -> list[AnyEvent]:
        info = await self.run_info()
        return await self.client.store.read_history(info.run_id)

    async def result(self, *, result_type: Any = None) -> Any:
        """Wait for the run to close; return its result or raise ``WorkflowFailureError``.

        Bound the wait with ``asyncio.timeout()`` if needed; the run is unaffected.
        """
        store = self.client.store
        info = await self.run_info()
        while True:
            if not info.status.is_open:
                successor = await self._successor(info)
                if successor is None:
                    break
                info = successor  # follow the chain: the result is the last run's
                continue
            # The store wakes us when the run closes, here or in another process; the
            # bound only limits how long a missed wake-up could delay the result.
            closing = await store.wait_for_run(info.run_id, RESULT_RECHECK_SECONDS)
            if type(closing) in _FINAL_EVENTS:
                # Closed through this store object: the event is committed, and final.
                assert closing is not None
                return self._outcome(info, closing, result_type)
            info = await store.get_run(info.run_id)
        history = await store.read_history(info.run_id, after_event_id=info.history_length - 1)
        return self._outcome(info, history[-1], result_type)

    def _outcome(self, info: RunInfo, last: AnyEvent, result_type: Any) -> Any:
        """The result a run's closing event ``last`` gives, or the error it raises."""
        if result_type is None:
            result_type = self.result_type
        if isinstance(last, WorkflowCompleted):
            return self.client.converter.decode(
                last.result, Any if result_type is None else result_type, name="workflow result"
            )
        if isinstance(last, WorkflowFailed):
            error = WorkflowFailureError(info.workflow_id, info.run_id, last.failure)
            error.__cause__ = error_from_failure(last.failure)
            raise error
        if isinstance(last, WorkflowCancelled):
            raise WorkflowCancelledError(info.workflow_id, info.run_id, last.reason)
        if isinstance(last, WorkflowTimedOut):
            raise WorkflowTimedOutError(info.workflow_id, info.run_id, last.timeout_type)
        if isinstance(last, WorkflowTerminated):
            raise WorkflowTerminatedError(info.workflow_id, info.run_id, last.reason)
        raise PerduraError(
            f"workflow {info.workflow_id!r} (run {info.run_id}) closed as {info.status.value}"
        )

    async def signal(self, name: str, *args: Any) -> None:
        """Send signal ``name`` to the run; it is recorded in history before this returns.

        Raises ``RunClosedError`` if the run has already closed. On a handle whose run
        continued as new, the signal goes to the run that continues the chain.
        """
        info = await self.current_run()
        payloads = self.client.converter.encode_all(
            args, [f"argument {i + 1} of signal {name!r}" for i in range(len(args))]
        )
        await self.client.append_external(
            info.run_id,
            SignalReceived(
                timestamp=to_datetime(self.client.clock.now()), name=name, args=payloads
            ),
        )

    async def cancel(self, reason: str = "") -> None:
        """Ask the run to stop: its code sees ``CancelledError`` at its current await, may
        clean up (even run activities), and ends CANCELLED with ``reason``.

        Raises ``RunClosedError`` if the run has already closed. On a handle whose run
        continued as new, the run that continues the chain is cancelled.
        """
        info = await self.current_run()
        await self.client.append_external(
            info.run_id,
            CancelRequested(timestamp=to_datetime(self.client.clock.now()), reason=reason),
        )

    async def terminate(self, reason: str = "") -> None:
        """End the run now, without running any more of its code (TERMINATED). A parent
        waiting on it as a child learns it at once; its own open children get their
        parent-close policy. On a handle whose run continued as new, the run that continues
        the chain is terminated.

        Raises ``RunClosedError`` if the run has already closed.
        """
        store = self.client.store
        while True:
            info = await self.current_run()
            history = await store.read_history(info.run_id)
            now = self.client.clock.now()
            stamp = to_datetime(now)
            closing = WorkflowTerminated(timestamp=stamp, reason=reason)
            started = history[0]
            parent = []
            if isinstance(started, WorkflowStarted) and started.parent_run_id is not None:
                parent.append(
                    AppendRequest(
                        run_id=started.parent_run_id,
                        events=[child_outcome(started.parent_seq, closing, stamp)],
                        now=now,
                        wake=True,
                    )
                )
            if await self._close_from_outside(info, history, closing, now, linked=parent):
                return

    async def _close_from_outside(
        self,
        info: RunInfo,
        history: Sequence[AnyEvent],
        closing: Event,
        now: float,
        *,
        linked: Sequence[AppendRequest] = (),
        start_runs: Sequence[NewRun] = (),
    ) -> bool:
        """Append ``closing`` to the run, with its open children's parent-close policy (and
        ``linked``, ``start_runs``) in the same transaction, and tell in-process workers.

        Fenced on ``history``, just read, so no child started since escapes its policy:
        ``False`` if the history moved meanwhile (read it again and retry); raises what else
        refused the append (``RunClosedError`` …).
        """
        notices = [
            *linked,
            *parent_close_notices(info.workflow_id, open_children(history), to_datetime(now), now),
        ]
        [result] = await self.client.store.append(
            [
                AppendRequest(
                    run_id=info.run_id,
                    events=[closing],
                    now=now,
                    expected_next_event_id=len(history) + 1,
                    linked=notices,
                    start_runs=start_runs,
                )
            ]
        )
        if isinstance(result.error, AppendConflictError):
            return False
        result.unwrap()
        for run_id in [
            info.run_id,
            *(new.run_id for new in start_runs),
            *(notice.run_id for notice in notices),
        ]:
            self.client.notify_listeners(run_id)
        if start_runs:
            self.client.notify_listeners()
        return True

    async def current_run(self) -> RunInfo:
        """The run that signals, cancellation and termination act on: this handle's run, or
        the run continuing its chain if it continued as new or was reset."""
        info = await self.run_info()
        while (successor := await self._successor(info)) is not None:
            info = successor
        return info

    async def _successor(self, info: RunInfo) -> RunInfo | None:
        """The run that carries ``info``'s run on, if another does."""
        if not info.status.has_successor:
            return None
        store = self.client.store
        [last] = await store.read_history(info.run_id, after_event_id=info.history_length - 1)
        if not isinstance(last, WorkflowContinuedAsNew | WorkflowReset):
            return None
        return await store.get_run(last.new_run_id)

    async def query(self, name: str, *args: Any) -> Any:
        """Answer query ``name`` from the run's replayed state; writes nothing.

        Needs the workflow's code: create the client with ``workflows=[...]``.
        """
        info = await self.run_info()
        if info.workflow_type not in self.client.registry.workflows:
            raise QueryError(
                f"cannot answer queries of workflow type {info.workflow_type!r}: this client "
                "was not given its code (pass workflows=[...] to the client)"
            )
        history = await self.client.store.read_history(info.run_id)
        return answer_query(
            self.client.registry,
            history,
            name,
            args,
            run_id=info.run_id,
            converter=self.client.converter,
        )

    async def export(self) -> bytes:
        """The run's history as an export file's bytes (JSON), for ``import_history`` or
        ``perdura replay`` elsewhere."""
        info = await self.run_info()
        return dump_history(info.run_id, await self.client.store.read_history(info.run_id))

    async def recover(self, reason: str = "") -> WorkflowHandle:
        """Make a stuck or failed run move again; returns a handle on the run that moves.

        A RUNNING run is taken from the worker holding it (gone, or stuck) and handed to the
        next worker that polls, at once instead of at lease expiry; the old holder's fencing
        token no longer works. A FAILED run is resumed by a new run of the same workflow id
        whose history copies the failed one up to just before its failing step (see
        ``recovery_cut``): every earlier step's result is kept, the failing step runs again
        with a fresh retry budget, and the new ``WorkflowStarted`` records where it came from.
        """
        store = self.client.store
        info = await self.run_info()
        now = self.client.clock.now()
        if info.status.is_open:
            await store.reschedule_run(info.run_id, now=now)
            self.client.notify_listeners(info.run_id)
            return WorkflowHandle(
                self.client, info.workflow_id, info.run_id, result_type=self.result_type
            )
        if info.status is not RunStatus.FAILED:
            raise TimeTravelError(
                f"run {info.run_id} of workflow {info.workflow_id!r} is {info.status.value}: "
                "only running or failed runs can be recovered (reset goes back to any event)"
            )
        history = await store.read_history(info.run_id)
        cut = recovery_cut(history)
        origin = RunOrigin(
            kind="recover",
            run_id=info.run_id,
            event_id=cut,
            reason=reason,
            failure_class=failure_class_at(history, cut),
        )
        return await self._start_copy(copy_prefix(history, cut, origin), now)

    async def reset(self, to_event_id: int, reason: str = "") -> WorkflowHandle:
        """Start the workflow again from event ``to_event_id`` of this run: a new run of the
        same workflow id copies the history up to that event (unfinished steps left out, so
        they run again) and carries on with the current code.

        An open run is closed in the same transaction with ``WorkflowReset`` naming its
        successor (its open children get their parent-close policy, and a parent waiting on
        it waits on the successor). A closed run stays as it is.
        """
        store = self.client.store
        while True:
            info = await self.run_info()
            history = await store.read_history(info.run_id)
            now = self.client.clock.now()
            origin = RunOrigin(
                kind="reset", run_id=info.run_id, event_id=to_event_id, reason=reason
            )
            copy = copy_prefix(history, to_event_id, origin, keep_parent=info.status.is_open)
            if not info.status.is_open:
                return await self._start_copy(copy, now)
            new_run_id = self.client.new_run_id()
            closing = WorkflowReset(
                timestamp=to_datetime(now),
                new_run_id=new_run_id,
                to_event_id=to_event_id,
                reason=reason,
            )
            successor = NewRun(run_id=new_run_id, started=copy.started, history=copy.events)
            if await self._close_from_outside(info, history, closing, now, start_runs=[successor]):
                return WorkflowHandle(
                    self.client, info.workflow_id, new_run_id, result_type=self.result_type
                )

    async def fork(
        self, at_event_id: int, new_workflow_id: str, reason: str = ""
    ) -> WorkflowHandle:
        """Start a new workflow ``new_workflow_id`` from a copy of this run's history up to
        event ``at_event_id``; this run is not touched, whatever its status."""
        if not new_workflow_id:
            raise ValueError("the forked workflow needs a non-empty workflow id")
        info = await self.run_info()
        history = await self.client.store.read_history(info.run_id)
        origin = RunOrigin(kind="fork", run_id=info.run_id, event_id=at_event_id, reason=reason)
        copy = copy_prefix(history, at_event_id, origin, workflow_id=new_workflow_id)
        return await self._start_copy(copy, self.client.clock.now())

    async def _start_copy(self, copy: CopiedHistory, now: float) -> WorkflowHandle:
        run_id = self.client.new_run_id()
        info = await self.client.store.create_run(
            run_id, copy.started, now=now, history=copy.events
        )
        self.client.notify_listeners()
        return WorkflowHandle(self.client, info.workflow_id, run_id, result_type=self.result_type)

    async def describe(self) -> WorkflowDescription:
        info = await self.run_info()
        store = self.client.store
        history = await store.read_history(info.run_id)
        converter = self.client.converter
        return describe_history(info, history, await store.pending_timers(info.run_id), converter)


def _timeout_seconds(value: float | timedelta | None, name: str) -> float | None:
    """A timeout as the seconds history records, or a clear error before anything is written."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{name} must be seconds or a timedelta, got {value!r}")
    if result < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return result


def describe_history(
    info: RunInfo,
    history: Sequence[AnyEvent],
    timers: list[TimerInfo],
    converter: PayloadConverter,
) -> WorkflowDescription:
    """Pending activities, last failures and the outcome, read off a history."""
    pending: dict[int, dict[str, Any]] = {}
    last_task_failure: Failure | None = None
    failure: Failure | None = None
    cancel_reason: str | None = None
    for event in history:
        if isinstance(event, ActivityScheduled):
            pending[event.seq] = {
                "seq": event.seq,
                "activity_type": event.activity_type,
                "attempt": 1,
                "retry_at": None,
                "last_heartbeat_at": None,
                "last_heartbeat_details": (),
                "last_failure": None,
            }
        elif isinstance(event, ActivityHeartbeat) and event.seq in pending:
            entry = pending[event.seq]
            entry["attempt"] = event.attempt
            entry["last_heartbeat_at"] = event.timestamp
            entry["last_heartbeat_details"] = tuple(
                converter.decode(p, name="heartbeat detail") for p in event.details
            )
        elif isinstance(event, ActivityFailed | ActivityTimedOut) and event.seq in pending:
            if event.retry_at is None:
                del pending[event.seq]
            else:
                entry = pending[event.seq]
                entry["attempt"] = event.attempt + 1
                entry["retry_at"] = event.retry_at
                if isinstance(event, ActivityFailed):
                    entry["last_failure"] = event.failure
        elif isinstance(event, WorkflowTaskFailed):
            last_task_failure = event.failure
        elif isinstance(event, WorkflowFailed):
            failure = event.failure
        elif isinstance(event, CancelRequested) and cancel_reason is None:
            cancel_reason = event.reason
        elif isinstance(event, ActivityCompleted | ActivityCancelled):
            pending.pop(event.seq, None)
    if not info.status.is_open:
        pending.clear()
    return WorkflowDescription(
        info=info,
        pending_activities=[PendingActivity(**entry) for entry in pending.values()],
        pending_timers=timers,
        last_task_failure=last_task_failure,
        failure=failure,
        cancel_reason=cancel_reason,
        failure_class=None if failure is None else _failure_class(history),
    )


def _failure_class(history: Sequence[AnyEvent]) -> str | None:
    found = run_failure_class(history)
    return None if found is None else found.value
