"""Shrunk counterexamples found by the crash/resume property harness (``tests/property``),
kept as plain tests so the bug they caught stays fixed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from engine import Client, ManualClock, Worker
from history import SqliteStore
from sdk import activity, workflow
from sdk.testing import FaultPoint, Faults

QUEUE = "regressions"
LEASE = 30.0
START = 1_800_000_000.0
WAIT = 10.0


async def test_a_run_is_taken_over_with_the_clock_exactly_at_the_dead_owners_lease_expiry(
    db_path: Path,
) -> None:
    # Shrunk case: ``seq[a1]``; worker w1 dies at before_append (hit #1) holding the run;
    # worker w2 (another identity) starts; the clock jumps to w1's lease expiry — the time
    # next_wake_at named. The claim required the lease to have expired *strictly before*
    # now, so w2 found nothing to claim, asked again when to wake, heard "now", and polled
    # in a loop while the clock stood still: the run never moved.
    runs: Counter[str] = Counter()

    @activity.defn
    async def a1(key: str) -> str:
        runs[key] += 1
        return f"{key}@1"

    @workflow.defn
    async def program(key: str) -> str:
        return await a1(key)

    clock = ManualClock(START)
    store = await SqliteStore.open(db_path)
    other = await SqliteStore.open(db_path)
    try:
        client = Client(store, clock=clock)
        options = {"task_queue": QUEUE, "workflows": [program], "activities": [a1]}
        doomed = Worker(
            store,
            identity="w1",
            lease_seconds=LEASE,
            clock=clock,
            faults=Faults.crash_at(FaultPoint.BEFORE_APPEND, 1),
            **options,
        )
        handle = await client.start_workflow(program, "a1", id="r1", task_queue=QUEUE)
        await doomed.start()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        assert doomed.crashed is not None
        await doomed.stop()
        expiry = (await store.get_run(handle.run_id or "")).lease_expires_at
        assert expiry == START + LEASE

        async with Worker(other, identity="w2", lease_seconds=LEASE, clock=clock, **options):
            clock.set(expiry)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "a1@1"
            claimed_at = clock.now()
    finally:
        await other.close()
        await store.close()

    assert claimed_at == expiry  # taken over at that instant, the clock never moved on
    assert runs["a1"] == 2  # in flight at the crash: run again once
