"""Execution event listeners: typed events, delivered after the fact is durable, once, even
when a worker crashes and another one recovers the run by replaying it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from obs_support import WAIT

from engine import Client, Worker, WorkflowHandle
from history import SqliteStore
from sdk import (
    ApplicationError,
    RetryPolicy,
    WorkflowFailureError,
    activity,
    listeners,
    open_client,
    open_worker,
    workflow,
)
from sdk.testing import FaultPoint, Faults

QUEUE = "listeners"
FAST = RetryPolicy(initial_interval=0.01)


@activity.defn
async def step(name: str) -> str:
    await asyncio.sleep(0)
    return f"{name} done"


@workflow.defn
async def three_steps(order_id: str) -> list[str]:
    return [await step(f"{order_id}/{n}") for n in ("reserve", "charge", "ship")]


async def run_three_steps(
    db_path: Path, order_id: str, with_listeners: list[Any]
) -> tuple[WorkflowHandle, Any]:
    """Run ``three_steps`` for ``order_id`` to its end on a worker with these listeners:
    its handle and result, every event delivered before this returns."""
    async with open_client(db_path) as client:
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[three_steps],
            activities=[step],
            listeners=with_listeners,
        ) as worker:
            handle = await client.start_workflow(
                three_steps, order_id, id=order_id, task_queue=QUEUE
            )
            async with asyncio.timeout(WAIT):
                result = await handle.result()
            await worker.listeners.drain()
    return handle, result


def _kinds(events: list[listeners.ExecutionEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_run_delivers_its_events_in_order_to_sync_and_async_listeners(
    db_path: Path,
) -> None:
    seen_sync: list[listeners.ExecutionEvent] = []
    seen_async: list[listeners.ExecutionEvent] = []

    def sync_listener(event: listeners.ExecutionEvent) -> None:
        seen_sync.append(event)

    async def async_listener(event: listeners.ExecutionEvent) -> None:
        await asyncio.sleep(0)
        seen_async.append(event)

    handle, _ = await run_three_steps(db_path, "o-1", [sync_listener, async_listener])

    # ExecutionStarted comes with the first recorded step: the first activity's outcome,
    # recorded together with its scheduling (eager execution), after the attempt started.
    expected = [
        "ActivityStarted",
        "ExecutionStarted",
        "ActivityCompleted",
        *["ActivityStarted", "ActivityCompleted"] * 2,
        "ExecutionCompleted",
    ]
    assert _kinds(seen_sync) == expected
    assert _kinds(seen_async) == expected
    started, completed = seen_sync[1], seen_sync[-1]
    assert isinstance(started, listeners.ExecutionStarted)
    assert isinstance(completed, listeners.ExecutionCompleted)
    assert (started.workflow_id, started.workflow_type, started.task_queue) == (
        "o-1",
        "three_steps",
        QUEUE,
    )
    assert completed.status == "completed"
    assert completed.run_id == handle.run_id
    activity_events = [e for e in seen_sync if isinstance(e, listeners.ActivityCompleted)]
    assert [(e.activity_type, e.activity_id, e.attempt) for e in activity_events] == [
        ("step", 1, 1),
        ("step", 2, 1),
        ("step", 3, 1),
    ]


async def test_every_event_is_in_the_history_before_its_listener_runs(db_path: Path) -> None:
    durable: list[bool] = []

    def listener(event: listeners.ExecutionEvent) -> None:
        if event.event_id == 0:
            return  # ActivityStarted: not a recorded fact
        # Another connection, as an operator's tool would read the file.
        with sqlite3.connect(db_path) as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM events WHERE run_id = ? AND event_id = ?",
                (event.run_id, event.event_id),
            ).fetchone()
        durable.append(count == 1)

    await run_three_steps(db_path, "o-2", [listener])

    assert durable == [True] * 5  # started, three activities, completed


async def test_a_listener_that_raises_disturbs_neither_the_run_nor_other_listeners(
    db_path: Path,
) -> None:
    calls: Counter[str] = Counter()

    def broken(event: listeners.ExecutionEvent) -> None:
        calls["broken"] += 1
        raise RuntimeError("pager service is down")

    async def healthy(event: listeners.ExecutionEvent) -> None:
        calls["healthy"] += 1

    with structlog.testing.capture_logs() as logs:
        _, result = await run_three_steps(db_path, "o-3", [broken, healthy])

    assert result == ["o-3/reserve done", "o-3/charge done", "o-3/ship done"]
    assert calls == {"broken": 8, "healthy": 8}
    reported = [e for e in logs if e["event"].startswith("execution listener raised")]
    assert len(reported) == 8
    assert reported[0]["log_level"] == "error"
    assert reported[0]["workflow_id"] == "o-3"


async def test_retries_and_final_failures_are_told_apart_with_their_class(
    db_path: Path,
) -> None:
    seen: list[listeners.ExecutionEvent] = []

    @activity.defn
    async def charge(card: str) -> str:
        if activity.info().attempt == 1:
            raise ConnectionResetError("gateway reset the connection")
        raise ApplicationError("card is blocked", type="CardBlocked", classification="permanent")

    @workflow.defn
    async def pay(card: str) -> str:
        return await workflow.execute_activity(charge, card, retry_policy=FAST)

    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[pay], activities=[charge], listeners=[seen.append]
        ) as worker:
            handle = await client.start_workflow(pay, "4242", id="pay-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                try:
                    await handle.result()
                except WorkflowFailureError:
                    pass
            await worker.listeners.drain()

    [retry] = [e for e in seen if isinstance(e, listeners.RetryAttempt)]
    [failed] = [e for e in seen if isinstance(e, listeners.ActivityFailed)]
    [ended] = [e for e in seen if isinstance(e, listeners.ExecutionFailed)]
    assert (retry.attempt, retry.failure_class) == (1, "transient")
    assert (failed.attempt, failed.failure_class) == (2, "permanent")
    assert failed.failure is not None
    assert failed.failure.type == "CardBlocked"
    assert ended.failure_class == "permanent"
    assert ended.error_type.endswith("ActivityError")


async def test_each_event_is_delivered_once_across_a_worker_crash(db_path: Path) -> None:
    seen: list[listeners.ExecutionEvent] = []
    store = await SqliteStore.open(db_path)
    try:
        client = Client(store)
        options: dict[str, Any] = {
            "task_queue": QUEUE,
            "workflows": [three_steps],
            "activities": [step],
            "listeners": [seen.append],
        }
        # The worker dies as the third attempt returns, before its outcome is recorded.
        doomed = Worker(
            store,
            identity="w1",
            faults=Faults.crash_at(FaultPoint.ACTIVITY_COMPLETE, 3),
            **options,
        )
        handle = await client.start_workflow(three_steps, "o-4", id="o-4", task_queue=QUEUE)
        await doomed.start()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        assert doomed.crashed is not None
        await doomed.stop()
        before_recovery = _kinds(seen)

        # Same identity: the restarted worker takes the run back and replays it.
        async with Worker(store, identity="w1", **options) as worker:
            async with asyncio.timeout(WAIT):
                await handle.result()
            await worker.listeners.drain()
    finally:
        await store.close()

    assert before_recovery == [
        "ActivityStarted",
        "ExecutionStarted",
        "ActivityCompleted",
        "ActivityStarted",
        "ActivityCompleted",
        "ActivityStarted",  # the attempt the crash interrupted
    ]
    recorded = [e for e in seen if e.event_id]
    assert len({e.event_id for e in recorded}) == len(recorded)  # nothing twice
    assert Counter(_kinds(recorded)) == {
        "ExecutionStarted": 1,
        "ActivityCompleted": 3,
        "ExecutionCompleted": 1,
    }
    # The interrupted attempt really ran again after the recovery: a second start.
    starts = [e for e in seen if isinstance(e, listeners.ActivityStarted)]
    assert [(e.activity_id, e.attempt) for e in starts] == [(1, 1), (2, 1), (3, 1), (3, 1)]


async def test_an_activity_worker_on_another_queue_tells_its_listeners_about_the_run(
    db_path: Path,
) -> None:
    seen: list[listeners.ExecutionEvent] = []

    @activity.defn(name="settle")
    async def settle(order_id: str) -> str:
        if activity.info().attempt == 1:
            raise ConnectionResetError("ledger reset the connection")
        return f"settled {order_id}"

    @workflow.defn(name="settlement")
    async def settlement(order_id: str) -> str:
        return await workflow.execute_activity(
            settle, order_id, task_queue="ledger", retry_policy=FAST
        )

    async with open_client(db_path) as client:
        async with (
            open_worker(client, task_queue=QUEUE, workflows=[settlement], poll_interval=0.02),
            open_worker(
                client,
                task_queue="ledger",
                activities=[settle],
                listeners=[seen.append],
                poll_interval=0.02,
            ) as ledger,
        ):
            handle = await client.start_workflow(settlement, "o-9", id="o-9", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "settled o-9"
            await ledger.listeners.drain()

    assert _kinds(seen) == [
        "ActivityStarted",
        "RetryAttempt",
        "ActivityStarted",
        "ActivityCompleted",
    ]
    for event in seen:
        assert (event.workflow_id, event.run_id, event.workflow_type, event.task_queue) == (
            "o-9",
            handle.run_id,
            "settlement",
            QUEUE,
        )
    retry = seen[1]
    assert isinstance(retry, listeners.RetryAttempt)
    assert (retry.activity_type, retry.failure_class) == ("settle", "transient")


broken: set[str] = set()


@activity.defn
async def fragile(name: str) -> str:
    if name in broken:
        raise ConnectionError(f"{name}: connection reset")
    return f"{name} done"


@workflow.defn
async def two_fragile_steps(order_id: str) -> list[str]:
    policy = RetryPolicy(initial_interval=0.0, maximum_attempts=2)
    return [
        await workflow.execute_activity(fragile, f"{order_id}/{n}", retry_policy=policy)
        for n in ("reserve", "charge")
    ]


@asynccontextmanager
async def listening(
    db_path: Path, seen: list[listeners.ExecutionEvent], workflows: list[Any], activities: list[Any]
) -> AsyncIterator[tuple[Client, Worker]]:
    """A client and a worker whose listener appends every event to ``seen``; what is queued
    is delivered before the block ends."""
    async with open_client(db_path) as client:
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=workflows,
            activities=activities,
            listeners=[seen.append],
        ) as worker:
            yield client, worker
            await worker.listeners.drain()


async def test_a_run_recovered_by_hand_tells_recovered_and_started_once(db_path: Path) -> None:
    seen: list[listeners.ExecutionEvent] = []
    broken.add("o-9/charge")
    async with listening(db_path, seen, [two_fragile_steps], [fragile]) as (client, _):
        handle = await client.start_workflow(two_fragile_steps, "o-9", id="o-9", task_queue=QUEUE)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), WAIT)
        failed_run = handle.run_id
        broken.clear()
        recovered = await handle.recover(reason="network is back")
        await asyncio.wait_for(recovered.result(), WAIT)

    kinds = _kinds([e for e in seen if e.run_id == recovered.run_id])
    started_at = kinds.index("ExecutionStarted")
    assert kinds[started_at : started_at + 2] == ["ExecutionStarted", "ExecutionRecovered"]
    assert kinds.count("ExecutionStarted") == kinds.count("ExecutionRecovered") == 1
    [event] = [e for e in seen if isinstance(e, listeners.ExecutionRecovered)]
    assert (event.from_run_id, event.failure_class, event.reason) == (
        failed_run,
        "transient",
        "network is back",
    )


async def test_a_reset_run_tells_started_at_its_first_own_step(db_path: Path) -> None:
    seen: list[listeners.ExecutionEvent] = []
    async with listening(db_path, seen, [three_steps], [step]) as (client, _):
        handle = await client.start_workflow(three_steps, "o-10", id="o-10", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
        history = await handle.history()
        successor = await handle.reset(history[-2].event_id - 2)
        await asyncio.wait_for(successor.result(), WAIT)

    on_successor = [e for e in seen if e.run_id == successor.run_id]
    assert _kinds(on_successor).count("ExecutionStarted") == 1
    assert not any(isinstance(e, listeners.ExecutionRecovered) for e in seen)
