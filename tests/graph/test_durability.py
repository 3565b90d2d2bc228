"""Graph runs survive crashes: recorded node results are never recomputed, a parallel
super-step re-runs only its unfinished branches, and replay reproduces the run."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from graph_support import WAIT, eventually

import engine._instance
from engine import Worker
from engine._faults import Faults
from history import ActivityCompleted, ActivityScheduled, PayloadConverter, WorkflowContinuedAsNew
from sdk import open_client
from sdk.graph import END, START, StateGraph, append, current_node, graph_states
from sdk.testing import Replayer, crash_resume

QUEUE = "graphs"


class Log(TypedDict, total=False):
    log: Annotated[list[str], append]
    rounds: int


def completed_tasks(history: list[Any]) -> set[str]:
    converter = PayloadConverter()
    task_of = {
        e.seq: converter.decode(e.args[0])["task"]["id"]
        for e in history
        if isinstance(e, ActivityScheduled)
    }
    return {task_of[e.seq] for e in history if isinstance(e, ActivityCompleted)}


async def test_crash_mid_parallel_step_reruns_only_the_unfinished_branch(db_path: Path) -> None:
    ledger: Counter[str] = Counter()
    gate = asyncio.Event()

    def fast(state: Log) -> dict[str, Any]:
        ledger[current_node().task_id] += 1
        return {"log": ["fast"]}

    async def slow(state: Log) -> dict[str, Any]:
        ledger[current_node().task_id] += 1
        await gate.wait()
        return {"log": ["slow"]}

    builder = StateGraph(Log)
    builder.add_node("fast", fast)
    builder.add_node("slow", slow)

    def join(state: Log) -> dict[str, Any]:
        ledger[current_node().task_id] += 1
        return {"log": ["join"]}

    builder.add_node("join", join)
    builder.add_edge(START, "fast")
    builder.add_edge(START, "slow")
    builder.add_edge("fast", "join")
    builder.add_edge("slow", "join")
    builder.add_edge("join", END)
    graph = builder.compile(name="parallel")

    crash_now = False
    faults = Faults(decide=lambda point, hit: crash_now)

    async with open_client(db_path) as client:
        doomed = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=graph.workflows,
            activities=graph.activities,
            identity="w",
            faults=faults,
        )
        client.add_listener(doomed)
        await doomed.start()
        handle = await graph.start(client, {}, id="p-1", task_queue=QUEUE)

        async def fast_recorded() -> bool | None:
            return True if "0:fast" in completed_tasks(await handle.history()) else None

        await eventually(handle, fast_recorded)
        crash_now = True  # the worker dies at its next fault point: when slow completes
        gate.set()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        client.remove_listener(doomed)
        await doomed.stop()
        assert doomed.crashed is not None
        assert completed_tasks(await handle.history()) == {"0:fast"}

        rescuer = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=graph.workflows,
            activities=graph.activities,
            identity="w",
        )
        client.add_listener(rescuer)
        async with rescuer:
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        client.remove_listener(rescuer)

    assert sorted(result["log"]) == ["fast", "join", "slow"]
    assert ledger == {"0:fast": 1, "0:slow": 2, "1:join": 1}


def _diamond() -> Any:
    def branch(state: Log) -> dict[str, Any]:
        return {"log": [current_node().task_id]}

    def route(state: Log) -> str:
        return "again" if state.get("rounds", 0) < 2 else "done"

    builder = StateGraph(Log)
    builder.add_node("left", branch)
    builder.add_node("right", branch)
    builder.add_node("count", lambda s: {"rounds": s.get("rounds", 0) + 1})
    builder.add_edge(START, "left")
    builder.add_edge(START, "right")
    builder.add_edge("left", "count")
    builder.add_edge("right", "count")
    builder.add_conditional_edges("count", route, {"again": "left", "done": END})
    return builder.compile(name="diamond")


@pytest.mark.slow
async def test_graph_survives_a_crash_at_every_fault_point() -> None:
    graph = _diamond()
    report = await crash_resume(
        graph,
        {},
        workflows=graph.workflows,
        activities=graph.activities,
        max_hits_per_point=6,
    )
    assert report.result["rounds"] == 2
    assert report.crashes >= 20


async def test_recorded_graph_history_replays_without_nondeterminism(db_path: Path) -> None:
    graph = _diamond()
    async with open_client(db_path) as client:
        worker = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=graph.workflows,
            activities=graph.activities,
        )
        client.add_listener(worker)
        async with worker:
            handle = await graph.start(client, {}, id="d-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        history = await handle.history()
    replayed = Replayer(workflows=graph.workflows).replay(history)
    assert replayed.instance.completion is not None
    assert replayed.instance.workflow_object.state == result


async def test_long_graph_run_continues_as_new_and_keeps_every_state(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine._instance, "HISTORY_WARN_EVENTS", 12)

    def tick(state: Log) -> dict[str, Any]:
        return {"rounds": state.get("rounds", 0) + 1}

    builder = StateGraph(Log)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges(
        "tick", lambda s: "again" if s["rounds"] < 8 else "done", {"again": "tick", "done": END}
    )
    graph = builder.compile(name="ticker")
    async with open_client(db_path) as client:
        worker = Worker(
            client.store, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
        )
        client.add_listener(worker)
        async with worker:
            handle = await graph.start(client, {}, id="t-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        runs = await client.list_runs()
        first = await client.store.read_history(handle.run_id or "")
        states = await graph_states(client.get_handle("t-1"))
    assert result == {"rounds": 8}
    assert len(runs) > 1
    assert isinstance(first[-1], WorkflowContinuedAsNew)
    loop_steps = [s.step for s in states if s.source == "loop"]
    assert loop_steps == list(range(1, 9))
