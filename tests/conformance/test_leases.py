"""Runs as their own task queue: claims with leases and fences, wake-up times, renewals,
releases."""

from __future__ import annotations

import asyncio

from conformance_support import (
    LEASE,
    NOW,
    QUEUE,
    RESULT,
    T0,
    claim,
    claim_one,
    completed,
    external_append,
    new_run,
    owner_append,
    scheduled,
    started,
    task_spec,
    timer,
)

from history import (
    ActivityCompleted,
    RunClaim,
    RunQuery,
    Store,
)


async def test_claim_runs_leases_a_ready_run_and_increments_the_fence(store: Store) -> None:
    await new_run(store, "run-1")

    first = await claim_one(store, "worker-a", now=NOW)
    info = await store.get_run("run-1")

    assert first == RunClaim(run_id="run-1", fence=1, workflow_type="Order", history_length=1)
    assert (info.owner, info.lease_expires_at, info.wake_at) == ("worker-a", NOW + LEASE, None)


async def test_each_claim_of_a_run_gets_a_higher_fence(store: Store) -> None:
    await new_run(store, "run-1")

    fences = [
        (await claim_one(store, f"worker-{i}", now=NOW + i * (LEASE + 1))).fence for i in range(4)
    ]

    assert fences == [1, 2, 3, 4]


async def test_claim_runs_reports_the_history_length_at_claim_time(store: Store) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [scheduled(1), scheduled(2)], wake=True)).unwrap()

    assert (await claim_one(store)).history_length == 3


async def test_claim_runs_only_takes_runs_of_its_task_queue(store: Store) -> None:
    await store.create_run("run-1", started("wf-1", task_queue="elsewhere"), now=NOW)

    assert await claim(store) == []
    assert len(await store.claim_runs("elsewhere", owner="w", now=NOW, lease_seconds=1, limit=1))


async def test_claim_runs_takes_at_most_limit_runs(store: Store) -> None:
    await asyncio.gather(*(new_run(store, f"run-{i}") for i in range(5)))

    claims = await store.claim_runs(QUEUE, owner="w", now=NOW, lease_seconds=LEASE, limit=2)

    assert len(claims) == 2


async def test_a_leased_run_is_not_claimed_again_before_its_lease_expires(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)

    assert await claim(store, "worker-b", now=NOW + LEASE - 0.001) == []


async def test_a_lease_is_claimable_from_the_instant_next_wake_at_reports(
    store: Store,
) -> None:
    # Found by the crash/resume harness: at exactly the expiry next_wake_at named, the claim
    # was refused, so a poller on a clock standing there polled again at once, forever.
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)
    expiry = await store.next_wake_at(QUEUE, owner="worker-b")

    assert expiry == NOW + LEASE
    assert (await claim_one(store, "worker-b", now=expiry)).fence == 2


async def test_a_run_whose_lease_expired_is_claimable_by_another_owner(store: Store) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)

    taken = await claim_one(store, "worker-b", now=NOW + LEASE + 0.001)

    assert taken.fence == 2
    assert (await store.get_run("run-1")).owner == "worker-b"


async def test_a_run_is_not_claimable_before_its_wake_at(store: Store) -> None:
    await store.create_run("run-1", started(), now=NOW + 60)

    assert await claim(store, now=NOW + 59.9) == []
    assert len(await claim(store, now=NOW + 60)) == 1


async def test_a_closed_run_is_never_claimed(store: Store) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [completed()], wake=True)).unwrap()

    assert await claim(store, now=NOW + 10**6) == []


async def test_an_owner_append_clears_a_pending_wake_up(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)])).unwrap()

    assert (await store.get_run("run-1")).wake_at is None


async def test_release_with_wake_at_gives_the_run_up_until_that_time(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store, "worker-a")

    (await owner_append(store, run, [timer(1, 60)], release=True, wake_at=NOW + 60)).unwrap()

    info = await store.get_run("run-1")
    assert (info.owner, info.lease_expires_at, info.wake_at) == (None, None, NOW + 60)
    assert await claim(store, "worker-b", now=NOW + 59) == []
    assert (await claim_one(store, "worker-b", now=NOW + 60)).fence == run.fence + 1


