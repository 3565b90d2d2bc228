"""Workflows: deterministic ``async def`` code whose every step is recorded.

Inside workflow code, use these functions instead of the clock, randomness and I/O: each is
derived from the run's history, so it returns the same value on every replay. The ordinary
asyncio API works too — ``asyncio.gather``, ``create_task``, ``wait``, ``Event``, ``Lock`` —
and ``asyncio.sleep`` is a durable timer, exactly like :func:`sleep`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, NoReturn, TypeVar, overload

from engine import (
    WORKFLOW_ATTRIBUTE,
    ActivityDefinition,
    ActivityOptions,
    ContinueAsNew,
    WorkflowDefinition,
    current_instance,
    in_workflow,
    signature_types,
    workflow_definition,
)
from engine._instance import ChildCall
from engine._logging import WorkflowLogger
from history import RetryPolicy

from ._durations import seconds

__all__ = [
    "ChildWorkflowHandle",
    "ParentClosePolicy",
    "WorkflowInfo",
    "continue_as_new",
    "defn",
    "deprecate_patch",
    "execute_child_workflow",
    "execute_activity",
    "in_workflow",
    "info",
    "is_replaying",
    "logger",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "side_effect",
    "signal",
    "sleep",
    "start_child_workflow",
    "uuid4",
    "wait_condition",
]

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R")

_RUN_MARKER = "__perdura_workflow_run__"
_SIGNAL_MARKER = "__perdura_signal__"
_QUERY_MARKER = "__perdura_query__"


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
            members = [m for klass in reversed(obj.__mro__) for m in vars(klass).values()]
            definition = WorkflowDefinition(
                name=name or obj.__qualname__,
                run_fn=run_fn,
                cls=obj,
                param_names=names,
                param_types=types,
                return_type=returns,
                signals={
                    getattr(m, _SIGNAL_MARKER): m for m in members if hasattr(m, _SIGNAL_MARKER)
                },
                queries={
                    getattr(m, _QUERY_MARKER): m for m in members if hasattr(m, _QUERY_MARKER)
                },
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


F = TypeVar("F", bound=Callable[..., Any])


@overload
def signal(fn: F, /) -> F: ...


@overload
def signal(*, name: str | None = None) -> Callable[[F], F]: ...


def signal(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method of a class-based workflow as the handler of signal ``name`` (default:
    the method name). Signals are recorded in history and delivered in order, once each; a
    handler may be ``async`` (it then runs as a task of the workflow) and should only change
    the workflow's state — the run method reacts to it, e.g. with :func:`wait_condition`."""

    def decorate(method: F) -> F:
        setattr(method, _SIGNAL_MARKER, name or method.__name__)
        return method

    return decorate(fn) if fn is not None else decorate


@overload
def query(fn: F, /) -> F: ...


@overload
def query(*, name: str | None = None) -> Callable[[F], F]: ...


