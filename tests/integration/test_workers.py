"""Workers sharing one store: runs are split between them and each completes once; fenced
appends keep two writers from both extending a history; leases move runs from a dead worker
to a live one and never from a worker to itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import Client, ManualClock
from history import (
    ActivityCompleted,
    AppendConflictError,
    AppendRequest,
    LeaseLostError,
    SqliteStore,
    TimerStarted,
    WorkflowCompleted,
    WorkflowTaskFailed,
)
from sdk import activity, open_worker, workflow

QUEUE = "shared"
WAIT = 10.0
CLOCK_JUMP_AT = 1_800_003_600.0  # an hour after the ManualClock fixture starts


def _count_calls(store: Any, method: str) -> Counter[str]:
    """Count calls to one of ``store``'s methods (it still does the real work)."""
    calls: Counter[str] = Counter()
    real: Callable[..., Awaitable[Any]] = getattr(store, method)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[method] += 1
        return await real(*args, **kwargs)

    setattr(store, method, counted)
    return calls


async def _round_trips(client: Client, count: int) -> None:
    """Give the workers' loops ``count`` turns at the store, as a busy process would."""
    for _ in range(count):
        await client.count_runs()


async def test_two_workers_share_twenty_runs_and_each_run_completes_once(client: Client) -> None:
    processed: dict[str, Counter[str]] = {"worker-a": Counter(), "worker-b": Counter()}
    in_flight = 0
    both_busy = asyncio.Event()

    def process_on(worker: str) -> Any:
        @activity.defn(name="process")
        async def process(order_id: str) -> str:
            nonlocal in_flight
            processed[worker][order_id] += 1
            in_flight += 1
            if in_flight == 10:
                both_busy.set()
            # Neither worker may hold more than 5 runs, so the first 10 wait here until
            # both workers hold 5 each: the runs are shared, not taken by one worker.
            await both_busy.wait()
            return f"{order_id} by {worker}"

        return process

    @workflow.defn
    async def fulfil(order_id: str) -> str:
        return await workflow.execute_activity("process", order_id)

    options: dict[str, Any] = {"task_queue": QUEUE, "workflows": [fulfil], "max_concurrent_runs": 5}
    async with (
        open_worker(client, identity="worker-a", activities=[process_on("worker-a")], **options),
        open_worker(client, identity="worker-b", activities=[process_on("worker-b")], **options),
    ):
        handles = [
            await client.start_workflow(fulfil, f"o-{i}", id=f"fulfil-{i}", task_queue=QUEUE)
            for i in range(20)
        ]
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*(h.result() for h in handles))

    runs_by = {w: sum(c.values()) for w, c in processed.items()}
    assert runs_by["worker-a"] >= 5
    assert runs_by["worker-b"] >= 5
    assert runs_by["worker-a"] + runs_by["worker-b"] == 20
    executions = processed["worker-a"] + processed["worker-b"]
    assert executions == {f"o-{i}": 1 for i in range(20)}
    for i, (handle, result) in enumerate(zip(handles, results, strict=True)):
        assert result.startswith(f"o-{i} by worker-")
        history = await handle.history()
        assert sum(isinstance(e, WorkflowCompleted) for e in history) == 1


async def test_two_writers_appending_at_the_same_event_id_one_gets_append_conflict(
    client: Client, db_path: Path
) -> None:
    @workflow.defn
    async def idle() -> None:
        pass

    handle = await client.start_workflow(idle, id="raced", task_queue=QUEUE)
    assert handle.run_id is not None
    stamp = datetime(2027, 1, 15, tzinfo=UTC)

    def timer_append(duration: float) -> AppendRequest:
        started = TimerStarted(timestamp=stamp, seq=1, fire_at=stamp, duration=duration)
        return AppendRequest(
            run_id=handle.run_id, events=[started], now=0.0, expected_next_event_id=2
        )

    # Two stores on one file: two processes, each believing the history is at event 1.
    async with await SqliteStore.open(db_path) as other:
        [mine], [theirs] = await asyncio.gather(
            client.store.append([timer_append(1.0)]), other.append([timer_append(2.0)])
        )

    winner, loser = (mine, theirs) if mine.error is None else (theirs, mine)
    assert winner.error is None
    assert isinstance(loser.error, AppendConflictError)
    assert (loser.error.expected_next_event_id, loser.error.actual_next_event_id) == (2, 3)
    history = await handle.history()
    assert [e.event_id for e in history] == [1, 2]
    assert history[1] == winner.events[0]


