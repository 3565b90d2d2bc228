"""The run driver: one claimed run, driven from its history to its next resting point.

The driver is the only writer of an owned run's history. Its loop is:

1. bring the instance up to date (cached instance + new events, or a full replay);
2. turn the instance's unrecorded state into events: timers started or cancelled, timers due,
   activity outcomes and heartbeats reported by local attempts, the workflow's completion;
3. append them — fenced by the expected next event id and the lease's fencing token — and only
   after the commit feed them back to the instance (a result is durable before the code sees
   it); on a conflict, read what the other writer appended and try again;
4. start due activity attempts on this worker (eager execution: no round trip through a task
   table, and an activity's scheduling is recorded together with its outcome, one commit);
5. when nothing runs here and nothing is due within ``keep_alive``, release the run with the
   time it next needs a worker, in a fenced append so no wake-up slips through.

Whatever crashes between those steps, the history holds a prefix of what happened; the next
owner replays it, and every activity without a recorded outcome runs again (at-least-once).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog

from history import (
    ActivityCancelled,
    ActivityHeartbeat,
    ActivityTaskSpec,
    ActivityTimedOut,
    AnyEvent,
    AppendConflictError,
    AppendRequest,
    AppendResult,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Event,
    Failure,
    LeaseLostError,
    MarkerRecorded,
    NewRun,
    Payload,
    PayloadConverter,
    PerduraError,
    RunClaim,
    RunClosedError,
    Store,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowAlreadyRunningError,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTimedOut,
)

from ._activity import AttemptOutcome, attempt_info, outcome_event, run_attempt
from ._classify import DEFAULT_FAILURE_POLICY, FailurePolicy
from ._clock import Clock, to_datetime
from ._definitions import ActivityOptions, Registry
from ._errors import NondeterminismError
from ._failure import failure_from_exception
from ._faults import FaultPoint, Faults, InjectedCrash
from ._instance import ActivityCall, WorkflowInstance
from ._observe import AttemptScope, Observer, RunView, outcome_name
from ._outcomes import child_outcome, parent_close_notices
from ._remote import remote_task

__all__ = ["DriverEnv", "RunDriver"]

log = structlog.get_logger("perdura.driver")


@dataclass(eq=False, kw_only=True)
class DriverEnv:
    """What every driver of one worker shares."""

    store: Store
    registry: Registry
    converter: PayloadConverter
    clock: Clock
    identity: str
    task_queue: str
    keep_alive: float
    workflow_task_retry: float
    activity_slots: asyncio.Semaphore
    activity_defaults: ActivityOptions
    failure_types: tuple[type[BaseException], ...] = ()
    step_deadline: float | None = 2.0
    cache: dict[str, WorkflowInstance] = field(default_factory=dict)
    cache_size: int = 1000
    fresh: dict[str, WorkflowStarted] = field(default_factory=dict)
    """First events of runs a client in this process just created (``Worker.run_created``)."""
    on_closed: Callable[[str], None] | None = None
    faults: Faults | None = None
    rng: random.Random = field(default_factory=random.Random)
    """The worker's one source of randomness (run ids, seeds): seedable for tests."""
    notify: Callable[[str], None] = lambda run_id: None
    """Told about runs this worker started or woke (children, continuations, parents)."""
    failure_policy: FailurePolicy = DEFAULT_FAILURE_POLICY
    """How each failure class of an activity attempt is retried (``engine._classify``)."""
    observer: Observer | None = None
    """Logs, metrics, listeners and spans of what this worker records (``engine._observe``)."""

    def new_run_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def fault(self, point: FaultPoint) -> None:
        if self.faults is not None:
            self.faults.hit(point)

    def faults_crashed(self) -> InjectedCrash | None:
        return None if self.faults is None else self.faults.crashed

    def runs_locally(self, call: ActivityCall) -> bool:
        return call.task_queue == self.task_queue and call.activity_type in self.registry.activities

    def remember(self, instance: WorkflowInstance) -> None:
        cache = self.cache
        cache.pop(instance.run_id, None)
        cache[instance.run_id] = instance
        while len(cache) > self.cache_size:
            cache.pop(next(iter(cache)))


