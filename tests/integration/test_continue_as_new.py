"""Continue-as-new: a run ends by starting a fresh run of the same workflow id with new
arguments and an empty history. The chain shares the workflow id, ``result()`` follows it to
its last run, the execution timeout carries over, and a restart or a crash mid-chain loses
nothing and repeats nothing that was recorded. ``workflow.info()`` tells a loop how long its
history is, so it knows when to continue as new (and a warning is logged past a threshold)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import structlog

from engine import Client, ManualClock, Registry, Worker, _instance, replay_history
from engine._faults import FaultPoint, Faults
from history import (
    ActivityCompleted,
    ActivityScheduled,
    ChildWorkflowCompleted,
    RunQuery,
    RunStatus,
    TimerStarted,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowTimedOut,
    encode_event,
)
from sdk import WorkflowTimedOutError, activity, open_client, open_worker, workflow
from sdk.workflow import ParentClosePolicy

QUEUE = "can"
WAIT = 10.0
HOUR = 3600.0


async def _chain(client: Client, workflow_id: str) -> list[Any]:
    """The runs of ``workflow_id`` in the order they ran (following ``continued_from``)."""
    runs = await client.list_runs(RunQuery(workflow_id=workflow_id))
    by_parent: dict[str | None, Any] = {}
    for info in runs:
        started = (await client.store.read_history(info.run_id))[0]
        assert isinstance(started, WorkflowStarted)
        by_parent[started.continued_from] = info
    chain = [by_parent[None]]
    while chain[-1].run_id in by_parent:
        chain.append(by_parent[chain[-1].run_id])
    assert len(chain) == len(runs)
    return chain


@activity.defn
async def add(total: int, n: int) -> int:
    return total + n


@workflow.defn
async def summing(n: int, total: int) -> int:
    """Adds n, n-1, … 1, one activity per run, continuing as new after each."""
    if n == 0:
        return total
    total = await add(total, n)
    workflow.continue_as_new(n - 1, total)


async def test_chain_of_runs_shares_the_workflow_id_and_each_run_has_its_own_short_history(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[summing], activities=[add]):
        handle = await client.start_workflow(summing, 4, 0, id="sum-4", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == 10

    chain = await _chain(client, "sum-4")
    assert chain[0].run_id == handle.run_id
    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 4 + [RunStatus.COMPLETED]
    assert {r.workflow_id for r in chain} == {"sum-4"}
    assert len({r.run_id for r in chain}) == 5
    for index, (run, following) in enumerate(pairwise(chain)):
        history = await client.store.read_history(run.run_id)
        # Started, the activity, the hand-over: each run's history starts from scratch.
        assert [type(e) for e in history] == [
            WorkflowStarted,
            ActivityScheduled,
            ActivityCompleted,
            WorkflowContinuedAsNew,
        ]
        handover = history[-1]
        assert isinstance(handover, WorkflowContinuedAsNew)
        assert handover.new_run_id == following.run_id
        next_started = (await client.store.read_history(following.run_id))[0]
        assert isinstance(next_started, WorkflowStarted)
        assert next_started.continued_from == run.run_id
        assert next_started.args == handover.args
        assert client.converter.decode(next_started.args[0]) == 4 - index - 1
    last = await client.store.read_history(chain[-1].run_id)
    assert [type(e) for e in last] == [WorkflowStarted, WorkflowCompleted]
    assert (
        await client.count_runs(RunQuery(workflow_id="sum-4", status=RunStatus.CONTINUED_AS_NEW))
        == 4
    )


async def test_result_on_the_first_runs_handle_and_on_the_workflow_id_is_the_last_runs_result(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[summing], activities=[add]):
        handle = await client.start_workflow(summing, 3, 100, id="sum-3", task_queue=QUEUE)
        first_run = handle.run_id
        assert first_run is not None
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(
                handle.result(),
                client.get_handle("sum-3").result(),
                client.get_handle("sum-3", first_run).result(),
            )

    assert results == [106, 106, 106]
    assert (await client.get_handle("sum-3").run_info()).status is RunStatus.COMPLETED
    assert (await client.get_handle("sum-3", first_run).run_info()).status is (
        RunStatus.CONTINUED_AS_NEW
    )


@workflow.defn
async def hourly(rounds: int) -> int:
    """Sleeps an hour per run, continuing as new ``rounds`` times."""
    await workflow.sleep(HOUR)
    if rounds == 0:
        return 0
    workflow.continue_as_new(rounds - 1)


async def test_execution_timeout_carries_over_and_the_chain_times_out_at_the_original_deadline(
    db_path: Path, clock: ManualClock
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[hourly]):
            handle = await client.start_workflow(
                hourly, 10, id="hourly", task_queue=QUEUE, execution_timeout=2.5 * HOUR
            )
            deadline_expected = (await handle.history())[0].timestamp.timestamp() + 2.5 * HOUR
            for runs in (1, 2, 3):
                await _until(partial(_sleeping, client, "hourly", runs))
                clock.advance(min(HOUR, deadline_expected - clock.now()))
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowTimedOutError) as raised:
                    await handle.result()

        chain = await _chain(client, "hourly")
        histories = [await client.store.read_history(r.run_id) for r in chain]

    assert raised.value.timeout_type == "execution"
    assert [r.status for r in chain] == [
        RunStatus.CONTINUED_AS_NEW,
        RunStatus.CONTINUED_AS_NEW,
        RunStatus.TIMED_OUT,
    ]
    deadlines = {h[0].execution_deadline for h in histories if isinstance(h[0], WorkflowStarted)}
    assert len(deadlines) == 1
    [deadline] = deadlines
    assert deadline is not None
    assert deadline.timestamp() == deadline_expected
    timed_out = histories[-1][-1]
    assert isinstance(timed_out, WorkflowTimedOut)
    assert timed_out.timeout_type == "execution"
    assert timed_out.deadline == deadline
    assert raised.value.run_id == chain[-1].run_id


async def test_run_timeout_applies_to_each_run_of_the_chain_afresh(
    db_path: Path, clock: ManualClock
) -> None:
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[hourly]):
            # Each run sleeps one hour; the run timeout (90 min) is never reached by one run,
            # although the chain as a whole lasts three hours.
            handle = await client.start_workflow(
                hourly, 2, id="hourly-run", task_queue=QUEUE, run_timeout=1.5 * HOUR
            )
            for runs in (1, 2, 3):
                await _until(partial(_sleeping, client, "hourly-run", runs))
                clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == 0
        chain = await _chain(client, "hourly-run")

    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 2 + [RunStatus.COMPLETED]


async def _until(probe: Callable[[], Awaitable[Any]], within: float = WAIT) -> Any:
    """Call ``probe`` until it returns something truthy (at most ``within`` s); return it."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.005)


