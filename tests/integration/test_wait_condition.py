"""``workflow.wait_condition``: wakes when a signal makes the predicate true, or raises
``TimeoutError`` at its durable deadline — with time skipping, on a manual clock, and across a
worker restart in the middle of the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock, Worker
from engine._faults import Faults
from history import RunStatus, TimerCancelled, TimerFired, TimerStarted
from sdk import activity, open_client, open_worker, workflow
from sdk.testing import FaultPoint, WorkflowEnvironment, crash_resume

QUEUE = "conditions"
WAIT = 10.0
HOUR = 3600.0


@workflow.defn
class Approval:
    """Waits up to ``hours`` for a decision; returns it, or "expired", with the time."""

    def __init__(self) -> None:
        self.decision: str | None = None

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision

    @workflow.run
    async def run(self, hours: float) -> tuple[str, datetime]:
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=timedelta(hours=hours)
            )
        except TimeoutError:
            return "expired", workflow.now()
        assert self.decision is not None
        return self.decision, workflow.now()


@workflow.defn
class Quorum:
    """No timeout: waits as long as it takes for ``needed`` votes."""

    def __init__(self) -> None:
        self.votes: list[str] = []

    @workflow.signal
    def vote(self, voter: str) -> None:
        self.votes.append(voter)

    @workflow.run
    async def run(self, needed: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.votes) >= needed)
        return self.votes


@workflow.defn
class AlreadyTrue:
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: True, timeout=HOUR)
        return "no wait"


def _count(history: list[Any], event_type: type) -> int:
    return sum(isinstance(e, event_type) for e in history)


async def test_wait_condition_wakes_when_a_signal_makes_it_true(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
        handle = await client.start_workflow(Approval, 24.0, id="approve-1", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)
        await handle.signal("decide", "approved")
        async with asyncio.timeout(WAIT):
            decision, _ = await handle.result()
        history = await handle.history()

    assert decision == "approved"
    # The deadline's timer is cancelled, never fired, and nothing is left pending.
    assert (_count(history, TimerStarted), _count(history, TimerCancelled)) == (1, 1)
    assert _count(history, TimerFired) == 0
    assert await client.store.pending_timers(handle.run_id) == []


async def test_wait_condition_rechecks_after_every_signal(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Quorum]):
        handle = await client.start_workflow(Quorum, 3, id="quorum-1", task_queue=QUEUE)
        for voter in ("ann", "bob"):
            await handle.signal("vote", voter)
        await asyncio.sleep(0.05)
        assert (await handle.run_info()).status is RunStatus.RUNNING
        await handle.signal("vote", "cy")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["ann", "bob", "cy"]


async def test_condition_already_true_returns_at_once_without_a_timer(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[AlreadyTrue]):
        handle = await client.start_workflow(AlreadyTrue, id="true-1", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "no wait"
    assert _count(await handle.history(), TimerStarted) == 0


async def test_wait_condition_times_out_at_its_durable_deadline_with_time_skipping() -> None:
    async with WorkflowEnvironment.start(workflows=[Approval]) as env:
        started_at = env.clock.now()
        handle = await env.start_workflow(Approval, 72.0)
        decision, at = await env.result(handle)
        history = await handle.history()

    assert decision == "expired"
    assert at == datetime.fromtimestamp(started_at, UTC) + timedelta(hours=72)
    [fired] = [e for e in history if isinstance(e, TimerFired)]
    [timer] = [e for e in history if isinstance(e, TimerStarted)]
    assert fired.timestamp == timer.fire_at == at


async def test_wait_condition_times_out_exactly_at_the_deadline_on_a_manual_clock(
    manual_client: Client, clock: ManualClock, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    client = manual_client
    async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
        handle = await client.start_workflow(Approval, 2.0, id="approve-clock", task_queue=QUEUE)
        timer = await wait_for_event(handle, TimerStarted)
        clock.advance(2 * HOUR - 1)
        await asyncio.sleep(0.05)
        assert (await handle.run_info()).status is RunStatus.RUNNING
        clock.advance(1)
        async with asyncio.timeout(WAIT):
            decision, at = await handle.result()

    assert (decision, at) == ("expired", timer.fire_at)
    assert timer.fire_at.timestamp() == clock.now()


async def test_wait_condition_survives_a_worker_restart_and_is_woken_by_a_signal(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
            handle = await client.start_workflow(
                Approval, 24.0, id="approve-restart", task_queue=QUEUE
            )
            await wait_for_event(handle, TimerStarted)
        # No worker now; the decision waits in history.
        await handle.signal("decide", "rejected")

    async with open_client(db_path) as client:
        handle = client.get_handle("approve-restart")
        async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
            async with asyncio.timeout(WAIT):
                decision, _ = await handle.result()
        history = await handle.history()

    assert decision == "rejected"
    assert (_count(history, TimerStarted), _count(history, TimerCancelled)) == (1, 1)
    assert _count(history, TimerFired) == 0


async def test_wait_condition_deadline_passes_while_no_worker_runs(
    db_path: Path, clock: ManualClock, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
            handle = await client.start_workflow(
                Approval, 24.0, id="approve-late", task_queue=QUEUE
            )
            timer = await wait_for_event(handle, TimerStarted)
    clock.advance(30 * HOUR)  # the deadline passes while nothing runs

    async with open_client(db_path, clock=clock) as client:
        handle = client.get_handle("approve-late")
        async with open_worker(client, task_queue=QUEUE, workflows=[Approval]):
            async with asyncio.timeout(WAIT):
                decision, at = await handle.result(result_type=tuple[str, datetime])
        history = await handle.history()

    assert decision == "expired"
    assert at >= timer.fire_at  # fired by the new worker, as soon as it saw the run
    assert (_count(history, TimerStarted), _count(history, TimerFired)) == (1, 1)


# -- crashes ------------------------------------------------------------------------------------


@activity.defn
async def escalate(reason: str) -> str:
    return f"escalated: {reason}"


@workflow.defn
class Escalation:
    def __init__(self) -> None:
        self.acknowledged = False

    @workflow.signal
    def acknowledge(self) -> None:
        self.acknowledged = True

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.wait_condition(lambda: self.acknowledged, timeout=4 * HOUR)
        except TimeoutError:
            return await escalate("nobody acknowledged within 4h")
        return "acknowledged"


async def test_wait_condition_deadline_survives_a_crash_at_every_fault_point(
    tmp_path: Path,
) -> None:
    report = await crash_resume(
        Escalation,
        activities=[escalate],
        expected="escalated: nobody acknowledged within 4h",
        directory=tmp_path,
    )

    assert report.points[FaultPoint.TIMER_FIRE] == 1
    assert report.crashes >= 8


CRASH_POINTS = [
    (FaultPoint.AFTER_CLAIM, 1),
    (FaultPoint.BEFORE_APPEND, 1),
    (FaultPoint.AFTER_APPEND, 1),
    (FaultPoint.RELEASE, 1),
    (FaultPoint.AFTER_CLAIM, 2),
    (FaultPoint.BEFORE_APPEND, 2),
    (FaultPoint.AFTER_APPEND, 2),
]


@pytest.mark.parametrize(
    ("point", "hit"), CRASH_POINTS, ids=[f"{p.value}-{n}" for p, n in CRASH_POINTS]
)
async def test_signal_wakes_wait_condition_across_a_worker_crash(
    db_path: Path, point: FaultPoint, hit: int
) -> None:
    async with open_client(db_path) as client:
        faults = Faults.crash_at(point, hit)
        doomed = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=[Escalation],
            activities=[escalate],
            identity="conditions-worker",
            faults=faults,
            converter=client.converter,
        )
        client.add_listener(doomed)
        await doomed.start()
        handle = await client.start_workflow(Escalation, id="escalation", task_queue=QUEUE)

        async def settled() -> bool:
            if doomed.stopped.is_set():
                return True
            info = await handle.run_info()
            return not info.status.is_open or (
                info.owner is None
                and any(isinstance(e, TimerStarted) for e in await handle.history())
            )

        async with asyncio.timeout(WAIT):
            while True:
                if await settled():
                    break
                await asyncio.sleep(0.002)
        await handle.signal("acknowledge")
        async with asyncio.timeout(WAIT):
            while True:  # the crash, or the end of the run (if the crash comes later)
                if doomed.stopped.is_set() or not (await handle.run_info()).status.is_open:
                    break
                await asyncio.sleep(0.002)
        assert faults.crashed is not None, f"no crash at {point.value} #{hit}"
        await doomed.stop()
        client.remove_listener(doomed)

        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[Escalation],
            activities=[escalate],
            identity="conditions-worker",
        ):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "acknowledged"
        history = await handle.history()

    # Recorded before the crash, the deadline's timer is cancelled; if the signal came first
    # in history, the condition held before the timer was ever recorded.
    assert _count(history, TimerStarted) == _count(history, TimerCancelled) <= 1
    assert _count(history, TimerFired) == 0
