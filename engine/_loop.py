"""The deterministic event loop workflow code runs on.

An ``asyncio.AbstractEventLoop`` of our own, stepped by the runtime rather than run forever:
``run_ready`` executes ready callbacks in FIFO order until none is left, which is the only
ordering a replay can reproduce. Because it is a real asyncio loop, the ordinary asyncio
API works inside workflows — ``gather``, ``create_task``, ``wait``, ``Event``, ``Lock`` — and
``call_later``/``call_at`` become *durable timers*: ``asyncio.sleep(3 * 86400)`` records a
timer in history and survives restarts, and ``wait_for`` timeouts are durable too.

``time()`` is workflow time (seconds since the epoch, taken from history), identical on every
replay. Everything that would need real I/O (sockets, subprocesses, executors, signals) raises:
workflow code reaches the world only through activities.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import gc
import sys
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from ._instance import WorkflowInstance

__all__ = ["DurableTimerHandle", "WorkflowEventLoop"]


class DurableTimerHandle(asyncio.TimerHandle):
    """A ``call_at`` timer backed by a durable timer command; cancelling it cancels that."""

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: WorkflowEventLoop,
        context: contextvars.Context | None,
        seq: int,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self.seq = seq
        self.fired = False
        self._workflow_loop = loop

    def cancel(self) -> None:
        if not self.cancelled() and not self.fired:
            # Gone when the garbage collector closes the code of an instance a worker let
            # go of: nothing to record then (the run goes on from its history elsewhere).
            instance = self._workflow_loop.instance_if_alive()
            if instance is not None:
                instance.cancel_timer(self.seq)
        super().cancel()


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """One per workflow instance; runs only in :meth:`run_ready`, between :meth:`activate`
    and :meth:`deactivate` (``WorkflowInstance._step``)."""

    def __init__(self, instance: WorkflowInstance) -> None:
        # Weak: the instance holds its loop and every future of its code holds the loop, so
        # a strong reference back made each finished run a reference cycle of some forty
        # objects, left to the cyclic garbage collector (whose full collections traverse
        # every live object of the worker). Now a closed run is freed as the worker drops it.
        self._instance = weakref.ref(instance)
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._running = False
        self._exception_contexts: list[dict[str, Any]] = []

    @property
    def instance(self) -> WorkflowInstance:
        instance = self._instance()
        if instance is None:
            raise RuntimeError("the workflow instance of this loop was released")
        return instance

    def instance_if_alive(self) -> WorkflowInstance | None:
        return self._instance()

    # -- stepping --------------------------------------------------------------------------

    def activate(self) -> tuple[asyncio.AbstractEventLoop | None, bool]:
        """Make this the thread's running loop, for :meth:`run_ready`; returns what
        :meth:`deactivate` restores. Separate from running the callbacks so that the caller
        can arm the sandbox around the workflow code alone (its profile function would
        otherwise also run for each of these calls)."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running = True
        # No automatic garbage collection while workflow code runs: collecting an instance a
        # worker let go of closes its suspended coroutines, whose `finally` blocks would run
        # in the middle of this step, with this loop and instance current.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        return previous, collecting

    def deactivate(self, running: tuple[asyncio.AbstractEventLoop | None, bool]) -> None:
        previous, collecting = running
        if collecting:
            gc.enable()
        self._running = False
        asyncio.events._set_running_loop(previous)

    def run_ready(self) -> None:
        """Run ready callbacks (FIFO) until none is left; only between :meth:`activate` and
        :meth:`deactivate`."""
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if not handle._cancelled:  # not .cancelled(): a call the sandbox would watch
                handle._run()

    def has_ready(self) -> bool:
        return bool(self._ready)

    def fire_timer(self, handle: DurableTimerHandle) -> None:
        handle.fired = True
        if not handle.cancelled():
            self._ready.append(handle)

    # -- the asyncio API workflow code uses ------------------------------------------------

    def time(self) -> float:
        return self.instance.now_epoch

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if isinstance(sys.exc_info()[1], GeneratorExit):
            # Not this loop's code: a discarded instance's coroutine being closed (see
            # ``current_instance``) must start no timer here.
            raise GeneratorExit
        delay = when - self.time()
        if delay <= 0:  # already due: nothing to make durable
            ready = asyncio.TimerHandle(when, callback, args, self, context)
            self._ready.append(ready)
            return ready
        seq = self.instance.start_timer(delay)
        handle = DurableTimerHandle(when, callback, args, self, context, seq)
        self.instance.timer_handles[seq] = handle
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # DurableTimerHandle.cancel() already turned it into a cancel-timer command

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return False

    def close(self) -> None:
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # An exception nobody awaited (a fire-and-forget task that failed). Kept for the
        # worker's log; it must not escape into the real loop driving this one.
        self._exception_contexts.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def take_exception_contexts(self) -> list[dict[str, Any]]:
        contexts, self._exception_contexts = self._exception_contexts, []
        return contexts

    # -- what workflow code may not do -----------------------------------------------------

    def _refuse(self, what: str) -> NoReturn:
        from ._errors import SandboxViolationError

        raise SandboxViolationError(what, "an activity (workflow code must not do I/O)")

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Any, *args: Any
    ) -> NoReturn:
        self._refuse("loop.run_in_executor()")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("loop.getaddrinfo()")

    async def create_connection(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("loop.create_connection()")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("loop.subprocess_exec()")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("loop.subprocess_shell()")

    def add_signal_handler(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> NoReturn:
        self._refuse("loop.add_signal_handler()")