@dataclass(eq=False)
class _Batch:
    """Events for one append, and which queued outcomes and heartbeats they consume.

    A batch is made once per step, most often with nothing but events and one outcome in
    it: the other parts stay shared empty tuples until something is added (``add_*``)."""

    __slots__ = ("events", "heartbeats", "linked", "outcomes", "start_runs", "tasks")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.tasks: Sequence[ActivityTaskSpec] = ()
        self.start_runs: Sequence[NewRun] = ()
        self.linked: Sequence[AppendRequest] = ()
        self.outcomes: Sequence[tuple[int, int, AttemptOutcome]] = ()
        self.heartbeats: Sequence[tuple[int, tuple[int, tuple[Any, ...]]]] = ()

    def add_task(self, task: ActivityTaskSpec) -> None:
        self.tasks = [*self.tasks, task]

    def add_start_run(self, new: NewRun) -> None:
        self.start_runs = [*self.start_runs, new]

    def add_linked(self, notices: Sequence[AppendRequest]) -> None:
        self.linked = [*self.linked, *notices]

    def add_heartbeat(self, entry: tuple[int, tuple[int, tuple[Any, ...]]]) -> None:
        self.heartbeats = [*self.heartbeats, entry]


_NOTHING = _Batch()
"""What ``_collect`` returns when there is nothing to record (never added to)."""

_NONE, _OUTCOMES_ONLY, _ANYTHING = range(3)
"""What ``RunDriver._to_collect`` finds."""


def _schedule_once(
    scheduled: set[int], events: list[Event], stamp: datetime, call: ActivityCall
) -> None:
    """Add ``call``'s ``ActivityScheduled`` to ``events``, unless it is recorded already or
    ``scheduled`` (the seqs this batch schedules) has it."""
    if not call.recorded and call.seq not in scheduled:
        scheduled.add(call.seq)
        events.append(call.scheduled_event(stamp))


class _Lost(Exception):
    """The run is no longer ours (lease lost, or closed by someone else): stop quietly."""


