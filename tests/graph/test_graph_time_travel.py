"""Time travel: the states a graph run went through, and new runs forked from any of them;
plus what describe_graph_run tells the web UI about a run from its history alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from graph_support import WAIT, eventually

from engine import Client
from sdk import open_client, open_worker
from sdk.graph import (
    END,
    START,
    CompiledGraph,
    StateGraph,
    append,
    describe_graph_run,
    graph_states,
)

QUEUE = "graphs"


class Trip(TypedDict, total=False):
    city: str
    nights: int
    plan: Annotated[list[str], append]


def trip_graph(ledger: Counter[str]) -> CompiledGraph:
    def pick(state: Trip) -> dict[str, Any]:
        ledger["pick"] += 1
        return {"plan": [f"go to {state['city']}"]}

    def book(state: Trip) -> dict[str, Any]:
        ledger["book"] += 1
        return {"plan": [f"book {state['nights']} nights in {state['city']}"]}

    def pack(state: Trip) -> dict[str, Any]:
        ledger["pack"] += 1
        return {"plan": ["pack"]}

    builder = StateGraph(Trip)
    builder.add_node("pick", pick)
    builder.add_node("book", book)
    builder.add_node("pack", pack)
    builder.add_edge(START, "pick")
    builder.add_edge("pick", "book")
    builder.add_edge("book", "pack")
    builder.add_edge("pack", END)
    return builder.compile(name="trip")


async def finished(client: Client, graph: CompiledGraph, input: Any, id: str) -> Any:
    handle = await graph.start(client, input, id=id, task_queue=QUEUE)
    async with asyncio.timeout(WAIT):
        return await handle.result()


async def test_fork_from_a_past_step_with_an_edited_state_leaves_the_original_alone(
    db_path: Path,
) -> None:
    ledger: Counter[str] = Counter()
    graph = trip_graph(ledger)
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
        ):
            original = await finished(client, graph, {"city": "Rome", "nights": 2}, "trip-1")
            source = client.get_handle("trip-1")
            history_before = await source.history()
            states = await graph_states(source)
            after_pick = next(s for s in states if s.step == 1)
            forked = await graph.fork(
                client, source, after_pick, id="trip-1-longer", update={"nights": 5}
            )
            async with asyncio.timeout(WAIT):
                result = await forked.result()
            history_after = await source.history()
            fork_states = await graph_states(forked)
    assert after_pick.next == ["book"]
    assert original["plan"] == ["go to Rome", "book 2 nights in Rome", "pack"]
    assert result == {
        "city": "Rome",
        "nights": 5,
        "plan": ["go to Rome", "book 5 nights in Rome", "pack"],
    }
    assert ledger == {"pick": 1, "book": 2, "pack": 2}  # the fork did not redo "pick"
    assert history_after == history_before
    assert (fork_states[0].source, fork_states[0].step) == ("fork", 1)


async def test_fork_can_choose_the_nodes_to_run_next(db_path: Path) -> None:
    ledger: Counter[str] = Counter()
    graph = trip_graph(ledger)
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
        ):
            await finished(client, graph, {"city": "Oslo", "nights": 1}, "trip-2")
            forked = await graph.fork(client, "trip-2", 1, id="trip-2-skip", next=["pack"])
            async with asyncio.timeout(WAIT):
                result = await forked.result()
    assert result["plan"] == ["go to Oslo", "pack"]


async def test_fork_from_a_step_the_run_never_recorded_is_refused(db_path: Path) -> None:
    graph = trip_graph(Counter())
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
        ):
            await finished(client, graph, {"city": "Bern", "nights": 1}, "trip-3")
        with pytest.raises(ValueError, match=r"recorded no state at step 42"):
            await graph.fork(client, "trip-3", 42, id="nope")


async def test_describe_graph_run_shows_the_running_node_from_history(db_path: Path) -> None:
    gate = asyncio.Event()

    async def slow(state: Trip) -> dict[str, Any]:
        await gate.wait()
        return {"plan": ["slow done"]}

    builder = StateGraph(Trip)
    builder.add_node("first", lambda s: {"plan": ["first"]})
    builder.add_node("slow", slow)
    builder.add_edge(START, "first")
    builder.add_edge("first", "slow")
    builder.add_edge("slow", END)
    graph = builder.compile(name="watched")
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
        ):
            handle = await graph.start(client, {}, id="w-1", task_queue=QUEUE)

            async def slow_is_next() -> dict[str, Any] | None:
                description = describe_graph_run(await handle.history())
                return description if description.get("step") == 1 else None

            running = await eventually(handle, slow_is_next)
            gate.set()
            async with asyncio.timeout(WAIT):
                await handle.result()
            done = describe_graph_run(await handle.history())
    assert (running["status"], running["running"], running["waiting"]) == ("running", ["slow"], [])
    assert "class slow running;" in running["mermaid"]
    assert [n["name"] for n in running["nodes"]] == ["__start__", "first", "slow", "__end__"]
    assert {"source": "first", "target": "slow"}.items() <= running["edges"][1].items()
    assert (done["status"], done["running"]) == ("completed", [])
    assert [s["step"] for s in done["states"]] == [0, 1, 2]
    assert done["states"][-1]["state"]["plan"] == ["first", "slow done"]


def test_describe_graph_run_of_a_history_that_is_not_a_graph_run() -> None:
    assert describe_graph_run([]) == {"graph": None}
