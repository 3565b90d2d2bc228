"""Opening, closing and reopening a store: what was acknowledged is there after reopening,
and a closed store refuses to work instead of failing obscurely."""

from __future__ import annotations

import asyncio

import pytest
from conformance_support import Backend, external_append, new_run, scheduled

from history import StoreError


async def test_acknowledged_appends_are_all_there_after_reopening(backend: Backend) -> None:
    store = await backend.open()
    run_ids = [f"run-{i}" for i in range(20)]
    await asyncio.gather(*(new_run(store, r) for r in run_ids))
    await asyncio.gather(
        *(external_append(store, r, [scheduled(1), scheduled(2)]) for r in run_ids)
    )
    await store.close()

    reopened = await backend.open()
    try:
        histories = await asyncio.gather(*(reopened.read_history(r) for r in run_ids))
    finally:
        await reopened.close()

    assert [[e.event_id for e in h] for h in histories] == [[1, 2, 3]] * len(run_ids)


async def test_a_closed_store_refuses_reads_and_writes(backend: Backend) -> None:
    store = await backend.open()
    await new_run(store, "run-1")
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.read_history("run-1")
    with pytest.raises(StoreError, match="closed"):
        await external_append(store, "run-1", [scheduled(1)])


async def test_closing_a_store_twice_is_harmless(backend: Backend) -> None:
    store = await backend.open()

    await store.close()
    await store.close()


async def test_the_store_can_be_used_as_an_async_context_manager(backend: Backend) -> None:
    async with await backend.open() as store:  # type: ignore[attr-defined]
        await new_run(store, "run-1")

    with pytest.raises(StoreError, match="closed"):
        await store.get_run("run-1")
