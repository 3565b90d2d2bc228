"""Detecting workflow code that blocks the event loop.

Workflow steps run on the worker's event loop thread; a busy loop or a blocking call in
workflow code would stall every run of the worker. A single daemon thread watches the step
in progress: past the deadline it captures the stuck thread's stack and raises
:class:`WorkflowBlockedError` inside that thread (``PyThreadState_SetAsyncExc``), which
surfaces at the next bytecode the workflow code executes. The run then records a workflow
task failure with that stack and is retried later; other runs carry on.

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
from collections.abc import Iterator
from contextlib import contextmanager

from history import PerduraError

__all__ = ["StepWatch", "WorkflowBlockedError", "watch_step"]


class WorkflowBlockedError(PerduraError):
    """Workflow code held the event loop longer than the worker's deadline."""


class StepWatch:
    """One watched step; ``error`` is set if the step was interrupted."""

    __slots__ = ("deadline", "error", "limit", "thread_id")

    def __init__(self, thread_id: int, limit: float) -> None:
        self.thread_id = thread_id
        self.limit = limit
        self.deadline = time.monotonic() + limit
        self.error: WorkflowBlockedError | None = None


_lock = threading.Lock()
_watches: dict[int, StepWatch] = {}
_thread: threading.Thread | None = None


def _monitor() -> None:
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        with _lock:
            expired = [w for w in _watches.values() if now >= w.deadline]
            for watch in expired:
                del _watches[watch.thread_id]
        for watch in expired:
            frame = sys._current_frames().get(watch.thread_id)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            watch.error = WorkflowBlockedError(
                f"workflow code blocked the worker's event loop for more than {watch.limit:g}s "
                f"(a busy loop or a blocking call); it was here:\n{stack}"
            )
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(watch.thread_id), ctypes.py_object(WorkflowBlockedError)
            )


def _ensure_thread() -> None:
    global _thread
    if _thread is None:
        with _lock:
            if _thread is None:
                _thread = threading.Thread(
                    target=_monitor, name="perdura-workflow-watchdog", daemon=True
                )
                _thread.start()


@contextmanager
def watch_step(limit: float | None) -> Iterator[StepWatch | None]:
    """Watch the workflow step run inside the block. Past ``limit`` seconds the thread is
    interrupted; the yielded watch's ``error`` then holds a :class:`WorkflowBlockedError`
    with the stuck stack (the interruption itself may have been caught by a task)."""
    if limit is None or sys.gettrace() is not None:
        yield None
        return
    _ensure_thread()
    thread_id = threading.get_ident()
    watch = StepWatch(thread_id, limit)
    with _lock:
        _watches[thread_id] = watch
    try:
        yield watch
    except WorkflowBlockedError:
        if watch.error is None:
            raise
    finally:
        with _lock:
            _watches.pop(thread_id, None)
