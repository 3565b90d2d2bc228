"""Running one activity attempt, and deciding what its outcome means for the history.

Activities run outside the sandbox: async functions on the worker's loop, sync functions in
worker threads through anyio. An attempt is bounded by its start-to-close timeout, by what
remains of the schedule-to-close timeout, and — when a heartbeat timeout is set — by silence:
an attempt that has not heartbeated for that long is declared lost and retried.

The retry decision is a pure function of the recorded options, the attempt number, the outcome
and the time, so any worker that picks up the activity after a crash decides the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    Failure,
    Payload,
    PayloadConverter,
    PayloadDecodeError,
    PayloadEncodeError,
    PerduraError,
    TimeoutType,
)

from ._classify import DEFAULT_FAILURE_POLICY, FailureClass, FailurePolicy
from ._clock import to_datetime
from ._definitions import ActivityDefinition
from ._errors import ActivityTimeoutError, ApplicationError, NotInWorkflowError
from ._failure import failure_from_exception, qualified_name
from ._instance import ActivityCall

__all__ = [
    "ActivityCancelledError",
    "ActivityContext",
    "ActivityInfo",
    "AttemptOutcome",
    "attempt_info",
    "current_activity",
    "outcome_event",
    "run_attempt",
]


class ActivityCancelledError(PerduraError):
    """Raised by ``activity.heartbeat()`` in an attempt the runtime has given up on (timed
    out, or the worker is shutting down), so a sync activity in a thread can stop early."""


@dataclass(frozen=True, kw_only=True)
class ActivityInfo:
    """What a running activity knows about itself (``activity.info()``)."""

    activity_type: str
    activity_id: int
    attempt: int
    workflow_id: str
    workflow_type: str
    run_id: str
    task_queue: str
    scheduled_at: datetime
    started_at: datetime
    heartbeat_details: tuple[Any, ...]
    """The details of the last recorded heartbeat of an earlier attempt: where to resume."""

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and recoveries: ``<run id>-<activity id>``."""
        return f"{self.run_id}-{self.activity_id}"


