"""Workflow timeouts: a run timeout bounds one run, an execution timeout the whole execution
(across continue-as-new, see test_continue_as_new.py). Past either, the run ends TIMED_OUT
with the deadline that fired recorded in its ``WorkflowTimedOut`` event — whether or not a
worker held the run when the deadline passed — and ``result()`` raises
``WorkflowTimedOutError``. Time is skipped with ``ManualClock`` / ``WorkflowEnvironment``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock
from history import (
    ActivityCompleted,
    ChildWorkflowFailed,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    TimerStarted,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from sdk import (
    ApplicationError,
    ChildWorkflowError,
    WorkflowTimedOutError,
    activity,
    open_client,
    open_worker,
    workflow,
)
from sdk.testing import WorkflowEnvironment

QUEUE = "timeouts"
WAIT = 10.0
HOUR = 3600.0
DAY = 86400.0


@workflow.defn
async def sleeper(hours: float) -> str:
    await workflow.sleep(hours * HOUR)
    return "woke up"


async def _wait_for(handle: Any, event_type: type) -> Any:
    """The first event of ``event_type`` in the run's history, once there is one."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                history = await handle.history()
            except RunNotFoundError:  # not started yet
                history = []
            found = next((e for e in history if isinstance(e, event_type)), None)
            if found is not None:
                return found
            await asyncio.sleep(0.005)


async def _started(handle: Any) -> WorkflowStarted:
    first = (await handle.history())[0]
    assert isinstance(first, WorkflowStarted)
    return first


@pytest.mark.parametrize(
    ("option", "timeout_type"),
    [("run_timeout", "run"), ("execution_timeout", "execution")],
)
async def test_a_sleeping_run_times_out_with_the_fired_deadline_recorded(
    db_path: Path, clock: ManualClock, option: str, timeout_type: str
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[sleeper]):
            handle = await client.start_workflow(
                sleeper, 24, id=f"sleeper-{option}", task_queue=QUEUE, **{option: 10 * 60.0}
            )
            await _wait_for(handle, TimerStarted)
            clock.advance(10 * 60.0 - 1)
            await asyncio.sleep(0.05)
            assert (await handle.run_info()).status is RunStatus.RUNNING
            clock.advance(1)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError) as raised:
                    await handle.result()
        started = await _started(handle)
        history = await handle.history()
        info = await handle.run_info()
        timers = await client.store.pending_timers()
        timed_out_runs = await client.count_runs(RunQuery(status=RunStatus.TIMED_OUT))

    error = raised.value
    assert (error.workflow_id, error.run_id, error.timeout_type) == (
        f"sleeper-{option}",
        handle.run_id,
        timeout_type,
    )
    last = history[-1]
    assert isinstance(last, WorkflowTimedOut)
    assert last.timeout_type == timeout_type
    assert last.deadline == started.timestamp + timedelta(minutes=10)
    assert last.timestamp >= last.deadline
    assert info.status is RunStatus.TIMED_OUT
    assert info.closed_at == last.timestamp
    assert timers == []  # the pending timer went with the run
    assert timed_out_runs == 1


async def test_the_earlier_of_run_and_execution_timeout_fires(
    db_path: Path, clock: ManualClock
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[sleeper]):
            handle = await client.start_workflow(
                sleeper, 1, id="both", task_queue=QUEUE, run_timeout=300.0, execution_timeout=120.0
            )
            await _wait_for(handle, TimerStarted)
            clock.advance(120.0)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError) as raised:
                    await handle.result()
        started = await _started(handle)
        last = (await handle.history())[-1]

    assert raised.value.timeout_type == "execution"
    assert isinstance(last, WorkflowTimedOut)
    assert last.deadline == started.timestamp + timedelta(seconds=120)


async def test_a_run_whose_deadline_passed_while_no_worker_ran_times_out_at_that_deadline(
    db_path: Path, clock: ManualClock
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[sleeper]):
            handle = await client.start_workflow(
                sleeper, 24, id="offline", task_queue=QUEUE, run_timeout=HOUR
            )
            await _wait_for(handle, TimerStarted)
    clock.advance(3 * HOUR)  # every worker is down when the deadline passes

    async with open_client(db_path, clock=clock) as client:
        handle = client.get_handle("offline")
        async with open_worker(client, task_queue=QUEUE, workflows=[sleeper]):
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError):
                    await handle.result()
        started = await _started(handle)
        last = (await handle.history())[-1]

    assert isinstance(last, WorkflowTimedOut)
    assert last.deadline == started.timestamp + timedelta(hours=1)  # not the restart time
    assert last.timestamp == last.deadline + timedelta(hours=2)


async def test_a_timeout_stops_an_activity_in_flight_and_records_no_outcome_for_it(
    db_path: Path, clock: ManualClock
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    @activity.defn
    async def export(table: str) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return table

    @workflow.defn
    async def nightly_export() -> str:
        return await workflow.execute_activity(export, "orders", start_to_close_timeout=DAY)

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[nightly_export], activities=[export]
        ):
            handle = await client.start_workflow(
                nightly_export, id="export", task_queue=QUEUE, run_timeout=HOUR
            )
            async with asyncio.timeout(WAIT):
                await started.wait()
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError):
                    await handle.result()
                await stopped.wait()  # the attempt in flight was cancelled
        history = await handle.history()

    assert not any(isinstance(e, ActivityCompleted) for e in history)
    assert isinstance(history[-1], WorkflowTimedOut)


