"""Workflows: deterministic ``async def`` code whose every step is recorded.

Inside workflow code, use these functions instead of the clock, randomness and I/O: each is
derived from the run's history, so it returns the same value on every replay. The ordinary
asyncio API works too — ``asyncio.gather``, ``create_task``, ``wait``, ``Event``, ``Lock`` —
and ``asyncio.sleep`` is a durable timer, exactly like :func:`sleep`.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import structlog

from engine import (
    WORKFLOW_ATTRIBUTE,
    ActivityDefinition,
    ActivityOptions,
    WorkflowDefinition,
    current_instance,
    in_workflow,
    signature_types,
)
from history import RetryPolicy

from ._durations import seconds

__all__ = [
    "WorkflowInfo",
    "defn",
    "execute_activity",
    "in_workflow",
    "info",
    "is_replaying",
    "logger",
    "now",
    "random",
    "run",
    "sleep",
    "uuid4",
]

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R")

_RUN_MARKER = "__perdura_workflow_run__"


@overload
def defn(target: W, /) -> W: ...


@overload
def defn(*, name: str | None = None) -> Callable[[W], W]: ...


def defn(target: Any = None, /, *, name: str | None = None) -> Any:
    """Make an ``async def`` function, or a class with one ``@workflow.run`` method, a workflow.

    Returns the function or class unchanged (it gains a definition attribute), so it can be
    passed to ``Worker(workflows=[...])`` and ``client.start_workflow(...)``. ``name`` is what
    history records (default: ``__qualname__``); keep it stable once runs exist.
    """

    def decorate(obj: Any) -> Any:
        if inspect.isclass(obj):
            runs = [
                member
                for member in vars(obj).values()
                if callable(member) and getattr(member, _RUN_MARKER, False)
            ]
            if len(runs) != 1:
                raise TypeError(
                    f"workflow class {obj.__qualname__} needs exactly one @workflow.run method, "
                    f"found {len(runs)}"
                )
            run_fn = runs[0]
            names, types, returns = signature_types(run_fn, skip_self=True)
            definition = WorkflowDefinition(
                name=name or obj.__qualname__,
                run_fn=run_fn,
                cls=obj,
                param_names=names,
                param_types=types,
                return_type=returns,
            )
        elif inspect.iscoroutinefunction(obj):
            names, types, returns = signature_types(obj)
            definition = WorkflowDefinition(
                name=name or obj.__qualname__,
                run_fn=obj,
                cls=None,
                param_names=names,
                param_types=types,
                return_type=returns,
            )
        else:
            raise TypeError(f"@workflow.defn needs an 'async def' function or a class, got {obj!r}")
        setattr(obj, WORKFLOW_ATTRIBUTE, definition)
        return obj

    return decorate(target) if target is not None else decorate


def run(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Mark the entry method of a class-based workflow (an ``async def`` method)."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@workflow.run needs an 'async def' method, got {fn!r}")
    setattr(fn, _RUN_MARKER, True)
    return fn


async def execute_activity(
    activity: ActivityDefinition[Any, R] | str,
    *args: Any,
    task_queue: str | None = None,
    retry_policy: RetryPolicy | None = None,
    start_to_close_timeout: float | timedelta | None = None,
    schedule_to_close_timeout: float | timedelta | None = None,
    heartbeat_timeout: float | timedelta | None = None,
) -> R:
    """Schedule an activity durably and wait for its result.

    The result is recorded before this returns; on replay, a recorded result is returned
    without running the activity again. Raises ``ActivityError`` once retries are exhausted
    (or the failure is non-retryable, or a timeout ends it). Options given here override the
    activity's own defaults; unset timeouts default to a 300 s start-to-close timeout.
    """
    instance = current_instance("workflow.execute_activity()")
    if not isinstance(activity, ActivityDefinition | str):
        raise TypeError(
            f"execute_activity needs an @activity.defn function or an activity name, "
            f"got {activity!r}"
        )
    options = ActivityOptions(
        task_queue=task_queue,
        retry_policy=retry_policy,
        start_to_close_timeout=seconds(start_to_close_timeout, "start_to_close_timeout"),
        schedule_to_close_timeout=seconds(schedule_to_close_timeout, "schedule_to_close_timeout"),
        heartbeat_timeout=seconds(heartbeat_timeout, "heartbeat_timeout"),
    )
    result: R = await instance.schedule_activity(activity, args, options)
    return result


async def sleep(duration: float | timedelta) -> None:
    """A durable timer: survives worker restarts; a 30-day sleep costs nothing while it waits."""
    value = seconds(duration, "duration")
    assert value is not None
    current_instance("workflow.sleep()")
    await asyncio.sleep(value)


def now() -> datetime:
    """The current workflow time (UTC): the time of the event being processed, not the wall
    clock, so it is identical on every replay."""
    return current_instance("workflow.now()").now


def random() -> _random.Random:
    """A ``random.Random`` seeded from history: the same draws on every replay."""
    return current_instance("workflow.random()").random


def uuid4() -> _uuid.UUID:
    """A version-4 UUID drawn from :func:`random`: the same on every replay."""
    return _uuid.UUID(int=random().getrandbits(128), version=4)


@dataclass(frozen=True, kw_only=True)
class WorkflowInfo:
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    start_time: datetime


def info() -> WorkflowInfo:
    instance = current_instance("workflow.info()")
    return WorkflowInfo(
        workflow_id=instance.workflow_id,
        run_id=instance.run_id,
        workflow_type=instance.workflow_type,
        task_queue=instance.started.task_queue,
        start_time=instance.started.timestamp,
    )


def is_replaying() -> bool:
    """True while the code re-runs recorded history (after a recovery or cache eviction)."""
    return current_instance("workflow.is_replaying()").is_replaying


class _WorkflowLogger:
    """A structlog logger bound to the current run, silent while replaying: a recovery does
    not print every line again."""

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        instance = current_instance("workflow.logger")
        if instance.is_replaying:
            return
        from engine._sandbox import unrestricted

        bound = structlog.get_logger("perdura.workflow").bind(
            workflow_id=instance.workflow_id,
            run_id=instance.run_id,
            workflow_type=instance.workflow_type,
        )
        with unrestricted():
            getattr(bound, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, **fields)


logger = _WorkflowLogger()
