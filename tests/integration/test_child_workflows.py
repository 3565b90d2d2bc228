"""Child workflows: results and failures reach the parent, fan-out with ``asyncio.gather``,
start handles, task queues, id conflicts, parent-close policies, worker restarts and crashes.

Every child is an ordinary run with its own history; the parent records
``ChildWorkflowStarted`` in the same transaction that creates the child's run, and the child's
close appends ``ChildWorkflowCompleted``/``ChildWorkflowFailed`` to the parent in the same
transaction as its own closing event. These tests check both sides.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock, Worker, workflow_definition
from engine._faults import FaultPoint, Faults
from history import (
    ActivityCompleted,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowTerminated,
)
from sdk import ApplicationError, ChildWorkflowError, activity, open_client, open_worker, workflow
from sdk.workflow import ParentClosePolicy

QUEUE = "parents"
OTHER_QUEUE = "children"
WAIT = 10.0
HOUR = 3600.0


def _count(history: list[Any], event_type: type) -> int:
    return sum(isinstance(e, event_type) for e in history)


async def _children_of(client: Client, parent_run_id: str) -> list[Any]:
    """The child runs whose first event names ``parent_run_id`` as their parent."""
    found = []
    for info in await client.list_runs(RunQuery(limit=10_000)):
        started = (await client.store.read_history(info.run_id))[0]
        assert isinstance(started, WorkflowStarted)
        if started.parent_run_id == parent_run_id:
            found.append(info)
    return found


async def _until(probe: Callable[[], Awaitable[Any]], within: float = WAIT) -> Any:
    """Call ``probe`` until it returns something truthy (at most ``within`` s); return it."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.005)


# -- results and failures ------------------------------------------------------------------


