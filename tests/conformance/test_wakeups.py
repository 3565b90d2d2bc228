"""Wake-ups: waiting for a run to close, and being told when work may be ready."""

from __future__ import annotations

import asyncio
import time

from conformance_support import (
    NOW,
    QUEUE,
    claim_one,
    completed,
    external_append,
    new_run,
    owner_append,
)

from history import Store, WorkNotifier


async def test_wait_for_run_returns_when_the_run_closes(store: Store) -> None:
    await new_run(store, "run-1")
    waiting = asyncio.create_task(store.wait_for_run("run-1", 30))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    (await external_append(store, "run-1", [completed()])).unwrap()

    await asyncio.wait_for(waiting, 5)


async def test_wait_for_run_gives_nothing_or_the_closing_event_as_stored(store: Store) -> None:
    # A store may hand over the closing event of a close made through it (SQLite does;
    # PostgreSQL's waiters are woken by NOTIFY and re-read): if it does, it is the event
    # the history holds.
    await new_run(store, "run-1")
    waiting = asyncio.create_task(store.wait_for_run("run-1", 30))
    await asyncio.sleep(0.05)

    (await external_append(store, "run-1", [completed()])).unwrap()
    closing = await asyncio.wait_for(waiting, 5)

    history = await store.read_history("run-1")
    assert closing is None or closing == history[-1]


async def test_wait_for_run_gives_nothing_when_max_wait_passes(store: Store) -> None:
    await new_run(store, "run-1")

    assert await store.wait_for_run("run-1", 0.05) is None


async def test_wait_for_run_returns_after_max_wait_when_nothing_happens(store: Store) -> None:
    await new_run(store, "run-1")
    started = time.monotonic()

    await store.wait_for_run("run-1", 0.05)

    assert 0.04 < time.monotonic() - started < 2


async def test_the_store_tells_work_listeners_of_a_new_run_on_their_queue(store: Store) -> None:
    assert isinstance(store, WorkNotifier)
    woken = asyncio.Event()
    remove = await store.add_work_listener(QUEUE, woken.set)

    await new_run(store, "run-1")

    await asyncio.wait_for(woken.wait(), 5)
    remove()


async def test_the_store_tells_work_listeners_of_a_release_with_a_wake_up_time(
    store: Store,
) -> None:
    assert isinstance(store, WorkNotifier)
    await new_run(store, "run-1")
    run = await claim_one(store)
    woken = asyncio.Event()
    remove = await store.add_work_listener(QUEUE, woken.set)
    await asyncio.sleep(0.05)
    woken.clear()

    (await owner_append(store, run, [], release=True, wake_at=NOW + 5)).unwrap()

    await asyncio.wait_for(woken.wait(), 5)
    remove()


async def test_a_removed_work_listener_is_not_called(store: Store) -> None:
    assert isinstance(store, WorkNotifier)
    calls: list[str] = []
    remove = await store.add_work_listener(QUEUE, lambda: calls.append("called"))
    remove()
    other = asyncio.Event()
    remove_other = await store.add_work_listener(QUEUE, other.set)

    await new_run(store, "run-1")

    await asyncio.wait_for(other.wait(), 5)
    assert calls == []
    remove_other()
