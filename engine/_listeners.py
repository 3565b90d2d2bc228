"""Execution event listeners: typed notifications of what a worker recorded.

A listener is a function (plain or ``async``) taking one :class:`ExecutionEvent`; register it
with ``Worker(listeners=[...])`` or ``worker.listeners.add(fn)``. Events are derived from the
history events this worker appended — and only after the append committed — never from
replay, so a recovery does not deliver anything a second time: each recorded fact is appended
exactly once by exactly one worker, and that worker delivers it.

Delivery runs on one task per worker, in commit order, so a slow listener never holds up a
run; a listener that raises is logged (with the event) and the others still get the event.
A graceful stop delivers what is queued. A process that dies between a commit and the
delivery loses that delivery (at most once): the fact itself is in history.

The one event that is not a recorded fact is :class:`ActivityStarted`: an attempt that starts
is not written down (eager execution records its scheduling with its outcome), so it is
delivered when the attempt starts. An attempt interrupted by a crash runs again elsewhere,
and that new execution is delivered again: it is a new start.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import structlog

from history import Failure, TimeoutType

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityStarted",
    "ExecutionCancelled",
    "ExecutionCompleted",
    "ExecutionEvent",
    "ExecutionFailed",
    "ExecutionRecovered",
    "ExecutionStarted",
    "Listener",
    "ListenerSet",
    "RetryAttempt",
]

log = structlog.get_logger("perdura.listeners")


@dataclass(frozen=True, kw_only=True)
class ExecutionEvent:
    """What every event says: which run, and the history event it was derived from
    (``event_id`` 0 for events that are not a history event)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    timestamp: datetime
    event_id: int = 0


@dataclass(frozen=True, kw_only=True)
class ExecutionStarted(ExecutionEvent):
    """A worker recorded the first step of a new run (the first event after its start)."""

    started_at: datetime


@dataclass(frozen=True, kw_only=True)
class ExecutionCompleted(ExecutionEvent):
    """The run completed (``status`` ``completed``) or continued as new
    (``continued_as_new``, ``new_run_id`` set). ``duration`` is seconds since its start."""

    status: str
    duration: float
    new_run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutionFailed(ExecutionEvent):
    """The run failed (``failure`` set) or timed out (``timeout`` is ``run`` or
    ``execution``). ``failure_class`` is read from the failure (see ``FailureClass``)."""

    duration: float
    error_type: str
    failure: Failure | None = None
    failure_class: str | None = None
    timeout: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExecutionCancelled(ExecutionEvent):
    duration: float
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ExecutionRecovered(ExecutionEvent):
    """``run_id``, which carries on failed ``from_run_id`` (``recover()``, called by a person
    or by the automatic recovery service), made its first step. Told by the worker that made
    it, once; ``failure_class`` is the class of the failure recovered from."""

    from_run_id: str
    failure_class: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class _ActivityEvent(ExecutionEvent):
    activity_type: str
    activity_id: int
    attempt: int


@dataclass(frozen=True, kw_only=True)
class ActivityStarted(_ActivityEvent):
    """An attempt started on this worker (not a recorded fact: see the module docstring)."""


@dataclass(frozen=True, kw_only=True)
class ActivityCompleted(_ActivityEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class RetryAttempt(_ActivityEvent):
    """Attempt ``attempt`` failed or timed out, and attempt ``attempt + 1`` runs at
    ``retry_at``."""

    retry_at: datetime
    failure_class: str
    failure: Failure | None = None
    timeout_type: TimeoutType | None = None


@dataclass(frozen=True, kw_only=True)
class ActivityFailed(_ActivityEvent):
    """The activity failed for good: retries exhausted, a permanent failure, or a timeout
    that ends it. The workflow code sees an ``ActivityError``."""

    failure_class: str
    failure: Failure | None = None
    timeout_type: TimeoutType | None = None


Listener: TypeAlias = Callable[[ExecutionEvent], "Awaitable[None] | None"]


class ListenerSet:
    """A worker's listeners and the task that delivers to them."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[Listener] = []
        for listener in listeners:
            self.add(listener)
        self._queue: asyncio.Queue[ExecutionEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        """Events handed to every listener so far (raising ones included)."""

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Listener) -> None:
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, events: Iterable[ExecutionEvent]) -> None:
        """Queue events for delivery; call only after what they report is durable."""
        if not self._listeners:
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
        for event in events:
            self._queue.put_nowait(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._deliver_loop(self._queue), name="perdura listeners"
            )

    async def drain(self) -> None:
        """Wait until everything queued so far has been delivered."""
        if self._queue is not None and self._task is not None and not self._task.done():
            await self._queue.join()

    async def close(self, *, deliver: bool, patience: float = 5.0) -> None:
        """Stop delivering: after what is queued (``deliver``, waiting at most ``patience``
        seconds for slow listeners), or at once (a crash)."""
        if deliver:
            try:
                async with asyncio.timeout(patience):
                    await self.drain()
            except TimeoutError:
                log.warning(
                    "listeners too slow; undelivered events dropped on stop",
                    queued=0 if self._queue is None else self._queue.qsize(),
                )
        task, self._task = self._task, None
        self._queue = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _deliver_loop(self, queue: asyncio.Queue[ExecutionEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                await self.deliver(event)
            finally:
                queue.task_done()

    async def deliver(self, event: ExecutionEvent) -> None:
        for listener in list(self._listeners):
            try:
                result: Any = listener(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "execution listener raised; the run is not affected",
                    listener=getattr(listener, "__qualname__", repr(listener)),
                    listener_event=type(event).__name__,
                    workflow_id=event.workflow_id,
                    run_id=event.run_id,
                )
        self.delivered += 1
