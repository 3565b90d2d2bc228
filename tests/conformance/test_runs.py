"""Creating runs and reading them back: ids, the first event, one open run per workflow id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conformance_support import (
    NOW,
    QUEUE,
    T0,
    completed,
    external_append,
    failed,
    new_run,
    started,
)

from history import (
    Payload,
    RunInfo,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    Store,
    StoreError,
    WorkflowAlreadyRunningError,
    WorkflowStarted,
)


def test_the_store_implements_the_store_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_create_run_stores_the_started_event_as_event_1(store: Store) -> None:
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


async def test_create_run_returns_an_open_run_ready_to_be_claimed_now(store: Store) -> None:
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


async def test_get_run_reads_back_what_create_run_returned(store: Store) -> None:
    info = await new_run(store, "run-1")

    assert await store.get_run("run-1") == info


async def test_find_run_returns_the_run_of_a_workflow_id(store: Store) -> None:
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
async def test_reading_an_unknown_run_raises_run_not_found(store: Store, read: Any) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        await read(store)


async def test_a_second_open_run_of_the_same_workflow_id_is_refused(store: Store) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)

    with pytest.raises(WorkflowAlreadyRunningError) as info:
        await store.create_run("run-2", started("wf-1"), now=NOW)

    assert (info.value.workflow_id, info.value.run_id) == ("wf-1", "run-1")
    assert await store.count_runs(RunQuery()) == 1
    with pytest.raises(RunNotFoundError):
        await store.read_history("run-2")


async def test_a_workflow_id_may_run_again_once_its_run_completed(store: Store) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)
    (await external_append(store, "run-1", [completed()])).unwrap()

    await store.create_run("run-2", started("wf-1", at=T0 + timedelta(days=1)), now=NOW)

    assert (await store.find_run("wf-1")).run_id == "run-2"


async def test_a_workflow_id_may_run_again_once_its_run_failed(store: Store) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)
    (await external_append(store, "run-1", [failed()])).unwrap()

    info = await store.create_run("run-2", started("wf-1"), now=NOW)

    assert info.status is RunStatus.RUNNING


async def test_find_run_prefers_the_open_run_over_a_newer_closed_one(store: Store) -> None:
    await store.create_run("run-1", started("wf-1", at=T0 + timedelta(days=2)), now=NOW)
    (await external_append(store, "run-1", [completed()])).unwrap()
    await store.create_run("run-2", started("wf-1", at=T0), now=NOW)

    assert (await store.find_run("wf-1")).run_id == "run-2"


async def test_creating_a_run_with_an_existing_run_id_is_refused(store: Store) -> None:
    await store.create_run("run-1", started("wf-1"), now=NOW)

    with pytest.raises(StoreError):
        await store.create_run("run-1", started("wf-2"), now=NOW)

    assert (await store.get_run("run-1")).workflow_id == "wf-1"
