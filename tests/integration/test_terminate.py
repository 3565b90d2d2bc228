"""Terminate: an operator ends a run from outside, without running any more of its code.

The run ends TERMINATED with the reason recorded; ``result()`` raises
``WorkflowTerminatedError``; a parent waiting on a terminated child gets
``ChildWorkflowError(status="terminated")``; the terminated run's own children get their
parent-close policy; terminating a closed run is a clear ``RunClosedError``. The store's run
status (what ``count_runs`` and ``list_runs`` filter on) is a projection of the closing events
and must agree with every history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock
from history import (
    ActivityCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from sdk import (
    ApplicationError,
    ChildWorkflowError,
    RunClosedError,
    WorkflowTerminatedError,
    activity,
    open_client,
    open_worker,
    workflow,
)
from sdk.workflow import ParentClosePolicy

QUEUE = "terminate"
WAIT = 10.0
HOUR = 3600.0


async def _until(probe: Callable[[], Awaitable[Any]], within: float = WAIT) -> Any:
    """Call ``probe`` until it returns something truthy (at most ``within`` s); return it."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.005)


async def _wait_for(handle: Any, event_type: type) -> Any:
    """The first event of ``event_type`` in the run's history, once there is one."""

    async def probe() -> Any:
        try:
            history = await handle.history()
        except RunNotFoundError:  # the run does not exist yet
            return None
        return next((e for e in history if isinstance(e, event_type)), None)

    return await _until(probe)


async def _count(handle: Any, event_type: type, at_least: int) -> bool:
    return sum(isinstance(e, event_type) for e in await handle.history()) >= at_least


async def _closed(handle: Any) -> bool:
    return not (await handle.run_info()).status.is_open


async def test_terminate_ends_a_running_run_terminated_without_running_more_of_its_code(
    client: Client,
) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()
    after: list[str] = []

    @activity.defn
    async def crunch(n: int) -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return n

    @activity.defn
    async def report(n: int) -> None:
        after.append("report")

    @workflow.defn
    async def batch(n: int) -> int:
        try:
            return await crunch(n)
        finally:
            await report(n)  # a cancellation would run this; a termination does not

    async with open_worker(
        client, task_queue=QUEUE, workflows=[batch], activities=[crunch, report]
    ):
        handle = await client.start_workflow(batch, 7, id="batch-7", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            await started.wait()
        await handle.terminate("operator: wrong input")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowTerminatedError) as raised:
                await handle.result()
            await interrupted.wait()  # the attempt in flight is stopped

    assert (raised.value.workflow_id, raised.value.run_id) == ("batch-7", handle.run_id)
    assert raised.value.reason == "operator: wrong input"
    history = await handle.history()
    last = history[-1]
    assert isinstance(last, WorkflowTerminated)
    assert last.reason == "operator: wrong input"
    assert not any(isinstance(e, ActivityCompleted) for e in history)
    assert after == []
    info = await handle.run_info()
    assert (info.status, info.owner) == (RunStatus.TERMINATED, None)
    assert info.closed_at == last.timestamp


async def test_terminate_a_run_no_worker_holds_and_a_restarted_worker_leaves_it_alone(
    db_path: Path, clock: ManualClock
) -> None:
    ran: list[int] = []

    @activity.defn
    async def step(n: int) -> int:
        ran.append(n)
        return n

    @workflow.defn
    async def nightly() -> int:
        await step(1)
        await workflow.sleep(HOUR)
        return await step(2)

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[nightly], activities=[step]):
            handle = await client.start_workflow(nightly, id="nightly", task_queue=QUEUE)
            await _wait_for(handle, TimerStarted)
        await handle.terminate("decommissioned")  # no worker runs now
        assert await client.store.pending_timers() == []

    async with open_client(db_path, clock=clock) as client:
        handle = client.get_handle("nightly")
        async with open_worker(client, task_queue=QUEUE, workflows=[nightly], activities=[step]):
            clock.advance(2 * HOUR)
            with pytest.raises(WorkflowTerminatedError):
                await handle.result()
            await asyncio.sleep(0.05)  # give the worker a chance to (wrongly) pick it up
        history = await handle.history()

    assert ran == [1]
    assert isinstance(history[-1], WorkflowTerminated)


