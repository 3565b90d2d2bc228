"""Listing, filtering, paging and counting runs."""

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
    started,
)

from history import (
    RunQuery,
    RunStatus,
    Store,
)


@pytest.fixture
async def many_runs(store: Store) -> Store:
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


async def ids(store: Store, **filters: Any) -> list[str]:
    return [r.run_id for r in await store.list_runs(RunQuery(**filters))]


async def test_list_runs_returns_every_run_newest_first(many_runs: Store) -> None:
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
    many_runs: Store, filters: dict[str, Any], expected: list[str]
) -> None:
    assert await ids(many_runs, **filters) == expected


async def test_started_after_is_inclusive_and_started_before_exclusive(
    many_runs: Store,
) -> None:
    window = {
        "started_after": T0 + timedelta(minutes=1),
        "started_before": T0 + timedelta(minutes=3),
    }

    assert await ids(many_runs, **window) == ["run-2", "run-1"]


async def test_list_runs_pages_with_limit_and_offset_without_overlap(
    many_runs: Store,
) -> None:
    pages = [await ids(many_runs, limit=4, offset=offset) for offset in (0, 4, 8)]

    assert pages == [["run-5", "run-4", "run-3", "run-2"], ["run-1", "run-0"], []]


async def test_list_runs_reports_status_close_time_and_history_length(
    many_runs: Store,
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
    many_runs: Store, filters: dict[str, Any], expected: int
) -> None:
    assert await many_runs.count_runs(RunQuery(**filters)) == expected
