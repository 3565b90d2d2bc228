"""Backups of a live SQLite store: taken while a worker writes, consistent, replayable run by
run with no nondeterminism, and restorable into either kind of store, where a worker finishes
the runs that were open when the backup was taken."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import Registry, replay_history
from history import (
    RunQuery,
    RunStatus,
    SqliteStore,
    StoreError,
    backup_store,
    open_store,
    restore_store,
)
from sdk import activity, open_client, open_worker, workflow

QUEUE = "backup"
WAIT = 20.0
RUNS = 40


@activity.defn
async def double(n: int) -> int:
    await asyncio.sleep(0.002)
    return 2 * n


@workflow.defn
async def doubling(n: int) -> int:
    total = n
    for _ in range(3):
        total = await double(total)
    await asyncio.sleep(0.01)
    return total


REGISTRY = Registry([doubling], [double])


async def backup_mid_flight(db: Path, copy: Path) -> None:
    """Start RUNS runs, back the store up once some (not all) have finished, let the rest
    finish."""
    async with open_client(db) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[doubling], activities=[double]):
            handles = [
                await client.start_workflow(doubling, i, id=f"d-{i}", task_queue=QUEUE)
                for i in range(RUNS)
            ]
            async with asyncio.timeout(WAIT):
                await handles[2].result()
            await backup_store(client.store, copy)
            async with asyncio.timeout(WAIT):
                assert [await h.result() for h in handles] == [8 * i for i in range(RUNS)]


async def test_a_backup_taken_while_a_worker_writes_replays_without_nondeterminism(
    tmp_path: Path,
) -> None:
    await backup_mid_flight(tmp_path / "live.db", tmp_path / "copy.db")

    copy = await SqliteStore.open(tmp_path / "copy.db")
    try:
        runs = await copy.list_runs(RunQuery(limit=1000))
        assert await copy.integrity_check() == "ok"
        for info in runs:
            history = await copy.read_history(info.run_id)
            instance = replay_history(REGISTRY, history, run_id=info.run_id)
            # An open run may replay to its end already (its last result is recorded, its
            # completion not yet); a completed one must.
            if info.status is RunStatus.COMPLETED:
                assert instance.completion is not None, info.run_id
    finally:
        await copy.close()

    assert len(runs) == RUNS
    statuses = {info.status for info in runs}
    assert RunStatus.COMPLETED in statuses
    assert RunStatus.RUNNING in statuses  # taken mid-flight: some runs were still open


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_restored_backup_finishes_its_open_runs_on_the_target(
    tmp_path: Path, sqlite_url: str, postgres_url: str, kind: str
) -> None:
    await backup_mid_flight(tmp_path / "live.db", tmp_path / "copy.db")
    target_url = postgres_url if kind == "postgresql" else f"sqlite:///{tmp_path / 'new.db'}"

    target = await open_store(target_url)
    try:
        report = await restore_store(tmp_path / "copy.db", target)
    finally:
        await target.close()

    assert report.runs == RUNS
    assert 0 < report.open_runs < RUNS
    async with open_client(target_url) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[doubling], activities=[double]):
            async with asyncio.timeout(WAIT):
                results = [await client.get_handle(f"d-{i}").result() for i in range(RUNS)]
    assert results == [8 * i for i in range(RUNS)]


async def test_restoring_a_missing_backup_file_raises_store_error(
    tmp_path: Path, postgres_url: str
) -> None:
    target = await open_store(postgres_url)
    try:
        with pytest.raises(StoreError, match="does not exist"):
            await restore_store(tmp_path / "nope.db", target)
    finally:
        await target.close()


async def test_backing_up_a_postgresql_store_points_to_pg_dump(
    tmp_path: Path, postgres_url: str
) -> None:
    store = await open_store(postgres_url)
    try:
        with pytest.raises(StoreError, match="pg_dump"):
            await backup_store(store, tmp_path / "copy.db")
    finally:
        await store.close()
