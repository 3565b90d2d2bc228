"""Recover, reset, fork, export and import: new runs made from a copy of a run's history.

Every test uses a real SQLite file and real in-process workers; "a step ran" is counted by
the activity itself, so "kept its recorded result" means "did not run again".
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import Client, TimeTravelError, WorkflowFailureError
from history import (
    ActivityCompleted,
    ActivityScheduled,
    RunOrigin,
    RunStatus,
    SignalReceived,
    WorkflowReset,
    WorkflowStarted,
)
from sdk import RetryPolicy, activity, open_client, open_worker, workflow

QUEUE = "time-travel"
WAIT = 10.0
NO_WAIT = RetryPolicy(initial_interval=0.0, maximum_attempts=2)

ran: Counter[str] = Counter()
broken: set[str] = set()


@activity.defn
async def step(name: str) -> str:
    ran[name] += 1
    if name in broken:
        raise RuntimeError(f"{name} is broken")
    return f"{name}-done"


@workflow.defn
async def pipeline(tag: str) -> list[str]:
    results = []
    for name in ("extract", "transform", "load"):
        results.append(
            await workflow.execute_activity(step, f"{tag}:{name}", retry_policy=NO_WAIT)
        )
    return results


@workflow.defn
class Approval:
    def __init__(self) -> None:
        self.answer: str | None = None

    @workflow.run
    async def run(self, tag: str) -> str:
        await workflow.execute_activity(step, f"{tag}:prepare", retry_policy=NO_WAIT)
        await workflow.execute_activity(step, f"{tag}:notify", retry_policy=NO_WAIT)
        await workflow.wait_condition(lambda: self.answer is not None)
        return f"{self.answer}"

    @workflow.signal
    def decide(self, answer: str) -> None:
        self.answer = answer


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ran.clear()
    broken.clear()


def _worker(client: Client) -> Any:
    return open_worker(
        client, task_queue=QUEUE, workflows=[pipeline, Approval], activities=[step]
    )


def _first(history: list[Any], event_type: type) -> Any:
    return next(e for e in history if isinstance(e, event_type))


async def _wait_for(handle: Any, event_type: type, count: int = 1) -> None:
    """Until the run's history holds ``count`` events of ``event_type``."""
    async with asyncio.timeout(WAIT):
        while sum(isinstance(e, event_type) for e in await handle.history()) < count:
            info = await handle.run_info()
            await handle.client.store.wait_for_run(info.run_id, 0.01)


async def test_recover_resumes_a_failed_run_at_its_failing_step(client: Client) -> None:
    broken.add("r:transform")
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "r", id="etl-r", task_queue=QUEUE)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), WAIT)
        broken.clear()  # the fix is deployed
        recovered = await handle.recover(reason="fixed the transform")
        result = await asyncio.wait_for(recovered.result(), WAIT)

    assert result == ["r:extract-done", "r:transform-done", "r:load-done"]
    # extract kept its recorded result; transform failed twice, then ran once more.
    assert ran == Counter({"r:extract": 1, "r:transform": 3, "r:load": 1})


async def test_recover_records_where_the_new_run_came_from(client: Client) -> None:
    broken.add("o:load")
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "o", id="etl-o", task_queue=QUEUE)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), WAIT)
        failed = await handle.run_info()
        broken.clear()
        recovered = await handle.recover(reason="retry budget")
        await asyncio.wait_for(recovered.result(), WAIT)

    started = (await recovered.history())[0]
    assert isinstance(started, WorkflowStarted)
    assert started.origin is not None
    assert (started.origin.kind, started.origin.run_id, started.origin.reason) == (
        "recover",
        failed.run_id,
        "retry budget",
    )
    # The failed run is kept as it was.
    assert (await client.get_handle("etl-o", failed.run_id).run_info()).status is (
        RunStatus.FAILED
    )


async def test_recover_gives_the_failing_step_a_fresh_retry_budget(client: Client) -> None:
    broken.add("b:extract")
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "b", id="etl-b", task_queue=QUEUE)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), WAIT)
        # Still broken: the recovered run gets the full two attempts again, then fails.
        recovered = await handle.recover()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(recovered.result(), WAIT)

    assert ran["b:extract"] == 4


async def test_recover_hands_a_running_run_held_by_a_dead_worker_to_a_live_one_at_once(
    client: Client,
) -> None:
    handle = await client.start_workflow(pipeline, "d", id="etl-d", task_queue=QUEUE)
    # A worker that claimed the run and died: its lease would hold the run for an hour.
    now = client.clock.now()
    [claim] = await client.store.claim_runs(
        QUEUE, owner="ghost", now=now, lease_seconds=3600, limit=1
    )
    async with _worker(client):
        same = await handle.recover()
        result = await asyncio.wait_for(same.result(), WAIT)

    assert same.run_id == claim.run_id
    assert result == ["d:extract-done", "d:transform-done", "d:load-done"]


async def test_recover_refuses_a_completed_run(client: Client) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "c", id="etl-c", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)

    with pytest.raises(TimeTravelError, match="completed: only running or failed runs"):
        await handle.recover()


