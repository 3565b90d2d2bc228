"""Durability across worker restarts: timers persist, recorded results are never recomputed,
in-flight activities run again. Each "restart" stops the worker and closes its store, then
opens a new store and worker on the same file, as a restarted process would."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine import ManualClock
from history import ActivityCompleted, TimerFired, TimerStarted
from sdk import activity, open_client, open_worker, workflow

QUEUE = "recovery"
WAIT = 10.0
HOUR = 3600.0
DAY = 86400.0


def _count(history: list[Any], event_type: type) -> int:
    return sum(isinstance(e, event_type) for e in history)


async def test_durable_timer_fires_once_after_the_worker_is_restarted_mid_sleep(
    db_path: Path, wait_for_event: Any
) -> None:
    @workflow.defn
    async def reminder(note: str) -> str:
        await workflow.sleep(0.5)
        return f"remember: {note}"

    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[reminder]):
            handle = await client.start_workflow(reminder, "milk", id="remind-1", task_queue=QUEUE)
            started = await wait_for_event(handle, TimerStarted)
        # The worker is gone mid-sleep; the timer is only in the store now.
        assert [t.seq for t in await client.store.pending_timers()] == [started.seq]

    async with open_client(db_path) as client:
        handle = client.get_handle("remind-1")
        async with open_worker(client, task_queue=QUEUE, workflows=[reminder]):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "remember: milk"
        history = await handle.history()

    assert (_count(history, TimerStarted), _count(history, TimerFired)) == (1, 1)
    [fired] = [e for e in history if isinstance(e, TimerFired)]
    assert fired.timestamp >= started.fire_at


async def test_thirty_day_sleep_finishes_at_once_on_a_manual_clock(
    db_path: Path, clock: ManualClock, wait_for_event: Any
) -> None:
    @workflow.defn
    async def renewal(account: str) -> datetime:
        await workflow.sleep(timedelta(days=30))
        return workflow.now()

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[renewal]):
            handle = await client.start_workflow(renewal, "acme", id="renew-1", task_queue=QUEUE)
            started = await wait_for_event(handle, TimerStarted)
            clock.advance(30 * DAY)
            async with asyncio.timeout(WAIT):
                woke_at = await handle.result()
        history = await handle.history()

    assert woke_at == started.fire_at
    assert (_count(history, TimerStarted), _count(history, TimerFired)) == (1, 1)


async def test_activities_completed_before_a_restart_are_not_run_again(
    db_path: Path, clock: ManualClock, wait_for_event: Any
) -> None:
    runs: Counter[str] = Counter()

    @activity.defn
    async def step(name: str) -> str:
        runs[name] += 1
        return name.upper()

    @workflow.defn
    async def pipeline(order_id: str) -> list[str]:
        done = [await step("reserve"), await step("charge")]
        await workflow.sleep(HOUR)  # the worker is stopped while the run waits here
        done.append(await step("ship"))
        return done

    async with open_client(db_path, clock=clock) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[pipeline], activities=[step]):
            handle = await client.start_workflow(pipeline, "o-1", id="pipe-1", task_queue=QUEUE)
            await wait_for_event(handle, TimerStarted)
    assert runs == {"reserve": 1, "charge": 1}

    async with open_client(db_path, clock=clock) as client:
        handle = client.get_handle("pipe-1")
        async with open_worker(client, task_queue=QUEUE, workflows=[pipeline], activities=[step]):
            clock.advance(HOUR)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == ["RESERVE", "CHARGE", "SHIP"]
        history = await handle.history()

    assert runs == {"reserve": 1, "charge": 1, "ship": 1}
    assert _count(history, ActivityCompleted) == 3


async def test_activity_in_flight_when_the_worker_stops_runs_again_after_restart(
    db_path: Path,
) -> None:
    keys: list[str] = []
    first_started = asyncio.Event()

    @activity.defn
    async def send_invoice(order_id: str) -> str:
        keys.append(activity.info().idempotency_key)
        if len(keys) == 1:
            first_started.set()
            await asyncio.Event().wait()  # interrupted by the worker stopping
        return f"sent {order_id}"

    @workflow.defn
    async def invoice(order_id: str) -> str:
        return await send_invoice(order_id)

    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[invoice], activities=[send_invoice]
        ):
            await client.start_workflow(invoice, "o-1", id="invoice-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await first_started.wait()

    async with open_client(db_path) as client:
        handle = client.get_handle("invoice-1")
        async with open_worker(
            client, task_queue=QUEUE, workflows=[invoice], activities=[send_invoice]
        ):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "sent o-1"
        history = await handle.history()

    # At-least-once: run twice, recorded once, with one key the activity can deduplicate on.
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert _count(history, ActivityCompleted) == 1