def query(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a plain (non-async) method as the handler of query ``name``: it reads the state of
    a run, rebuilt by replay, and writes nothing. Changing state or scheduling anything from a
    query is an error."""

    def decorate(method: F) -> F:
        if inspect.iscoroutinefunction(method):
            raise TypeError(f"@workflow.query handler {method.__qualname__} must not be async")
        setattr(method, _QUERY_MARKER, name or method.__name__)
        return method

    return decorate(fn) if fn is not None else decorate


async def wait_condition(
    predicate: Callable[[], bool],
    *,
    timeout: float | timedelta | None = None,  # noqa: ASYNC109 -- a durable timer, recorded
) -> None:
    """Wait until ``predicate()`` is true (re-checked after every event, e.g. a signal).

    With ``timeout``, raises ``TimeoutError`` at that durable deadline instead.
    """
    instance = current_instance("workflow.wait_condition()")
    future = instance.wait_condition(predicate)
    if timeout is None:
        await future
        return
    value = seconds(timeout, "timeout")
    await asyncio.wait_for(future, value)


async def side_effect(fn: Callable[[], T]) -> T:
    """Run ``fn`` once, record its value, and return the recorded value on every replay.

    For small non-deterministic values (an id, a random choice); anything with I/O or that
    may fail and need retries belongs in an activity.
    """
    instance = current_instance("workflow.side_effect()")
    result: T = await instance.side_effect(fn)
    return result


def patched(patch_id: str) -> bool:
    """True on runs that take the new code path marked by ``patch_id``, False on runs whose
    history predates it. Lets changed code keep replaying old histories::

        if workflow.patched("send-sms"):
            await send_sms(user)          # new behaviour
        else:
            await send_email(user)        # what old runs recorded
    """
    return current_instance("workflow.patched()").patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Once no run without ``patch_id`` remains, delete the old branch and call this so runs
    that recorded the patch still replay."""
    current_instance("workflow.deprecate_patch()").deprecate_patch(patch_id)


class ParentClosePolicy(enum.Enum):
    """What happens to a child still running when its parent closes."""

    TERMINATE = "terminate"
    REQUEST_CANCEL = "request_cancel"
    ABANDON = "abandon"


class ChildWorkflowHandle(Generic[R]):
    """A started child run. Await it (or :meth:`result`) for its result."""

    def __init__(self, call: ChildCall) -> None:
        self._call = call

    @property
    def workflow_id(self) -> str:
        return self._call.workflow_id

    @property
    def run_id(self) -> str | None:
        return self._call.run_id

    async def result(self) -> R:
        value: R = await self._call.result
        return value

    def __await__(self) -> Generator[Any, None, R]:
        return self.result().__await__()


async def start_child_workflow(
    workflow: Callable[..., Awaitable[R]] | type | str,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    execution_timeout: float | timedelta | None = None,
    run_timeout: float | timedelta | None = None,
) -> ChildWorkflowHandle[Any]:
    """Start a child run and return once its start is recorded.

    The child is an ordinary run (its own history, visible in listings) on ``task_queue``
    (default: the parent's), so a worker of that queue runs it. ``id`` defaults to
    ``<parent workflow id>/child-<n>``. Raises ``ChildWorkflowError`` if the id is taken.
    """
    instance = current_instance("workflow.start_child_workflow()")
    definition: WorkflowDefinition | str = (
        workflow if isinstance(workflow, str) else workflow_definition(workflow)
    )
    call = instance.start_child(
        definition,
        args,
        workflow_id=id,
        task_queue=task_queue,
        parent_close_policy=parent_close_policy.value,
        run_timeout=seconds(run_timeout, "run_timeout"),
        execution_timeout=seconds(execution_timeout, "execution_timeout"),
    )
    await call.started
    return ChildWorkflowHandle(call)


async def execute_child_workflow(
    workflow: Callable[..., Awaitable[R]] | type | str,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    execution_timeout: float | timedelta | None = None,
    run_timeout: float | timedelta | None = None,
) -> Any:
    """Start a child run and wait for its result (``ChildWorkflowError`` if it fails)."""
    handle = await start_child_workflow(
        workflow,
        *args,
        id=id,
        task_queue=task_queue,
        parent_close_policy=parent_close_policy,
        execution_timeout=execution_timeout,
        run_timeout=run_timeout,
    )
    return await handle.result()


def continue_as_new(*args: Any) -> NoReturn:
    """End this run and start a fresh run of the same workflow (same id, new history) with
    ``args``. Bounds the history of long-lived workflows; the execution timeout carries over.
    """
    current_instance("workflow.continue_as_new()")
    raise ContinueAsNew(args)


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
    history_length: int = 0
    """Events in this run's history so far (identical on every replay)."""
    history_size: int = 0
    """Bytes of those events as stored."""
    continue_as_new_suggested: bool = False
    """The history is long (10,000 events or 10 MiB): a good moment for
    :func:`continue_as_new`. A warning is logged when it first turns true."""


def info() -> WorkflowInfo:
    """The current run: ids, type, queue, and how long its history is (loops that run for
    ever check ``history_length`` or ``continue_as_new_suggested`` to continue as new)."""
    instance = current_instance("workflow.info()")
    return WorkflowInfo(
        workflow_id=instance.workflow_id,
        run_id=instance.run_id,
        workflow_type=instance.workflow_type,
        task_queue=instance.started.task_queue,
        start_time=instance.started.timestamp,
        history_length=instance.last_event_id,
        history_size=instance.history_size,
        continue_as_new_suggested=instance.continue_as_new_suggested,
    )


def is_replaying() -> bool:
    """True while the code re-runs recorded history (after a recovery or cache eviction)."""
    return current_instance("workflow.is_replaying()").is_replaying


logger = WorkflowLogger()