async def test_a_waiting_parent_gets_child_workflow_error_terminated_for_a_terminated_child(
    client: Client,
) -> None:
    @workflow.defn
    async def child() -> str:
        await workflow.sleep(HOUR)
        return "never"

    @workflow.defn
    async def parent() -> list[str]:
        try:
            await workflow.execute_child_workflow(child, id="doomed-child")
        except ChildWorkflowError as error:
            cause = error.__cause__
            assert isinstance(cause, ApplicationError)
            return [error.workflow_id, error.status, error.failure.message, str(cause.type)]
        return ["completed"]

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, child]):
        handle = await client.start_workflow(parent, id="waiting-parent", task_queue=QUEUE)
        doomed = client.get_handle("doomed-child")
        await _wait_for(doomed, TimerStarted)
        await doomed.terminate("stuck")
        async with asyncio.timeout(WAIT):
            outcome = await handle.result()

    assert outcome == ["doomed-child", "terminated", "stuck", "WorkflowTerminated"]
    [failed] = [e for e in await handle.history() if isinstance(e, ChildWorkflowFailed)]
    assert failed.status == "terminated"
    assert (await doomed.run_info()).status is RunStatus.TERMINATED


async def test_terminating_a_parent_applies_the_parent_close_policy_to_its_children(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def child(name: str) -> str:
        await workflow.sleep(HOUR)
        return name

    @workflow.defn
    async def parent() -> str:
        await workflow.start_child_workflow(child, "t", id="kid-terminate")
        await workflow.start_child_workflow(
            child, "c", id="kid-cancel", parent_close_policy=ParentClosePolicy.REQUEST_CANCEL
        )
        await workflow.start_child_workflow(
            child, "a", id="kid-abandon", parent_close_policy=ParentClosePolicy.ABANDON
        )
        await workflow.sleep(2 * HOUR)
        return "parent"

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[parent, child]):
            handle = await client.start_workflow(parent, id="terminated-parent", task_queue=QUEUE)
            await _until(lambda: _count(handle, ChildWorkflowStarted, 3))
            for kid in ("kid-terminate", "kid-cancel", "kid-abandon"):
                await _wait_for(client.get_handle(kid), TimerStarted)
            await handle.terminate("shutting the tenant down")
            await _until(lambda: _closed(client.get_handle("kid-terminate")))
            await _until(lambda: _closed(client.get_handle("kid-cancel")))
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await client.get_handle("kid-abandon").result() == "a"
        statuses = {
            kid: (await client.get_handle(kid).run_info()).status
            for kid in ("kid-terminate", "kid-cancel", "kid-abandon")
        }
        cancelled = (await client.get_handle("kid-cancel").history())[-1]

    assert statuses == {
        "kid-terminate": RunStatus.TERMINATED,
        "kid-cancel": RunStatus.CANCELLED,
        "kid-abandon": RunStatus.COMPLETED,
    }
    assert isinstance(cancelled, WorkflowCancelled)
    assert cancelled.reason == "parent 'terminated-parent' closed"