class ActivityContext:
    """What the runtime knows of the attempt running in this context (``activity.*``)."""

    __slots__ = ("_describe", "_info", "abandoned", "last_heartbeat", "loop", "on_heartbeat")

    def __init__(
        self,
        describe: Callable[[], ActivityInfo],
        loop: asyncio.AbstractEventLoop,
        on_heartbeat: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self._describe = describe
        self._info: ActivityInfo | None = None
        self.loop = loop
        self.on_heartbeat = on_heartbeat
        self.last_heartbeat = loop.time()
        self.abandoned = False
        """Set by the runtime when it gives up on the attempt; read by the activity's thread."""

    @property
    def info(self) -> ActivityInfo:
        """Built on first use: most activities never ask, and an attempt is a step."""
        info = self._info
        if info is None:
            info = self._info = self._describe()
        return info

    def heartbeat(self, details: tuple[Any, ...]) -> None:
        if self.abandoned:
            raise ActivityCancelledError(
                f"activity {self.info.activity_type!r} attempt {self.info.attempt} was "
                "abandoned by the runtime (timed out or worker shutting down)"
            )
        # loop.time() only reads the monotonic clock: safe from an activity's thread too.
        self.last_heartbeat = self.loop.time()
        if _on_loop(self.loop):
            self.on_heartbeat(details)
        else:
            self.loop.call_soon_threadsafe(self.on_heartbeat, details)


def attempt_info(
    call: ActivityCall,
    attempt: int,
    started: float,
    heartbeat_details: tuple[Payload, ...],
    workflow_id: str,
    workflow_type: str,
    run_id: str,
    converter: PayloadConverter,
) -> ActivityInfo:
    """``activity.info()`` of an attempt that started at ``started`` (epoch seconds), built
    when the activity first asks (``ActivityContext.info``). The runtime binds it with
    positional arguments: a partial of it is made per attempt."""
    return ActivityInfo(
        activity_type=call.activity_type,
        activity_id=call.seq,
        attempt=attempt,
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        run_id=run_id,
        task_queue=call.task_queue,
        scheduled_at=call.scheduled_at,
        started_at=to_datetime(started),
        heartbeat_details=tuple(
            [converter.decode(p, name="heartbeat detail") for p in heartbeat_details]
        ),
    )


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("perdura_activity")


def current_activity(call: str) -> ActivityContext:
    try:
        return _current.get()
    except LookupError:
        raise NotInWorkflowError(call.replace("workflow", "activity")) from None


@dataclass(frozen=True)
class AttemptOutcome:
    """Exactly one of ``result``, ``error`` or ``timeout`` is set."""

    result: Payload | None = None
    error: BaseException | None = None
    timeout: TimeoutType | None = None


async def run_attempt(
    definition: ActivityDefinition[Any, Any],
    call: ActivityCall,
    describe: Callable[[], ActivityInfo],
    converter: PayloadConverter,
    on_heartbeat: Callable[[tuple[Any, ...]], None],
    now: float,
) -> AttemptOutcome:
    """Run one attempt to its outcome; never raises except for cancellation of the caller.

    ``describe`` builds what ``activity.info()`` returns, if the activity asks."""
    loop = asyncio.get_running_loop()
    context = ActivityContext(describe, loop, on_heartbeat)
    try:
        args = _decode_args(definition, call.args, converter)
    except Exception as exc:
        return AttemptOutcome(error=ApplicationError(str(exc), non_retryable=True))

    limit, kind = _attempt_deadline(call, now)
    token = _current.set(context)
    try:
        if definition.is_async and call.heartbeat_timeout is None:
            value = await _run_inline(definition, args, limit, kind)
        else:
            value = await _run_watched(definition, args, call, context, limit, kind)
    except _AttemptTimedOut as timed_out:
        context.abandoned = True
        return AttemptOutcome(timeout=timed_out.kind)
    except ActivityTimeoutError as exc:  # raised by the activity itself: treat as a timeout
        return AttemptOutcome(timeout=exc.timeout_type)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            context.abandoned = True
            raise  # the worker is stopping or lost the run: not the activity's outcome
        return AttemptOutcome(error=ApplicationError("activity was cancelled"))
    except Exception as exc:
        return AttemptOutcome(error=exc)
    finally:
        _current.reset(token)
    try:
        payload = converter.encode(value)
    except PayloadEncodeError as unnamed:
        error: Exception = unnamed
        try:  # again, for the message that says what could not be encoded
            converter.encode(value, name=f"result of activity {definition.name!r}")
        except Exception as named:
            error = named
        return AttemptOutcome(error=ApplicationError(str(error), non_retryable=True))
    return AttemptOutcome(result=payload)


def _decode_args(
    definition: ActivityDefinition[Any, Any],
    payloads: tuple[Payload, ...],
    converter: PayloadConverter,
) -> list[Any]:
    """The attempt's arguments, typed by the activity's signature. The names that word a
    decoding error are only formatted when one occurs."""
    try:
        return [
            converter.decode(p, t) for p, t in zip(payloads, definition.param_types, strict=False)
        ]
    except PayloadDecodeError:
        pass
    return [
        converter.decode(p, t, name=f"argument {n!r} of activity {definition.name!r}")
        for p, t, n in zip(payloads, definition.param_types, definition.param_names, strict=False)
    ]


class _AttemptTimedOut(Exception):
    def __init__(self, kind: TimeoutType) -> None:
        self.kind = kind


async def _run_inline(
    definition: ActivityDefinition[Any, Any],
    args: list[Any],
    limit: float | None,
    kind: TimeoutType,
) -> Any:
    """The common case (async, no heartbeat timeout): awaited in place, no extra task."""
    if limit is None:
        return await definition.fn(*args)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        deadlines = _deadlines[loop] = _Deadlines()
    limited = deadlines.add(loop, task, loop.time() + limit)
    try:
        value = await definition.fn(*args)
    except asyncio.CancelledError:
        # As asyncio.timeout(): a timeout only if no other cancellation is pending.
        if deadlines.finish(limited) and task.uncancel() <= limited.cancelling:
            raise _AttemptTimedOut(kind) from None
        raise
    except BaseException:
        if deadlines.finish(limited):
            task.uncancel()
        raise
    if deadlines.finish(limited):
        task.uncancel()
    return value


class _Limited:
    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False


class _Deadlines:
    """The time limits of the attempts running on one loop, behind one timer handle.

    Every attempt has a limit (start-to-close defaults to five minutes), and nearly every
    attempt ends long before it: ``asyncio.timeout()`` would push a timer handle onto the
    loop's heap and cancel it again for each one. Here an attempt costs a dict entry; the
    one handle is armed for the earliest deadline and, when it fires, cancels the attempts
    past theirs and re-arms for the next.
    """

    __slots__ = ("armed_at", "entries", "handle")

    def __init__(self) -> None:
        self.entries: dict[_Limited, None] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.armed_at = math.inf

    def add(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], deadline: float
    ) -> _Limited:
        limited = _Limited(task, deadline)
        self.entries[limited] = None
        if deadline < self.armed_at:
            self._arm(loop, deadline)
        return limited

    def finish(self, limited: _Limited) -> bool:
        """Forget ``limited``; whether its deadline passed (its task was cancelled for it)."""
        self.entries.pop(limited, None)
        return limited.expired

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed_at = at
        self.handle = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        self.armed_at = math.inf
        now = loop.time() + _CLOCK_RESOLUTION  # as the loop decides a handle is due
        earliest = math.inf
        for limited in list(self.entries):
            if limited.deadline <= now:
                del self.entries[limited]
                limited.expired = True
                limited.task.cancel()
            elif limited.deadline < earliest:
                earliest = limited.deadline
        if earliest < math.inf:
            self._arm(loop, earliest)


_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


