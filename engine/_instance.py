"""A workflow instance: workflow code plus the state replay rebuilds, fed one event at a time.

The driver feeds every event of a run's history, in order, through :meth:`apply`; after each
one the deterministic loop runs until all workflow tasks are blocked. That is the whole replay
rule, and the original execution follows it too (events are fed only after they are durable),
so a recovered instance walks through exactly the states the original one did.

Commands are not a queue: the instance keeps one record per activity and per timer (keyed by
the ``seq`` the code gave it, in issue order) and the driver reads what is not yet recorded.
When a recorded event names a ``seq`` the code did not issue, or issued as something else,
the instance raises :class:`NondeterminismError` with both sides.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import sys
import threading
import typing
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog

from history import (
    ActivityCancelled,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Failure,
    MarkerRecorded,
    Payload,
    PayloadConverter,
    RetryPolicy,
    SignalReceived,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
    encode_event,
)

from . import _sandbox
from ._definitions import (
    ActivityDefinition,
    ActivityOptions,
    WorkflowDefinition,
    signature_types,
)
from ._errors import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    ChildWorkflowError,
    ContinueAsNew,
    NondeterminismError,
    NotInWorkflowError,
    SandboxViolationError,
)
from ._failure import error_from_failure, failure_from_exception
from ._loop import DurableTimerHandle, WorkflowEventLoop
from ._watchdog import WorkflowBlockedError, start_watch, stop_watch

__all__ = [
    "ActivityCall",
    "ChildCall",
    "Completion",
    "TaskFailure",
    "TimerCall",
    "WorkflowInstance",
    "current_instance",
    "in_workflow",
]

_state = threading.local()

HISTORY_WARN_EVENTS = 10_000
HISTORY_WARN_BYTES = 10 * 1024 * 1024
"""Past either, a run's history is long: a warning is logged (once per run) and
``workflow.info().continue_as_new_suggested`` turns true."""

log = structlog.get_logger("perdura.workflow")

DEFAULT_START_TO_CLOSE = 300.0
"""Applied when neither call, definition nor worker sets any activity timeout (seconds)."""


def _describe_argument(activity: str, param_names: Sequence[str] | None, index: int) -> str:
    """How an activity's argument is named in an error (only formatted for one)."""
    if param_names is not None and index < len(param_names):
        return f"argument {param_names[index]!r} of activity {activity!r}"
    return f"argument {index + 1} of activity {activity!r}"


def running_instance() -> WorkflowInstance | None:
    """The instance whose code is running on this thread, if any."""
    if isinstance(sys.exc_info()[1], GeneratorExit):
        # The garbage collector is closing the suspended code of an instance a worker let go
        # of, running its `finally` — maybe in the middle of another instance's step: its
        # commands must reach no instance (the run continues from its history elsewhere).
        raise GeneratorExit
    instance: WorkflowInstance | None = getattr(_state, "instance", None)
    return instance


def schedule_in_workflow(
    activity: ActivityDefinition[Any, Any], args: tuple[Any, ...], options: ActivityOptions
) -> asyncio.Future[Any] | None:
    """Schedule ``activity`` for the workflow code running on this thread; ``None`` when no
    workflow code is running here (the SDK then runs the activity directly). The sandbox
    watch is paused meanwhile: this is the runtime's own code, run once per step."""
    paused = _sandbox.pause()
    try:
        instance = running_instance()
        if instance is None:
            return None
        return instance.schedule_activity(activity, args, options)
    finally:
        _sandbox.resume(paused)


def current_instance(call: str) -> WorkflowInstance:
    """The instance whose code is running on this thread, or ``NotInWorkflowError``."""
    instance = running_instance()
    if instance is None:
        raise NotInWorkflowError(call)
    return instance


def in_workflow() -> bool:
    return getattr(_state, "instance", None) is not None


