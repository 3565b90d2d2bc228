"""A worker survives a store error while polling (a lock held past the busy timeout, a full
disk): it logs, waits a poll interval and polls again instead of stopping for good."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine import Client, Worker
from history import StoreError, open_store
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
