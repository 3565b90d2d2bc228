"""Several store objects on one file or schema, as several worker processes hold them:
claims never hand one run (or one activity task) to two owners, and a stale owner's append is
refused after a takeover, whatever the interleaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conformance_support import (
    LEASE,
    NOW,
    QUEUE,
    Backend,
    claim_one,
    event_ids,
    new_run,
    owner_append,
    scheduled,
    task_spec,
)

from history import LeaseLostError, RunClaim, Store


@pytest.fixture
async def stores(backend: Backend, store: Store) -> AsyncIterator[list[Store]]:
    """Four store objects on the same data: the test's own and three more."""
    others = [await backend.open() for _ in range(3)]
    yield [store, *others]
    for other in others:
        await other.close()


async def test_concurrent_claims_from_several_stores_never_lease_a_run_twice(
    stores: list[Store],
) -> None:
    await asyncio.gather(*(new_run(stores[0], f"run-{i}") for i in range(60)))

    batches = await asyncio.gather(
        *(
            stores[i % 4].claim_runs(
                QUEUE, owner=f"worker-{i}", now=NOW, lease_seconds=LEASE, limit=4
            )
            for i in range(24)
        )
    )

    run_ids = [c.run_id for batch in batches for c in batch]
    assert len(run_ids) == len(set(run_ids)) == 60


async def test_concurrent_takeovers_of_expired_leases_give_each_run_one_new_owner(
    stores: list[Store],
) -> None:
    await asyncio.gather(*(new_run(stores[0], f"run-{i}") for i in range(20)))
    await stores[0].claim_runs(QUEUE, owner="dead", now=NOW, lease_seconds=LEASE, limit=20)
    later = NOW + LEASE

    batches = await asyncio.gather(
        *(
            stores[i % 4].claim_runs(
                QUEUE, owner=f"worker-{i}", now=later, lease_seconds=LEASE, limit=3
            )
            for i in range(12)
        )
    )

    claims = [c for batch in batches for c in batch]
    assert sorted(c.run_id for c in claims) == sorted(f"run-{i}" for i in range(20))
    assert {c.fence for c in claims} == {2}


async def test_concurrent_activity_task_claims_never_hand_a_task_out_twice(
    stores: list[Store],
) -> None:
    await new_run(stores[0], "run-1")
    run = await claim_one(stores[0])
    specs = [task_spec(seq) for seq in range(1, 31)]
    events = [scheduled(seq) for seq in range(1, 31)]
    (await owner_append(stores[0], run, events, activity_tasks=specs)).unwrap()

    batches = await asyncio.gather(
        *(
            stores[i % 4].claim_activity_tasks(
                "acts", owner=f"act-{i}", now=NOW, lease_seconds=10, limit=3
            )
            for i in range(16)
        )
    )

    task_ids = [t.task_id for batch in batches for t in batch]
    assert len(task_ids) == len(set(task_ids)) == 30


async def test_after_a_takeover_only_the_new_owner_appends_whatever_the_interleaving(
    stores: list[Store],
) -> None:
    await new_run(stores[0], "run-1")
    old = await claim_one(stores[0], "worker-a", now=NOW)
    new = await claim_one(stores[1], "worker-b", now=NOW + LEASE)

    outcomes = await asyncio.gather(
        *(
            owner_append(stores[i % 4], claim, [scheduled(i)])
            for i, claim in enumerate([old, new, old, old])
        )
    )

    assert [o.error is None for o in outcomes] == [False, True, False, False]
    assert all(isinstance(o.error, LeaseLostError) for o in outcomes if o.error is not None)
    assert await event_ids(stores[2], "run-1") == [1, 2]


async def test_an_owner_never_reclaims_its_own_expired_lease(store: Store) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)

    mine = await store.claim_runs(
        QUEUE, owner="worker-a", now=NOW + LEASE, lease_seconds=1, limit=1
    )
    theirs = await store.claim_runs(
        QUEUE, owner="worker-b", now=NOW + LEASE, lease_seconds=1, limit=1
    )

    assert mine == []
    assert [c.fence for c in theirs] == [2]
    assert await store.next_wake_at(QUEUE, owner="worker-b") is None


async def test_a_refused_append_leaves_the_activity_task_it_would_finish(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=[task_spec(1)])).unwrap()
    [task] = await store.claim_activity_tasks(
        "acts", owner="act-a", now=NOW, lease_seconds=10, limit=1
    )
    stale = RunClaim(run_id="run-1", fence=run.fence + 5, workflow_type="Order", history_length=2)

    result = await owner_append(
        store, stale, [scheduled(2)], finish_activity_task=(task.task_id, "act-a")
    )

    assert isinstance(result.error, LeaseLostError)
    assert await store.renew_activity_tasks("act-a", [task.task_id], until=NOW + 60) == {
        task.task_id
    }