@dataclass(eq=False, slots=True)
class ActivityCall:
    """One activity the code scheduled, and where its execution stands."""

    seq: int
    activity_type: str
    args: tuple[Payload, ...]
    task_queue: str
    retry_policy: RetryPolicy
    start_to_close_timeout: float | None
    schedule_to_close_timeout: float | None
    heartbeat_timeout: float | None
    scheduled_at: datetime
    result_type: Any
    future: asyncio.Future[Any] | None
    recorded: bool = False
    attempt: int = 1
    retry_at: datetime | None = None
    heartbeat_details: tuple[Payload, ...] = ()
    done: bool = False

    @property
    def cancel_requested(self) -> bool:
        """The workflow stopped awaiting it (its future was cancelled) before it finished."""
        return not self.done and self.future is not None and self.future.cancelled()

    def release_future(self) -> asyncio.Future[Any] | None:
        """The future to resolve with the outcome, no longer kept: a finished call stays in
        its instance for the rest of the run, its resolved future need not (one object less
        per step for the garbage collector to traverse, and for a long run to hold)."""
        future, self.future = self.future, None
        return future

    def scheduled_event(self, timestamp: datetime) -> ActivityScheduled:
        return ActivityScheduled(
            timestamp=timestamp,
            seq=self.seq,
            activity_type=self.activity_type,
            task_queue=self.task_queue,
            args=self.args,
            retry_policy=self.retry_policy,
            start_to_close_timeout=self.start_to_close_timeout,
            schedule_to_close_timeout=self.schedule_to_close_timeout,
            heartbeat_timeout=self.heartbeat_timeout,
            scheduled_at=self.scheduled_at,
        )


@dataclass(eq=False)
class TimerCall:
    seq: int
    fire_at: datetime
    duration: float
    recorded: bool = False
    fired: bool = False
    cancel_requested: bool = False
    cancel_recorded: bool = False

    @property
    def pending(self) -> bool:
        """Recorded, and neither fired nor cancelled: the driver must fire it when due."""
        return self.recorded and not self.fired and not self.cancel_requested


@dataclass(frozen=True)
class Completion:
    """How the workflow code ended: ``result``, ``failure`` or ``cancelled`` (the reason)."""

    result: Payload | None = None
    failure: Failure | None = None
    cancelled: str | None = None
    continued: tuple[Payload, ...] | None = None
    """Arguments of the next run (continue-as-new)."""

    @property
    def kind(self) -> str:
        if self.result is not None:
            return "completed"
        if self.continued is not None:
            return "continued as new"
        return "cancelled" if self.cancelled is not None else "failed"


@dataclass(eq=False)
class ChildCall:
    """A child workflow the code started, and what is known of it."""

    seq: int
    workflow_type: str
    workflow_id: str
    task_queue: str
    args: tuple[Payload, ...]
    parent_close_policy: str
    run_timeout: float | None
    execution_timeout: float | None
    result_type: Any
    started: asyncio.Future[str]
    """Resolves with the child's run id once its start is recorded."""
    result: asyncio.Future[Any]
    recorded: bool = False
    done: bool = False
    start_failure: Failure | None = None
    run_id: str | None = None


@dataclass(eq=False)
class MarkerCall:
    """A side effect the code asked for: ``fn`` runs once, when the driver records it."""

    seq: int
    fn: Callable[[], Any]
    result_type: Any
    future: asyncio.Future[Any]
    recorded: bool = False


@dataclass(frozen=True)
class TaskFailure:
    """Workflow code hit a bug-class error (sandbox violation): retry the task, do not fail."""

    error: BaseException