async def test_append_with_a_stale_fence_is_refused_after_another_worker_claims_the_run(
    client: Client, db_path: Path
) -> None:
    @workflow.defn
    async def idle() -> None:
        pass

    handle = await client.start_workflow(idle, id="taken-over", task_queue=QUEUE)
    assert handle.run_id is not None
    now = client.clock.now()
    async with await SqliteStore.open(db_path) as other:
        [first] = await client.store.claim_runs(
            QUEUE, owner="worker-a", now=now, lease_seconds=10, limit=1
        )
        # worker-a stalls past its lease; worker-b, in another process, takes the run over.
        [second] = await other.claim_runs(
            QUEUE, owner="worker-b", now=now + 11, lease_seconds=10, limit=1
        )

    def append(fence: int) -> AppendRequest:
        return AppendRequest(
            run_id=handle.run_id,
            events=[],
            now=now + 12,
            expected_next_event_id=2,
            fence=fence,
            release=True,
        )

    [stale] = await client.store.append([append(first.fence)])
    [current] = await client.store.append([append(second.fence)])

    assert second.fence == first.fence + 1
    assert isinstance(stale.error, LeaseLostError)
    assert current.error is None


async def test_run_held_by_a_dead_worker_is_taken_over_when_its_lease_expires(
    manual_client: Client, clock: ManualClock
) -> None:
    client = manual_client

    @workflow.defn
    async def greet(name: str) -> str:
        return f"hello {name}"

    handle = await client.start_workflow(greet, "ann", id="orphan", task_queue=QUEUE)
    # A worker claimed the run, then its process died without releasing it.
    [dead] = await client.store.claim_runs(
        QUEUE, owner="dead-worker", now=clock.now(), lease_seconds=10, limit=1
    )

    async with open_worker(client, task_queue=QUEUE, workflows=[greet], identity="alive"):
        await _round_trips(client, 20)
        assert (await handle.run_info()).owner == "dead-worker"  # its lease still holds
        clock.advance(11)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "hello ann"

    # Had the dead worker only been paused, nothing it appends now would be accepted.
    [late] = await client.store.append(
        [AppendRequest(run_id=dead.run_id, events=[], now=clock.now(), fence=dead.fence)]
    )
    assert isinstance(late.error, LeaseLostError)


