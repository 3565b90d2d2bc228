"""Appends: gap-free numbering, fencing by expected event id and fencing token, closed runs,
and per-request atomicity (one refused request never undoes another)."""

from __future__ import annotations

import asyncio

import pytest
from conformance_support import (
    LEASE,
    NOW,
    QUEUE,
    T0,
    claim_one,
    completed,
    event_ids,
    external_append,
    failed,
    new_run,
    owner_append,
    scheduled,
    started,
    task_spec,
    timer,
)

from history import (
    ActivityScheduled,
    AppendConflictError,
    AppendRequest,
    LeaseLostError,
    Payload,
    RunClaim,
    RunClosedError,
    RunInfo,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    Store,
    TimerFired,
    WorkflowAlreadyRunningError,
    WorkflowCompleted,
)


async def test_the_store_assigns_gap_free_event_ids_whatever_the_caller_set(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    events = [
        ActivityScheduled(event_id=99, timestamp=T0, seq=1, activity_type="a", task_queue="q"),
        scheduled(2),
        scheduled(3),
    ]

    result = (await external_append(store, "run-1", events)).unwrap()

    assert result.next_event_id == 5
    assert [e.event_id for e in result.events] == [2, 3, 4]
    assert await event_ids(store, "run-1") == [1, 2, 3, 4]


async def test_successive_appends_continue_the_numbering(store: Store) -> None:
    await new_run(store, "run-1")

    for seq in range(1, 6):
        (await external_append(store, "run-1", [scheduled(seq)])).unwrap()

    assert await event_ids(store, "run-1") == [1, 2, 3, 4, 5, 6]
    assert (await store.get_run("run-1")).history_length == 6


async def test_appended_events_read_back_equal_and_in_order(store: Store) -> None:
    await new_run(store, "run-1")
    result = (await external_append(store, "run-1", [scheduled(1), scheduled(2)])).unwrap()

    assert (await store.read_history("run-1"))[1:] == list(result.events)


async def test_read_history_after_an_event_id_returns_only_later_events(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [scheduled(1), scheduled(2), scheduled(3)])).unwrap()

    history = await store.read_history("run-1", after_event_id=2)

    assert [e.event_id for e in history] == [3, 4]
    assert await store.read_history("run-1", after_event_id=4) == []


async def test_append_with_stale_expected_event_id_is_refused_and_writes_nothing(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)])).unwrap()

    result = await owner_append(
        store, run, [timer(1, 60)], expected=2, activity_tasks=[task_spec()], release=True
    )

    assert isinstance(result.error, AppendConflictError)
    assert (result.error.expected_next_event_id, result.error.actual_next_event_id) == (2, 3)
    assert result.events == ()
    assert await event_ids(store, "run-1") == [1, 2]
    assert await store.pending_timers("run-1") == []
    assert (
        await store.claim_activity_tasks("acts", owner="w", now=NOW, lease_seconds=10, limit=10)
        == []
    )
    assert (await store.get_run("run-1")).owner == "worker-a"


async def test_unwrap_raises_the_error_that_refused_an_append(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    result = await owner_append(store, run, [scheduled(1)], expected=7)

    with pytest.raises(AppendConflictError, match="expected next event id 7"):
        result.unwrap()


async def test_append_with_a_stale_fence_raises_lease_lost_and_writes_nothing(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    first = await claim_one(store, "worker-a", now=NOW)
    second = await claim_one(store, "worker-b", now=NOW + LEASE + 1)

    result = await owner_append(store, first, [scheduled(1)])

    assert second.fence == first.fence + 1
    assert isinstance(result.error, LeaseLostError)
    assert result.error.run_id == "run-1"
    assert await event_ids(store, "run-1") == [1]


async def test_two_owners_racing_after_lease_expiry_only_the_newest_fence_appends(
    store: Store, other_store: Store
) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)
    later = NOW + LEASE + 1

    # Both see the lease expired; the store serialises their claims.
    a_claims, b_claims = await asyncio.gather(
        store.claim_runs(QUEUE, owner="worker-a", now=later, lease_seconds=LEASE, limit=1),
        other_store.claim_runs(QUEUE, owner="worker-b", now=later, lease_seconds=LEASE, limit=1),
    )
    assert len(a_claims) + len(b_claims) == 1
    winner_store, winner = (store, a_claims[0]) if a_claims else (other_store, b_claims[0])
    loser_store = other_store if winner_store is store else store
    stale = RunClaim(
        run_id="run-1", fence=winner.fence - 1, workflow_type="Order", history_length=1
    )

    lost, won = await asyncio.gather(
        owner_append(loser_store, stale, [scheduled(1)]),
        owner_append(winner_store, winner, [scheduled(2)]),
    )

    assert isinstance(lost.error, LeaseLostError)
    assert won.error is None
    history = await store.read_history("run-1")
    assert [(e.event_id, getattr(e, "seq", None)) for e in history] == [(1, None), (2, 2)]


async def test_an_owner_that_lost_its_lease_cannot_append_even_with_the_right_event_id(
    store: Store, other_store: Store
) -> None:
    await new_run(store, "run-1")
    old = await claim_one(store, "worker-a", now=NOW)
    new = await claim_one(other_store, "worker-b", now=NOW + LEASE + 1)
    (await owner_append(other_store, new, [scheduled(1)])).unwrap()

    result = await owner_append(store, old, [scheduled(1)], expected=3)

    assert isinstance(result.error, LeaseLostError)
    assert await event_ids(store, "run-1") == [1, 2]


async def test_concurrent_claims_on_one_file_never_lease_a_run_twice(
    store: Store, other_store: Store
) -> None:
    await asyncio.gather(*(new_run(store, f"run-{i}") for i in range(20)))

    claims = await asyncio.gather(
        *(
            s.claim_runs(QUEUE, owner=f"worker-{i}", now=NOW, lease_seconds=LEASE, limit=3)
            for i, s in enumerate([store, other_store] * 5)
        )
    )

    run_ids = [c.run_id for batch in claims for c in batch]
    assert len(run_ids) == len(set(run_ids)) == 20


async def test_an_owner_append_to_a_closed_run_raises_run_closed(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [completed()])).unwrap()

    result = await owner_append(store, run, [scheduled(1)], expected=3)

    assert isinstance(result.error, RunClosedError)
    assert result.error.status == "completed"
    assert await event_ids(store, "run-1") == [1, 2]


