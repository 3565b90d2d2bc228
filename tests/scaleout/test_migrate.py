"""Migrating a store: every run of one store, copied into another of either kind, verified,
and carried on by a worker on the target as if nothing had happened.

The source is filled by a real worker: runs that completed, a continue-as-new chain, a run
waiting on a durable timer and one waiting for a signal. After the copy, a worker on the
target fires the timer, receives the signal and finishes both; the closed runs read the same
there as in the source. Time is a ``ManualClock`` shared by both sides, so an hour-long timer
fires when the test moves the clock, not after an hour.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import Client, ManualClock
from history import (
    RunQuery,
    StoreError,
    migrate,
    open_store,
)
from sdk import activity, open_client, open_worker, workflow

QUEUE = "migrate"
WAIT = 15.0
HOUR = 3600.0
START = 1_800_000_000.0


@activity.defn
async def add(total: int, n: int) -> int:
    return total + n


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
async def summing(n: int, total: int) -> int:
    """Adds n, n-1, … 1, one activity per run, continuing as new after each."""
    if n == 0:
        return total
    total = await add(total, n)
    workflow.continue_as_new(n - 1, total)


@workflow.defn
async def hello(name: str) -> str:
    return await greet(name)


@workflow.defn
async def napper(name: str) -> str:
    await asyncio.sleep(HOUR)
    return await greet(f"{name}, rested")


@workflow.defn
class Waiter:
    def __init__(self) -> None:
        self.word: str | None = None

    @workflow.signal
    def say(self, word: str) -> None:
        self.word = word

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.word is not None)
        return await greet(str(self.word))


WORKFLOWS: list[Any] = [summing, hello, napper, Waiter]
ACTIVITIES: list[Any] = [add, greet]


async def wait_until_resting(client: Client, workflow_id: str, *, timers: int = 0) -> None:
    """The worker handed the run back, with ``timers`` pending: it waits for something only
    time or a signal brings."""
    async with asyncio.timeout(WAIT):
        while True:
            info = await client.get_handle(workflow_id).run_info()
            pending = await client.store.pending_timers(info.run_id)
            if info.owner is None and len(pending) == timers:
                return
            await client.store.wait_for_run(info.run_id, 0.01)


async def fill(url: str, clock: ManualClock) -> None:
    """Two completed runs, a chain of four runs (three continued as new), one run waiting on
    an hour-long timer and one waiting for a signal; then every worker stops."""
    async with open_client(url, clock=clock) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES, keep_alive=0.0
        ):
            for name in ("ada", "bob"):
                handle = await client.start_workflow(
                    hello, name, id=f"hello-{name}", task_queue=QUEUE
                )
                async with asyncio.timeout(WAIT):
                    assert await handle.result() == f"hello {name}"
            chain = await client.start_workflow(summing, 3, 0, id="sum", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await chain.result() == 6
            await client.start_workflow(napper, "cy", id="nap", task_queue=QUEUE)
            await client.start_workflow(Waiter, id="wait", task_queue=QUEUE)
            await wait_until_resting(client, "nap", timers=1)
            await wait_until_resting(client, "wait")


async def finish_on(url: str, clock: ManualClock) -> dict[str, Any]:
    """A worker on ``url`` fires the timer and delivers the signal; the results."""
    async with open_client(url, clock=clock) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES
        ):
            await client.get_handle("wait").signal("say", "dee")
            clock.advance(HOUR + 1)
            results: dict[str, Any] = {}
            for wid in ("wait", "nap", "hello-ada", "sum"):
                try:
                    async with asyncio.timeout(WAIT):
                        results[wid] = await client.get_handle(wid).result()
                except TimeoutError:
                    info = await client.get_handle(wid).run_info()
                    pytest.fail(f"{wid} did not finish on {url}: {info}")
            return results


async def statuses(url: str) -> dict[str, int]:
    store = await open_store(url)
    try:
        runs = await store.list_runs(RunQuery(limit=1000))
    finally:
        await store.close()
    counts: dict[str, int] = {}
    for info in runs:
        counts[info.status.value] = counts.get(info.status.value, 0) + 1
    return counts


@pytest.fixture(params=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def direction(
    request: pytest.FixtureRequest, sqlite_url: str, postgres_url: str
) -> tuple[str, str]:
    if request.param == "sqlite-to-postgresql":
        return sqlite_url, postgres_url
    return postgres_url, sqlite_url


async def test_migrated_runs_read_the_same_and_open_ones_finish_on_the_target(
    direction: tuple[str, str],
) -> None:
    source_url, target_url = direction
    clock = ManualClock(start=START)
    await fill(source_url, clock)
    before = await statuses(source_url)

    source, target = await open_store(source_url), await open_store(target_url)
    try:
        report = await migrate(source, target)
        copied = {
            r.run_id: await target.read_history(r.run_id)
            for r in await source.list_runs(RunQuery(limit=100))
        }
        originals = {run_id: await source.read_history(run_id) for run_id in copied}
        timers = await target.pending_timers()
    finally:
        await source.close()
        await target.close()

    assert before == {"completed": 3, "continued_as_new": 3, "running": 2}
    assert (report.runs, report.open_runs) == (8, 2)
    assert report.events == sum(len(h) for h in originals.values())
    assert copied == originals
    assert len(timers) == 1
    results = await finish_on(target_url, clock)
    assert results == {
        "nap": "hello cy, rested",
        "wait": "hello dee",
        "hello-ada": "hello ada",
        "sum": 6,
    }
    assert await statuses(target_url) == {"completed": 5, "continued_as_new": 3}


async def test_a_migration_into_a_store_that_holds_runs_is_refused(
    sqlite_url: str, postgres_url: str
) -> None:
    clock = ManualClock(start=START)
    await fill(sqlite_url, clock)
    source, target = await open_store(sqlite_url), await open_store(postgres_url)
    try:
        await migrate(source, target)

        with pytest.raises(StoreError, match="already holds 8 runs"):
            await migrate(source, target)
    finally:
        await source.close()
        await target.close()


async def test_a_resumed_migration_skips_the_runs_already_copied(
    sqlite_url: str, postgres_url: str
) -> None:
    clock = ManualClock(start=START)
    await fill(sqlite_url, clock)
    source, target = await open_store(sqlite_url), await open_store(postgres_url)
    try:
        # An interrupted migration: three runs made it across.
        for info in (await source.list_runs(RunQuery(limit=100)))[-3:]:
            history = await source.read_history(info.run_id)
            await target.create_run(info.run_id, history[0], now=START, history=history[1:])  # type: ignore[arg-type]

        report = await migrate(source, target, resume=True)

        assert (report.runs, report.skipped) == (5, 3)
        assert await target.count_runs(RunQuery()) == 8
    finally:
        await source.close()
        await target.close()


async def test_migration_reports_progress_run_by_run(sqlite_url: str, postgres_url: str) -> None:
    clock = ManualClock(start=START)
    await fill(sqlite_url, clock)
    seen: list[tuple[int, int]] = []
    source, target = await open_store(sqlite_url), await open_store(postgres_url)
    try:
        await migrate(source, target, progress=lambda done, total: seen.append((done, total)))
    finally:
        await source.close()
        await target.close()

    assert seen == [(n, 8) for n in range(1, 9)]


async def test_a_store_cannot_be_migrated_onto_itself(sqlite_url: str) -> None:
    store = await open_store(sqlite_url)
    try:
        with pytest.raises(StoreError, match="onto itself"):
            await migrate(store, store)
    finally:
        await store.close()
