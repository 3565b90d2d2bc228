"""The graph examples, each killed mid-run and resumed.

(a) the flaky pipeline: crashed at every fault point of the runtime (in-process), and its
retries with backoff checked on a time-skipping environment; (b) the long batch node: its
worker process is SIGKILLed between two checkpoints and another process resumes it at the
last one; (c) the coordinator: its worker dies while the child runs wait on the ``workers``
queue; (d) the approval flow: its worker process is SIGKILLed while the run waits for a human,
who answers while no worker runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from graph_support import WAIT, WorkerProcess, eventually, wait_until_waiting

from engine import Worker
from engine._faults import Faults
from examples.graph import approval, batch, coordinator, pipeline
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ChildWorkflowStarted,
    PayloadConverter,
)
from sdk import open_client
from sdk.graph import describe_graph_run, resume
from sdk.testing import WorkflowEnvironment, crash_resume

# -- (a) pipeline ----------------------------------------------------------------------------


async def test_pipeline_steps_failing_at_random_retry_with_backoff_and_finish() -> None:
    graph = pipeline.graph
    async with WorkflowEnvironment.start(
        workflows=graph.workflows, activities=graph.activities
    ) as env:
        handles = [
            await env.start_workflow(graph, pipeline.Document(source=f"doc-{i}")) for i in range(8)
        ]
        results = [await env.result(h) for h in handles]
        histories = [await h.history() for h in handles]
    assert [r.stored_as for r in results] == [f"doc-{i}:7-words" for i in range(8)]
    failures = [e for history in histories for e in history if isinstance(e, ActivityFailed)]
    attempts = sum(isinstance(e, ActivityFailed | ActivityCompleted) for h in histories for e in h)
    assert failures, "24 steps at a 30 % failure rate never failed"
    assert 0.05 < len(failures) / attempts < 0.6
    for history in histories:  # backoff: 0.1 s, then doubling
        by_step: dict[int, list[ActivityFailed]] = {}
        for event in history:
            if isinstance(event, ActivityFailed):
                by_step.setdefault(event.seq, []).append(event)
        for failed in by_step.values():
            waits = [
                round((f.retry_at - f.timestamp).total_seconds(), 3)
                for f in failed
                if f.retry_at is not None
            ]
            assert waits == [min(0.1 * 2**i, 2.0) for i in range(len(waits))]


@pytest.mark.slow
async def test_pipeline_survives_a_worker_crash_at_every_fault_point() -> None:
    graph = pipeline.graph
    report = await crash_resume(
        graph,
        pipeline.Document(source="crashy"),
        workflows=graph.workflows,
        activities=graph.activities,
        max_hits_per_point=10,
    )
    assert report.result.stored_as == "crashy:7-words"
    assert report.crashes >= 20


# -- (b) long node with checkpoints ------------------------------------------------------------

KILL_CHECKPOINT = 500


def _checkpoints(history: list[Any]) -> list[int]:
    converter = PayloadConverter()
    return [converter.decode(e.details[0]) for e in history if isinstance(e, ActivityHeartbeat)]


@pytest.mark.slow
def test_batch_node_killed_between_checkpoints_resumes_at_the_last_one(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    store = f"sqlite:///{tmp_path / 'batch.db'}"
    items_path = tmp_path / "items.tsv"
    env = {batch.LEDGER_ENV: str(items_path), batch.ITEM_SECONDS_ENV: "0.003"}

    def history() -> list[Any]:
        async def read() -> list[Any]:
            async with open_client(store) as client:
                return await client.get_handle("batch-1").history()

        return asyncio.run(read())

    def wait_for(what: str, probe: Callable[[], bool]) -> None:
        import time

        deadline = time.monotonic() + 20
        while not probe():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    first = spawn_worker("examples.graph.batch:graph", store, "batch", "batch-a", env)
    first.wait_ready()

    async def start() -> None:
        async with open_client(store) as client:
            await batch.graph.start(client, batch.Batch(), id="batch-1", task_queue="batch")

    asyncio.run(start())
    wait_for("checkpoint 500", lambda: KILL_CHECKPOINT in _checkpoints(history()))
    wait_for("item 550", lambda: len(batch.read_items(items_path)) > KILL_CHECKPOINT + 50)
    first.kill()
    before_kill = batch.read_items(items_path)
    reached = before_kill[-1][0]
    assert max(_checkpoints(history())) == KILL_CHECKPOINT
    assert KILL_CHECKPOINT + 50 <= reached < KILL_CHECKPOINT + 100

    second = spawn_worker("examples.graph.batch:graph", store, "batch", "batch-b", env)

    async def result() -> Any:
        async with open_client(store) as client:
            async with asyncio.timeout(30):
                return await client.get_handle("batch-1").result(result_type=batch.Batch)

    final = asyncio.run(result())
    assert final.resumed_from == KILL_CHECKPOINT
    assert final.processed == 1000 - KILL_CHECKPOINT
    assert final.checksum == batch.expected_checksum()
    assert final.summary == f"1000 items, checksum {batch.expected_checksum()}"
    counts = Counter(item for item, _, _ in batch.read_items(items_path))
    assert set(counts) == set(range(1000))  # none lost
    assert sorted(i for i, n in counts.items() if n > 1) == list(
        range(KILL_CHECKPOINT, reached + 1)
    )  # only the items since the last checkpoint ran twice
    after_kill = batch.read_items(items_path)[len(before_kill) :]
    assert {pid for _, _, pid in after_kill} == {second.proc.pid}
    events = history()
    scheduled = Counter(e.activity_type for e in events if isinstance(e, ActivityScheduled))
    assert scheduled == {
        "batch-graph.prepare": 1,
        "batch-graph.process": 1,
        "batch-graph.summarize": 1,
    }
    assert sum(isinstance(e, ActivityCompleted) for e in events) == 3


# -- (c) coordinator with child runs on a `workers` queue -------------------------------------


async def test_coordinator_killed_while_children_wait_gathers_every_result_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "solved.tsv"
    monkeypatch.setenv(coordinator.LEDGER_ENV, str(ledger))
    app = coordinator.app
    crash_now = False
    async with open_client(tmp_path / "coord.db") as client:

        def worker(queue: str, **options: Any) -> Worker:
            made = Worker(
                client.store,
                task_queue=queue,
                workflows=app.workflows,
                activities=app.activities,
                **options,
            )
            client.add_listener(made)
            return made

        doomed = worker(
            "coordinator",
            identity="coord",
            keep_alive=0.05,
            faults=Faults(decide=lambda point, hit: crash_now),
        )
        await doomed.start()
        handle = await coordinator.coordinator.start(
            client, {"request": "one two three"}, id="job-1", task_queue="coordinator"
        )

        async def children_started() -> int | None:
            started = [e for e in await handle.history() if isinstance(e, ChildWorkflowStarted)]
            return len(started) if len(started) == 3 else None

        await eventually(handle, children_started)
        crash_now = True
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        await doomed.stop()
        client.remove_listener(doomed)
        assert doomed.crashed is not None

        async with worker("workers"), worker("coordinator", identity="coord"):
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        children = sorted(
            r.workflow_id for r in await client.list_runs() if r.workflow_id != "job-1"
        )
    assert result["report"] == "ENO OWT EERHT"
    assert children == ["job-1/1:work:0", "job-1/1:work:1", "job-1/1:work:2"]
    solved = Counter(line.split("\t")[0] for line in ledger.read_text().splitlines())
    assert solved == {"one": 1, "two": 1, "three": 1}


# -- (d) approval with an interrupt -----------------------------------------------------------


@pytest.mark.slow
async def test_approval_waits_through_a_killed_worker_and_is_resumed_by_a_signal(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    store = f"sqlite:///{tmp_path / 'approval.db'}"
    first = spawn_worker("examples.graph.approval:graph", store, "approvals", "approver-a")
    await asyncio.to_thread(first.wait_ready)
    async with open_client(store) as client:
        handle = await approval.graph.start(
            client, approval.Spend(item="laptop", amount=1800), id="spend-1", task_queue="approvals"
        )
        waiting = await wait_until_waiting(handle, within=20)
        first.kill()
        # The human answers while no worker is running at all.
        await resume(handle, {"approved": True, "by": "ann"})
        spawn_worker("examples.graph.approval:graph", store, "approvals", "approver-b")
        async with asyncio.timeout(30):
            result = await handle.result(result_type=approval.Spend)
        history = await handle.history()
    assert waiting["waiting"][0]["value"] == {
        "memo": "Purchase of laptop for 1800 EUR",
        "amount": 1800,
    }
    assert result.outcome == "ordered laptop"
    assert result.trail == ["drafted", "decided by ann", "ordered"]
    drafts = [
        e
        for e in history
        if isinstance(e, ActivityScheduled) and e.activity_type == "approval.draft"
    ]
    assert len(drafts) == 1
    assert describe_graph_run(history)["status"] == "completed"