@dataclass(eq=False)
class WorkflowInstance:
    definition: WorkflowDefinition
    run_id: str
    started: WorkflowStarted
    converter: PayloadConverter
    activity_defaults: ActivityOptions = field(default_factory=ActivityOptions)
    failure_types: tuple[type[BaseException], ...] = ()
    """Exceptions that fail the run when workflow code raises them, on top of the failure
    errors (``ApplicationError``, ``ActivityError``, ``ChildWorkflowError``). Any other
    exception is a bug: the workflow task is retried, so a fixed deploy can continue."""
    step_deadline: float | None = 2.0
    """Seconds a workflow step may hold the event loop before it is declared blocked."""
    sandboxed: bool = True
    """False only for a debug replay (``perdura replay``): the code then runs without the
    sandbox's guards, so that ``breakpoint()`` and a debugger can read files and the terminal.
    A worker always runs workflow code sandboxed."""

    def __post_init__(self) -> None:
        # The abstract I/O methods are deliberately absent: workflow code has no I/O.
        self.loop = WorkflowEventLoop(self)  # type: ignore[abstract]
        self.now: datetime = self.started.timestamp
        self.now_epoch: float = self.now.timestamp()
        self.last_event_id = 0
        self._sized_bytes = 0
        self._unsized: list[AnyEvent] = []
        """Events fed but not yet measured: measuring re-encodes an event, which a replay
        would pay for every event although the code rarely asks (see ``history_size``)."""
        self.history_warned = False
        self.replaying_until = 0
        """Event id of the newest event known to be in history when the instance was loaded;
        while ``last_event_id`` is below it the instance is replaying (logs stay silent)."""
        self.activities: dict[int, ActivityCall] = {}
        self.timers: dict[int, TimerCall] = {}
        # Indexes of what still needs the driver, so its per-step work does not grow with
        # the length of the history.
        self.open_activities: dict[int, ActivityCall] = {}
        self.open_timers: dict[int, TimerCall] = {}
        self._resolved_options: dict[int, ActivityOptions] = {}
        self.timer_handles: dict[int, DurableTimerHandle] = {}
        self.completion: Completion | None = None
        self.completion_recorded = False
        self.task_failure: TaskFailure | None = None
        self._next_activity_seq = 1
        self._next_timer_seq = 1
        self._next_marker_seq = 1
        self._next_child_seq = 1
        self.children: dict[int, ChildCall] = {}
        self.open_children: dict[int, ChildCall] = {}
        self.workflow_object: Any = None
        """The instance of a class-based workflow (signal and query handlers live on it)."""
        self.conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.cancel_reason: str | None = None
        self.markers: dict[int, MarkerCall] = {}
        self.open_markers: dict[int, MarkerCall] = {}
        self.patches_in_history: set[str] = set()
        """Patch ids anywhere in the history loaded for replay (lookahead for patched())."""
        self.code_horizon = 0
        """Id of the newest loaded event the code's own commands produced (not a signal, a
        cancel request or a task failure): before it the code already ran, so patched() must
        say what it said then; from it on the code runs for the first time."""
        self.patch_decisions: dict[str, bool] = {}
        """patched(id) is decided once per run, at its first call (as in Temporal)."""
        self.patches: set[str] = set()
        """Patch ids the code asked about and got True for (recorded or to be recorded)."""
        self.unrecorded_patches: list[str] = []
        self.deprecated_patches: set[str] = set()
        self._main: asyncio.Task[Any] | None = None

    @property
    def workflow_type(self) -> str:
        return self.definition.name

    @property
    def workflow_id(self) -> str:
        return self.started.workflow_id

    @property
    def history_size(self) -> int:
        """Bytes of the history fed so far, as stored (``workflow.info().history_size``)."""
        if self._unsized:
            self._sized_bytes += sum(len(encode_event(e)) for e in self._unsized)
            self._unsized.clear()
        return self._sized_bytes

    @property
    def continue_as_new_suggested(self) -> bool:
        """The history passed :data:`HISTORY_WARN_EVENTS` events or
        :data:`HISTORY_WARN_BYTES` bytes."""
        return self.last_event_id >= HISTORY_WARN_EVENTS or self.history_size >= HISTORY_WARN_BYTES

    @functools.cached_property
    def random(self) -> random.Random:
        """The run's seeded generator (``workflow.random()``), made on first use: seeding
        one costs 3.6 µs and most workflows never ask. Its sequence depends on the seed
        alone, so when it is made changes nothing."""
        with _sandbox.unrestricted():  # runtime code, even when workflow code first asks
            return random.Random(self.started.seed)

    @property
    def is_replaying(self) -> bool:
        return self.last_event_id < self.replaying_until

    @property
    def closed(self) -> bool:
        return self.completion_recorded

    # -- feeding history -------------------------------------------------------------------

    def apply(self, event: AnyEvent) -> None:
        """Feed the next event of history, then run workflow code until it blocks."""
        if event.event_id != self.last_event_id + 1:
            raise RuntimeError(
                f"run {self.run_id}: event {event.event_id} fed after {self.last_event_id}"
            )
        self.last_event_id = event.event_id
        self._unsized.append(event)
        # Checked live only. The size in bytes costs an encoding of every event, so it is
        # measured every 64th event: the warning can wait that long.
        long_by_count = self.last_event_id >= HISTORY_WARN_EVENTS
        if (
            not self.history_warned
            and (long_by_count or not self.last_event_id % 64)
            and not self.is_replaying
            and (long_by_count or self.history_size >= HISTORY_WARN_BYTES)
        ):
            self.history_warned = True
            log.warning(
                "workflow history is long; continue as new to keep it short",
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                events=self.last_event_id,
                bytes=self.history_size,
            )
        if event.timestamp > self.now:
            self.now = event.timestamp
            self.now_epoch = event.timestamp.timestamp()
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        if self.loop.has_ready():
            self._step()

    def _step(self) -> None:
        _state.instance = self
        loop = self.loop
        watch = start_watch(self.step_deadline)
        try:
            running = loop.activate()
            try:
                try:
                    token = (
                        _sandbox.enter(watch_c_calls=not self.is_replaying)
                        if self.sandboxed
                        else None
                    )
                    try:
                        loop.run_ready()
                        # A satisfied wait_condition resumes code that may satisfy another one.
                        while self.conditions and self._release_conditions():
                            loop.run_ready()
                    finally:
                        if token is not None:
                            _sandbox.leave(token)
                finally:
                    # Inside the handler below: an interruption lands here at the latest.
                    stop_watch(watch)
            finally:
                loop.deactivate(running)
        except WorkflowBlockedError:
            if watch is None or watch.error is None:
                raise
        finally:
            _state.instance = None
        if watch is not None and watch.error is not None:
            self.task_failure = TaskFailure(watch.error)

    def _release_conditions(self) -> bool:
        released = False
        for entry in list(self.conditions):
            predicate, future = entry
            if future.done():
                self.conditions.remove(entry)
            elif predicate():
                self.conditions.remove(entry)
                future.set_result(None)
                released = True
        return released

    def _on_started(self, event: WorkflowStarted) -> None:
        if event.event_id != 1:
            self._mismatch(event, "WorkflowStarted as the first event only", "a second start")
        definition = self.definition
        try:
            args = [
                self.converter.decode(p, t, name=f"argument {n!r} of workflow {definition.name!r}")
                for p, t, n in zip(
                    event.args, definition.param_types, definition.param_names, strict=False
                )
            ]
        except Exception as exc:  # bad input: fail the run, visibly, with the reason
            self.completion = Completion(failure=failure_from_exception(exc, self.converter))
            return
        main: Coroutine[Any, Any, Any]
        if definition.cls is None and inspect.iscoroutinefunction(definition.run_fn):
            # Calling an ``async def`` runs none of its code: the task can run it directly,
            # without a wrapper whose frame is resumed (and watched by the sandbox) every step.
            main = definition.run_fn(*args)
        else:
            main = self._run_main(definition, args)
        self._main = self.loop.create_task(main, name=f"workflow {definition.name}")
        self._main.add_done_callback(self._on_main_done)

    async def _run_main(self, definition: WorkflowDefinition, args: list[Any]) -> Any:
        if definition.cls is None:
            return await definition.run_fn(*args)
        self.workflow_object = definition.cls()
        return await definition.run_fn(self.workflow_object, *args)

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        # Encoding the result and formatting a traceback read source files: runtime work.
        with _sandbox.unrestricted():
            self._complete(task)

    def _complete(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.completion = Completion(cancelled=self.cancel_reason or "")
            return
        exc = task.exception()
        if isinstance(exc, ContinueAsNew):
            try:
                payloads = self.converter.encode_all(
                    exc.args_for_next_run,
                    [
                        f"argument {i + 1} of continue_as_new"
                        for i in range(len(exc.args_for_next_run))
                    ],
                )
            except Exception as err:
                self.completion = Completion(failure=failure_from_exception(err, self.converter))
                return
            self.completion = Completion(continued=payloads)
            return
        if exc is None:
            try:
                payload = self.converter.encode(
                    task.result(), name=f"result of workflow {self.workflow_type!r}"
                )
            except Exception as err:
                self.completion = Completion(failure=failure_from_exception(err, self.converter))
                return
            self.completion = Completion(result=payload)
        elif _is_bug(exc) or not isinstance(exc, _FAILURE_ERRORS + self.failure_types):
            self.task_failure = TaskFailure(exc)
        else:
            self.completion = Completion(failure=failure_from_exception(exc, self.converter))

    def _on_completed(
        self,
        event: WorkflowCompleted | WorkflowFailed | WorkflowCancelled | WorkflowContinuedAsNew,
    ) -> None:
        produced = self.completion
        kind = {
            WorkflowCompleted: "completed",
            WorkflowFailed: "failed",
            WorkflowCancelled: "cancelled",
            WorkflowContinuedAsNew: "continued as new",
        }[type(event)]
        if produced is None:
            self._mismatch(event, f"the workflow {kind}", "the workflow had not finished")
        elif produced.kind != kind:
            self._mismatch(event, f"the workflow {kind}", f"the workflow {produced.kind}")
        self.completion_recorded = True

    def _on_closed_from_outside(
        self, event: WorkflowTimedOut | WorkflowTerminated | WorkflowReset
    ) -> None:
        """Timeouts, terminations and resets are decided by time or by an operator, not by
        the code: nothing to match, the run simply ends here."""
        self.completion_recorded = True

    def _on_child_started(self, event: ChildWorkflowStarted) -> None:
        child = self.children.get(event.seq)
        recorded = f"child workflow {event.workflow_type!r} started as child #{event.seq}"
        if child is None:
            self._mismatch(event, recorded, f"no child #{event.seq} was started")
        assert child is not None
        if child.workflow_type != event.workflow_type:
            self._mismatch(event, recorded, f"child #{event.seq} is {child.workflow_type!r}")
        child.recorded = True
        child.run_id = event.run_id
        child.workflow_id = event.workflow_id
        if not child.started.done():
            child.started.set_result(event.run_id)

    def _child(self, event: AnyEvent, seq: int) -> ChildCall:
        child = self.children.get(seq)
        if child is None:
            self._mismatch(event, f"an outcome of child #{seq}", f"no child #{seq} exists")
        assert child is not None
        return child

    def _on_child_completed(self, event: ChildWorkflowCompleted) -> None:
        child = self._child(event, event.seq)
        child.done = True
        self.open_children.pop(child.seq, None)
        if not child.result.done():
            try:
                value = self.converter.decode(
                    event.result, child.result_type, name=f"result of child {child.workflow_id!r}"
                )
            except Exception as exc:
                child.result.set_exception(exc)
            else:
                child.result.set_result(value)

    def _on_child_failed(self, event: ChildWorkflowFailed) -> None:
        child = self._child(event, event.seq)
        child.done = True
        self.open_children.pop(child.seq, None)
        error = ChildWorkflowError(child.workflow_id, event.status, event.failure)
        error.__cause__ = error_from_failure(event.failure)
        if not child.started.done():  # never started: whoever awaits the start learns why
            child.started.set_exception(error)
        if not child.result.done():
            child.result.set_exception(error)

    def _on_signal(self, event: SignalReceived) -> None:
        handler = self.definition.signals.get(event.name)
        if handler is None or self.workflow_object is None:
            # Recorded, so it stays in history; with no handler there is nothing to run.
            return
        names, types, _ = signature_types(handler, skip_self=True)
        try:
            args = [
                self.converter.decode(p, t, name=f"argument {n!r} of signal {event.name!r}")
                for p, t, n in zip(event.args, types, names, strict=False)
            ]
        except Exception as exc:
            self.task_failure = TaskFailure(exc)
            return
        obj = self.workflow_object
        if inspect.iscoroutinefunction(handler):
            self.loop.create_task(handler(obj, *args), name=f"signal {event.name}")
        else:
            self.loop.call_soon(handler, obj, *args)

    def _on_cancel_requested(self, event: CancelRequested) -> None:
        if self.cancel_reason is not None:
            return  # a second request changes nothing
        self.cancel_reason = event.reason
        if self._main is not None and not self._main.done():
            self._main.cancel(msg=event.reason or "cancelled")

    def _on_activity_cancelled(self, event: ActivityCancelled) -> None:
        call = self._activity(event, event.seq)
        if not call.cancel_requested:
            self._mismatch(
                event,
                f"activity #{event.seq} cancelled",
                f"the code did not cancel activity #{event.seq}",
            )
        call.done = True
        call.release_future()
        self.open_activities.pop(call.seq, None)

    def _on_marker(self, event: MarkerRecorded) -> None:
        if event.kind == "patch":
            if event.name not in self.patches and event.name not in self.deprecated_patches:
                self._mismatch(
                    event,
                    f"patch {event.name!r} recorded",
                    f"the code did not call workflow.patched({event.name!r}) here",
                )
            if event.name in self.unrecorded_patches:
                self.unrecorded_patches.remove(event.name)
            return
        marker = self.markers.get(event.seq)
        if marker is None:
            self._mismatch(
                event, f"side effect #{event.seq}", f"no side effect #{event.seq} was requested"
            )
        assert marker is not None
        marker.recorded = True
        self.open_markers.pop(marker.seq, None)
        if marker.future.done():
            return
        if event.failure is not None:
            marker.future.set_exception(error_from_failure(event.failure))
        elif event.value is not None:
            try:
                marker.future.set_result(
                    self.converter.decode(event.value, marker.result_type, name="side effect")
                )
            except Exception as exc:
                marker.future.set_exception(exc)

    def _on_activity_scheduled(self, event: ActivityScheduled) -> None:
        call = self.activities.get(event.seq)
        if (
            call is None
            or call.activity_type != event.activity_type
            or len(call.args) != len(event.args)
        ):
            self._activity_mismatch(event, call)
        assert call is not None
        if call.args != event.args:
            for index, (old, new) in enumerate(zip(event.args, call.args, strict=True)):
                if old == new:
                    continue
                old_shape, new_shape = _shape(old), _shape(new)
                if old_shape != new_shape:
                    recorded = (
                        f"activity {event.activity_type!r} scheduled as activity #{event.seq}"
                    )
                    self._mismatch(
                        event,
                        f"{recorded} with argument {index + 1} of type {old_shape}",
                        f"argument {index + 1} of type {new_shape}",
                    )
        call.recorded = True
        # The recorded options win: a retried attempt must honour what was scheduled.
        call.retry_policy = event.retry_policy
        call.start_to_close_timeout = event.start_to_close_timeout
        call.schedule_to_close_timeout = event.schedule_to_close_timeout
        call.heartbeat_timeout = event.heartbeat_timeout
        call.task_queue = event.task_queue
        if event.scheduled_at is not None:
            call.scheduled_at = event.scheduled_at

    def _activity_mismatch(self, event: ActivityScheduled, call: ActivityCall | None) -> None:
        recorded = f"activity {event.activity_type!r} scheduled as activity #{event.seq}"
        if call is None:
            self._mismatch(event, recorded, f"no activity #{event.seq} was scheduled")
        elif call.activity_type != event.activity_type:
            self._mismatch(event, recorded, f"activity #{event.seq} is {call.activity_type!r}")
        else:
            self._mismatch(
                event,
                f"{recorded} with {len(event.args)} argument(s)",
                f"activity {call.activity_type!r} called with {len(call.args)} argument(s)",
            )

    def _activity(self, event: AnyEvent, seq: int) -> ActivityCall:
        call = self.activities.get(seq)
        if call is None or not call.recorded:
            self._mismatch(
                event, f"an outcome of activity #{seq}", f"activity #{seq} was never scheduled"
            )
        assert call is not None
        return call

    def _on_activity_completed(self, event: ActivityCompleted) -> None:
        call = self._activity(event, event.seq)
        call.done = True
        call.attempt = event.attempt
        self.open_activities.pop(call.seq, None)
        future = call.release_future()
        if future is not None and not future.done():
            try:
                value = self.converter.decode(
                    event.result, call.result_type, name=f"result of {call.activity_type!r}"
                )
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)

    def _on_activity_failed(self, event: ActivityFailed | ActivityTimedOut) -> None:
        call = self._activity(event, event.seq)
        call.attempt = event.attempt
        if event.retry_at is not None:
            call.attempt = event.attempt + 1
            call.retry_at = event.retry_at
            return
        call.done = True
        call.retry_at = None
        self.open_activities.pop(call.seq, None)
        if isinstance(event, ActivityFailed):
            error = ActivityError(call.activity_type, call.seq, event.attempt, event.failure)
            error.__cause__ = error_from_failure(event.failure)
        else:
            error = ActivityError(call.activity_type, call.seq, event.attempt, None)
            error.__cause__ = ActivityTimeoutError(event.timeout_type)
        future = call.release_future()
        if future is not None and not future.done():
            future.set_exception(error)

    def _on_heartbeat(self, event: ActivityHeartbeat) -> None:
        self._activity(event, event.seq).heartbeat_details = event.details

    def _on_timer_started(self, event: TimerStarted) -> None:
        timer = self.timers.get(event.seq)
        if timer is None:
            self._mismatch(
                event,
                f"timer #{event.seq} for {event.duration:g}s",
                f"no timer #{event.seq} was started",
            )
        assert timer is not None
        timer.recorded = True
        timer.fire_at = event.fire_at

    def _on_timer_fired(self, event: TimerFired) -> None:
        timer = self.timers.get(event.seq)
        if timer is None or not timer.recorded:
            self._mismatch(event, f"timer #{event.seq} fired", f"no timer #{event.seq} exists")
        assert timer is not None
        timer.fired = True
        self.open_timers.pop(timer.seq, None)
        handle = self.timer_handles.pop(event.seq, None)
        if handle is not None:
            self.loop.fire_timer(handle)

    def _on_timer_cancelled(self, event: TimerCancelled) -> None:
        timer = self.timers.get(event.seq)
        if timer is None or not timer.cancel_requested:
            self._mismatch(
                event,
                f"timer #{event.seq} cancelled",
                f"timer #{event.seq} was not cancelled by the code",
            )
        assert timer is not None
        timer.cancel_recorded = True
        self.open_timers.pop(timer.seq, None)

    def _mismatch(self, event: AnyEvent, recorded: str, produced: str) -> None:
        raise NondeterminismError(
            workflow_type=self.workflow_type,
            run_id=self.run_id,
            event_id=event.event_id,
            recorded=f"{recorded} ({type(event).__name__})",
            produced=produced,
        )

    # -- commands, called by workflow code through the SDK ---------------------------------

    def schedule_activity(
        self,
        activity: ActivityDefinition[Any, Any] | str,
        args: tuple[Any, ...],
        options: ActivityOptions,
    ) -> asyncio.Future[Any]:
        if isinstance(activity, str):
            name, param_names, result_type = activity, None, Any
            base = self.activity_defaults
        else:
            name, param_names = activity.name, activity.param_names
            result_type = activity.return_type
            cached = self._resolved_options.get(id(activity))
            if cached is None:
                cached = activity.options.merged_over(self.activity_defaults)
                self._resolved_options[id(activity)] = cached
            base = cached
        resolved = (
            base
            if options is NO_ACTIVITY_OPTIONS or options == NO_ACTIVITY_OPTIONS
            else options.merged_over(base)
        )

        payloads = self.converter.encode_all(
            args, functools.partial(_describe_argument, name, param_names)
        )
        start_to_close = resolved.start_to_close_timeout
        if start_to_close is None and resolved.schedule_to_close_timeout is None:
            start_to_close = DEFAULT_START_TO_CLOSE
        seq = self._next_activity_seq
        self._next_activity_seq += 1
        future = self.loop.create_future()
        self.activities[seq] = self.open_activities[seq] = ActivityCall(
            seq=seq,
            activity_type=name,
            args=payloads,
            task_queue=resolved.task_queue or self.started.task_queue,
            retry_policy=resolved.retry_policy or _DEFAULT_RETRY,
            start_to_close_timeout=start_to_close,
            schedule_to_close_timeout=resolved.schedule_to_close_timeout,
            heartbeat_timeout=resolved.heartbeat_timeout,
            scheduled_at=self.now,
            result_type=result_type,
            future=future,
        )
        return future

    def wait_condition(self, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if predicate():
            future.set_result(None)
        else:
            self.conditions.append((predicate, future))
        return future

    def side_effect(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        seq = self._next_marker_seq
        self._next_marker_seq += 1
        try:
            result_type = typing.get_type_hints(fn).get("return", Any)
        except Exception:
            result_type = Any
        future = self.loop.create_future()
        self.markers[seq] = self.open_markers[seq] = MarkerCall(seq, fn, result_type, future)
        return future

    def look_ahead(self, events: Sequence[AnyEvent]) -> None:
        """Note, before ``events`` are fed, the patches they record and the code horizon."""
        for event in events:
            if isinstance(event, MarkerRecorded) and event.kind == "patch":
                self.patches_in_history.add(event.name)
            if not isinstance(event, SignalReceived | CancelRequested | WorkflowTaskFailed):
                self.code_horizon = max(self.code_horizon, event.event_id)

    def patched(self, patch_id: str) -> bool:
        decided = self.patch_decisions.get(patch_id)
        if decided is not None:
            return decided
        use = patch_id in self.patches_in_history or self.last_event_id >= self.code_horizon
        self.patch_decisions[patch_id] = use
        if use:
            self.patches.add(patch_id)
            if patch_id not in self.patches_in_history:
                self.unrecorded_patches.append(patch_id)
        return use

    def deprecate_patch(self, patch_id: str) -> None:
        self.deprecated_patches.add(patch_id)

    def start_child(
        self,
        workflow: WorkflowDefinition | str,
        args: tuple[Any, ...],
        *,
        workflow_id: str | None,
        task_queue: str | None,
        parent_close_policy: str,
        run_timeout: float | None,
        execution_timeout: float | None,
    ) -> ChildCall:
        seq = self._next_child_seq
        self._next_child_seq += 1
        if isinstance(workflow, str):
            name, result_type = workflow, Any
        else:
            name, result_type = workflow.name, workflow.return_type
        with _sandbox.unrestricted():
            payloads = self.converter.encode_all(
                args, [f"argument {i + 1} of child workflow {name!r}" for i in range(len(args))]
            )
        child = ChildCall(
            seq=seq,
            workflow_type=name,
            workflow_id=workflow_id or f"{self.workflow_id}/child-{seq}",
            task_queue=task_queue or self.started.task_queue,
            args=payloads,
            parent_close_policy=parent_close_policy,
            run_timeout=run_timeout,
            execution_timeout=execution_timeout,
            result_type=result_type,
            started=self.loop.create_future(),
            result=self.loop.create_future(),
        )
        self.children[seq] = self.open_children[seq] = child
        return child

    @functools.cached_property
    def deadline(self) -> tuple[datetime, str] | None:
        """When the run times out, and which timeout that is (fixed by ``started``)."""
        started = self.started
        candidates: list[tuple[datetime, str]] = []
        if started.run_timeout is not None:
            candidates.append((started.timestamp + timedelta(seconds=started.run_timeout), "run"))
        if started.execution_deadline is not None:
            candidates.append((started.execution_deadline, "execution"))
        return min(candidates) if candidates else None

    def start_timer(self, delay: float) -> int:
        seq = self._next_timer_seq
        self._next_timer_seq += 1
        self.timers[seq] = self.open_timers[seq] = TimerCall(
            seq=seq, fire_at=self.now + timedelta(seconds=delay), duration=delay
        )
        return seq

    def cancel_timer(self, seq: int) -> None:
        timer = self.timers.get(seq)
        if timer is not None and not timer.fired:
            timer.cancel_requested = True
            if not timer.recorded:  # never made durable: nothing to record either
                self.open_timers.pop(seq, None)
        self.timer_handles.pop(seq, None)


NO_ACTIVITY_OPTIONS = ActivityOptions()
"""Options of a call that sets none: the activity's own, over the worker's defaults."""
_DEFAULT_RETRY = RetryPolicy()


_FAILURE_ERRORS: tuple[type[BaseException], ...] = (
    ApplicationError,
    ActivityError,
    ChildWorkflowError,
)
"""Raised out of workflow code, these end the run FAILED: they are outcomes, not bugs."""


def _is_bug(exc: BaseException) -> bool:
    """Errors that mean the code is wrong, not that the run failed: retried after a fix."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SandboxViolationError | NondeterminismError | WorkflowBlockedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


_JSON_SHAPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _shape(payload: Payload) -> str:
    """The JSON kind of a payload's top-level value: what "the argument's type" compares."""
    try:
        if payload.encoding == "json":
            value = msgspec.json.decode(payload.data)
        else:
            value = msgspec.msgpack.decode(payload.data)
    except msgspec.DecodeError:
        return "undecodable"
    return _JSON_SHAPES.get(type(value), type(value).__name__)


# Events without a handler (``None``) are engine bookkeeping the workflow code never sees.
_HANDLERS: dict[type, Any] = {
    WorkflowStarted: WorkflowInstance._on_started,
    WorkflowTaskFailed: None,
    WorkflowCompleted: WorkflowInstance._on_completed,
    WorkflowFailed: WorkflowInstance._on_completed,
    WorkflowCancelled: WorkflowInstance._on_completed,
    WorkflowContinuedAsNew: WorkflowInstance._on_completed,
    WorkflowTimedOut: WorkflowInstance._on_closed_from_outside,
    WorkflowTerminated: WorkflowInstance._on_closed_from_outside,
    WorkflowReset: WorkflowInstance._on_closed_from_outside,
    ChildWorkflowStarted: WorkflowInstance._on_child_started,
    ChildWorkflowCompleted: WorkflowInstance._on_child_completed,
    ChildWorkflowFailed: WorkflowInstance._on_child_failed,
    SignalReceived: WorkflowInstance._on_signal,
    CancelRequested: WorkflowInstance._on_cancel_requested,
    ActivityCancelled: WorkflowInstance._on_activity_cancelled,
    MarkerRecorded: WorkflowInstance._on_marker,
    ActivityScheduled: WorkflowInstance._on_activity_scheduled,
    ActivityCompleted: WorkflowInstance._on_activity_completed,
    ActivityFailed: WorkflowInstance._on_activity_failed,
    ActivityTimedOut: WorkflowInstance._on_activity_failed,
    ActivityHeartbeat: WorkflowInstance._on_heartbeat,
    TimerStarted: WorkflowInstance._on_timer_started,
    TimerFired: WorkflowInstance._on_timer_fired,
    TimerCancelled: WorkflowInstance._on_timer_cancelled,
}
