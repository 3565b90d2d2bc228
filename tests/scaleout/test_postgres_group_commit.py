"""Group commit on PostgreSQL: appends made together share one statement, yet each stays
atomic on its own — even one that fails inside the database does not undo the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from pg_support import POSTGRES_URL

from history import AppendRequest, SignalReceived, StoreError, WorkflowStarted
from history.postgres import PostgresStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def started(workflow_id: str) -> WorkflowStarted:
    return WorkflowStarted(timestamp=T0, workflow_type="T", workflow_id=workflow_id, task_queue="q")


def signal() -> SignalReceived:
    return SignalReceived(timestamp=T0, name="say")


async def test_a_request_failing_inside_the_database_leaves_the_rest_of_its_batch_applied(
    postgres_url: str,
) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        for run_id in ("a", "b", "c"):
            await store.create_run(run_id, started(run_id), now=0.0)
        # Damage run "b" behind the store's back: a stray event where its next one goes, so
        # its append violates the events' primary key.
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(
                f'INSERT INTO "{store.schema}".events (run_id, event_id, data) '
                "VALUES ('b', 2, '\\x00')"
            )
        finally:
            await conn.close()

        outcomes = await asyncio.gather(
            *(
                store.append([AppendRequest(run_id=run_id, events=[signal()], now=1.0, wake=True)])
                for run_id in ("a", "b", "c")
            ),
            return_exceptions=True,
        )

        assert isinstance(outcomes[1], StoreError)
        for run_id, outcome in zip(("a", "b", "c"), outcomes, strict=True):
            if run_id != "b":
                assert not isinstance(outcome, BaseException), outcome
                assert [e.event_id for e in await store.read_history(run_id)] == [1, 2]
        assert (await store.get_run("b")).history_length == 1
    finally:
        await store.close()


async def test_reads_and_creations_queued_while_batches_are_in_flight_all_complete(
    postgres_url: str,
) -> None:
    """Requests keep arriving while earlier batches are on their way: queued ones start when a
    slot frees up. (The hang this guards against needed two batches to finish in the same
    loop iteration; test_migrate's progress test hit it about once in 25 runs, this test
    exercises the same path with many more batches.)"""
    store = await PostgresStore.open(postgres_url)
    try:

        async def create(n: int) -> None:
            await store.create_run(f"r{n}", started(f"w{n}"), now=0.0)

        async def read(n: int) -> int:
            return len(await store.read_history(f"r{n}"))

        async with asyncio.timeout(30):
            creations: list[asyncio.Future[None]] = []
            for n in range(200):
                creations.append(asyncio.ensure_future(create(n)))
                if n % 7 == 0:
                    await asyncio.sleep(0.001)  # later ones queue while batches are out
            await asyncio.gather(*creations)
            reads: list[asyncio.Future[int]] = []
            for n in range(200):
                reads.append(asyncio.ensure_future(read(n)))
                if n % 7 == 0:
                    await asyncio.sleep(0.001)
            lengths = await asyncio.gather(*reads)
    finally:
        await store.close()

    assert lengths == [1] * 200
