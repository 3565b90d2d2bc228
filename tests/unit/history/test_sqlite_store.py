"""The SQLite store: fenced appends, group commit, run leases, projections, activity tasks.

Every test runs against a real SQLite file. Time is virtual: the store takes ``now`` from its
caller, so leases expire by passing a later ``now``, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from history import (
    ActivityCompleted,
    ActivityScheduled,
    ActivityTaskSpec,
    AppendConflictError,
    AppendRequest,
    AppendResult,
    Event,
    Failure,
    LeaseLostError,
    Payload,
    RunClaim,
    RunClosedError,
    RunInfo,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    SqliteStore,
    Store,
    StoreError,
    TimerCancelled,
    TimerFired,
    TimerInfo,
    TimerStarted,
    WorkflowAlreadyRunningError,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()
LEASE = 30.0
QUEUE = "main"
RESULT = Payload("json", b'"done"')


# -- building blocks ---------------------------------------------------------------------


def started(
    workflow_id: str = "wf-1",
    *,
    workflow_type: str = "Order",
    task_queue: str = QUEUE,
    at: datetime = T0,
) -> WorkflowStarted:
    return WorkflowStarted(
        timestamp=at,
        workflow_type=workflow_type,
        workflow_id=workflow_id,
        task_queue=task_queue,
        args=(Payload("json", b"42"),),
        seed=7,
    )


def scheduled(seq: int) -> ActivityScheduled:
    return ActivityScheduled(timestamp=T0, seq=seq, activity_type="charge", task_queue="acts")


def completed() -> WorkflowCompleted:
    return WorkflowCompleted(timestamp=T0 + timedelta(hours=1), result=RESULT)


def failed() -> WorkflowFailed:
    return WorkflowFailed(
        timestamp=T0 + timedelta(hours=2), failure=Failure(type="ValueError", message="bad")
    )


def timer(seq: int, seconds: float) -> TimerStarted:
    return TimerStarted(
        timestamp=T0, seq=seq, fire_at=T0 + timedelta(seconds=seconds), duration=seconds
    )


def task_spec(seq: int = 1, *, visible_at: float = NOW, queue: str = "acts") -> ActivityTaskSpec:
    return ActivityTaskSpec(
        seq=seq,
        task_queue=queue,
        attempt=1,
        visible_at=visible_at,
        payload=Payload("json", f'{{"seq":{seq}}}'.encode()),
    )


async def new_run(store: Store, run_id: str = "run-1", workflow_id: str | None = None) -> RunInfo:
    return await store.create_run(run_id, started(workflow_id or f"wf-{run_id}"), now=NOW)


async def claim_one(
    store: Store, owner: str = "worker-a", *, now: float = NOW, lease: float = LEASE
) -> RunClaim:
    claims = await store.claim_runs(QUEUE, owner=owner, now=now, lease_seconds=lease, limit=10)
    assert len(claims) == 1, claims
    return claims[0]


async def claim(store: Store, owner: str = "worker-a", *, now: float = NOW) -> list[RunClaim]:
    return await store.claim_runs(QUEUE, owner=owner, now=now, lease_seconds=LEASE, limit=10)


async def owner_append(
    store: Store,
    run: RunClaim,
    events: Sequence[Event],
    *,
    expected: int | None = None,
    now: float = NOW,
    **options: Any,
) -> AppendResult:
    """Append as the owner of ``run``, expecting the history to be as long as when claimed."""
    [result] = await store.append(
        [
            AppendRequest(
                run_id=run.run_id,
                events=events,
                now=now,
                expected_next_event_id=run.history_length + 1 if expected is None else expected,
                fence=run.fence,
                **options,
            )
        ]
    )
    return result


async def external_append(
    store: Store, run_id: str, events: Sequence[Event], *, now: float = NOW, **options: Any
) -> AppendResult:
    [result] = await store.append([AppendRequest(run_id=run_id, events=events, now=now, **options)])
    return result


async def event_ids(store: Store, run_id: str) -> list[int]:
    return [e.event_id for e in await store.read_history(run_id)]


@pytest.fixture
async def other_store(db_path: Path, store: SqliteStore) -> AsyncIterator[SqliteStore]:
    """A second store object on the same file, as another worker process would hold."""
    opened = await SqliteStore.open(db_path)
    yield opened
    await opened.close()


# -- creating and reading runs ------------------------------------------------------------


def test_the_sqlite_store_implements_the_store_protocol(store: SqliteStore) -> None:
    assert isinstance(store, Store)


async def test_create_run_stores_the_started_event_as_event_1(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)

    assert await store.read_history("run-1") == [
        WorkflowStarted(
            event_id=1,
            timestamp=T0,
            workflow_type="Order",
            workflow_id="wf-1",
            task_queue=QUEUE,
            args=(Payload("json", b"42"),),
            seed=7,
        )
    ]


async def test_create_run_returns_an_open_run_ready_to_be_claimed_now(store: SqliteStore) -> None:
    info = await store.create_run("run-1", started("wf-1"), now=NOW)

    assert info == RunInfo(
        run_id="run-1",
        workflow_id="wf-1",
        workflow_type="Order",
        task_queue=QUEUE,
        status=RunStatus.RUNNING,
        started_at=T0,
        history_length=1,
        wake_at=NOW,
    )


async def test_get_run_reads_back_what_create_run_returned(store: SqliteStore) -> None:
    info = await new_run(store, "run-1")

    assert await store.get_run("run-1") == info


async def test_find_run_returns_the_run_of_a_workflow_id(store: SqliteStore) -> None:
    info = await store.create_run("run-1", started("wf-1"), now=NOW)

    assert await store.find_run("wf-1") == info


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.get_run("nope"),
        lambda s: s.read_history("nope"),
        lambda s: s.read_history("nope", after_event_id=3),
        lambda s: s.find_run("nope"),
    ],
    ids=["get_run", "read_history", "read_history_after", "find_run"],
)
async def test_reading_an_unknown_run_raises_run_not_found(store: SqliteStore, read: Any) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        await read(store)


async def test_a_second_open_run_of_the_same_workflow_id_is_refused(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)

    with pytest.raises(WorkflowAlreadyRunningError) as info:
        await store.create_run("run-2", started("wf-1"), now=NOW)

    assert (info.value.workflow_id, info.value.run_id) == ("wf-1", "run-1")
    assert await store.count_runs(RunQuery()) == 1
    with pytest.raises(RunNotFoundError):
        await store.read_history("run-2")


async def test_a_workflow_id_may_run_again_once_its_run_completed(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)
    (await external_append(store, "run-1", [completed()])).unwrap()

    await store.create_run("run-2", started("wf-1", at=T0 + timedelta(days=1)), now=NOW)

    assert (await store.find_run("wf-1")).run_id == "run-2"


async def test_a_workflow_id_may_run_again_once_its_run_failed(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)
    (await external_append(store, "run-1", [failed()])).unwrap()

    info = await store.create_run("run-2", started("wf-1"), now=NOW)

    assert info.status is RunStatus.RUNNING


async def test_find_run_prefers_the_open_run_over_a_newer_closed_one(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1", at=T0 + timedelta(days=2)), now=NOW)
    (await external_append(store, "run-1", [completed()])).unwrap()
    await store.create_run("run-2", started("wf-1", at=T0), now=NOW)

    assert (await store.find_run("wf-1")).run_id == "run-2"


async def test_creating_a_run_with_an_existing_run_id_is_refused(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)

    with pytest.raises(StoreError):
        await store.create_run("run-1", started("wf-2"), now=NOW)

    assert (await store.get_run("run-1")).workflow_id == "wf-1"


# -- appending ------------------------------------------------------------------------------


async def test_the_store_assigns_gap_free_event_ids_whatever_the_caller_set(
    store: SqliteStore,
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


async def test_successive_appends_continue_the_numbering(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    for seq in range(1, 6):
        (await external_append(store, "run-1", [scheduled(seq)])).unwrap()

    assert await event_ids(store, "run-1") == [1, 2, 3, 4, 5, 6]
    assert (await store.get_run("run-1")).history_length == 6


async def test_appended_events_read_back_equal_and_in_order(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    result = (await external_append(store, "run-1", [scheduled(1), scheduled(2)])).unwrap()

    assert (await store.read_history("run-1"))[1:] == list(result.events)


async def test_read_history_after_an_event_id_returns_only_later_events(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [scheduled(1), scheduled(2), scheduled(3)])).unwrap()

    history = await store.read_history("run-1", after_event_id=2)

    assert [e.event_id for e in history] == [3, 4]
    assert await store.read_history("run-1", after_event_id=4) == []


async def test_append_with_stale_expected_event_id_is_refused_and_writes_nothing(
    store: SqliteStore,
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


async def test_unwrap_raises_the_error_that_refused_an_append(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    result = await owner_append(store, run, [scheduled(1)], expected=7)

    with pytest.raises(AppendConflictError, match="expected next event id 7"):
        result.unwrap()


async def test_append_with_a_stale_fence_raises_lease_lost_and_writes_nothing(
    store: SqliteStore,
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
    store: SqliteStore, other_store: SqliteStore
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
    store: SqliteStore, other_store: SqliteStore
) -> None:
    await new_run(store, "run-1")
    old = await claim_one(store, "worker-a", now=NOW)
    new = await claim_one(other_store, "worker-b", now=NOW + LEASE + 1)
    (await owner_append(other_store, new, [scheduled(1)])).unwrap()

    result = await owner_append(store, old, [scheduled(1)], expected=3)

    assert isinstance(result.error, LeaseLostError)
    assert await event_ids(store, "run-1") == [1, 2]


async def test_concurrent_claims_on_one_file_never_lease_a_run_twice(
    store: SqliteStore, other_store: SqliteStore
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


async def test_an_owner_append_to_a_closed_run_raises_run_closed(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [completed()])).unwrap()

    result = await owner_append(store, run, [scheduled(1)], expected=3)

    assert isinstance(result.error, RunClosedError)
    assert result.error.status == "completed"
    assert await event_ids(store, "run-1") == [1, 2]


async def test_an_external_append_to_a_closed_run_raises_run_closed(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [failed()])).unwrap()

    with pytest.raises(RunClosedError, match="failed"):
        (await external_append(store, "run-1", [scheduled(1)])).unwrap()


async def test_an_append_to_an_unknown_run_is_refused(store: SqliteStore) -> None:
    result = await external_append(store, "nope", [scheduled(1)])

    assert isinstance(result.error, RunNotFoundError)


async def test_an_external_append_goes_after_whatever_the_history_holds(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1), scheduled(2)])).unwrap()

    result = (await external_append(store, "run-1", [TimerFired(timestamp=T0, seq=9)])).unwrap()

    assert [e.event_id for e in result.events] == [4]


async def test_an_append_with_no_events_changes_no_history(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    result = (await owner_append(store, run, [])).unwrap()

    assert result.next_event_id == 2
    assert await event_ids(store, "run-1") == [1]


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_appends_from_many_runs_share_fewer_transactions_than_requests(
    db_path: Path,
) -> None:
    store = await SqliteStore.open(db_path)
    run_ids = [f"run-{i}" for i in range(40)]
    await asyncio.gather(*(new_run(store, r) for r in run_ids))
    commits_before = store.commits

    results = await asyncio.gather(
        *(external_append(store, r, [scheduled(1), scheduled(2)]) for r in run_ids)
    )

    assert all(r.error is None for r in results)
    assert store.commits - commits_before < len(run_ids)
    await store.close()


async def test_group_committed_appends_are_all_durable_after_reopening(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    run_ids = [f"run-{i}" for i in range(40)]
    await asyncio.gather(*(new_run(store, r) for r in run_ids))
    await asyncio.gather(
        *(external_append(store, r, [scheduled(1), scheduled(2)]) for r in run_ids)
    )
    await store.close()

    reopened = await SqliteStore.open(db_path)
    try:
        histories = await asyncio.gather(*(reopened.read_history(r) for r in run_ids))
    finally:
        await reopened.close()

    assert [[e.event_id for e in h] for h in histories] == [[1, 2, 3]] * len(run_ids)


async def test_one_conflicting_request_in_a_batch_does_not_undo_the_others(
    store: SqliteStore,
) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)
    commits_before = store.commits

    results = await store.append(
        [
            AppendRequest(run_id="run-1", events=[timer(1, 5)], now=NOW),
            AppendRequest(run_id="run-2", events=[timer(1, 5)], now=NOW, expected_next_event_id=9),
            AppendRequest(run_id="run-3", events=[timer(1, 5)], now=NOW),
        ]
    )

    assert store.commits == commits_before + 1  # the three shared one transaction
    assert [r.run_id for r in results] == ["run-1", "run-2", "run-3"]
    assert [type(r.error) for r in results] == [type(None), AppendConflictError, type(None)]
    assert [await event_ids(store, r) for r in ("run-1", "run-2", "run-3")] == [
        [1, 2],
        [1],
        [1, 2],
    ]
    assert [t.run_id for t in await store.pending_timers()] == ["run-1", "run-3"]


async def test_one_refused_create_run_in_a_batch_does_not_undo_the_others(
    store: SqliteStore,
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
    store: SqliteStore,
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


async def test_appends_for_one_run_in_one_call_apply_in_order(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    results = await store.append(
        [
            AppendRequest(run_id="run-1", events=[scheduled(1)], now=NOW),
            AppendRequest(run_id="run-1", events=[scheduled(2)], now=NOW),
        ]
    )

    assert [r.next_event_id for r in results] == [3, 4]
    assert [getattr(e, "seq", None) for e in await store.read_history("run-1")] == [None, 1, 2]


# -- claiming, renewing and releasing runs -------------------------------------------------


async def test_claim_runs_leases_a_ready_run_and_increments_the_fence(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    first = await claim_one(store, "worker-a", now=NOW)
    info = await store.get_run("run-1")

    assert first == RunClaim(run_id="run-1", fence=1, workflow_type="Order", history_length=1)
    assert (info.owner, info.lease_expires_at, info.wake_at) == ("worker-a", NOW + LEASE, None)


async def test_each_claim_of_a_run_gets_a_higher_fence(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    fences = [
        (await claim_one(store, f"worker-{i}", now=NOW + i * (LEASE + 1))).fence for i in range(4)
    ]

    assert fences == [1, 2, 3, 4]


async def test_claim_runs_reports_the_history_length_at_claim_time(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [scheduled(1), scheduled(2)], wake=True)).unwrap()

    assert (await claim_one(store)).history_length == 3


async def test_claim_runs_only_takes_runs_of_its_task_queue(store: SqliteStore) -> None:
    await store.create_run("run-1", started("wf-1", task_queue="elsewhere"), now=NOW)

    assert await claim(store) == []
    assert len(await store.claim_runs("elsewhere", owner="w", now=NOW, lease_seconds=1, limit=1))


async def test_claim_runs_takes_at_most_limit_runs(store: SqliteStore) -> None:
    await asyncio.gather(*(new_run(store, f"run-{i}") for i in range(5)))

    claims = await store.claim_runs(QUEUE, owner="w", now=NOW, lease_seconds=LEASE, limit=2)

    assert len(claims) == 2


async def test_a_leased_run_is_not_claimed_again_before_its_lease_expires(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)

    assert await claim(store, "worker-b", now=NOW + LEASE - 0.001) == []


async def test_a_lease_is_claimable_from_the_instant_next_wake_at_reports(
    store: SqliteStore,
) -> None:
    # Found by the crash/resume harness: at exactly the expiry next_wake_at named, the claim
    # was refused, so a poller on a clock standing there polled again at once, forever.
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)
    expiry = await store.next_wake_at(QUEUE, owner="worker-b")

    assert expiry == NOW + LEASE
    assert (await claim_one(store, "worker-b", now=expiry)).fence == 2


async def test_a_run_whose_lease_expired_is_claimable_by_another_owner(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)

    taken = await claim_one(store, "worker-b", now=NOW + LEASE + 0.001)

    assert taken.fence == 2
    assert (await store.get_run("run-1")).owner == "worker-b"


async def test_a_run_is_not_claimable_before_its_wake_at(store: SqliteStore) -> None:
    await store.create_run("run-1", started(), now=NOW + 60)

    assert await claim(store, now=NOW + 59.9) == []
    assert len(await claim(store, now=NOW + 60)) == 1


async def test_a_closed_run_is_never_claimed(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [completed()], wake=True)).unwrap()

    assert await claim(store, now=NOW + 10**6) == []


async def test_an_owner_append_clears_a_pending_wake_up(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)])).unwrap()

    assert (await store.get_run("run-1")).wake_at is None


async def test_release_with_wake_at_gives_the_run_up_until_that_time(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store, "worker-a")

    (await owner_append(store, run, [timer(1, 60)], release=True, wake_at=NOW + 60)).unwrap()

    info = await store.get_run("run-1")
    assert (info.owner, info.lease_expires_at, info.wake_at) == (None, None, NOW + 60)
    assert await claim(store, "worker-b", now=NOW + 59) == []
    assert (await claim_one(store, "worker-b", now=NOW + 60)).fence == run.fence + 1


async def test_a_run_released_without_wake_at_sleeps_until_an_external_event(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    (await owner_append(store, run, [scheduled(1)], release=True)).unwrap()

    assert await claim(store, now=NOW + 10**9) == []
    assert await store.next_wake_at(QUEUE) is None


async def test_an_external_append_with_wake_makes_a_released_run_claimable(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], release=True)).unwrap()
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    (await external_append(store, "run-1", [done], now=NOW + 5, wake=True)).unwrap()

    assert await store.next_wake_at(QUEUE) == NOW + 5
    assert (await claim_one(store, now=NOW + 5)).history_length == 3


async def test_an_external_append_without_wake_leaves_a_sleeping_run_asleep(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 100)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5)).unwrap()

    assert await claim(store, now=NOW + 5) == []
    assert (await store.get_run("run-1")).wake_at == NOW + 100


async def test_an_external_wake_brings_a_later_wake_at_forward(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 100)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5, wake=True)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 5


async def test_an_external_wake_never_postpones_an_earlier_wake_at(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [], release=True, wake_at=NOW + 3)).unwrap()

    (await external_append(store, "run-1", [scheduled(1)], now=NOW + 5, wake=True)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 3


async def test_a_fenced_append_after_the_owner_released_the_run_wakes_it_instead_of_stranding_it(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [timer(1, 60)], release=True, wake_at=NOW + 60)).unwrap()

    # The fence is still current (nobody claimed since), so the late append is accepted.
    (await owner_append(store, run, [scheduled(1)], expected=3, now=NOW + 1)).unwrap()

    assert (await store.get_run("run-1")).wake_at == NOW + 1
    assert (await claim_one(store, "worker-b", now=NOW + 1)).history_length == 3


async def test_renew_leases_extends_and_returns_the_runs_still_owned(store: SqliteStore) -> None:
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
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")
    await claim_one(store, "worker-a", now=NOW)
    await claim_one(store, "worker-b", now=NOW + LEASE + 1)

    assert await store.renew_leases("worker-a", until=NOW + 100) == set()
    assert (await store.get_run("run-1")).lease_expires_at == NOW + 2 * LEASE + 1


async def test_next_wake_at_is_the_earliest_time_a_run_of_the_queue_needs_a_worker(
    store: SqliteStore,
) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW + 50)
    await store.create_run("run-2", started("wf-2"), now=NOW + 20)
    await store.create_run("run-3", started("wf-3", task_queue="other"), now=NOW)

    assert await store.next_wake_at(QUEUE) == NOW + 20


async def test_next_wake_at_counts_the_expiry_of_a_held_lease(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    await claim_one(store, now=NOW, lease=LEASE)

    assert await store.next_wake_at(QUEUE) == NOW + LEASE


async def test_release_owner_drops_every_run_lease_of_that_owner_only(store: SqliteStore) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)
    await store.claim_runs(QUEUE, owner="worker-a", now=NOW, lease_seconds=LEASE, limit=2)
    await claim_one(store, "worker-b", now=NOW)

    released = await store.release_owner("worker-a")

    owners = sorted(str(r.owner) for r in await store.list_runs(RunQuery()))
    assert released == 2
    assert owners == ["None", "None", "worker-b"]


async def test_runs_of_a_released_owner_are_claimable_at_once(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    old = await claim_one(store, "worker-a", now=NOW)
    await store.release_owner("worker-a")

    new = await claim_one(store, "worker-a-restarted", now=NOW + 1)

    assert new.fence == old.fence + 1


async def test_release_owner_frees_its_activity_task_leases(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=[task_spec(1)])).unwrap()
    await store.claim_activity_tasks("acts", owner="worker-a", now=NOW, lease_seconds=60, limit=1)

    await store.release_owner("worker-a")

    tasks = await store.claim_activity_tasks(
        "acts", owner="worker-b", now=NOW + 1, lease_seconds=60, limit=1
    )
    assert [t.seq for t in tasks] == [1]


# -- projections: pending timers and run status --------------------------------------------


async def test_timer_started_adds_a_pending_timer(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    (await external_append(store, "run-1", [timer(1, 60)])).unwrap()

    assert await store.pending_timers("run-1") == [
        TimerInfo(run_id="run-1", seq=1, fire_at=T0 + timedelta(seconds=60))
    ]


async def test_timer_fired_removes_the_pending_timer(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 90)])).unwrap()

    (await external_append(store, "run-1", [TimerFired(timestamp=T0, seq=1)])).unwrap()

    assert [t.seq for t in await store.pending_timers("run-1")] == [2]


async def test_timer_cancelled_removes_the_pending_timer(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [timer(1, 60)])).unwrap()

    (await external_append(store, "run-1", [TimerCancelled(timestamp=T0, seq=1)])).unwrap()

    assert await store.pending_timers("run-1") == []


async def test_closing_a_run_removes_all_its_pending_timers(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    await new_run(store, "run-2")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 90)])).unwrap()
    (await external_append(store, "run-2", [timer(1, 30)])).unwrap()

    (await external_append(store, "run-1", [completed()])).unwrap()

    assert [(t.run_id, t.seq) for t in await store.pending_timers()] == [("run-2", 1)]


async def test_pending_timers_of_all_runs_come_in_fire_time_order(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    await new_run(store, "run-2")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 10)])).unwrap()
    (await external_append(store, "run-2", [timer(1, 30)])).unwrap()

    timers = await store.pending_timers()

    assert [(t.run_id, t.seq) for t in timers] == [("run-1", 2), ("run-2", 1), ("run-1", 1)]


async def test_workflow_completed_closes_the_run_as_completed(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    (await owner_append(store, run, [completed()])).unwrap()

    info = await store.get_run("run-1")
    assert info.status is RunStatus.COMPLETED
    assert info.closed_at == T0 + timedelta(hours=1)
    assert (info.owner, info.lease_expires_at, info.wake_at) == (None, None, None)


async def test_workflow_failed_closes_the_run_as_failed(store: SqliteStore) -> None:
    await new_run(store, "run-1")

    (await external_append(store, "run-1", [failed()])).unwrap()

    info = await store.get_run("run-1")
    assert (info.status, info.closed_at) == (RunStatus.FAILED, T0 + timedelta(hours=2))


async def test_a_workflow_task_failure_leaves_the_run_open(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    failure = Failure(type="NondeterminismError", message="code changed")

    task_failed = WorkflowTaskFailed(timestamp=T0, failure=failure)

    (await external_append(store, "run-1", [task_failed])).unwrap()

    info = await store.get_run("run-1")
    assert (info.status, info.closed_at) == (RunStatus.RUNNING, None)


async def test_closing_a_run_deletes_its_activity_tasks(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=[task_spec(1)])).unwrap()

    (await external_append(store, "run-1", [completed()])).unwrap()

    assert (
        await store.claim_activity_tasks("acts", owner="w", now=NOW, lease_seconds=10, limit=10)
        == []
    )


# -- listing and counting runs --------------------------------------------------------------


@pytest.fixture
async def many_runs(store: SqliteStore) -> SqliteStore:
    """Six runs started a minute apart (run-0 first), of two types, statuses and queues."""
    specs = [
        ("run-0", "wf-0", "Order", QUEUE, completed()),
        ("run-1", "wf-1", "Order", QUEUE, None),
        ("run-2", "wf-2", "Refund", QUEUE, failed()),
        ("run-3", "wf-3", "Refund", QUEUE, None),
        ("run-4", "wf-4", "Order", "other", None),
        ("run-5", "wf-0", "Order", QUEUE, None),
    ]
    for minute, (run_id, workflow_id, workflow_type, queue, closing) in enumerate(specs):
        at = T0 + timedelta(minutes=minute)
        await store.create_run(
            run_id,
            started(workflow_id, workflow_type=workflow_type, task_queue=queue, at=at),
            now=NOW,
        )
        if closing is not None:
            (await external_append(store, run_id, [closing])).unwrap()
    return store


async def ids(store: SqliteStore, **filters: Any) -> list[str]:
    return [r.run_id for r in await store.list_runs(RunQuery(**filters))]


async def test_list_runs_returns_every_run_newest_first(many_runs: SqliteStore) -> None:
    assert await ids(many_runs) == ["run-5", "run-4", "run-3", "run-2", "run-1", "run-0"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": RunStatus.RUNNING}, ["run-5", "run-4", "run-3", "run-1"]),
        ({"status": RunStatus.COMPLETED}, ["run-0"]),
        ({"status": RunStatus.FAILED}, ["run-2"]),
        ({"status": RunStatus.CANCELLED}, []),
        ({"workflow_type": "Refund"}, ["run-3", "run-2"]),
        ({"workflow_id": "wf-0"}, ["run-5", "run-0"]),
        ({"task_queue": "other"}, ["run-4"]),
        ({"workflow_type": "Order", "status": RunStatus.RUNNING}, ["run-5", "run-4", "run-1"]),
    ],
    ids=lambda value: str(value),
)
async def test_list_runs_filters(
    many_runs: SqliteStore, filters: dict[str, Any], expected: list[str]
) -> None:
    assert await ids(many_runs, **filters) == expected


async def test_started_after_is_inclusive_and_started_before_exclusive(
    many_runs: SqliteStore,
) -> None:
    window = {
        "started_after": T0 + timedelta(minutes=1),
        "started_before": T0 + timedelta(minutes=3),
    }

    assert await ids(many_runs, **window) == ["run-2", "run-1"]


async def test_list_runs_pages_with_limit_and_offset_without_overlap(
    many_runs: SqliteStore,
) -> None:
    pages = [await ids(many_runs, limit=4, offset=offset) for offset in (0, 4, 8)]

    assert pages == [["run-5", "run-4", "run-3", "run-2"], ["run-1", "run-0"], []]


async def test_list_runs_reports_status_close_time_and_history_length(
    many_runs: SqliteStore,
) -> None:
    [info] = await many_runs.list_runs(RunQuery(workflow_id="wf-2"))

    assert (info.status, info.closed_at, info.history_length) == (
        RunStatus.FAILED,
        T0 + timedelta(hours=2),
        2,
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, 6),
        ({"status": RunStatus.RUNNING}, 4),
        ({"workflow_type": "Refund"}, 2),
        ({"workflow_id": "wf-0"}, 2),
        ({"started_after": T0 + timedelta(minutes=4)}, 2),
        ({"started_before": T0 + timedelta(minutes=4)}, 4),
        ({"limit": 1, "offset": 3}, 6),
    ],
    ids=lambda value: str(value),
)
async def test_count_runs_applies_the_filters_but_not_paging(
    many_runs: SqliteStore, filters: dict[str, Any], expected: int
) -> None:
    assert await many_runs.count_runs(RunQuery(**filters)) == expected


# -- activity tasks -------------------------------------------------------------------------


async def run_with_task(store: SqliteStore, *specs: ActivityTaskSpec) -> RunClaim:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=list(specs))).unwrap()
    return run


async def claim_tasks(
    store: SqliteStore, owner: str = "act-a", *, now: float = NOW, queue: str = "acts"
) -> list[Any]:
    return await store.claim_activity_tasks(queue, owner=owner, now=now, lease_seconds=10, limit=10)


async def test_an_append_with_activity_tasks_makes_them_claimable(store: SqliteStore) -> None:
    await run_with_task(store, task_spec(1))

    [task] = await claim_tasks(store, "act-a", now=NOW)

    assert (task.run_id, task.seq, task.attempt, task.task_queue) == ("run-1", 1, 1, "acts")
    assert task.payload == Payload("json", b'{"seq":1}')
    assert task.lease_expires_at == NOW + 10


async def test_an_activity_task_is_invisible_before_visible_at(store: SqliteStore) -> None:
    await run_with_task(store, task_spec(1, visible_at=NOW + 5))

    assert await claim_tasks(store, now=NOW + 4) == []
    assert len(await claim_tasks(store, now=NOW + 5)) == 1


async def test_claim_activity_tasks_only_takes_tasks_of_its_queue(store: SqliteStore) -> None:
    await run_with_task(store, task_spec(1, queue="gpu"), task_spec(2))

    assert [t.seq for t in await claim_tasks(store, queue="acts")] == [2]


async def test_claim_activity_tasks_hands_out_the_longest_visible_first(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1, visible_at=NOW), task_spec(2, visible_at=NOW - 9))

    tasks = await store.claim_activity_tasks("acts", owner="a", now=NOW, lease_seconds=10, limit=1)

    assert [t.seq for t in tasks] == [2]


async def test_a_leased_activity_task_is_not_claimed_again_until_its_lease_expires(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1))
    [first] = await claim_tasks(store, "act-a", now=NOW)

    assert await claim_tasks(store, "act-b", now=NOW + 10) == []
    [again] = await claim_tasks(store, "act-b", now=NOW + 10.5)
    assert again.task_id == first.task_id


async def test_finishing_an_activity_task_deletes_it_with_the_result_append(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a")
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    result = await external_append(
        store, "run-1", [done], wake=True, finish_activity_task=(task.task_id, "act-a")
    )

    assert result.error is None
    assert await claim_tasks(store, "act-b", now=NOW + 1000) == []
    assert await event_ids(store, "run-1") == [1, 2, 3]


async def test_finishing_an_activity_task_another_worker_took_over_is_refused(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a", now=NOW)
    await claim_tasks(store, "act-b", now=NOW + 11)
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)

    result = await external_append(
        store, "run-1", [done], wake=True, finish_activity_task=(task.task_id, "act-a")
    )

    assert isinstance(result.error, LeaseLostError)
    assert f"activity task {task.task_id}" in str(result.error)
    assert await event_ids(store, "run-1") == [1, 2]
    finished_by_b = await external_append(
        store, "run-1", [done], finish_activity_task=(task.task_id, "act-b")
    )
    assert finished_by_b.error is None


async def test_finishing_an_activity_task_twice_is_refused_the_second_time(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1))
    [task] = await claim_tasks(store, "act-a")
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)
    finish = {"finish_activity_task": (task.task_id, "act-a")}

    first = await external_append(store, "run-1", [done], **finish)
    second = await external_append(store, "run-1", [done], **finish)

    assert first.error is None
    assert isinstance(second.error, LeaseLostError)
    assert await event_ids(store, "run-1") == [1, 2, 3]


async def test_renew_activity_tasks_extends_only_tasks_the_owner_still_holds(
    store: SqliteStore,
) -> None:
    await run_with_task(store, task_spec(1), task_spec(2))
    tasks = await claim_tasks(store, "act-a", now=NOW)
    [taken] = await store.claim_activity_tasks(
        "acts", owner="act-b", now=NOW + 11, lease_seconds=10, limit=1
    )

    renewed = await store.renew_activity_tasks("act-a", [t.task_id for t in tasks], until=NOW + 100)

    assert renewed == {t.task_id for t in tasks} - {taken.task_id}


# -- closing the store ----------------------------------------------------------------------


async def test_a_closed_store_refuses_reads_and_writes(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await new_run(store, "run-1")
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.read_history("run-1")
    with pytest.raises(StoreError, match="closed"):
        await external_append(store, "run-1", [scheduled(1)])


async def test_closing_a_store_twice_is_harmless(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)

    await store.close()
    await store.close()


async def test_the_store_can_be_used_as_an_async_context_manager(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as store:
        await new_run(store, "run-1")

    with pytest.raises(StoreError, match="closed"):
        await store.get_run("run-1")