async def test_an_external_append_to_a_closed_run_raises_run_closed(store: Store) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [failed()])).unwrap()

    with pytest.raises(RunClosedError, match="failed"):
        (await external_append(store, "run-1", [scheduled(1)])).unwrap()


async def test_an_append_to_an_unknown_run_is_refused(store: Store) -> None:
    result = await external_append(store, "nope", [scheduled(1)])

    assert isinstance(result.error, RunNotFoundError)


async def test_an_external_append_goes_after_whatever_the_history_holds(
    store: Store,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1), scheduled(2)])).unwrap()

    result = (await external_append(store, "run-1", [TimerFired(timestamp=T0, seq=9)])).unwrap()

    assert [e.event_id for e in result.events] == [4]


async def test_an_append_with_no_events_changes_no_history(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    result = (await owner_append(store, run, [])).unwrap()

    assert result.next_event_id == 2
    assert await event_ids(store, "run-1") == [1]


async def test_one_conflicting_request_in_a_batch_does_not_undo_the_others(
    store: Store,
) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)

    results = await store.append(
        [
            AppendRequest(run_id="run-1", events=[timer(1, 5)], now=NOW),
            AppendRequest(run_id="run-2", events=[timer(1, 5)], now=NOW, expected_next_event_id=9),
            AppendRequest(run_id="run-3", events=[timer(1, 5)], now=NOW),
        ]
    )

    assert [r.run_id for r in results] == ["run-1", "run-2", "run-3"]
    assert [type(r.error) for r in results] == [type(None), AppendConflictError, type(None)]
    assert [await event_ids(store, r) for r in ("run-1", "run-2", "run-3")] == [
        [1, 2],
        [1],
        [1, 2],
    ]
    assert [t.run_id for t in await store.pending_timers()] == ["run-1", "run-3"]


async def test_one_refused_create_run_in_a_batch_does_not_undo_the_others(
    store: Store,
) -> None:
    outcomes = await asyncio.gather(
        store.create_run("run-1", started("wf-1"), now=NOW),
        store.create_run("run-2", started("wf-1"), now=NOW),
        store.create_run("run-3", started("wf-3"), now=NOW),
        return_exceptions=True,
    )

    assert [type(o) for o in outcomes] == [RunInfo, WorkflowAlreadyRunningError, RunInfo]
    assert {r.run_id for r in await store.list_runs(RunQuery())} == {"run-1", "run-3"}


async def test_a_request_that_cannot_be_encoded_fails_alone_and_the_store_keeps_writing(
    store: Store,
) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)
    unencodable = WorkflowCompleted(timestamp=T0, result=Payload("json", object()))  # type: ignore[arg-type]

    outcomes = await asyncio.gather(
        external_append(store, "run-1", [scheduled(1)]),
        external_append(store, "run-2", [scheduled(1), unencodable]),
        external_append(store, "run-3", [scheduled(1)]),
        return_exceptions=True,
    )
    after = await external_append(store, "run-2", [scheduled(1)])

    assert isinstance(outcomes[1], TypeError)
    assert [await event_ids(store, r) for r in ("run-1", "run-2", "run-3")] == [
        [1, 2],
        [1, 2],
        [1, 2],
    ]
    assert after.error is None
    assert (await store.get_run("run-2")).status is RunStatus.RUNNING


async def test_appends_for_one_run_in_one_call_apply_in_order(store: Store) -> None:
    await new_run(store, "run-1")

    results = await store.append(
        [
            AppendRequest(run_id="run-1", events=[scheduled(1)], now=NOW),
            AppendRequest(run_id="run-1", events=[scheduled(2)], now=NOW),
        ]
    )

    assert [r.next_event_id for r in results] == [3, 4]
    assert [getattr(e, "seq", None) for e in await store.read_history("run-1")] == [None, 1, 2]