async def test_lease_that_ran_out_under_its_owner_is_renewed_not_taken_over_by_it(
    manual_client: Client, clock: ManualClock
) -> None:
    client = manual_client
    started = asyncio.Event()
    release = asyncio.Event()
    executions = 0

    @activity.defn
    async def export(name: str) -> str:
        nonlocal executions
        executions += 1
        started.set()
        await release.wait()
        return f"exported {name}"

    @workflow.defn
    async def nightly(name: str) -> str:
        return await export(name)

    # The worker's renewals stall (a busy store), so its poll loop sees the expired lease first.
    renewals = asyncio.Event()
    renew_leases = client.store.renew_leases

    async def stalled_renew_leases(owner: str, *, until: float) -> set[str]:
        await renewals.wait()
        return await renew_leases(owner, until=until)

    polled_after_jump = asyncio.Event()
    claim_runs = client.store.claim_runs

    async def watched_claim_runs(task_queue: str, **options: Any) -> Any:
        claims = await claim_runs(task_queue, **options)
        if options["now"] >= CLOCK_JUMP_AT:
            polled_after_jump.set()
        return claims

    client.store.renew_leases = stalled_renew_leases  # type: ignore[method-assign]
    client.store.claim_runs = watched_claim_runs  # type: ignore[method-assign]

    async with open_worker(
        client, task_queue=QUEUE, workflows=[nightly], activities=[export], lease_seconds=10
    ) as worker:
        handle = await client.start_workflow(nightly, "ledger", id="nightly", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            await started.wait()
        owner = (await handle.run_info()).owner
        clock.set(CLOCK_JUMP_AT)  # the process was paused: by the store's clock its lease ran out
        worker.notify()  # make sure the poll loop looks at the store after the jump
        async with asyncio.timeout(WAIT):
            await polled_after_jump.wait()
        assert (await handle.run_info()).owner == owner
        renewals.set()
        release.set()
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "exported ledger"

    assert executions == 1


async def test_worker_without_activities_waits_quietly_for_an_activity_task_it_cannot_run(
    manual_client: Client, clock: ManualClock, wait_for_run: Any, wait_for_event: Any
) -> None:
    client = manual_client

    @activity.defn
    async def render(page: str) -> str:
        return f"<h1>{page}</h1>"

    @workflow.defn
    async def publish(page: str) -> str:
        return await render(page)

    async with open_worker(client, task_queue=QUEUE, workflows=[publish]):
        handle = await client.start_workflow(publish, "home", id="publish", task_queue=QUEUE)
        # The run is released waiting for a worker that has ``render``.
        await wait_for_run(handle, lambda info: info.history_length == 2 and info.owner is None)
        claims = _count_calls(client.store, "claim_runs")
        await _round_trips(client, 100)
        assert claims["claim_runs"] <= 1  # no busy loop on the task it cannot take

        async with open_worker(client, task_queue=QUEUE, activities=[render]):
            await wait_for_event(handle, ActivityCompleted)
            # Another worker's append reaches this one at its next poll, a second later.
            clock.advance(1)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "<h1>home</h1>"


async def test_worker_without_workflows_leaves_runs_to_workers_that_have_them(
    manual_client: Client,
) -> None:
    client = manual_client
    claims = _count_calls(client.store, "claim_runs")

    @workflow.defn
    async def greet(name: str) -> str:
        return f"hello {name}"

    @activity.defn
    async def unrelated() -> None:
        pass

    async with open_worker(client, task_queue=QUEUE, activities=[unrelated]):
        handle = await client.start_workflow(greet, "bob", id="greet", task_queue=QUEUE)
        await _round_trips(client, 100)

    assert claims["claim_runs"] == 0
    info = await handle.run_info()
    assert (info.owner, info.history_length) == (None, 1)
    assert not [e for e in await handle.history() if isinstance(e, WorkflowTaskFailed)]


@pytest.mark.parametrize("second_identity", [None, "worker-2"], ids=["default", "explicit"])
async def test_starting_a_second_worker_does_not_disturb_the_runs_of_the_first(
    client: Client, second_identity: str | None
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    executions = 0

    @activity.defn
    async def export(name: str) -> str:
        nonlocal executions
        executions += 1
        started.set()
        await release.wait()
        return f"exported {name}"

    @workflow.defn
    async def nightly(name: str) -> str:
        return await export(name)

    options: dict[str, Any] = {"workflows": [nightly], "activities": [export]}
    async with open_worker(client, task_queue=QUEUE, **options):
        handle = await client.start_workflow(nightly, "ledger", id="nightly", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            await started.wait()
        owner = (await handle.run_info()).owner
        async with open_worker(client, task_queue=QUEUE, identity=second_identity, **options):
            await _round_trips(client, 20)
            assert (await handle.run_info()).owner == owner
            release.set()
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "exported ledger"

    assert executions == 1