async def _run_watched(
    definition: ActivityDefinition[Any, Any],
    args: list[Any],
    call: ActivityCall,
    context: ActivityContext,
    limit: float | None,
    kind: TimeoutType,
) -> Any:
    """A separate task, watched for its deadline and for heartbeat silence."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = loop.create_task(_invoke(definition, args))
    try:
        while True:
            remaining = started + limit - loop.time() if limit is not None else None
            reason = kind
            if call.heartbeat_timeout is not None:
                silent = context.last_heartbeat + call.heartbeat_timeout - loop.time()
                if remaining is None or silent < remaining:
                    remaining, reason = silent, TimeoutType.HEARTBEAT
            if remaining is not None and remaining <= 0:
                task.cancel()
                raise _AttemptTimedOut(reason)
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if done:
                return task.result()
    except BaseException:
        context.abandoned = True
        task.cancel()
        raise


async def _invoke(definition: ActivityDefinition[Any, Any], args: list[Any]) -> Any:
    if definition.is_async:
        return await definition.fn(*args)
    # The thread cannot be killed: on timeout it is abandoned, and activity.heartbeat()
    # raises ActivityCancelledError inside it so cooperative code stops.
    return await anyio.to_thread.run_sync(_run_sync, definition.fn, args, abandon_on_cancel=True)


def _run_sync(fn: Callable[..., Any], args: list[Any]) -> Any:
    return fn(*args)


def _attempt_deadline(call: ActivityCall, now: float) -> tuple[float | None, TimeoutType]:
    """Seconds this attempt may run, and which timeout that is."""
    limit: float | None = call.start_to_close_timeout
    kind = TimeoutType.START_TO_CLOSE
    if call.schedule_to_close_timeout is not None:
        remaining = call.scheduled_at.timestamp() + call.schedule_to_close_timeout - now
        if limit is None or remaining < limit:
            limit, kind = max(remaining, 0.0), TimeoutType.SCHEDULE_TO_CLOSE
    return limit, kind


def outcome_event(
    call: ActivityCall,
    attempt: int,
    outcome: AttemptOutcome,
    converter: PayloadConverter,
    timestamp: datetime,
    policy: FailurePolicy = DEFAULT_FAILURE_POLICY,
) -> ActivityCompleted | ActivityFailed | ActivityTimedOut:
    """The history event for an attempt's outcome, with the retry decision made.

    A failure is classified (``engine._classify``) and its class decides the retry: a
    permanent failure is final, resource exhaustion waits ``resource_exhaustion_backoff``
    times longer, a start-to-close timeout retries with a raised timeout; the class and the
    raised timeout are recorded, so whoever replays the run sees what was decided.
    """
    if outcome.result is not None:
        return ActivityCompleted(
            timestamp=timestamp, seq=call.seq, attempt=attempt, result=outcome.result
        )
    retry_at: datetime | None = None
    if outcome.timeout is not None:
        next_timeout: float | None = None
        if outcome.timeout is not TimeoutType.SCHEDULE_TO_CLOSE:
            retry_at = _retry_time(call, attempt, timestamp)
            if retry_at is not None and outcome.timeout is TimeoutType.START_TO_CLOSE:
                next_timeout = policy.next_start_to_close(call.start_to_close_timeout)
        return ActivityTimedOut(
            timestamp=timestamp,
            seq=call.seq,
            attempt=attempt,
            timeout_type=outcome.timeout,
            retry_at=retry_at,
            next_start_to_close_timeout=next_timeout,
        )
    assert outcome.error is not None
    failure: Failure = failure_from_exception(outcome.error, converter)
    type_name = (
        outcome.error.type
        if isinstance(outcome.error, ApplicationError) and outcome.error.type
        else qualified_name(type(outcome.error))
    )
    failure_class = policy.classify(outcome.error)
    if failure.non_retryable or not call.retry_policy.is_retryable(type_name):
        failure_class = FailureClass.PERMANENT
    if failure_class is not FailureClass.PERMANENT:
        factor = (
            policy.resource_exhaustion_backoff
            if failure_class is FailureClass.RESOURCE_EXHAUSTION
            else 1.0
        )
        retry_at = _retry_time(call, attempt, timestamp, factor)
    return ActivityFailed(
        timestamp=timestamp,
        seq=call.seq,
        attempt=attempt,
        failure=msgspec.structs.replace(failure, classification=failure_class.value),
        retry_at=retry_at,
    )


def _retry_time(
    call: ActivityCall, attempt: int, now: datetime, factor: float = 1.0
) -> datetime | None:
    """When attempt ``attempt + 1`` runs, or ``None`` when the policy or deadline forbids it.

    ``factor`` stretches the policy's delay (resource exhaustion waits longer)."""
    policy = call.retry_policy
    if not policy.allows_another_attempt(attempt):
        return None
    delay = policy.delay_after(attempt) * factor
    if not math.isfinite(delay):
        return None
    retry_at = now + timedelta(seconds=delay)
    if call.schedule_to_close_timeout is not None:
        deadline = call.scheduled_at + timedelta(seconds=call.schedule_to_close_timeout)
        if retry_at >= deadline:
            return None
    return retry_at