async def test_terminating_a_closed_run_raises_run_closed_error(client: Client) -> None:
    @workflow.defn
    async def quick() -> str:
        return "done"

    async with open_worker(client, task_queue=QUEUE, workflows=[quick]):
        handle = await client.start_workflow(quick, id="quick", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "done"
        with pytest.raises(RunClosedError):
            await handle.terminate("too late")

    history = await handle.history()
    assert isinstance(history[-1], WorkflowCompleted)
    assert not any(isinstance(e, WorkflowTerminated) for e in history)
    assert (await handle.run_info()).status is RunStatus.COMPLETED


async def test_terminating_twice_raises_run_closed_error_the_second_time(
    client: Client,
) -> None:
    @workflow.defn
    async def idle() -> None:
        await workflow.sleep(HOUR)

    async with open_worker(client, task_queue=QUEUE, workflows=[idle]):
        handle = await client.start_workflow(idle, id="idle", task_queue=QUEUE)
        await _wait_for(handle, TimerStarted)
        await handle.terminate("first")
        with pytest.raises(RunClosedError):
            await handle.terminate("second")

    terminations = [e for e in await handle.history() if isinstance(e, WorkflowTerminated)]
    assert [t.reason for t in terminations] == ["first"]


async def test_terminate_through_a_first_run_handle_reaches_the_open_run_of_the_chain(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def ticking(n: int) -> None:
        await workflow.sleep(HOUR)
        workflow.continue_as_new(n + 1)

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[ticking]):
            handle = await client.start_workflow(ticking, 0, id="ticking", task_queue=QUEUE)
            await _wait_for(handle, TimerStarted)
            clock.advance(HOUR)
            await _wait_for(handle, WorkflowContinuedAsNew)
            current = client.get_handle("ticking")
            await _wait_for(current, TimerStarted)
            await handle.terminate("stop ticking")  # handle.run_id is the first run
            with pytest.raises(WorkflowTerminatedError):
                await handle.result()
        runs = await client.list_runs(RunQuery(workflow_id="ticking"))

    assert sorted(r.status.value for r in runs) == ["continued_as_new", "terminated"]


async def test_status_projection_in_the_store_matches_every_closing_event(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def outcome(kind: str) -> str:
        if kind == "fail":
            raise ApplicationError("failed on purpose", type="Planned")
        if kind == "continue":
            workflow.continue_as_new("complete")
        if kind != "complete":
            await workflow.sleep(HOUR)
        return kind

    kinds = ["complete", "fail", "continue", "terminate", "timeout", "cancel", "reset", "running"]
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[outcome]):
            handles = {
                kind: await client.start_workflow(
                    outcome,
                    kind,
                    id=f"status-{kind}",
                    task_queue=QUEUE,
                    run_timeout=60.0 if kind == "timeout" else None,
                )
                for kind in kinds
            }
            for kind in ("terminate", "timeout", "cancel", "reset", "running"):
                await _wait_for(handles[kind], TimerStarted)
            await handles["terminate"].terminate("by hand")
            await handles["reset"].reset(1, "from the top")
            await handles["cancel"].cancel("no longer needed")
            clock.advance(60.0)
            for kind in ("complete", "fail", "continue", "terminate", "timeout", "cancel", "reset"):
                await _until(partial(_closed, handles[kind]))

        counts = {status: await client.count_runs(RunQuery(status=status)) for status in RunStatus}
        runs = await client.list_runs(RunQuery(limit=100))
        histories = {r.run_id: await client.store.read_history(r.run_id) for r in runs}

    assert counts == {
        RunStatus.RUNNING: 2,  # "running", and the successor of "reset"
        RunStatus.COMPLETED: 2,  # "complete", and the continuation of "continue"
        RunStatus.FAILED: 1,
        RunStatus.CANCELLED: 1,
        RunStatus.TERMINATED: 1,
        RunStatus.TIMED_OUT: 1,
        RunStatus.CONTINUED_AS_NEW: 1,
        RunStatus.RESET: 1,
    }
    closing = {
        WorkflowCompleted: RunStatus.COMPLETED,
        WorkflowFailed: RunStatus.FAILED,
        WorkflowCancelled: RunStatus.CANCELLED,
        WorkflowTerminated: RunStatus.TERMINATED,
        WorkflowTimedOut: RunStatus.TIMED_OUT,
        WorkflowContinuedAsNew: RunStatus.CONTINUED_AS_NEW,
        WorkflowReset: RunStatus.RESET,
    }
    for run in runs:
        last = histories[run.run_id][-1]
        assert closing.get(type(last), RunStatus.RUNNING) is run.status, run.workflow_id
        assert (run.closed_at is None) is (run.status is RunStatus.RUNNING)
        assert run.history_length == len(histories[run.run_id])