async def _sleeping(client: Client, workflow_id: str, runs: int) -> bool:
    """True once the ``runs``-th run of the chain has recorded its timer."""
    infos = await client.list_runs(RunQuery(workflow_id=workflow_id))
    if len(infos) < runs:
        return False
    current = await client.get_handle(workflow_id).run_info()
    history = await client.store.read_history(current.run_id)
    return any(isinstance(e, TimerStarted) for e in history)


async def test_a_chain_survives_a_worker_restart_mid_chain(
    db_path: Path, clock: ManualClock
) -> None:
    executions: Counter[int] = Counter()

    @activity.defn
    async def tally(total: int, n: int) -> int:
        executions[n] += 1
        return total + n

    @workflow.defn
    async def countdown(n: int, total: int) -> int:
        if n == 0:
            return total
        total = await tally(total, n)
        await workflow.sleep(HOUR)
        workflow.continue_as_new(n - 1, total)

    options: dict[str, Any] = {"task_queue": QUEUE, "workflows": [countdown], "activities": [tally]}
    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, **options):
            handle = await client.start_workflow(countdown, 5, 0, id="countdown", task_queue=QUEUE)
            for runs in (1, 2):
                await _until(partial(_sleeping, client, "countdown", runs))
                if runs == 1:
                    clock.advance(HOUR)
        # Stopped while the second run sleeps.
    assert executions == {5: 1, 4: 1}

    async with open_client(db_path, clock=clock) as client:
        handle = client.get_handle("countdown", handle.run_id)
        async with open_worker(client, **options):
            for runs in (2, 3, 4, 5):
                await _until(partial(_sleeping, client, "countdown", runs))
                clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == 15
        chain = await _chain(client, "countdown")

    assert executions == {5: 1, 4: 1, 3: 1, 2: 1, 1: 1}
    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 5 + [RunStatus.COMPLETED]


@pytest.mark.parametrize(
    ("point", "hit"),
    [
        (FaultPoint.AFTER_APPEND, 2),  # right after the first run's hand-over commits
        (FaultPoint.BEFORE_APPEND, 4),  # before the second run's hand-over
        (FaultPoint.AFTER_CLAIM, 2),  # the continuation was just claimed
        (FaultPoint.ACTIVITY_COMPLETE, 3),
    ],
    ids=lambda v: str(getattr(v, "value", v)),
)
async def test_a_chain_survives_a_crash_mid_chain(
    db_path: Path, point: FaultPoint, hit: int
) -> None:
    executions: Counter[int] = Counter()

    @activity.defn
    async def tally(total: int, n: int) -> int:
        executions[n] += 1
        return total + n

    @workflow.defn
    async def countdown(n: int, total: int) -> int:
        if n == 0:
            return total
        workflow.continue_as_new(n - 1, await tally(total, n))

    async with open_client(db_path) as client:
        faults = Faults.crash_at(point, hit)
        dying = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=[countdown],
            activities=[tally],
            identity="w1",
            faults=faults,
            converter=client.converter,
        )
        client.add_listener(dying)
        handle = await client.start_workflow(countdown, 4, 0, id="crash-chain", task_queue=QUEUE)
        await dying.start()
        async with asyncio.timeout(WAIT):
            await dying.stopped.wait()
        assert faults.crashed is not None
        await dying.stop()
        client.remove_listener(dying)
        # The n of every run whose tally was recorded before the crash.
        recorded = set()
        for info in await client.list_runs(RunQuery(workflow_id="crash-chain")):
            history = await client.store.read_history(info.run_id)
            if any(isinstance(e, ActivityCompleted) for e in history):
                recorded.add(await _arg(client, info.run_id))
        before = Counter(executions)

        async with open_worker(
            client, task_queue=QUEUE, workflows=[countdown], activities=[tally], identity="w1"
        ):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == 10
        chain = await _chain(client, "crash-chain")

    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 4 + [RunStatus.COMPLETED]
    assert set(executions) == {4, 3, 2, 1}
    assert [n for n in recorded if executions[n] != before[n]] == []


