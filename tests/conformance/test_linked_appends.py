"""Appends that reach beyond their run: runs started in the same transaction (children,
continue-as-new) and linked appends to other runs (a child telling its parent it closed)."""

from __future__ import annotations

import pytest
from conformance_support import (
    NOW,
    T0,
    claim_one,
    completed,
    event_ids,
    external_append,
    new_run,
    owner_append,
    scheduled,
    started,
    task_spec,
)

from history import (
    AppendRequest,
    NewRun,
    RunNotFoundError,
    RunStatus,
    SignalReceived,
    Store,
    WorkflowAlreadyRunningError,
    WorkflowContinuedAsNew,
)


def continued(new_run_id: str) -> WorkflowContinuedAsNew:
    return WorkflowContinuedAsNew(timestamp=T0, new_run_id=new_run_id)


def signal(name: str = "ping") -> SignalReceived:
    return SignalReceived(timestamp=T0, name=name)


async def test_continue_as_new_closes_the_run_and_starts_its_successor_in_one_append(
    store: Store,
) -> None:
    await new_run(store, "run-1", "wf-1")
    run = await claim_one(store)

    result = await owner_append(
        store,
        run,
        [continued("run-2")],
        start_runs=[NewRun(run_id="run-2", started=started("wf-1"))],
    )

    assert result.error is None
    assert (await store.get_run("run-1")).status is RunStatus.CONTINUED_AS_NEW
    assert (await store.find_run("wf-1")).run_id == "run-2"
    assert (await store.get_run("run-2")).status is RunStatus.RUNNING


async def test_starting_a_run_whose_workflow_id_is_open_refuses_the_whole_request(
    store: Store,
) -> None:
    await new_run(store, "parent", "wf-parent")
    await store.create_run("other", started("wf-child", task_queue="elsewhere"), now=NOW)
    run = await claim_one(store)

    result = await owner_append(
        store,
        run,
        [scheduled(1)],
        activity_tasks=[task_spec(1)],
        start_runs=[NewRun(run_id="child", started=started("wf-child"))],
    )

    assert isinstance(result.error, WorkflowAlreadyRunningError)
    assert result.error.run_id == "other"
    assert await event_ids(store, "parent") == [1]
    assert await store.list_activity_tasks("parent") == []
    with pytest.raises(RunNotFoundError):
        await store.get_run("child")


async def test_two_runs_of_one_workflow_id_in_one_request_are_refused(store: Store) -> None:
    await new_run(store, "parent", "wf-parent")
    run = await claim_one(store)

    result = await owner_append(
        store,
        run,
        [scheduled(1)],
        start_runs=[
            NewRun(run_id="child-a", started=started("wf-child")),
            NewRun(run_id="child-b", started=started("wf-child")),
        ],
    )

    assert isinstance(result.error, WorkflowAlreadyRunningError)
    assert await event_ids(store, "parent") == [1]


async def test_a_linked_append_is_written_in_the_same_transaction(store: Store) -> None:
    await new_run(store, "parent", "wf-parent")
    await new_run(store, "child", "wf-child")

    result = await external_append(
        store,
        "child",
        [completed()],
        linked=[AppendRequest(run_id="parent", events=[signal("child done")], now=NOW, wake=True)],
    )

    assert result.error is None
    assert await event_ids(store, "parent") == [1, 2]
    assert (await store.get_run("parent")).wake_at == NOW


async def test_a_linked_append_to_a_closed_run_is_skipped(store: Store) -> None:
    await new_run(store, "parent", "wf-parent")
    await new_run(store, "child", "wf-child")
    (await external_append(store, "parent", [completed()])).unwrap()

    result = await external_append(
        store,
        "child",
        [completed()],
        linked=[AppendRequest(run_id="parent", events=[signal()], now=NOW)],
    )

    assert result.error is None
    assert await event_ids(store, "parent") == [1, 2]
    assert (await store.get_run("child")).status is RunStatus.COMPLETED


async def test_a_linked_append_following_continuations_reaches_the_newest_run(
    store: Store,
) -> None:
    await new_run(store, "run-1", "wf-1")
    for old, new in (("run-1", "run-2"), ("run-2", "run-3")):
        (
            await external_append(
                store,
                old,
                [continued(new)],
                start_runs=[NewRun(run_id=new, started=started("wf-1"))],
            )
        ).unwrap()
    await new_run(store, "parent", "wf-parent")

    (
        await external_append(
            store,
            "parent",
            [scheduled(1)],
            linked=[
                AppendRequest(
                    run_id="run-1", events=[signal("cancel")], now=NOW, follow_continuations=True
                )
            ],
        )
    ).unwrap()

    assert await event_ids(store, "run-3") == [1, 2]
    assert await event_ids(store, "run-1") == [1, 2]
