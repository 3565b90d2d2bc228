"""The options of ``engine._replay.replay_history`` that ``perdura replay`` is built on: the
per-event trace (``on_event``/``on_step``) and the debug replay (no sandbox, no watchdog)."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine import Registry, SandboxViolationError, WorkflowInstance
from engine._replay import ReplayCodeError, ReplayStep, replay_history
from engine._watchdog import WorkflowBlockedError
from history import AnyEvent, WorkflowStarted
from sdk import workflow
from sdk.testing import WorkflowEnvironment


@workflow.defn
async def reads_the_clock() -> float:
    await workflow.sleep(1)
    return time.time()  # a sandbox violation: on a worker, caught at this line


@workflow.defn(name="reads_the_clock")
async def reads_the_clock_correctly() -> float:
    await workflow.sleep(1)
    return workflow.now().timestamp()


@workflow.defn
async def spins() -> str:
    await workflow.sleep(1)
    until = time.monotonic() + 0.3
    while time.monotonic() < until:  # holds the loop longer than the 0.1 s deadline below
        pass
    return "done"


async def _record(workflow_fn: object) -> list[AnyEvent]:
    """A run of ``workflow_fn`` to completion on a time-skipping test environment."""
    async with WorkflowEnvironment.start(workflows=[workflow_fn]) as env:
        handle = await env.start_workflow(workflow_fn, id="w-1")
        await env.result(handle)
        return await handle.history()


def test_a_debug_replay_runs_code_the_sandbox_would_refuse() -> None:
    history = asyncio.run(_record(reads_the_clock_correctly))
    registry = Registry([reads_the_clock])
    with pytest.raises(ReplayCodeError) as caught:
        replay_history(registry, history)
    assert isinstance(caught.value.error, SandboxViolationError)
    # The debug replay lets the same code run to its end (its result differs from the
    # recorded one, but replay compares commands, not the values the code computes).
    instance = replay_history(registry, history, debug=True)
    assert instance.completion is not None


def test_a_debug_replay_has_no_blocked_loop_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    history = asyncio.run(_record(spins))
    monkeypatch.setattr(WorkflowInstance, "step_deadline", 0.1)
    with pytest.raises(ReplayCodeError) as caught:
        replay_history(Registry([spins]), history)
    assert isinstance(caught.value.error, WorkflowBlockedError)
    assert replay_history(Registry([spins]), history, debug=True).completion is not None


def test_the_trace_sees_every_event_before_and_its_commands_after() -> None:
    history = asyncio.run(_record(reads_the_clock_correctly))
    seen: list[str] = []
    steps: list[ReplayStep] = []
    replay_history(
        Registry([reads_the_clock_correctly]),
        history,
        on_event=lambda event: seen.append(type(event).__name__),
        on_step=steps.append,
    )
    assert seen == [type(e).__name__ for e in history]
    assert [step.event for step in steps] == history
    by_type = {type(s.event).__name__: [c.kind for c in s.commands] for s in steps}
    assert by_type[WorkflowStarted.__name__] == ["start_timer"]
    assert by_type["TimerFired"] == ["complete_workflow"]
    assert by_type["WorkflowCompleted"] == []


@workflow.defn
async def gives_up_waiting() -> str:
    long_wait = asyncio.create_task(workflow.sleep(3600))
    await workflow.sleep(1)
    long_wait.cancel()
    return "gave up"


def test_the_trace_shows_a_cancelled_timer_under_the_event_that_made_the_code_cancel_it() -> None:
    history = asyncio.run(_record(gives_up_waiting))
    steps: list[ReplayStep] = []
    replay_history(Registry([gives_up_waiting]), history, on_step=steps.append)
    texts = [[c.text for c in step.commands] for step in steps]
    # The created task first runs when the main coroutine blocks: its timer is T2.
    assert texts[0] == ["start timer T1 1s", "start timer T2 3600s"]
    fired = next(i for i, s in enumerate(steps) if type(s.event).__name__ == "TimerFired")
    assert texts[fired] == ["cancel timer T2", 'complete -> "gave up"']