async def test_a_run_released_without_wake_at_sleeps_until_an_external_event(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    (await owner_append(store, run, [scheduled(1)], release=True)).unwrap()

    assert await claim(store, now=NOW + 10**9) == []
    assert await store.next_wake_at(QUEUE) is None


async def test_an_external_append_with_wake_makes_a_released_run_claimable(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], release=True)).unwrap()
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    (await external_append(store, "run-1", [done], now=NOW + 5, wake=True)).unwrap()

    assert await store.next_wake_at(QUEUE) == NOW + 5
    assert (await claim_one(store, now=NOW + 5)).history_length == 3


async def test_an_external_append_without_wake_leaves_a_sleeping_run_asleep(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 100)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5)).unwrap()

    assert await claim(store, now=NOW + 5) == []
    assert (await store.get_run("run-1")).wake_at == NOW + 100


async def test_an_external_wake_brings_a_later_wake_at_forward(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 100)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5, wake=True)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 5


async def test_an_external_wake_never_postpones_an_earlier_wake_at(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 3)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5, wake=True)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 3


async def test_a_fenced_append_after_the_owner_released_the_run_wakes_it_instead_of_stranding_it(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [timer(1, 60)], release=True, wake_at=NOW + 60)).unwrap()

    # The fence is still current (nobody claimed since), so the late append is accepted.
    (await owner_append(store, run, [scheduled(1)], expected=3, now=NOW + 1)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 1
    assert (await claim_one(store, "worker-b", now=NOW + 1)).history_length == 3


async def test_renew_leases_extends_and_returns_the_runs_still_owned(store: Store) -> None:
    await new_run(store, "run-1")
    await new_run(store, "run-2")
    await new_run(store, "run-3")
    runs = {c.run_id: c for c in await claim(store, "worker-a")}
    (await owner_append(store, runs["run-2"], [completed()])).unwrap()
    (await owner_append(store, runs["run-3"], [], release=True, wake_at=NOW + 9)).unwrap()

    owned = await store.renew_leases("worker-a", until=NOW + 100)

    assert owned == {"run-1"}
    assert (await store.get_run("run-1")).lease_expires_at == NOW + 100


async def test_renew_leases_does_not_return_a_run_another_owner_took_over(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)
    await claim_one(store, "worker-b", now=NOW + LEASE + 1)

    assert await store.renew_leases("worker-a", until=NOW + 100) == set()
    assert (await store.get_run("run-1")).lease_expires_at == NOW + 2 * LEASE + 1


async def test_next_wake_at_is_the_earliest_time_a_run_of_the_queue_needs_a_worker(
    store: Store,
) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW + 50)
    await store.create_run("run-2", started("wf-2"), now=NOW + 20)
    await store.create_run("run-3", started("wf-3", task_queue="other"), now=NOW)

    assert await store.next_wake_at(QUEUE) == NOW + 20


async def test_next_wake_at_counts_the_expiry_of_a_held_lease(store: Store) -> None:
    await new_run(store, "run-1")
    await claim_one(store, now=NOW, lease=LEASE)

    assert await store.next_wake_at(QUEUE) == NOW + LEASE


async def test_release_owner_drops_every_run_lease_of_that_owner_only(store: Store) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)
    await store.claim_runs(QUEUE, owner="worker-a", now=NOW, lease_seconds=LEASE, limit=2)
    await claim_one(store, "worker-b", now=NOW)

    released = await store.release_owner("worker-a")

    owners = sorted(str(r.owner) for r in await store.list_runs(RunQuery()))
    assert released == 2
    assert owners == ["None", "None", "worker-b"]


async def test_runs_of_a_released_owner_are_claimable_at_once(store: Store) -> None:
    await new_run(store, "run-1")
    old = await claim_one(store, "worker-a", now=NOW)
    await store.release_owner("worker-a")

    new = await claim_one(store, "worker-a-restarted", now=NOW + 1)

    assert new.fence == old.fence + 1


async def test_release_owner_frees_its_activity_task_leases(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=[task_spec(1)])).unwrap()
    await store.claim_activity_tasks("acts", owner="worker-a", now=NOW, lease_seconds=60, limit=1)

    await store.release_owner("worker-a")

    tasks = await store.claim_activity_tasks(
        "acts", owner="worker-b", now=NOW + 1, lease_seconds=60, limit=1
    )
    assert [t.seq for t in tasks] == [1]
