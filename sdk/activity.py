"""Activities: the functions workflows use to touch the world.

An activity is an ordinary function, ``async def`` or plain ``def`` (run in a worker thread).
Decorated with :func:`defn`, calling it returns an awaitable: inside workflow code awaiting it
schedules the activity durably (same as ``workflow.execute_activity(fn, ...)`` with the
definition's options); anywhere else it simply runs the function, so activities stay easy to
unit-test.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

import anyio.to_thread

from engine import (
    NO_ACTIVITY_OPTIONS,
    ActivityCancelledError,
    ActivityDefinition,
    ActivityInfo,
    ActivityLogger,
    ActivityOptions,
    current_activity,
    schedule_in_workflow,
    signature_types,
)
from history import RetryPolicy

from ._durations import seconds

__all__ = [
    "Activity",
    "ActivityCancelledError",
    "ActivityInfo",
    "defn",
    "heartbeat",
    "info",
    "logger",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class Activity(ActivityDefinition[P, R]):
    """A decorated activity. Await a call to it; see the module docstring for what it does."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        if kwargs:
            raise TypeError(
                f"activity {self.name!r}: pass arguments positionally (they are recorded in "
                "history in order)"
            )
        # Inside a workflow, the code of an instance a worker let go of (stopped, evicted)
        # may be closed by the garbage collector, maybe in the middle of another run's step,
        # and run its `finally`: schedule_in_workflow() raises GeneratorExit there, so
        # nothing is scheduled and the activity never runs for real. The run itself is
        # untouched and continues from its history elsewhere.
        scheduled = schedule_in_workflow(self, args, NO_ACTIVITY_OPTIONS)
        if scheduled is not None:
            # Scheduled now, in call order; returned as a coroutine (like execute_activity)
            # so that asyncio.create_task(), which accepts nothing else, takes it too.
            return _result_of(scheduled)
        return self._run_directly(*args)

    async def _run_directly(self, *args: Any) -> R:
        fn: Any = self.fn
        if self.is_async:
            result: R = await fn(*args)
            return result
        value: R = await anyio.to_thread.run_sync(lambda: fn(*args))
        return value


async def _result_of(scheduled: Awaitable[R]) -> R:
    return await scheduled


@overload
def defn(fn: Callable[P, Awaitable[R]], /) -> Activity[P, R]: ...


@overload
def defn(fn: Callable[P, R], /) -> Activity[P, R]: ...


@overload
def defn(
    *,
    name: str | None = None,
    task_queue: str | None = None,
    retry_policy: RetryPolicy | None = None,
    start_to_close_timeout: float | timedelta | None = None,
    schedule_to_close_timeout: float | timedelta | None = None,
    heartbeat_timeout: float | timedelta | None = None,
) -> Callable[[Callable[P, Any]], Activity[P, Any]]: ...


def defn(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    task_queue: str | None = None,
    retry_policy: RetryPolicy | None = None,
    start_to_close_timeout: float | timedelta | None = None,
    schedule_to_close_timeout: float | timedelta | None = None,
    heartbeat_timeout: float | timedelta | None = None,
) -> Any:
    """Make a function an activity. Options given here are defaults for every call.

    ``name`` is what history records (default: the function's ``__qualname__``); keep it
    stable once runs exist.
    """
    options = ActivityOptions(
        task_queue=task_queue,
        retry_policy=retry_policy,
        start_to_close_timeout=seconds(start_to_close_timeout, "start_to_close_timeout"),
        schedule_to_close_timeout=seconds(schedule_to_close_timeout, "schedule_to_close_timeout"),
        heartbeat_timeout=seconds(heartbeat_timeout, "heartbeat_timeout"),
    )

    def decorate(fn: Callable[..., Any]) -> Activity[Any, Any]:
        if not callable(fn):
            raise TypeError(f"@activity.defn needs a function, got {fn!r}")
        names, types, returns = signature_types(fn)
        return Activity(
            name=name or fn.__qualname__,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            param_names=names,
            param_types=types,
            return_type=returns,
            options=options,
        )

    return decorate(fn) if fn is not None else decorate


def heartbeat(*details: Any) -> None:
    """Report progress; ``details`` are recorded and handed to a retried attempt.

    Use the details as a checkpoint ("processed up to item 4,200"): after a crash or a
    timeout, the next attempt reads them from :func:`info` and resumes there. Raises
    :class:`ActivityCancelledError` once the runtime has given up on this attempt.
    """
    current_activity("activity.heartbeat()").heartbeat(details)


def info() -> ActivityInfo:
    """The running activity's identity, attempt number and last heartbeat details."""
    return current_activity("activity.info()").info


logger = ActivityLogger()
"""A structlog logger bound to the running attempt: every line carries the workflow and run
ids, the workflow type, the task queue, the activity type and id, and the attempt number."""