async def test_child_result_reaches_the_parent_and_the_child_is_an_ordinary_run(
    client: Client,
) -> None:
    @workflow.defn
    async def greet(name: str) -> str:
        return f"hello {name}"

    @workflow.defn
    async def parent(name: str) -> str:
        greeting = await workflow.execute_child_workflow(greet, name, id="greet-ada")
        return greeting.upper()

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, greet]):
        handle = await client.start_workflow(parent, "ada", id="parent-1", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "HELLO ADA"

    history = await handle.history()
    [started] = [e for e in history if isinstance(e, ChildWorkflowStarted)]
    [completed] = [e for e in history if isinstance(e, ChildWorkflowCompleted)]
    assert (started.workflow_id, started.task_queue) == ("greet-ada", QUEUE)
    assert completed.seq == started.seq
    assert completed.event_id > started.event_id

    child = client.get_handle("greet-ada", started.run_id)
    assert (await child.run_info()).status is RunStatus.COMPLETED
    assert await child.result() == "hello ada"
    child_history = await child.history()
    first = child_history[0]
    assert isinstance(first, WorkflowStarted)
    assert (first.parent_run_id, first.parent_seq) == (handle.run_id, started.seq)
    assert isinstance(child_history[-1], WorkflowCompleted)


async def test_child_failure_reaches_the_parent_as_child_workflow_error_with_status_and_cause(
    client: Client,
) -> None:
    @workflow.defn
    async def reserve(sku: str) -> str:
        raise ApplicationError(f"{sku} is out of stock", sku, type="OutOfStock")

    @workflow.defn
    async def parent(sku: str) -> dict[str, Any]:
        try:
            await workflow.execute_child_workflow(reserve, sku, id=f"reserve-{sku}")
        except ChildWorkflowError as error:
            cause = error.__cause__
            assert isinstance(cause, ApplicationError)
            return {
                "workflow_id": error.workflow_id,
                "status": error.status,
                "failure": [error.failure.type, error.failure.message],
                "cause": [cause.type, cause.message],
            }
        return {}

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, reserve]):
        handle = await client.start_workflow(parent, "sku-9", id="parent-2", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            outcome = await handle.result()

    assert outcome == {
        "workflow_id": "reserve-sku-9",
        "status": "failed",
        "failure": ["OutOfStock", "sku-9 is out of stock"],
        "cause": ["OutOfStock", "sku-9 is out of stock"],
    }
    [failed] = [e for e in await handle.history() if isinstance(e, ChildWorkflowFailed)]
    assert (failed.status, failed.failure.type) == ("failed", "OutOfStock")
    child = await client.get_handle("reserve-sku-9").run_info()
    assert child.status is RunStatus.FAILED


# -- fan-out -------------------------------------------------------------------------------


async def test_fan_out_of_200_children_with_five_activities_each(client: Client) -> None:
    executions: Counter[tuple[str, int]] = Counter()

    @activity.defn
    async def square(n: int) -> int:
        info = activity.info()
        executions[(info.workflow_id, info.activity_id)] += 1
        return n * n

    @workflow.defn
    async def squares(base: int) -> int:
        total = 0
        for k in range(5):
            total += await square(base + k)
        return total

    @workflow.defn
    async def fan_out(count: int) -> int:
        results = await asyncio.gather(
            *(workflow.execute_child_workflow(squares, i, id=f"sq-{i}") for i in range(count))
        )
        return sum(results)

    count = 200
    expected = sum((i + k) ** 2 for i in range(count) for k in range(5))
    async with open_worker(
        client, task_queue=QUEUE, workflows=[fan_out, squares], activities=[square]
    ):
        handle = await client.start_workflow(fan_out, count, id="fan-out", task_queue=QUEUE)
        async with asyncio.timeout(30):
            assert await handle.result() == expected

    # Every activity ran exactly once, and each child is an ordinary, listed run.
    assert len(executions) == count * 5
    assert set(executions.values()) == {1}
    children = await client.list_runs(RunQuery(workflow_type=squares.__qualname__, limit=1000))
    assert len(children) == count
    assert {c.workflow_id for c in children} == {f"sq-{i}" for i in range(count)}
    assert {c.status for c in children} == {RunStatus.COMPLETED}
    assert {c.history_length for c in children} == {1 + 5 * 2 + 1}
    history = await handle.history()
    assert _count(history, ChildWorkflowStarted) == count
    assert _count(history, ChildWorkflowCompleted) == count
    assert await client.count_runs(RunQuery(status=RunStatus.COMPLETED, limit=1000)) == count + 1


# -- start handles and task queues -----------------------------------------------------------


async def test_start_child_workflow_returns_a_handle_with_ids_and_awaiting_it_gives_the_result(
    client: Client,
) -> None:
    @workflow.defn
    async def double(n: int) -> int:
        return 2 * n

    @workflow.defn
    async def parent() -> dict[str, Any]:
        first = await workflow.start_child_workflow(double, 21, id="double-21")
        second = await workflow.start_child_workflow(double, 5)  # default id
        return {
            "ids": [[first.workflow_id, first.run_id], [second.workflow_id, second.run_id]],
            "results": [await first, await second.result()],
        }

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, double]):
        handle = await client.start_workflow(parent, id="parent-3", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            outcome = await handle.result()

    assert outcome["results"] == [42, 10]
    [[first_id, first_run], [second_id, second_run]] = outcome["ids"]
    assert first_id == "double-21"
    assert second_id == "parent-3/child-2"
    recorded = [e for e in await handle.history() if isinstance(e, ChildWorkflowStarted)]
    assert [(e.workflow_id, e.run_id) for e in recorded] == [
        (first_id, first_run),
        (second_id, second_run),
    ]
    for workflow_id, run_id in ((first_id, first_run), (second_id, second_run)):
        info = await client.get_handle(workflow_id, run_id).run_info()
        assert (info.run_id, info.status) == (run_id, RunStatus.COMPLETED)


async def test_child_on_another_task_queue_is_run_only_by_a_worker_of_that_queue(
    client: Client,
) -> None:
    @workflow.defn
    async def render(page: str) -> str:
        await workflow.sleep(0.3)
        return f"{page} rendered on {workflow.info().task_queue}"

    @workflow.defn
    async def publish(page: str) -> str:
        return await workflow.execute_child_workflow(
            render, page, id=f"render-{page}", task_queue=OTHER_QUEUE
        )

    @workflow.defn(name=workflow_definition(render).name)
    async def impostor(page: str) -> str:
        return "rendered by the wrong worker"

    # The parent's worker has code for the child's type too (and it would answer
    # differently): only the task queue keeps the child away from it. Workers learn of each
    # other's runs by polling: keep the polls short.
    fast = {"poll_interval": 0.02, "keep_alive": HOUR}
    async with (
        open_worker(
            client, task_queue=QUEUE, workflows=[publish, impostor], identity="parents", **fast
        ),
        open_worker(
            client, task_queue=OTHER_QUEUE, workflows=[render], identity="children", **fast
        ),
    ):
        handle = await client.start_workflow(publish, "home", id="publish", task_queue=QUEUE)
        child = client.get_handle("render-home")
        await _until(lambda: _has(child, TimerStarted))
        async with asyncio.timeout(WAIT):
            # The child waits on its timer, held by the worker of its queue.
            info = await child.run_info()
            assert (info.task_queue, info.owner) == (OTHER_QUEUE, "children")
            assert await handle.result() == f"home rendered on {OTHER_QUEUE}"

    [started] = [e for e in await handle.history() if isinstance(e, ChildWorkflowStarted)]
    assert started.task_queue == OTHER_QUEUE


async def _has(handle: Any, event_type: type) -> bool:
    try:
        history: list[Any] = await handle.history()
    except RunNotFoundError:  # not created yet
        return False
    return any(isinstance(e, event_type) for e in history)


# -- id conflicts ------------------------------------------------------------------------------


async def test_child_id_that_is_already_running_fails_the_start_with_start_failed(
    client: Client,
) -> None:
    @workflow.defn
    async def long_job() -> str:
        await workflow.sleep(HOUR)
        return "done"

    @workflow.defn
    async def parent() -> list[str]:
        try:
            await workflow.start_child_workflow(long_job, id="job-1")
        except ChildWorkflowError as error:
            return [error.workflow_id, error.status, error.failure.type]
        return ["started"]

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, long_job]):
        existing = await client.start_workflow(long_job, id="job-1", task_queue=QUEUE)
        handle = await client.start_workflow(parent, id="parent-4", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            outcome = await handle.result()
        assert (await existing.run_info()).status is RunStatus.RUNNING

    assert outcome == ["job-1", "start_failed", "WorkflowAlreadyRunningError"]
    history = await handle.history()
    assert _count(history, ChildWorkflowStarted) == 0
    [failed] = [e for e in history if isinstance(e, ChildWorkflowFailed)]
    assert failed.status == "start_failed"
    assert [r.run_id for r in await client.list_runs(RunQuery(workflow_id="job-1"))] == [
        existing.run_id
    ]


async def test_two_children_with_one_id_in_one_step_start_once_and_fail_once(
    client: Client,
) -> None:
    @workflow.defn
    async def job(n: int) -> int:
        return n

    @workflow.defn
    async def parent() -> list[Any]:
        outcomes: list[Any] = []
        for result in await asyncio.gather(
            workflow.execute_child_workflow(job, 1, id="same-id"),
            workflow.execute_child_workflow(job, 2, id="same-id"),
            return_exceptions=True,
        ):
            outcomes.append(result.status if isinstance(result, ChildWorkflowError) else result)
        return outcomes

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, job]):
        handle = await client.start_workflow(parent, id="parent-dup", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == [1, "start_failed"]

    assert len(await client.list_runs(RunQuery(workflow_id="same-id"))) == 1


# -- parent-close policies ---------------------------------------------------------------------


async def test_parent_close_policy_terminate_ends_a_running_child_terminated(
    client: Client,
) -> None:
    @workflow.defn
    async def child() -> str:
        await workflow.sleep(HOUR)
        return "finished"

    @workflow.defn
    async def parent() -> str:
        handle = await workflow.start_child_workflow(child, id="child-terminate")
        return handle.run_id or ""

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, child]):
        handle = await client.start_workflow(parent, id="parent-5", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            child_run_id = await handle.result()

    info = await client.get_handle("child-terminate", child_run_id).run_info()
    assert info.status is RunStatus.TERMINATED
    last = (await client.store.read_history(child_run_id))[-1]
    assert isinstance(last, WorkflowTerminated)
    assert last.reason == "parent 'parent-5' closed"
    assert await client.store.pending_timers(child_run_id) == []


async def test_parent_close_policy_request_cancel_lets_the_child_clean_up_and_end_cancelled(
    client: Client,
) -> None:
    cleaned: list[str] = []

    @activity.defn
    async def release_hold(hold: str) -> None:
        cleaned.append(hold)

    @workflow.defn
    async def hold_seat(seat: str) -> str:
        try:
            await workflow.sleep(HOUR)
        finally:
            await release_hold(seat)  # cleanup runs as an activity after the cancellation
        return "held"

    @workflow.defn
    async def parent() -> str:
        await workflow.start_child_workflow(
            hold_seat,
            "12A",
            id="hold-12A",
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        return "parent done"

    async with open_worker(
        client, task_queue=QUEUE, workflows=[parent, hold_seat], activities=[release_hold]
    ):
        handle = await client.start_workflow(parent, id="parent-6", task_queue=QUEUE)
        child = client.get_handle("hold-12A")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "parent done"
            while (await child.run_info()).status is RunStatus.RUNNING:
                await client.store.wait_for_run((await child.run_info()).run_id, 0.05)

    assert cleaned == ["12A"]
    history = await child.history()
    [requested] = [e for e in history if isinstance(e, CancelRequested)]
    assert requested.reason == "parent 'parent-6' closed"
    assert _count(history, ActivityCompleted) == 1
    last = history[-1]
    assert isinstance(last, WorkflowCancelled)
    assert last.reason == "parent 'parent-6' closed"
    assert (await child.run_info()).status is RunStatus.CANCELLED


async def test_parent_close_policy_abandon_leaves_the_child_running_to_completion(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def report(day: str) -> str:
        await workflow.sleep(HOUR)
        return f"report {day}"

    @workflow.defn
    async def parent() -> str:
        handle = await workflow.start_child_workflow(
            report, "mon", id="report-mon", parent_close_policy=ParentClosePolicy.ABANDON
        )
        return handle.run_id or ""

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[parent, report]):
            handle = await client.start_workflow(parent, id="parent-7", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                child_run_id = await handle.result()
            child = client.get_handle("report-mon", child_run_id)
            assert (await child.run_info()).status is RunStatus.RUNNING
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await child.result() == "report mon"

        # The abandoned child's outcome is not written into the closed parent.
        parent_history = await handle.history()
        assert _count(parent_history, ChildWorkflowCompleted) == 0
        assert isinstance(parent_history[-1], WorkflowCompleted)


# -- restarts and crashes ----------------------------------------------------------------------


async def test_parent_and_children_survive_a_worker_restart_mid_fan_out(db_path: Path) -> None:
    executions: Counter[tuple[str, int]] = Counter()
    in_flight: set[str] = set()
    all_in_flight = asyncio.Event()
    release = asyncio.Event()
    count = 20

    @activity.defn
    async def step(name: str, n: int) -> int:
        info = activity.info()
        executions[(info.workflow_id, info.activity_id)] += 1
        if n == 2 and not release.is_set():
            in_flight.add(info.workflow_id)
            if len(in_flight) == count:
                all_in_flight.set()
            await asyncio.Event().wait()  # interrupted by the worker stopping
        return n

    @workflow.defn
    async def child(name: str) -> int:
        return sum([await step(name, n) for n in (1, 2, 3)])

    @workflow.defn
    async def parent(count: int) -> int:
        return sum(
            await asyncio.gather(
                *(workflow.execute_child_workflow(child, f"c{i}", id=f"c{i}") for i in range(count))
            )
        )

    options: dict[str, Any] = {
        "task_queue": QUEUE,
        "workflows": [parent, child],
        "activities": [step],
    }
    async with open_client(db_path) as client:
        async with open_worker(client, **options):
            handle = await client.start_workflow(parent, count, id="restart-fan", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await all_in_flight.wait()
        completed_before = {
            (info.workflow_id, e.seq)
            for info in await _children_of(client, handle.run_id or "")
            for e in await client.store.read_history(info.run_id)
            if isinstance(e, ActivityCompleted)
        }
    assert len(completed_before) == count  # step 1 of every child, and nothing else
    assert sum(executions.values()) == 2 * count

    release.set()
    async with open_client(db_path) as client:
        handle = client.get_handle("restart-fan")
        async with open_worker(client, **options):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == count * 6
        children = await _children_of(client, (await handle.run_info()).run_id)
        history = await handle.history()

    assert len(children) == count
    assert {c.status for c in children} == {RunStatus.COMPLETED}
    for key in completed_before:
        assert executions[key] == 1, f"{key} was recorded before the restart but ran again"
    # Step 2 was in flight (at-least-once: runs again), step 3 ran once after the restart.
    assert executions == Counter(
        {(f"c{i}", 1): 1 for i in range(count)}
        | {(f"c{i}", 2): 2 for i in range(count)}
        | {(f"c{i}", 3): 1 for i in range(count)}
    )
    assert _count(history, ChildWorkflowStarted) == count
    assert _count(history, ChildWorkflowCompleted) == count


CRASH_POINTS = [
    (FaultPoint.AFTER_CLAIM, 2),
    (FaultPoint.BEFORE_APPEND, 1),
    (FaultPoint.AFTER_APPEND, 1),
    (FaultPoint.AFTER_APPEND, 4),
    (FaultPoint.ACTIVITY_START, 3),
    (FaultPoint.ACTIVITY_COMPLETE, 2),
    (FaultPoint.BEFORE_APPEND, 7),
    (FaultPoint.RELEASE, 1),
]


@pytest.mark.parametrize(("point", "hit"), CRASH_POINTS, ids=lambda v: str(getattr(v, "value", v)))
async def test_children_complete_once_after_a_crash_at_a_fault_point(
    db_path: Path, point: FaultPoint, hit: int
) -> None:
    executions: Counter[tuple[str, int]] = Counter()

    @activity.defn
    async def work(name: str, n: int) -> str:
        info = activity.info()
        executions[(info.workflow_id, info.activity_id)] += 1
        return f"{name}.{n}"

    @workflow.defn
    async def child(name: str) -> list[str]:
        return [await work(name, 1), await work(name, 2)]

    @workflow.defn
    async def parent() -> list[list[str]]:
        return list(
            await asyncio.gather(
                *(workflow.execute_child_workflow(child, f"k{i}", id=f"k{i}") for i in range(3))
            )
        )

    expected = [[f"k{i}.1", f"k{i}.2"] for i in range(3)]
    async with open_client(db_path) as client:
        faults = Faults.crash_at(point, hit)
        dying = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=[parent, child],
            activities=[work],
            identity="w1",
            faults=faults,
            converter=client.converter,
            seed=1,
        )
        client.add_listener(dying)
        handle = await client.start_workflow(parent, id="crashy", task_queue=QUEUE)
        await dying.start()
        result = asyncio.ensure_future(handle.result())
        stopped = asyncio.ensure_future(dying.stopped.wait())
        async with asyncio.timeout(WAIT):
            await asyncio.wait({result, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        assert faults.crashed is not None, f"the run finished before {point.value} #{hit}"
        result.cancel()
        await dying.stop()
        client.remove_listener(dying)

        recorded_before = {
            (info.workflow_id, e.seq)
            for info in await _children_of(client, handle.run_id or "")
            for e in await client.store.read_history(info.run_id)
            if isinstance(e, ActivityCompleted)
        }
        before = Counter(executions)

        async with open_worker(
            client, task_queue=QUEUE, workflows=[parent, child], activities=[work], identity="w1"
        ):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == expected

        children = await _children_of(client, handle.run_id or "")
        history = await handle.history()

    assert sorted(c.workflow_id for c in children) == ["k0", "k1", "k2"]
    assert {c.status for c in children} == {RunStatus.COMPLETED}
    for info in children:
        child_history = await _read(db_path, info.run_id)
        assert _count(child_history, WorkflowCompleted) == 1
        assert _count(child_history, ActivityCompleted) == 2
    assert _count(history, ChildWorkflowStarted) == 3
    assert _count(history, ChildWorkflowCompleted) == 3
    rerun = [key for key in recorded_before if executions[key] != before[key]]
    assert rerun == [], f"recorded before the crash but ran again: {rerun}"


async def _read(db_path: Path, run_id: str) -> list[Any]:
    async with open_client(db_path) as client:
        return list(await client.store.read_history(run_id))
