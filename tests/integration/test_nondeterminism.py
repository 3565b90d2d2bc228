"""Workflow code that no longer matches its recorded history: replay names the mismatch, a
worker records it without losing the run, and deploying the original code lets it finish."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock, Registry, replay_history
from history import AnyEvent, RunStatus, TimerStarted, WorkflowCompleted, WorkflowTaskFailed
from sdk import NondeterminismError, activity, open_client, open_worker, workflow

QUEUE = "deploys"
WAIT = 10.0
HOUR = 3600.0

executed: Counter[str] = Counter()


@activity.defn
async def reserve(order_id: str) -> str:
    executed["reserve"] += 1
    return f"reserved {order_id}"


@activity.defn
async def refund(order_id: str) -> str:
    executed["refund"] += 1
    return f"refunded {order_id}"


@activity.defn
async def ship(order_id: str) -> str:
    executed["ship"] += 1
    return f"shipped {order_id}"


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    executed.clear()


# The code in production: reserve, wait an hour, ship.
@workflow.defn(name="fulfil")
async def fulfil(order_id: str) -> str:
    reserved = await reserve(order_id)
    await workflow.sleep(HOUR)
    return f"{reserved}, {await ship(order_id)}"


# Three deploys of the same workflow type that break runs already in flight.
@workflow.defn(name="fulfil")
async def fulfil_other_activity(order_id: str) -> str:
    refunded = await refund(order_id)
    await workflow.sleep(HOUR)
    return f"{refunded}, {await ship(order_id)}"


@workflow.defn(name="fulfil")
async def fulfil_other_argument_type(order_id: str) -> str:
    reserved = await reserve(len(order_id))  # type: ignore[arg-type]
    await workflow.sleep(HOUR)
    return f"{reserved}, {await ship(order_id)}"


@workflow.defn(name="fulfil")
async def fulfil_without_timer(order_id: str) -> str:
    reserved = await reserve(order_id)
    return f"{reserved}, {await ship(order_id)}"


ACTIVITIES = [reserve, refund, ship]


async def _recorded_history(client: Client, clock: ManualClock, wait_for_event: Any) -> list[Any]:
    """A complete run of the production code, as its history."""
    async with open_worker(client, task_queue=QUEUE, workflows=[fulfil], activities=ACTIVITIES):
        handle = await client.start_workflow(fulfil, "o-1", id="fulfil-1", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)
        clock.advance(HOUR)
        async with asyncio.timeout(WAIT):
            await handle.result()
    return await handle.history()


async def test_replaying_a_history_with_its_own_code_reproduces_its_result(
    manual_client: Client, clock: ManualClock, wait_for_event: Any
) -> None:
    history = await _recorded_history(manual_client, clock, wait_for_event)

    instance = replay_history(Registry([fulfil]), history)

    recorded = history[-1]
    assert isinstance(recorded, WorkflowCompleted)
    assert instance.completion is not None
    assert instance.completion.result == recorded.result
    assert executed == {"reserve": 1, "ship": 1}  # replay runs no activity


@pytest.mark.parametrize(
    ("changed_code", "event_id", "recorded", "produced"),
    [
        pytest.param(
            fulfil_other_activity,
            2,
            "activity 'reserve' scheduled as activity #1",
            "activity #1 is 'refund'",
            id="other-activity",
        ),
        pytest.param(
            fulfil_other_argument_type,
            2,
            "with argument 1 of type string",
            "argument 1 of type number",
            id="other-argument-type",
        ),
        pytest.param(
            fulfil_without_timer,
            4,
            "timer #1 for 3600s",
            "no timer #1 was started",
            id="missing-timer",
        ),
    ],
)
async def test_replaying_a_history_with_changed_code_raises_nondeterminism_error(
    manual_client: Client,
    clock: ManualClock,
    wait_for_event: Any,
    changed_code: Any,
    event_id: int,
    recorded: str,
    produced: str,
) -> None:
    history = await _recorded_history(manual_client, clock, wait_for_event)

    with pytest.raises(NondeterminismError) as raised:
        replay_history(Registry([changed_code]), history)

    error = raised.value
    assert (error.workflow_type, error.event_id) == ("fulfil", event_id)
    assert recorded in error.recorded
    assert produced in error.produced
    assert f"event {event_id}" in str(error)


def _task_failures(history: list[AnyEvent]) -> list[WorkflowTaskFailed]:
    return [e for e in history if isinstance(e, WorkflowTaskFailed)]


async def test_worker_running_changed_code_records_the_mismatch_and_keeps_the_run_open(
    db_path: Path, clock: ManualClock, wait_for_event: Any
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[fulfil], activities=ACTIVITIES):
            handle = await client.start_workflow(fulfil, "o-1", id="fulfil-1", task_queue=QUEUE)
            await wait_for_event(handle, TimerStarted)

        # A deploy swaps the first activity while the run sleeps.
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[fulfil_other_activity],
            activities=ACTIVITIES,
            workflow_task_retry=60,
        ):
            clock.advance(HOUR)
            task_failed = await wait_for_event(handle, WorkflowTaskFailed)
            description = await handle.describe()

        assert description.status is RunStatus.RUNNING
        assert task_failed.failure.type.endswith(".NondeterminismError")
        for part in ("'fulfil'", "event 2", "'reserve'", "'refund'"):
            assert part in task_failed.failure.message
        assert description.last_task_failure == task_failed.failure

        # Rolling back to the original code lets the run finish from its history.
        async with open_worker(client, task_queue=QUEUE, workflows=[fulfil], activities=ACTIVITIES):
            clock.advance(60)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "reserved o-1, shipped o-1"
        history = await handle.history()

    assert executed == {"reserve": 1, "ship": 1}
    assert len(_task_failures(history)) == 1


async def test_nondeterministic_run_is_retried_but_its_failure_is_recorded_once(
    manual_client: Client, clock: ManualClock, wait_for_event: Any, wait_for_run: Any
) -> None:
    client = manual_client
    async with open_worker(client, task_queue=QUEUE, workflows=[fulfil], activities=ACTIVITIES):
        handle = await client.start_workflow(fulfil, "o-1", id="fulfil-1", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)

    async with open_worker(
        client,
        task_queue=QUEUE,
        workflows=[fulfil_other_activity],
        activities=ACTIVITIES,
        workflow_task_retry=60,
    ):
        clock.advance(HOUR)
        await wait_for_event(handle, WorkflowTaskFailed)
        for _ in range(3):
            clock.advance(60)
            retry_due = clock.now() + 60
            # Each retry replays, fails the same way and puts the run back for 60 s later.
            await wait_for_run(handle, lambda info, due=retry_due: info.wake_at == due)

    assert len(_task_failures(await handle.history())) == 1
    assert (await handle.run_info()).status is RunStatus.RUNNING
