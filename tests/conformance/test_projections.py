"""Tables are projections of the log: pending timers and run status follow the events."""

from __future__ import annotations

from datetime import timedelta

from conformance_support import (
    NOW,
    T0,
    claim_one,
    completed,
    external_append,
    failed,
    new_run,
    owner_append,
    scheduled,
    task_spec,
    timer,
)

from history import (
    Failure,
    RunStatus,
    Store,
    TimerCancelled,
    TimerFired,
    TimerInfo,
    WorkflowTaskFailed,
)


async def test_timer_started_adds_a_pending_timer(store: Store) -> None:
    await new_run(store, "run-1")

    (await external_append(store, "run-1", [timer(1, 60)])).unwrap()

    assert await store.pending_timers("run-1") == [
        TimerInfo(run_id="run-1", seq=1, fire_at=T0 + timedelta(seconds=60))
    ]


async def test_timer_fired_removes_the_pending_timer(store: Store) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 90)])).unwrap()

    (await external_append(store, "run-1", [TimerFired(timestamp=T0, seq=1)])).unwrap()

    assert [t.seq for t in await store.pending_timers("run-1")] == [2]


async def test_timer_cancelled_removes_the_pending_timer(store: Store) -> None:
    await new_run(store, "run-1")
    (await external_append(store, "run-1", [timer(1, 60)])).unwrap()

    (await external_append(store, "run-1", [TimerCancelled(timestamp=T0, seq=1)])).unwrap()

    assert await store.pending_timers("run-1") == []


async def test_closing_a_run_removes_all_its_pending_timers(store: Store) -> None:
    await new_run(store, "run-1")
    await new_run(store, "run-2")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 90)])).unwrap()
    (await external_append(store, "run-2", [timer(1, 30)])).unwrap()

    (await external_append(store, "run-1", [completed()])).unwrap()

    assert [(t.run_id, t.seq) for t in await store.pending_timers()] == [("run-2", 1)]


async def test_pending_timers_of_all_runs_come_in_fire_time_order(store: Store) -> None:
    await new_run(store, "run-1")
    await new_run(store, "run-2")
    (await external_append(store, "run-1", [timer(1, 60), timer(2, 10)])).unwrap()
    (await external_append(store, "run-2", [timer(1, 30)])).unwrap()

    timers = await store.pending_timers()

    assert [(t.run_id, t.seq) for t in timers] == [("run-1", 2), ("run-2", 1), ("run-1", 1)]


async def test_workflow_completed_closes_the_run_as_completed(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)

    (await owner_append(store, run, [completed()])).unwrap()

    info = await store.get_run("run-1")
    assert info.status is RunStatus.COMPLETED
    assert info.closed_at == T0 + timedelta(hours=1)
    assert (info.owner, info.lease_expires_at, info.wake_at) == (None, None, None)


async def test_workflow_failed_closes_the_run_as_failed(store: Store) -> None:
    await new_run(store, "run-1")

    (await external_append(store, "run-1", [failed()])).unwrap()

    info = await store.get_run("run-1")
    assert (info.status, info.closed_at) == (RunStatus.FAILED, T0 + timedelta(hours=2))


async def test_a_workflow_task_failure_leaves_the_run_open(store: Store) -> None:
    await new_run(store, "run-1")
    failure = Failure(type="NondeterminismError", message="code changed")

    task_failed = WorkflowTaskFailed(timestamp=T0, failure=failure)

    (await external_append(store, "run-1", [task_failed])).unwrap()

    info = await store.get_run("run-1")
    assert (info.status, info.closed_at) == (RunStatus.RUNNING, None)


async def test_closing_a_run_deletes_its_activity_tasks(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    (await owner_append(store, run, [scheduled(1)], activity_tasks=[task_spec(1)])).unwrap()

    (await external_append(store, "run-1", [completed()])).unwrap()

    assert (
        await store.claim_activity_tasks("acts", owner="w", now=NOW, lease_seconds=10, limit=10)
        == []
    )