class RunDriver:
    def __init__(self, env: DriverEnv, claim: RunClaim) -> None:
        self.env = env
        self.run_id = claim.run_id
        self.workflow_type = claim.workflow_type
        self.fence = claim.fence
        self.claimed_length = claim.history_length
        self.instance: WorkflowInstance | None = None
        self.history_length = 0
        self.last_event: AnyEvent | None = None
        self.wakeup = asyncio.Event()
        self.lost = False
        self.local: dict[int, asyncio.Task[None]] = {}
        self.outcomes: list[tuple[int, int, AttemptOutcome]] = []
        self.heartbeats: dict[int, tuple[int, tuple[Any, ...]]] = {}
        self.side_effects: dict[int, MarkerRecorded] = {}
        """Side effects already run, by seq: an append that conflicts must not run them again."""
        self.crash: InjectedCrash | None = None
        self.external = False
        self.waiting = False
        """True while the driver waits for a timer, a retry or an outcome (time skipping
        may advance the clock only when every driver is waiting and nothing runs)."""
        self.wait_deadline: float | None = None
        self.view: RunView | None = None
        self.loop = asyncio.get_running_loop()
        """The worker's loop, where this run's attempts run (a driver is made on it)."""

    @functools.cached_property
    def log(self) -> Any:
        """This run's logger, bound on first use: binding one took as long as a step, and
        most runs never log from the driver."""
        return log.bind(run_id=self.run_id)

    # -- entry point -----------------------------------------------------------------------

    async def run(self) -> None:
        released = False
        try:
            if not await self._load():
                released = True
                return
            released = await self._drive()
        except _Lost:
            released = True
            self.env.cache.pop(self.run_id, None)
        finally:
            for task in self.local.values():
                task.cancel()
            if not released and not self.lost and self.env.faults_crashed() is None:
                # Shutting down (or an unexpected error): hand the run over at once.
                self.env.cache.pop(self.run_id, None)
                await asyncio.shield(self._release_quietly())

    def mark_lost(self) -> None:
        self.lost = True
        self.wakeup.set()

    def notify(self) -> None:
        """Something external was appended to this run: catch up soon."""
        self.external = True
        self.wakeup.set()

    # -- loading ---------------------------------------------------------------------------

    async def _load(self) -> bool:
        env = self.env
        cached = env.cache.pop(self.run_id, None)
        if cached is not None and cached.last_event_id <= self.claimed_length:
            self.instance = cached
            self.history_length = cached.last_event_id
            self.last_event = None
            if env.observer is not None:
                env.observer.loaded(self._view(), cached=True)
            return await self._catch_up()
        loading = time.perf_counter()
        fresh = env.fresh.pop(self.run_id, None)
        if fresh is not None and self.claimed_length == 1:
            # Created by this process, and nothing appended by the claim: no read needed.
            # (Something appended since makes the first append conflict, and catch up.)
            events: list[AnyEvent] = [fresh]
        else:
            events = await env.store.read_history(self.run_id)
        if not events or not isinstance(events[0], WorkflowStarted):
            raise PerduraError(f"run {self.run_id}: history does not start with WorkflowStarted")
        started = events[0]
        self.history_length = len(events)
        self.last_event = events[-1]
        try:
            definition = env.registry.workflow(started.workflow_type)
        except PerduraError as exc:
            await self._fail_task(exc)
            return False
        instance = WorkflowInstance(
            definition,
            self.run_id,
            started,
            env.converter,
            activity_defaults=env.activity_defaults,
            failure_types=env.failure_types,
            step_deadline=env.step_deadline,
        )
        instance.replaying_until = len(events)
        instance.look_ahead(events)
        self.instance = instance
        fed = await self._feed(events)
        if env.observer is not None:
            env.observer.loaded(
                self._view(), cached=False, replay_seconds=time.perf_counter() - loading
            )
        return fed

    def _view(self) -> RunView:
        """The run as the observer labels it (ids, type, queue, activity types)."""
        if self.view is None:
            instance = self.instance
            assert instance is not None
            activities = instance.activities
            self.view = RunView(
                workflow_id=instance.workflow_id,
                run_id=self.run_id,
                workflow_type=instance.workflow_type,
                task_queue=instance.started.task_queue,
                started_at=instance.started.timestamp,
                activity_type=lambda seq: activities[seq].activity_type,
                origin=instance.started.origin,
            )
        return self.view

    async def _catch_up(self) -> bool:
        events = await self.env.store.read_history(self.run_id, after_event_id=self.history_length)
        if events:
            self.history_length = events[-1].event_id
            self.last_event = events[-1]
            assert self.instance is not None
            self.instance.replaying_until = self.history_length
            self.instance.look_ahead(events)
        return await self._feed(events)

    async def _feed(self, events: list[AnyEvent] | tuple[AnyEvent, ...]) -> bool:
        """Feed ``events`` to the instance; False when its code cannot progress (the task
        failure is recorded)."""
        error = self._apply(events)
        if error is not None:
            await self._fail_task(error)
            return False
        return True

    def _apply(self, events: list[AnyEvent] | tuple[AnyEvent, ...]) -> BaseException | None:
        """Feed ``events``; the error that stops the code, if one does. (Synchronous: this
        runs once per step, and the failure path is the only one that awaits.)"""
        instance = self.instance
        assert instance is not None
        try:
            for event in events:
                if event.event_id > instance.last_event_id:
                    instance.apply(event)
                    if type(event) is ActivityTimedOut and event.next_start_to_close_timeout:
                        # The timeout policy raised the next attempt's timeout (recorded).
                        raised = instance.activities[event.seq]
                        raised.start_to_close_timeout = event.next_start_to_close_timeout
        except NondeterminismError as exc:
            return exc
        if instance.task_failure is not None:
            return instance.task_failure.error
        return None

    # -- the loop --------------------------------------------------------------------------

    async def _drive(self) -> bool:
        """Returns True once the run is closed or released."""
        env = self.env
        instance = self.instance
        assert instance is not None
        while True:
            if self.crash is not None:
                raise self.crash
            if self.lost:
                raise _Lost
            if self.external:
                self.external = False
                if not await self._catch_up():
                    return True
                continue
            if instance.closed:
                env.cache.pop(self.run_id, None)
                if env.on_closed is not None:
                    env.on_closed(self.run_id)
                return True
            now = env.clock.now()
            batch = self._collect(now)
            if batch.events:
                if not await self._append(batch):
                    return True
                continue
            self._start_due_attempts(now)
            next_due = self._next_due()
            if not self.local and (next_due is None or next_due - now > env.keep_alive):
                if await self._release(next_due):
                    env.remember(instance)
                    return True
                continue
            self.wakeup.clear()
            if self.outcomes or self.heartbeats:
                continue
            self.waiting = True
            self.wait_deadline = next_due
            try:
                await env.clock.wait(self.wakeup, next_due)
            finally:
                self.waiting = False

    def _to_collect(self, now: float) -> int:
        """What ``_collect`` would find: ``_NONE`` (the common case of the loop's pass after
        a step's append, with the next attempt not yet run), ``_OUTCOMES_ONLY`` (the common
        case of the pass after an attempt ended) or ``_ANYTHING``. Runs twice per step."""
        instance = self.instance
        assert instance is not None
        if (
            instance.open_timers
            or self.heartbeats
            or instance.open_markers
            or instance.unrecorded_patches
            or instance.open_children
            or (instance.completion is not None and not instance.completion_recorded)
        ):
            return _ANYTHING
        deadline = instance.deadline
        if deadline is not None and deadline[0].timestamp() <= now:
            return _ANYTHING
        runs_locally = self.env.runs_locally
        for call in instance.open_activities.values():
            if call.done:
                continue
            if not call.recorded and not runs_locally(call):
                return _ANYTHING  # to be scheduled on another queue
            if call.cancel_requested:
                return _ANYTHING  # to be recorded as cancelled
        return _OUTCOMES_ONLY if self.outcomes else _NONE

    def _collect(self, now: float) -> _Batch:
        instance = self.instance
        assert instance is not None
        pending = self._to_collect(now)
        if pending == _NONE:
            return _NOTHING
        if pending == _OUTCOMES_ONLY:
            return self._collect_outcomes(now)
        stamp = to_datetime(now)
        batch = _Batch()
        events = batch.events
        scheduled: set[int] = set()
        ensure_scheduled = functools.partial(_schedule_once, scheduled, events, stamp)

        if instance.open_timers:
            self._collect_timers(now, stamp, events)

        env = self.env
        for call in instance.open_activities.values():
            if not call.done and not call.recorded and not env.runs_locally(call):
                event = call.scheduled_event(stamp)
                scheduled.add(call.seq)
                events.append(event)
                batch.add_task(remote_task(instance, event, call.attempt, now))

        if self.heartbeats:
            self._collect_heartbeats(stamp, batch, ensure_scheduled)

        if self.outcomes:
            batch.outcomes = list(self.outcomes)
            self._add_outcomes(batch, stamp, ensure_scheduled)

        cancelled = [call for call in instance.open_activities.values() if call.cancel_requested]
        for call in cancelled:
            task = self.local.pop(call.seq, None)
            if task is not None:
                task.cancel()
            ensure_scheduled(call)
            events.append(ActivityCancelled(timestamp=stamp, seq=call.seq))

        for marker in list(instance.open_markers.values()):
            ran = self.side_effects.get(marker.seq)
            if ran is None:
                ran = self.side_effects[marker.seq] = self._run_side_effect(marker.seq, marker.fn)
            events.append(
                MarkerRecorded(
                    timestamp=stamp,
                    kind="side_effect",
                    seq=marker.seq,
                    value=ran.value,
                    failure=ran.failure,
                )
            )
        for patch_id in instance.unrecorded_patches:
            events.append(MarkerRecorded(timestamp=stamp, kind="patch", name=patch_id))

        for child in list(instance.open_children.values()):
            if child.recorded or child.done:
                continue
            if child.start_failure is not None:
                events.append(
                    ChildWorkflowFailed(
                        timestamp=stamp,
                        seq=child.seq,
                        status="start_failed",
                        failure=child.start_failure,
                    )
                )
                continue
            child_run_id = self.env.new_run_id()
            events.append(
                ChildWorkflowStarted(
                    timestamp=stamp,
                    seq=child.seq,
                    workflow_id=child.workflow_id,
                    run_id=child_run_id,
                    workflow_type=child.workflow_type,
                    task_queue=child.task_queue,
                    parent_close_policy=child.parent_close_policy,
                )
            )
            batch.add_start_run(
                NewRun(
                    run_id=child_run_id,
                    started=WorkflowStarted(
                        timestamp=stamp,
                        workflow_type=child.workflow_type,
                        workflow_id=child.workflow_id,
                        task_queue=child.task_queue,
                        args=child.args,
                        seed=self.env.rng.getrandbits(63),
                        run_timeout=child.run_timeout,
                        execution_deadline=(
                            None
                            if child.execution_timeout is None
                            else stamp + timedelta(seconds=child.execution_timeout)
                        ),
                        parent_run_id=self.run_id,
                        parent_seq=child.seq,
                    ),
                )
            )

        closing: Event | None = None
        deadline = instance.deadline
        completion = instance.completion
        if instance.completion_recorded:
            pass
        elif deadline is not None and deadline[0].timestamp() <= now:
            closing = WorkflowTimedOut(
                timestamp=stamp, timeout_type=deadline[1], deadline=deadline[0]
            )
        elif completion is not None:
            if completion.result is not None:
                closing = WorkflowCompleted(timestamp=stamp, result=completion.result)
            elif completion.cancelled is not None:
                closing = WorkflowCancelled(timestamp=stamp, reason=completion.cancelled)
            elif completion.continued is not None:
                closing = self._continue_as_new(completion.continued, stamp, batch)
            else:
                assert completion.failure is not None
                closing = WorkflowFailed(timestamp=stamp, failure=completion.failure)
        if closing is not None:
            events.append(closing)
            batch.add_linked(self._closing_notices(closing, stamp, now))
        return batch

    def _collect_outcomes(self, now: float) -> _Batch:
        """``_collect`` when the attempts' outcomes are all there is to record."""
        stamp = to_datetime(now)
        batch = _Batch()
        batch.outcomes = list(self.outcomes)
        self._add_outcomes(
            batch, stamp, functools.partial(_schedule_once, set(), batch.events, stamp)
        )
        return batch

    def _add_outcomes(
        self, batch: _Batch, stamp: datetime, ensure_scheduled: Callable[[ActivityCall], None]
    ) -> None:
        """The events of ``batch.outcomes`` (each activity's scheduling first, if unrecorded)."""
        instance = self.instance
        assert instance is not None
        env = self.env
        for seq, attempt, result in batch.outcomes:
            call = instance.activities[seq]
            if call.done or call.cancel_requested:
                continue
            ensure_scheduled(call)
            batch.events.append(
                outcome_event(call, attempt, result, env.converter, stamp, env.failure_policy)
            )

    def _collect_timers(self, now: float, stamp: datetime, events: list[Event]) -> None:
        instance = self.instance
        assert instance is not None
        for timer in list(instance.open_timers.values()):
            if not timer.recorded and not timer.cancel_requested:
                events.append(
                    TimerStarted(
                        timestamp=stamp,
                        seq=timer.seq,
                        fire_at=timer.fire_at,
                        duration=timer.duration,
                    )
                )
            elif (
                timer.recorded
                and timer.cancel_requested
                and not timer.cancel_recorded
                and not timer.fired
            ):
                events.append(TimerCancelled(timestamp=stamp, seq=timer.seq))
            elif timer.pending and timer.fire_at.timestamp() <= now:
                self.env.fault(FaultPoint.TIMER_FIRE)
                events.append(TimerFired(timestamp=stamp, seq=timer.seq))

    def _collect_heartbeats(
        self, stamp: datetime, batch: _Batch, ensure_scheduled: Callable[[ActivityCall], None]
    ) -> None:
        instance = self.instance
        assert instance is not None
        with_outcome = {seq for seq, _, _ in self.outcomes}
        for seq, entry in self.heartbeats.items():
            attempt, details = entry
            call = instance.activities[seq]
            if call.done or seq in with_outcome:
                continue
            try:
                payloads = self.env.converter.encode_all(
                    details, [f"heartbeat detail {i + 1}" for i in range(len(details))]
                )
            except PerduraError as exc:
                self.log.warning("heartbeat details dropped", seq=seq, error=str(exc))
                batch.add_heartbeat((seq, entry))
                continue
            ensure_scheduled(call)
            batch.events.append(
                ActivityHeartbeat(timestamp=stamp, seq=seq, attempt=attempt, details=payloads)
            )
            batch.add_heartbeat((seq, entry))

    def _continue_as_new(
        self, args: tuple[Payload, ...], stamp: datetime, batch: _Batch
    ) -> WorkflowContinuedAsNew:
        instance = self.instance
        assert instance is not None
        started = instance.started
        new_run_id = self.env.new_run_id()
        batch.add_start_run(
            NewRun(
                run_id=new_run_id,
                started=msgspec.structs.replace(
                    started,
                    event_id=0,
                    timestamp=stamp,
                    args=args,
                    seed=self.env.rng.getrandbits(63),
                    continued_from=self.run_id,
                    origin=None,
                ),
            )
        )
        return WorkflowContinuedAsNew(timestamp=stamp, new_run_id=new_run_id, args=args)

    def _closing_notices(self, closing: Event, stamp: datetime, now: float) -> list[AppendRequest]:
        """What the closing of this run tells others, in the same transaction: its parent
        gets the outcome, its open children get their parent-close policy applied."""
        instance = self.instance
        assert instance is not None
        notices: list[AppendRequest] = []
        started = instance.started
        if started.parent_run_id is not None and not isinstance(closing, WorkflowContinuedAsNew):
            notices.append(
                AppendRequest(
                    run_id=started.parent_run_id,
                    events=[child_outcome(started.parent_seq, closing, stamp)],
                    now=now,
                    wake=True,
                )
            )
        children = [
            (child.run_id, child.parent_close_policy)
            for child in instance.open_children.values()
            if child.recorded and not child.done and child.run_id is not None
        ]
        notices.extend(parent_close_notices(instance.workflow_id, children, stamp, now))
        return notices

    def _run_side_effect(self, seq: int, fn: Callable[[], Any]) -> MarkerRecorded:
        """Run a side effect's function once and keep what it gave (value or failure)."""
        converter = self.env.converter
        stamp = to_datetime(self.env.clock.now())
        try:
            value = converter.encode(fn(), name=f"value of side effect #{seq}")
        except Exception as exc:
            failure = failure_from_exception(exc, converter)
            return MarkerRecorded(timestamp=stamp, kind="side_effect", seq=seq, failure=failure)
        return MarkerRecorded(timestamp=stamp, kind="side_effect", seq=seq, value=value)

    async def _append(self, batch: _Batch) -> bool:
        """Append and feed; False when the run was given up (task failure)."""
        env = self.env
        request = AppendRequest(
            run_id=self.run_id,
            events=batch.events,
            now=env.clock.now(),
            expected_next_event_id=self.history_length + 1,
            fence=self.fence,
            activity_tasks=batch.tasks,
            start_runs=batch.start_runs,
            linked=batch.linked,
        )
        result = await self._store_append(request)
        error = result.error
        if error is not None:
            if isinstance(error, AppendConflictError):
                return await self._catch_up()
            if isinstance(error, WorkflowAlreadyRunningError):
                self._child_start_failed(error)
                return True
            if isinstance(error, LeaseLostError | RunClosedError):
                self.log.info("run taken over or closed elsewhere", reason=str(error))
                raise _Lost
            raise error
        # What this batch recorded is consumed; whatever arrived meanwhile stays queued.
        if batch.outcomes:
            # Outcomes are only ever added at the end: those that arrived meanwhile follow.
            del self.outcomes[: len(batch.outcomes)]
        for seq, entry in batch.heartbeats:
            # Only the details this batch recorded: newer ones that came in meanwhile (the
            # activity's latest checkpoint) must still be recorded.
            if self.heartbeats.get(seq) is entry:
                del self.heartbeats[seq]
        self.history_length = result.next_event_id - 1
        self.last_event = result.events[-1] if result.events else self.last_event
        if env.observer is not None:
            env.observer.appended(self._view(), result.events)
        for run_id in (new.run_id for new in batch.start_runs):
            env.notify(run_id)
        for notice in batch.linked:
            env.notify(notice.run_id)
        failure = self._apply(result.events)
        if failure is not None:
            await self._fail_task(failure)
            return False
        return True

    def _child_start_failed(self, error: WorkflowAlreadyRunningError) -> None:
        instance = self.instance
        assert instance is not None
        # The last one: of two children started with one id in one step, the first wins.
        for child in reversed(instance.open_children.values()):
            if not child.recorded and child.workflow_id == error.workflow_id:
                child.start_failure = Failure(
                    type="WorkflowAlreadyRunningError", message=str(error), non_retryable=True
                )
                return
        raise error

    async def _release(self, wake_at: float | None) -> bool:
        env = self.env
        env.fault(FaultPoint.RELEASE)
        result = await self._store_append(
            AppendRequest(
                run_id=self.run_id,
                events=[],
                now=env.clock.now(),
                expected_next_event_id=self.history_length + 1,
                fence=self.fence,
                release=True,
                wake_at=wake_at,
            )
        )
        error = result.error
        if isinstance(error, AppendConflictError):
            if not await self._catch_up():
                return True
            return False
        if isinstance(error, LeaseLostError | RunClosedError):
            raise _Lost
        if error is not None:
            raise error
        return True

    async def _store_append(self, request: AppendRequest) -> AppendResult:
        env = self.env
        if env.faults is not None:
            env.faults.hit(FaultPoint.BEFORE_APPEND)
        [result] = await env.store.append([request])
        if env.faults is not None:
            env.faults.hit(FaultPoint.AFTER_APPEND)
        return result

    async def _release_quietly(self) -> None:
        try:
            await self.env.store.append(
                [
                    AppendRequest(
                        run_id=self.run_id,
                        events=[],
                        now=self.env.clock.now(),
                        fence=self.fence,
                        release=True,
                        wake_at=self.env.clock.now(),
                    )
                ]
            )
        except Exception as exc:  # the lease will expire instead
            self.log.warning("could not release run on shutdown", error=str(exc))

    async def _fail_task(self, error: BaseException) -> None:
        """Workflow code cannot progress: record why (once per streak) and retry later."""
        env = self.env
        env.cache.pop(self.run_id, None)
        failure = failure_from_exception(error, env.converter)
        self.log.error(
            "workflow task failed; will retry",
            error=f"{failure.type}: {failure.message}",
            retry_in=env.workflow_task_retry,
        )
        last = self.last_event
        if last is None and self.history_length:
            history = await env.store.read_history(
                self.run_id, after_event_id=self.history_length - 1
            )
            last = history[-1] if history else None
        repeated = (
            isinstance(last, WorkflowTaskFailed)
            and last.failure.type == failure.type
            and last.failure.message == failure.message
        )
        events: list[Event] = []
        if not repeated:
            stamp = to_datetime(env.clock.now())
            events.append(WorkflowTaskFailed(timestamp=stamp, failure=failure))
        result = await self._store_append(
            AppendRequest(
                run_id=self.run_id,
                events=events,
                now=env.clock.now(),
                fence=self.fence,
                release=True,
                wake_at=env.clock.now() + env.workflow_task_retry,
            )
        )
        if result.error is not None and not isinstance(
            result.error, LeaseLostError | RunClosedError
        ):
            raise result.error
        if events and result.error is None and env.observer is not None:
            env.observer.task_failed(self.workflow_type)

    # -- activities ------------------------------------------------------------------------

    def _start_due_attempts(self, now: float) -> None:
        instance = self.instance
        assert instance is not None
        local, outcomes, runs_locally = self.local, self.outcomes, self.env.runs_locally
        for call in instance.open_activities.values():
            if call.done or call.seq in local or call.cancel_requested or not runs_locally(call):
                continue
            if call.retry_at is not None and call.retry_at.timestamp() > now:
                continue
            if outcomes and any(o[0] == call.seq for o in outcomes):
                continue
            local[call.seq] = self.loop.create_task(self._attempt(call, call.attempt))

    def _next_due(self) -> float | None:
        """When the driver must act next without being woken: the earliest pending timer,
        the run's deadline, or a local activity's retry time."""
        instance = self.instance
        assert instance is not None
        due = [t.fire_at.timestamp() for t in instance.open_timers.values() if t.pending]
        deadline = instance.deadline
        if deadline is not None:
            due.append(deadline[0].timestamp())
        for c in instance.open_activities.values():
            if (
                c.retry_at is not None
                and not c.done
                and c.seq not in self.local
                and self.env.runs_locally(c)
            ):
                due.append(c.retry_at.timestamp())
        return min(due) if due else None

    def _on_heartbeat(self, seq: int, attempt: int, details: tuple[Any, ...]) -> None:
        if self.local.get(seq) is not None:
            self.heartbeats[seq] = (attempt, details)
            self.wakeup.set()

    async def _attempt(self, call: ActivityCall, attempt: int) -> None:
        env = self.env
        instance = self.instance
        assert instance is not None
        try:
            definition = env.registry.activity(call.activity_type)
            now = env.clock.now()
            describe = functools.partial(
                attempt_info,
                call,
                attempt,
                now,
                call.heartbeat_details,
                instance.workflow_id,
                instance.workflow_type,
                self.run_id,
                env.converter,
            )
            on_heartbeat = functools.partial(self._on_heartbeat, call.seq, attempt)
            async with env.activity_slots:
                env.fault(FaultPoint.ACTIVITY_START)
                observed = (
                    nullcontext(AttemptScope())
                    if env.observer is None
                    else env.observer.attempt(
                        self._view(),
                        call.activity_type,
                        call.seq,
                        attempt,
                        call.retry_at if attempt > 1 else call.scheduled_at,
                    )
                )
                with observed as scope:
                    outcome = await run_attempt(
                        definition, call, describe, env.converter, on_heartbeat, now
                    )
                    scope.outcome, scope.failure = outcome_name(outcome, env.failure_policy)
                env.fault(FaultPoint.ACTIVITY_COMPLETE)
        except asyncio.CancelledError:
            raise
        except InjectedCrash as crash:  # the process "died" here: the driver must die too
            self.crash = crash
            self.wakeup.set()
            return
        except Exception as exc:  # a bug in our own bookkeeping must not hang the run
            outcome = AttemptOutcome(error=exc)
        finally:
            self.local.pop(call.seq, None)
        self.outcomes.append((call.seq, attempt, outcome))
        self.wakeup.set()