async def test_a_run_that_finishes_before_its_deadline_is_not_timed_out(
    db_path: Path, clock: ManualClock
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[sleeper]):
            handle = await client.start_workflow(
                sleeper, 1, id="in-time", task_queue=QUEUE, run_timeout=2 * HOUR
            )
            await _wait_for(handle, TimerStarted)
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "woke up"
            clock.advance(2 * HOUR)
            await asyncio.sleep(0.05)
        history = await handle.history()

    assert not any(isinstance(e, WorkflowTimedOut) for e in history)
    assert (await _status(db_path, "in-time")) is RunStatus.COMPLETED


async def _status(db_path: Path, workflow_id: str) -> RunStatus:
    async with open_client(db_path) as client:
        return (await client.get_handle(workflow_id).run_info()).status


# -- with the testing environment (time skipping) ------------------------------------------


@workflow.defn
async def slow_child(hours: float) -> str:
    await workflow.sleep(hours * HOUR)
    return "finished"


@workflow.defn
async def patient_parent() -> list[str]:
    try:
        await workflow.execute_child_workflow(slow_child, 48, id="slow-child", run_timeout=DAY)
    except ChildWorkflowError as error:
        cause = error.__cause__
        assert isinstance(cause, ApplicationError)
        return [error.status, error.failure.type, error.failure.message]
    return ["completed"]


async def test_a_timed_out_child_reports_timed_out_to_its_parent() -> None:
    async with WorkflowEnvironment.start(workflows=[patient_parent, slow_child]) as env:
        handle = await env.start_workflow(patient_parent, id="patient")
        async with asyncio.timeout(WAIT):
            outcome = await env.result(handle)
        child = env.client.get_handle("slow-child")
        child_info = await child.run_info()
        child_last = (await child.history())[-1]
        [failed] = [e for e in await handle.history() if isinstance(e, ChildWorkflowFailed)]
        child_started = (await child.history())[0]

    assert outcome == ["timed_out", "WorkflowTimedOut", "run timeout"]
    assert failed.status == "timed_out"
    assert child_info.status is RunStatus.TIMED_OUT
    assert isinstance(child_last, WorkflowTimedOut)
    assert isinstance(child_started, WorkflowStarted)
    assert child_started.run_timeout == DAY
    assert child_last.deadline == child_started.timestamp + timedelta(days=1)


async def test_a_child_execution_timeout_is_recorded_as_its_deadline() -> None:
    @workflow.defn
    async def parent() -> str:
        try:
            return str(
                await workflow.execute_child_workflow(
                    slow_child, 2, id="bounded-child", execution_timeout=timedelta(hours=1)
                )
            )
        except ChildWorkflowError as error:
            return error.status

    async with WorkflowEnvironment.start(workflows=[parent, slow_child]) as env:
        handle = await env.start_workflow(parent, id="bounded-parent")
        async with asyncio.timeout(WAIT):
            assert await env.result(handle) == "timed_out"
        child = env.client.get_handle("bounded-child")
        child_history = await child.history()

    started, last = child_history[0], child_history[-1]
    assert isinstance(started, WorkflowStarted)
    assert isinstance(last, WorkflowTimedOut)
    assert started.execution_deadline == started.timestamp + timedelta(hours=1)
    assert (last.timeout_type, last.deadline) == ("execution", started.execution_deadline)


async def test_a_thirty_day_run_timeout_is_skipped_in_the_testing_environment() -> None:
    async with WorkflowEnvironment.start(workflows=[sleeper]) as env:
        handle = await env.client.start_workflow(
            sleeper, 24 * 60, id="month", task_queue=env.task_queue, run_timeout=30 * DAY
        )
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowTimedOutError):
                await env.result(handle)
        started = await _started(handle)
        last = (await handle.history())[-1]

    assert isinstance(last, WorkflowTimedOut)
    assert last.deadline == started.timestamp + timedelta(days=30)


async def test_client_takes_timeouts_as_seconds_or_timedelta_and_refuses_bad_ones(
    client: Client,
) -> None:
    handle = await client.start_workflow(
        sleeper,
        1,
        id="typed",
        task_queue=QUEUE,
        run_timeout=timedelta(minutes=5),
        execution_timeout=timedelta(hours=1),
    )
    started = await _started(handle)
    assert started.run_timeout == 300.0
    assert started.execution_deadline == started.timestamp + timedelta(hours=1)

    # Refused before anything is written.
    for option in ("run_timeout", "execution_timeout"):
        with pytest.raises(ValueError, match=f"{option} must not be negative"):
            await client.start_workflow(sleeper, 1, id="bad", task_queue=QUEUE, **{option: -5.0})
        with pytest.raises(TypeError, match=f"{option} must be seconds or a timedelta"):
            await client.start_workflow(sleeper, 1, id="bad", task_queue=QUEUE, **{option: "1h"})
    assert await client.count_runs() == 1


async def test_a_parent_that_times_out_applies_its_parent_close_policy_to_its_children(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def parent() -> str:
        await workflow.start_child_workflow(sleeper, 24, id="orphan-to-be")
        return str(await workflow.execute_child_workflow(sleeper, 48, id="awaited-child"))

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[parent, sleeper]):
            handle = await client.start_workflow(
                parent, id="impatient", task_queue=QUEUE, run_timeout=HOUR
            )
            for child in ("orphan-to-be", "awaited-child"):
                await _wait_for(client.get_handle(child), TimerStarted)
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError):
                    await handle.result()
        statuses = [
            (await client.get_handle(child).run_info()).status
            for child in ("orphan-to-be", "awaited-child")
        ]
        last = (await client.get_handle("awaited-child").history())[-1]

    assert statuses == [RunStatus.TERMINATED, RunStatus.TERMINATED]
    assert isinstance(last, WorkflowTerminated)
    assert last.reason == "parent 'impatient' closed"
