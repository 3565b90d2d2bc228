"""The blocked-loop watchdog interrupts a workflow step, and only a workflow step.

Found by the crash/resume harness: the watchdog decided to interrupt a step that had run
past its deadline, and while it was capturing the stack the step ended; the interruption
(an asynchronous exception) then landed in whatever the thread ran next — the worker's
event loop — and killed the worker instead of failing the workflow task.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import engine._watchdog as watchdog
from engine._watchdog import WorkflowBlockedError, start_watch, stop_watch


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_an_interruption_decided_as_the_step_ends_never_lands_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deciding = threading.Event()
    step_over = threading.Event()
    real_format_stack = watchdog.traceback.format_stack

    def slow_format_stack(frame: Any) -> list[str]:
        # The watchdog has decided to interrupt: hold it there until the step is over
        # (or a while, if the step cannot end before the watchdog has finished).
        deciding.set()
        step_over.wait(0.5)
        result: list[str] = real_format_stack(frame)
        return result

    monkeypatch.setattr(watchdog.traceback, "format_stack", slow_format_stack)

    interrupted_inside = False
    watch = start_watch(0.05)
    try:
        try:
            deadline = time.monotonic() + 5.0
            while not deciding.is_set() and time.monotonic() < deadline:
                pass  # a step running past its deadline until the watchdog acts
        finally:
            stop_watch(watch)
    except WorkflowBlockedError:
        interrupted_inside = True
    step_over.set()

    leaked = False
    try:
        _spin(0.3)  # plenty of bytecodes for a pending interruption to surface
    except WorkflowBlockedError:
        leaked = True

    assert deciding.is_set()
    assert not leaked
    assert watch is not None
    assert watch.error is not None or not interrupted_inside


def test_a_step_past_its_deadline_is_interrupted_inside_the_step() -> None:
    watch = start_watch(0.05)
    interrupted = False
    try:
        try:
            _spin(1.0)
        finally:
            stop_watch(watch)
    except WorkflowBlockedError:
        interrupted = True

    assert interrupted
    assert watch is not None
    assert watch.error is not None
    assert "blocked the worker's event loop for more than 0.05s" in str(watch.error)
