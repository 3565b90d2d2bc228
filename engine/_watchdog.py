"""Detecting workflow code that blocks the event loop.

Workflow steps run on the worker's event loop thread; a busy loop or a blocking call in
workflow code would stall every run of the worker. A single daemon thread watches the steps
in progress: past the deadline it captures the stuck thread's stack and raises
:class:`WorkflowBlockedError` inside that thread (``PyThreadState_SetAsyncExc``), which
surfaces at the next bytecode the workflow code executes. The run then records a workflow
task failure with that stack and is retried later; other runs carry on.

Each thread that steps workflows has one :class:`StepWatch`, registered once; a step only
writes two attributes on it, so watching costs next to nothing per step.

It cannot interrupt a call stuck inside C code until that call returns (the sandbox already
refuses the usual ones: ``time.sleep``, sockets, files). While a debugger or tracer is
active (``sys.gettrace()``) the deadline is off: stepping through workflow code is not a
deadlock.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
import traceback

from history import PerduraError

__all__ = ["StepWatch", "WorkflowBlockedError", "start_watch", "stop_watch"]

_sleep = time.sleep  # taken before the sandbox wraps it: this thread is runtime, not workflow


class WorkflowBlockedError(PerduraError):
    """Workflow code held the event loop longer than the worker's deadline."""


class StepWatch:
    """The watch over one thread's workflow steps; ``error`` is set when a step was cut."""

    __slots__ = ("deadline", "error", "firing", "limit", "thread_id")

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.limit = 0.0
        self.deadline: float | None = None
        """Monotonic time the current step must end by; ``None`` between steps."""
        self.error: WorkflowBlockedError | None = None
        self.firing = False
        """True while the monitor decides, under ``_lock``, whether to interrupt the step."""


_lock = threading.Lock()
_watches: dict[int, StepWatch] = {}
_local = threading.local()


def _monitor() -> None:
    while True:
        _sleep(0.05)
        now = time.monotonic()
        with _lock:
            watches = list(_watches.values())
        for watch in watches:
            deadline = watch.deadline
            if deadline is not None and now >= deadline:
                _interrupt(watch, now)


def _interrupt(watch: StepWatch, now: float) -> None:
    """Raise :class:`WorkflowBlockedError` in the watched thread, unless its step ended.

    The decision and the raise happen under ``_lock``, with ``firing`` set before the
    deadline is read again: a step that ends meanwhile sees ``firing`` in
    :func:`stop_watch` and waits for the lock, so an interruption is either not raised or
    raised while the step can still receive it — one not delivered yet is made to surface
    inside :func:`stop_watch`. Without this, an interruption decided as the step ended
    landed in whatever the thread ran next (the worker's event loop) and killed the worker.
    """
    watch.firing = True
    try:
        with _lock:
            deadline = watch.deadline
            if deadline is None or now < deadline:
                return
            watch.deadline = None
            frame = sys._current_frames().get(watch.thread_id)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            watch.error = WorkflowBlockedError(
                f"workflow code blocked the worker's event loop for more than {watch.limit:g}s "
                f"(a busy loop or a blocking call); it was here:\n{stack}"
            )
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(watch.thread_id), ctypes.py_object(WorkflowBlockedError)
            )
    finally:
        watch.firing = False


def _surface() -> None:
    """Nothing: entering a Python function raises an asynchronous exception pending in
    the thread. (Withdrawing it with ``PyThreadState_SetAsyncExc(id, NULL)`` instead leaves
    CPython 3.11's eval breaker set, and the thread spins at its next function call.)"""


_monitor_thread = threading.Thread(target=_monitor, name="perdura-workflow-watchdog", daemon=True)


def _watch_for_this_thread() -> StepWatch:
    watch: StepWatch | None = getattr(_local, "watch", None)
    if watch is None:
        watch = StepWatch(threading.get_ident())
        _local.watch = watch
        with _lock:
            _watches[watch.thread_id] = watch
            if not _monitor_thread.is_alive():
                _monitor_thread.start()
    return watch


def start_watch(limit: float | None) -> StepWatch | None:
    """Watch the workflow step about to run on this thread. Past ``limit`` seconds the thread
    is interrupted; the watch's ``error`` then holds a :class:`WorkflowBlockedError` with the
    stuck stack (the interruption itself may have been caught by a task). Pair with
    :func:`stop_watch` in ``finally``."""
    if limit is None or sys.gettrace() is not None:
        return None
    watch = _watch_for_this_thread()
    watch.error = None
    watch.limit = limit
    watch.deadline = time.monotonic() + limit
    return watch


def stop_watch(watch: StepWatch | None) -> None:
    """End the watched step. Call it where a :class:`WorkflowBlockedError` is still
    handled: an interruption raised just before may surface up to this call, never after."""
    if watch is None:
        return
    watch.deadline = None
    if watch.firing or watch.error is not None:
        with _lock:
            pass  # once the lock is ours, the monitor is done with this step
        if watch.error is not None:
            try:
                _surface()
            except WorkflowBlockedError:
                pass  # the interruption, delivered late: the step is marked by watch.error