async def _arg(client: Client, run_id: str) -> int:
    started = (await client.store.read_history(run_id))[0]
    assert isinstance(started, WorkflowStarted)
    value: int = client.converter.decode(started.args[0])
    return value


async def test_parent_close_policy_reaches_a_child_that_continued_as_new(
    db_path: Path, clock: ManualClock
) -> None:
    @workflow.defn
    async def poller(round: int) -> str:
        await workflow.sleep(HOUR)
        workflow.continue_as_new(round + 1)

    @workflow.defn
    async def supervisor() -> str:
        await workflow.start_child_workflow(
            poller, 0, id="poller", parent_close_policy=ParentClosePolicy.TERMINATE
        )
        await workflow.sleep(1.5 * HOUR)  # the child continues as new meanwhile
        return "supervisor done"

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[supervisor, poller]):
            handle = await client.start_workflow(supervisor, id="supervisor", task_queue=QUEUE)
            await _until(partial(_sleeping, client, "poller", 1))
            clock.advance(HOUR)
            await _until(partial(_sleeping, client, "poller", 2))
            clock.advance(0.5 * HOUR)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "supervisor done"
        chain = await _chain(client, "poller")
        last = (await client.store.read_history(chain[-1].run_id))[-1]
        parent_history = await handle.history()

    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW, RunStatus.TERMINATED]
    assert isinstance(last, WorkflowTerminated)
    assert last.reason == "parent 'supervisor' closed"
    assert not any(isinstance(e, ChildWorkflowCompleted) for e in parent_history)


async def test_a_child_that_continues_as_new_reports_its_final_result_to_the_parent(
    client: Client,
) -> None:
    @workflow.defn
    async def parent() -> int:
        return int(await workflow.execute_child_workflow(summing, 3, 0, id="child-sum"))

    async with open_worker(client, task_queue=QUEUE, workflows=[parent, summing], activities=[add]):
        handle = await client.start_workflow(parent, id="parent-sum", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == 6

    chain = await _chain(client, "child-sum")
    assert [r.status for r in chain] == [RunStatus.CONTINUED_AS_NEW] * 3 + [RunStatus.COMPLETED]


@activity.defn
async def weigh(item: int) -> int:
    return item * 10


@workflow.defn
async def batcher(next_item: int, total: int, lengths: list[int]) -> dict[str, Any]:
    """Processes items 0..19, continuing as new whenever the history grows long."""
    while next_item < 20:
        info = workflow.info()
        if info.continue_as_new_suggested:
            workflow.continue_as_new(next_item, total, [*lengths, info.history_length])
        total += await weigh(next_item)
        next_item += 1
    info = workflow.info()
    return {
        "total": total,
        "lengths": lengths,
        "length": info.history_length,
        "size": info.history_size,
    }


async def test_info_tells_history_length_and_size_and_a_long_loop_continues_as_new(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny threshold instead of 10,000 events, so the loop continues as new every 6 items.
    monkeypatch.setattr(_instance, "HISTORY_WARN_EVENTS", 12)
    with structlog.testing.capture_logs() as logs:
        async with open_worker(client, task_queue=QUEUE, workflows=[batcher], activities=[weigh]):
            handle = await client.start_workflow(batcher, 0, 0, [], id="batcher", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                outcome = await handle.result()
        chain = await _chain(client, "batcher")
        final = await client.store.read_history(chain[-1].run_id)

    # Started + 6 x (scheduled, completed) = 13 events when the check says "long".
    assert outcome["total"] == sum(i * 10 for i in range(20))
    assert outcome["lengths"] == [13, 13, 13]
    assert [r.history_length for r in chain] == [14, 14, 14, 6]
    # The last run saw its own history: every event but the completion being recorded.
    assert outcome["length"] == len(final) - 1
    assert outcome["size"] == sum(len(encode_event(e)) for e in final[:-1])
    warnings = [e for e in logs if e["event"].startswith("workflow history is long")]
    assert [w["run_id"] for w in warnings] == [r.run_id for r in chain[:3]]
    assert {w["events"] for w in warnings} == {12}
    # Replay sees the same lengths: the recorded result is reproduced.
    replayed = replay_history(Registry([batcher]), final)
    assert replayed.completion is not None
    last = final[-1]
    assert isinstance(last, WorkflowCompleted)
    assert replayed.completion.result == last.result
