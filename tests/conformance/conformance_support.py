"""Building blocks shared by the conformance tests: events, runs, claims and appends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from history import (
    ActivityScheduled,
    ActivityTaskSpec,
    AppendRequest,
    AppendResult,
    Event,
    Failure,
    Payload,
    RunClaim,
    RunInfo,
    Store,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
)


@dataclass(frozen=True)
class Backend:
    """How to open (another) store on the test's file or schema."""

    kind: str
    open: Callable[[], Awaitable[Store]]


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