async def test_reset_closes_an_open_run_and_its_successor_reruns_the_later_steps(
    client: Client,
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(Approval, "s", id="approve-s", task_queue=QUEUE)
        await _wait_for(handle, ActivityCompleted, 2)
        history = await handle.history()
        prepared = _first(history, ActivityCompleted)
        successor = await handle.reset(prepared.event_id, reason="notify went to the wrong team")
        await _wait_for(successor, ActivityCompleted, 2)
        await successor.signal("decide", "yes")
        result = await asyncio.wait_for(handle.result(), WAIT)

    assert result == "yes"  # the original handle follows the reset to its successor
    assert ran == Counter({"s:prepare": 1, "s:notify": 2})
    original = await client.get_handle("approve-s", handle.run_id).history()
    closing = original[-1]
    assert isinstance(closing, WorkflowReset)
    assert closing.new_run_id == successor.run_id
    assert closing.reason == "notify went to the wrong team"


async def test_signals_after_a_reset_reach_the_successor(client: Client) -> None:
    async with _worker(client):
        handle = await client.start_workflow(Approval, "g", id="approve-g", task_queue=QUEUE)
        await _wait_for(handle, ActivityCompleted, 2)
        await handle.reset(1)
        # A handle on the workflow id, as an operator would hold.
        await client.get_handle("approve-g").signal("decide", "later")
        result = await asyncio.wait_for(client.get_handle("approve-g").result(), WAIT)

    assert result == "later"
    assert ran == Counter({"g:prepare": 2, "g:notify": 2})


async def test_reset_of_a_closed_run_starts_a_new_run_and_leaves_the_old_one_alone(
    client: Client,
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "x", id="etl-x", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
        before = await handle.history()
        loads = [e for e in before if isinstance(e, ActivityScheduled)]
        successor = await handle.reset(loads[-1].event_id - 1)
        await asyncio.wait_for(successor.result(), WAIT)

    assert await client.get_handle("etl-x", handle.run_id).history() == before
    assert successor.run_id != handle.run_id
    assert ran == Counter({"x:extract": 1, "x:transform": 1, "x:load": 2})


async def test_reset_cut_inside_an_unfinished_step_runs_that_step_again(
    client: Client,
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "u", id="etl-u", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
        history = await handle.history()
        # Cut right after transform was scheduled, before its result.
        scheduled = [e for e in history if isinstance(e, ActivityScheduled)][1]
        successor = await handle.reset(scheduled.event_id)
        await asyncio.wait_for(successor.result(), WAIT)

    copied = await successor.history()
    assert sum(isinstance(e, ActivityScheduled) for e in copied) == 3
    assert ran == Counter({"u:extract": 1, "u:transform": 2, "u:load": 2})


@pytest.mark.parametrize("event_id", [0, 99])
async def test_reset_to_an_event_outside_the_history_is_refused(
    client: Client, event_id: int
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "e", id="etl-e", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
    length = len(await handle.history())

    with pytest.raises(TimeTravelError, match=rf"outside the run's history \(events 1..{length}\)"):
        await handle.reset(event_id)


async def test_reset_to_the_closing_event_is_refused(client: Client) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "z", id="etl-z", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
    last = (await handle.history())[-1]

    with pytest.raises(TimeTravelError, match="WorkflowCompleted\\) closes the run"):
        await handle.reset(last.event_id)


async def test_fork_starts_a_new_workflow_and_leaves_the_original_unchanged(
    client: Client,
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(Approval, "f", id="approve-f", task_queue=QUEUE)
        await _wait_for(handle, ActivityCompleted, 2)
        before = await handle.history()
        fork = await handle.fork(before[-1].event_id, "approve-f-what-if", reason="try no")
        await fork.signal("decide", "no")
        forked_result = await asyncio.wait_for(fork.result(), WAIT)
        after = await handle.history()
        await handle.signal("decide", "yes")
        original_result = await asyncio.wait_for(handle.result(), WAIT)

    assert (forked_result, original_result) == ("no", "yes")
    assert after == before
    started = (await fork.history())[0]
    assert isinstance(started, WorkflowStarted)
    assert started.workflow_id == "approve-f-what-if"
    assert started.origin == RunOrigin(
        kind="fork",
        run_id=handle.run_id or "",
        event_id=before[-1].event_id,
        reason="try no",
        copied=len(before) - 1,  # every event after WorkflowStarted: nothing was unfinished
    )
    assert ran == Counter({"f:prepare": 1, "f:notify": 1})


async def test_an_exported_closed_run_imports_into_another_store_unchanged(
    client: Client, tmp_path: Path
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(pipeline, "i", id="etl-i", task_queue=QUEUE)
        await asyncio.wait_for(handle.result(), WAIT)
    exported = await handle.export()

    async with open_client(tmp_path / "laptop.db") as laptop:
        imported = await laptop.import_history(exported)
        assert imported.run_id == handle.run_id
        assert await imported.history() == await handle.history()
        assert (await imported.run_info()).status is RunStatus.COMPLETED
        assert await imported.result() == ["i:extract-done", "i:transform-done", "i:load-done"]


async def test_an_exported_open_run_continues_on_the_importing_side(
    client: Client, tmp_path: Path
) -> None:
    async with _worker(client):
        handle = await client.start_workflow(Approval, "m", id="approve-m", task_queue=QUEUE)
        await _wait_for(handle, ActivityCompleted, 2)
    exported = await handle.export()

    async with open_client(tmp_path / "elsewhere.db") as other:
        imported = await other.import_history(exported, workflow_id="approve-m-copy")
        async with _worker(other):
            await imported.signal("decide", "imported")
            assert await asyncio.wait_for(imported.result(), WAIT) == "imported"
        history = await imported.history()

    assert ran == Counter({"m:prepare": 1, "m:notify": 1})
    assert _first(history, SignalReceived).name == "decide"
