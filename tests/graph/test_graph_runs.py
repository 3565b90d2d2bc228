"""Running graphs on a real SQLite store with a real in-process worker: super-steps,
parallel branches, joins, dynamic fan-out, routers, limits and failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import msgspec
import pytest
from graph_support import WAIT

from engine import Client
from history import ActivityCompleted, ActivityFailed, ActivityScheduled, PayloadConverter
from sdk import RetryPolicy, WorkflowFailureError, open_client, open_worker
from sdk.graph import (
    END,
    START,
    Command,
    CompiledGraph,
    GraphValidationError,
    Send,
    StateGraph,
    append,
    current_node,
    graph_states,
)

QUEUE = "graphs"


@asynccontextmanager
async def serving(db_path: Path, *graphs: CompiledGraph) -> AsyncIterator[Client]:
    workflows = [w for g in graphs for w in g.workflows]
    activities = [a for g in graphs for a in g.activities]
    async with open_client(db_path, workflows=workflows) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=workflows, activities=activities
        ):
            yield client


async def run(client: Client, graph: CompiledGraph, input: Any, id: str = "run-1") -> Any:
    handle = await graph.start(client, input, id=id, task_queue=QUEUE)
    async with asyncio.timeout(WAIT):
        return await handle.result()


class Log(TypedDict, total=False):
    log: Annotated[list[str], append]
    value: int


def note(name: str) -> Any:
    def node(state: Log) -> dict[str, Any]:
        return {"log": [name]}

    node.__name__ = name
    return node


async def test_sequential_graph_runs_each_node_once_and_returns_the_final_state(
    db_path: Path,
) -> None:
    builder = StateGraph(Log)
    for name in ("a", "b", "c"):
        builder.add_node(name, note(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    graph = builder.compile(name="seq")
    async with serving(db_path, graph) as client:
        result = await run(client, graph, {"log": ["in"]})
        history = await client.get_handle("run-1").history()
    assert result == {"log": ["in", "a", "b", "c"]}
    scheduled = [e.activity_type for e in history if isinstance(e, ActivityScheduled)]
    assert scheduled == ["seq.a", "seq.b", "seq.c"]


async def test_state_after_every_super_step_is_recorded_in_history(db_path: Path) -> None:
    builder = StateGraph(Log)
    builder.add_node("a", note("a"))
    builder.add_node("b", note("b"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    graph = builder.compile(name="recorded")
    async with serving(db_path, graph) as client:
        await run(client, graph, {})
        states = await graph_states(client.get_handle("run-1"))
    assert [(s.step, s.source, s.next, s.state.get("log")) for s in states] == [
        (0, "input", ["a"], None),
        (1, "loop", ["b"], ["a"]),
        (2, "loop", [], ["a", "b"]),
    ]


async def test_fan_out_runs_branches_in_one_super_step_and_the_join_waits_for_all(
    db_path: Path,
) -> None:
    builder = StateGraph(Log)
    for name in ("split", "left", "right", "right2", "joined"):
        builder.add_node(name, note(name))
    builder.add_edge(START, "split")
    builder.add_edge("split", "left")
    builder.add_edge("split", "right")
    builder.add_edge("right", "right2")  # the right branch is one step longer
    builder.add_edge(["left", "right2"], "joined")
    builder.add_edge("joined", END)
    graph = builder.compile(name="fanout")
    async with serving(db_path, graph) as client:
        result = await run(client, graph, {})
        states = await graph_states(client.get_handle("run-1"))
    assert result["log"] == ["split", "left", "right", "right2", "joined"]
    assert [s.next for s in states] == [["split"], ["left", "right"], ["right2"], ["joined"], []]


async def test_branches_meeting_in_one_step_run_the_next_node_once(db_path: Path) -> None:
    builder = StateGraph(Log)
    for name in ("a", "b", "c"):
        builder.add_node(name, note(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "c")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    graph = builder.compile(name="meet")
    async with serving(db_path, graph) as client:
        assert (await run(client, graph, {}))["log"] == ["a", "b", "c"]


async def test_parallel_branches_run_concurrently_up_to_the_limit(db_path: Path) -> None:
    running = 0
    peak = 0

    async def busy(state: Log) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return {"log": [current_node().node]}

    builder = StateGraph(Log)
    names = [f"w{i}" for i in range(5)]
    for name in names:
        builder.add_node(name, busy)
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    limited = builder.compile(name="limited", max_concurrency=2)
    unlimited = builder.compile(name="unlimited")
    async with serving(db_path, limited, unlimited) as client:
        result = await run(client, limited, {}, id="limited")
        limited_peak, peak = peak, 0
        await run(client, unlimited, {}, id="unlimited")
    assert sorted(result["log"]) == names
    assert limited_peak == 2
    assert peak == 5


async def test_send_fans_out_one_task_per_item_with_stable_task_ids(db_path: Path) -> None:
    def split(state: dict[str, Any]) -> list[Send]:
        return [Send("square", {"n": n}) for n in state["numbers"]]

    def square(item: dict[str, int]) -> dict[str, Any]:
        return {"squares": [(item["n"], item["n"] ** 2, current_node().task_id)]}

    builder = StateGraph(strategies={"squares": append})
    builder.add_node("start", lambda state: None)
    builder.add_node("square", square)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", split, ["square"])
    builder.add_edge("square", END)
    graph = builder.compile(name="sends")
    async with serving(db_path, graph) as client:
        result = await run(client, graph, {"numbers": [3, 1, 2]})
    assert result["squares"] == [[3, 9, "1:square:0"], [1, 1, "1:square:1"], [2, 4, "1:square:2"]]


async def test_conditional_edges_route_by_the_merged_state_until_the_loop_exits(
    db_path: Path,
) -> None:
    def increment(state: Log) -> dict[str, Any]:
        return {"value": state.get("value", 0) + 1}

    def route(state: Log) -> str:
        return "done" if state["value"] >= 3 else "again"

    builder = StateGraph(Log)
    builder.add_node("increment", increment)
    builder.add_node("finish", note("finish"))
    builder.add_edge(START, "increment")
    builder.add_conditional_edges("increment", route, {"again": "increment", "done": "finish"})
    builder.add_edge("finish", END)
    graph = builder.compile(name="loop")
    async with serving(db_path, graph) as client:
        assert await run(client, graph, {}) == {"value": 3, "log": ["finish"]}


async def test_command_goto_adds_a_destination_chosen_by_the_node(db_path: Path) -> None:
    def decide(state: Log) -> Command:
        return Command(update={"log": ["decide"]}, goto="special")

    builder = StateGraph(Log)
    builder.add_node("decide", decide, destinations=["special", END])
    builder.add_node("special", note("special"))
    builder.add_edge(START, "decide")
    builder.add_edge("special", END)
    graph = builder.compile(name="goto")
    async with serving(db_path, graph) as client:
        assert (await run(client, graph, {}))["log"] == ["decide", "special"]


async def test_runaway_loop_fails_the_run_with_graph_recursion_error(db_path: Path) -> None:
    builder = StateGraph(Log)
    builder.add_node("spin", note("spin"))
    builder.add_edge(START, "spin")
    builder.add_conditional_edges("spin", lambda s: "spin", {"spin": "spin", "stop": END})
    graph = builder.compile(name="spin", recursion_limit=4)
    async with serving(db_path, graph) as client:
        with pytest.raises(WorkflowFailureError) as failed:
            await run(client, graph, {})
    assert failed.value.failure.type == "GraphRecursionError"
    assert "recursion limit of 4 super-steps" in failed.value.failure.message


async def test_router_result_missing_from_its_mapping_fails_the_run_naming_it(
    db_path: Path,
) -> None:
    builder = StateGraph(Log)
    builder.add_node("a", note("a"))
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: "maybe", {"yes": END, "no": END})
    graph = builder.compile(name="badroute")
    async with serving(db_path, graph) as client:
        with pytest.raises(WorkflowFailureError) as failed:
            await run(client, graph, {})
    assert failed.value.failure.type == "InvalidUpdateError"
    assert "returned 'maybe', which its mapping does not have" in failed.value.failure.message


async def test_node_writing_an_unknown_key_fails_without_retrying(db_path: Path) -> None:
    builder = StateGraph(Log)
    builder.add_node("bad", lambda state: {"colour": "red"})
    builder.add_edge(START, "bad")
    builder.add_edge("bad", END)
    graph = builder.compile(name="badkey")
    async with serving(db_path, graph) as client:
        with pytest.raises(WorkflowFailureError) as failed:
            await run(client, graph, {})
        history = await client.get_handle("run-1").history()
    assert "writes 'colour', not in the state" in str(failed.value.__cause__)
    assert [e.attempt for e in history if isinstance(e, ActivityFailed)] == [1]


async def test_input_with_an_unknown_key_is_refused_before_anything_is_written(
    db_path: Path,
) -> None:
    builder = StateGraph(Log)
    builder.add_node("a", note("a"))
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    graph = builder.compile(name="input")
    async with serving(db_path, graph) as client:
        with pytest.raises(Exception, match=r"the input writes 'nope', not in the state"):
            await graph.start(client, {"nope": 1}, id="x", task_queue=QUEUE)
        assert await client.list_runs() == []


async def test_each_node_retries_with_its_own_policy(db_path: Path) -> None:
    attempts = 0

    def flaky(state: Log) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("try again")
        return {"log": ["flaky"]}

    builder = StateGraph(Log)
    builder.add_node("flaky", flaky, retry_policy=RetryPolicy(initial_interval=0.01))
    builder.add_edge(START, "flaky")
    builder.add_edge("flaky", END)
    graph = builder.compile(name="retry")
    async with serving(db_path, graph) as client:
        assert (await run(client, graph, {}))["log"] == ["flaky"]
        history = await client.get_handle("run-1").history()
    assert [e.attempt for e in history if isinstance(e, ActivityFailed)] == [1, 2]
    assert [e.attempt for e in history if isinstance(e, ActivityCompleted)] == [3]


class Invoice(msgspec.Struct, kw_only=True):
    customer: str
    lines: Annotated[list[int], append] = []
    total: int = 0


async def test_struct_state_nodes_get_the_struct_and_the_result_decodes_to_it(
    db_path: Path,
) -> None:
    async def add_lines(invoice: Invoice) -> dict[str, Any]:
        assert isinstance(invoice, Invoice)
        return {"lines": [10, 20]}

    def total(invoice: Invoice) -> dict[str, Any]:
        return {"total": sum(invoice.lines)}

    builder = StateGraph(Invoice)
    builder.add_node("add_lines", add_lines)
    builder.add_node("total", total)
    builder.add_edge(START, "add_lines")
    builder.add_edge("add_lines", "total")
    builder.add_edge("total", END)
    graph = builder.compile(name="invoice")
    async with serving(db_path, graph) as client:
        result = await run(client, graph, Invoice(customer="acme"))
    assert result == Invoice(customer="acme", lines=[10, 20], total=30)


async def test_sub_graph_node_runs_as_a_child_workflow_run(db_path: Path) -> None:
    class Inner(TypedDict, total=False):
        value: int

    inner_builder = StateGraph(Inner)
    inner_builder.add_node("double", lambda s: {"value": s["value"] * 2})
    inner_builder.add_edge(START, "double")
    inner_builder.add_edge("double", END)
    inner = inner_builder.compile(name="inner")

    builder = StateGraph(Log)
    builder.add_node("child", inner)
    builder.add_node("after", note("after"))
    builder.add_edge(START, "child")
    builder.add_edge("child", "after")
    builder.add_edge("after", END)
    outer = builder.compile(name="outer")
    async with serving(db_path, outer) as client:
        result = await run(client, outer, {"value": 21}, id="parent")
        runs = {r.workflow_id: r.workflow_type for r in await client.list_runs()}
    assert result == {"value": 42, "log": ["after"]}
    assert runs == {"parent": "outer", "parent/0:child": "inner"}


async def test_activity_argument_names_the_task_for_other_readers(db_path: Path) -> None:
    builder = StateGraph(Log)
    builder.add_node("a", note("a"))
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    graph = builder.compile(name="args")
    async with serving(db_path, graph) as client:
        await run(client, graph, {})
        history = await client.get_handle("run-1").history()
    [scheduled] = [e for e in history if isinstance(e, ActivityScheduled)]
    argument = PayloadConverter().decode(scheduled.args[0])
    assert argument["task"] == {"id": "0:a", "node": "a"}
    assert argument["graph"] == "args"



class Ticks(TypedDict, total=False):
    n: int


def tick(state: Ticks) -> dict[str, Any]:
    return {"n": state["n"] + 1}


def ticking(name: str, **options: Any) -> CompiledGraph:
    builder = StateGraph(Ticks)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: "tick" if s["n"] < 5 else END)
    return builder.compile(name=name, **options)


async def test_checkpoint_every_records_the_state_every_n_super_steps_and_at_the_end(
    db_path: Path,
) -> None:
    graph = ticking("ticks_every_2", checkpoint_every=2)
    async with serving(db_path, graph) as client:
        assert (await run(client, graph, {"n": 0}))["n"] == 5
        states = await graph_states(client.get_handle("run-1"))

    # The input, then after super-steps 2 and 4, then the last one (5) at the end.
    assert [(s.source, s.step) for s in states] == [
        ("input", 0),
        ("loop", 2),
        ("loop", 4),
        ("loop", 5),
    ]


async def test_checkpoint_every_defaults_to_the_clients_configuration(db_path: Path) -> None:
    graph = ticking("ticks_configured")
    async with serving(db_path, graph) as client:
        client.config = msgspec.structs.replace(client.config, checkpoint_every=5)
        assert (await run(client, graph, {"n": 0}))["n"] == 5
        states = await graph_states(client.get_handle("run-1"))

    assert [(s.source, s.step) for s in states] == [("input", 0), ("loop", 5)]


def test_checkpoint_every_must_be_a_positive_integer() -> None:
    with pytest.raises(GraphValidationError, match="checkpoint_every must be a positive integer"):
        ticking("bad_every", checkpoint_every=0)
