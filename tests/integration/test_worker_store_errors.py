"""A worker survives a store error while polling (a lock held past the busy timeout, a full
disk): it logs, waits up to a poll interval (less when told of new work) and polls again
instead of stopping for good."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from engine import Client, Worker
from history import SqliteStore, StoreError, open_store
from sdk import workflow


@workflow.defn
async def noop() -> str:
    return "ok"


async def test_a_store_error_while_claiming_does_not_stop_the_worker(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "perdura.db")
    real_claim = store.claim_runs
    failures = [StoreError("the store stayed locked past the busy timeout")]

    async def claim_runs(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_claim(*args, **kwargs)

    store.claim_runs = claim_runs  # type: ignore[method-assign]
    try:
        async with Worker(store, task_queue="q", workflows=[noop], poll_interval=0.05):
            handle = await Client(store).start_workflow(noop, id="noop-1", task_queue="q")
            async with asyncio.timeout(10):
                assert await handle.result() == "ok"
        assert failures == []
    finally:
        await store.close()


async def test_after_a_failed_poll_new_work_is_taken_without_waiting_a_poll_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "perdura.db"
    store = await SqliteStore.open(path, busy_timeout=0.1)
    client = Client(store)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        async with Worker(store, task_queue="q", workflows=[noop], poll_interval=30.0) as worker:
            client.add_listener(worker)
            # Another process holds the write lock past the busy timeout: the poll this
            # notice starts fails ("database is locked").
            locker.execute("BEGIN IMMEDIATE")
            client.notify_listeners()
            await asyncio.sleep(0.5)
            locker.execute("ROLLBACK")
            handle = await client.start_workflow(noop, id="noop-2", task_queue="q")
            async with asyncio.timeout(5):  # far less than the 30 s poll interval
                assert await handle.result() == "ok"
    finally:
        locker.close()
        await store.close()
