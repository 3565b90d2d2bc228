"""Runs made from a copy of another history (reset, fork, import, migration): the copied
events are numbered and projected exactly as appends would be, and the run's waiting activity
tasks come along; exported histories load back into any store unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conformance_support import (
    NOW,
    RESULT,
    T0,
    claim,
    claim_one,
    completed,
    event_ids,
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
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    SignalReceived,
    Store,
    TimerFired,
    WorkflowAlreadyRunningError,
    WorkflowReset,
    dump_history,
    load_history,
)


async def test_a_copied_open_history_is_renumbered_after_the_started_event(store: Store) -> None:
    history = [scheduled(1), timer(1, 60), SignalReceived(timestamp=T0, name="go")]

    info = await store.create_run("copy", started("wf-1"), now=NOW, history=history)

    assert await event_ids(store, "copy") == [1, 2, 3, 4]
    assert (info.status, info.history_length, info.wake_at) == (RunStatus.RUNNING, 4, NOW)
    assert await store.get_run("copy") == info


async def test_a_copied_open_history_projects_its_pending_timers(store: Store) -> None:
    history = [timer(1, 60), timer(2, 90), TimerFired(timestamp=T0, seq=1)]

    await store.create_run("copy", started("wf-1"), now=NOW, history=history)

    assert [t.seq for t in await store.pending_timers("copy")] == [2]


async def test_a_copied_open_run_is_claimable_at_now(store: Store) -> None:
    await store.create_run("copy", started("wf-1"), now=NOW, history=[scheduled(1)])

    assert (await claim_one(store, now=NOW)).history_length == 2


async def test_a_copied_run_keeps_its_waiting_activity_tasks(store: Store) -> None:
    specs = [task_spec(1, queue="gpu"), task_spec(2, visible_at=NOW + 5)]

    await store.create_run(
        "copy", started("wf-1"), now=NOW, history=[scheduled(1), scheduled(2)], activity_tasks=specs
    )

    assert await store.list_activity_tasks("copy") == specs
    [task] = await store.claim_activity_tasks("gpu", owner="w", now=NOW, lease_seconds=10, limit=10)
    assert (task.run_id, task.seq) == ("copy", 1)


async def test_a_copied_closed_history_creates_a_closed_run(store: Store) -> None:
    history = [scheduled(1), timer(1, 60), completed()]

    info = await store.create_run("copy", started("wf-1"), now=NOW, history=history)

    assert (info.status, info.closed_at, info.history_length) == (
        RunStatus.COMPLETED,
        T0 + timedelta(hours=1),
        4,
    )
    assert (info.owner, info.wake_at) == (None, None)
    assert await store.pending_timers("copy") == []
    assert await claim(store, now=NOW + 10**6) == []


async def test_a_closed_copy_may_be_created_while_its_workflow_id_has_an_open_run(
    store: Store,
) -> None:
    await new_run(store, "run-1", "wf-1")

    info = await store.create_run("copy", started("wf-1"), now=NOW, history=[completed()])

    assert info.status is RunStatus.COMPLETED
    assert (await store.find_run("wf-1")).run_id == "run-1"


async def test_an_open_copy_is_refused_while_its_workflow_id_has_an_open_run(
    store: Store,
) -> None:
    await new_run(store, "run-1", "wf-1")

    with pytest.raises(WorkflowAlreadyRunningError):
        await store.create_run("copy", started("wf-1"), now=NOW, history=[scheduled(1)])

    with pytest.raises(RunNotFoundError):
        await store.get_run("copy")


async def test_a_copy_under_a_run_id_already_taken_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    await store.create_run("copy", started("wf-1"), now=NOW, history=[completed()])

    with pytest.raises(RunAlreadyExistsError):
        await store.create_run("copy", started("wf-2"), now=NOW, history=[completed()])

    assert await event_ids(store, "copy") == [1, 2]
    assert (await store.get_run("copy")).workflow_id == "wf-1"


async def test_a_reset_closes_the_old_run_as_reset(store: Store) -> None:
    await new_run(store, "run-1", "wf-1")
    reset = WorkflowReset(timestamp=T0, new_run_id="run-2", to_event_id=1, reason="bug fixed")

    (await external_append(store, "run-1", [reset])).unwrap()

    info = await store.get_run("run-1")
    assert (info.status, info.closed_at) == (RunStatus.RESET, T0)


async def test_an_exported_history_loads_into_a_new_run_unchanged(store: Store) -> None:
    await new_run(store, "run-1", "wf-1")
    done = ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=RESULT)
    (await external_append(store, "run-1", [scheduled(1), done, completed()])).unwrap()
    original = await store.read_history("run-1")

    exported = load_history(dump_history("run-1", original))
    await store.create_run("imported", exported.events[0], now=NOW, history=exported.events[1:])  # type: ignore[arg-type]

    assert await store.read_history("imported") == original
    assert (await store.get_run("imported")).status is RunStatus.COMPLETED


# -- rescheduling ----------------------------------------------------------------------------


async def test_reschedule_run_takes_the_run_from_its_owner_at_once(store: Store) -> None:
    await new_run(store, "run-1")
    old = await claim_one(store, "worker-a", now=NOW)

    info = await store.reschedule_run("run-1", now=NOW + 1)

    assert (info.owner, info.lease_expires_at, info.wake_at) == (None, None, NOW + 1)
    new = await claim_one(store, "worker-b", now=NOW + 1)
    assert new.fence == old.fence + 1
    stale = await owner_append(store, old, [scheduled(1)])
    assert stale.error is not None
    assert await event_ids(store, "run-1") == [1]


async def test_reschedule_run_makes_leased_activity_tasks_visible_again(store: Store) -> None:
    await new_run(store, "run-1")
    run = await claim_one(store)
    specs = [task_spec(1, visible_at=NOW), task_spec(2, visible_at=NOW + 100)]
    (await owner_append(store, run, [scheduled(1), scheduled(2)], activity_tasks=specs)).unwrap()
    [leased] = await store.claim_activity_tasks(
        "acts", owner="act-a", now=NOW, lease_seconds=60, limit=10
    )

    await store.reschedule_run("run-1", now=NOW + 1)

    again = await store.claim_activity_tasks(
        "acts", owner="act-b", now=NOW + 1, lease_seconds=60, limit=10
    )
    assert [t.task_id for t in again] == [leased.task_id]


@pytest.mark.parametrize(
    ("run_id", "error"), [("closed", RunClosedError), ("nope", RunNotFoundError)]
)
async def test_reschedule_run_refuses_a_closed_or_unknown_run(
    store: Store, run_id: str, error: type[Exception]
) -> None:
    await store.create_run("closed", started("wf-1"), now=NOW, history=[completed()])

    with pytest.raises(error):
        await store.reschedule_run(run_id, now=NOW)


async def test_list_activity_tasks_of_a_run_without_tasks_is_empty(store: Store) -> None:
    await new_run(store, "run-1")

    assert await store.list_activity_tasks("run-1") == []
    assert await store.count_runs(RunQuery()) == 1
