"""compile() checks the whole graph before anything runs, and says what is wrong."""

from __future__ import annotations

import itertools
from typing import Any, Literal, TypedDict

import pytest

from sdk.graph import END, START, GraphValidationError, StateGraph, append


def step(state: dict[str, Any]) -> dict[str, Any]:
    return {}


def linear(*names: str) -> StateGraph:
    builder = StateGraph()
    for name in names:
        builder.add_node(name, step)
    path = [START, *names, END]
    for source, target in itertools.pairwise(path):
        builder.add_edge(source, target)
    return builder


def test_a_linear_graph_compiles_into_a_named_workflow_type() -> None:
    graph = linear("a", "b").compile(name="lin")
    assert graph.definition.name == "lin"
    assert [a.name for a in graph.activities] == ["lin.a", "lin.b"]


def test_edge_to_an_unknown_node_is_named() -> None:
    builder = linear("a")
    builder.add_edge("a", "ghost")
    with pytest.raises(GraphValidationError, match=r"edge 'a' -> 'ghost': unknown node 'ghost'"):
        builder.compile(name="g")


def test_conditional_mapping_to_an_unknown_node_is_named() -> None:
    builder = linear("a")
    builder.add_conditional_edges("a", lambda s: "x", {"x": "nowhere", "y": END})
    with pytest.raises(GraphValidationError, match=r"unknown node 'nowhere'"):
        builder.compile(name="g")


def test_unreachable_node_is_reported() -> None:
    builder = linear("a")
    builder.add_node("orphan", step)
    builder.add_edge("orphan", END)
    with pytest.raises(GraphValidationError, match=r"'orphan' cannot be reached from START"):
        builder.compile(name="g")


def test_node_without_a_path_to_end_is_reported_with_a_hint() -> None:
    builder = StateGraph()
    builder.add_node("a", step)
    builder.add_node("dead_end", step)
    builder.add_edge(START, "a")
    builder.add_edge("a", "dead_end")
    builder.add_edge("a", END)
    with pytest.raises(GraphValidationError, match=r"'dead_end' have no path to END.*add_edge"):
        builder.compile(name="g")


def test_cycle_without_a_conditional_exit_is_refused() -> None:
    builder = StateGraph()
    for name in ("a", "b"):
        builder.add_node(name, step)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "a")
    builder.add_edge("b", END)  # a static exit fans out; the loop still never ends
    with pytest.raises(GraphValidationError, match=r"cycle a -> b -> a has no conditional exit"):
        builder.compile(name="g")


def test_cycle_with_a_conditional_exit_compiles() -> None:
    builder = StateGraph()
    builder.add_node("work", step)
    builder.add_edge(START, "work")
    builder.add_conditional_edges("work", lambda s: "again", {"again": "work", "done": END})
    assert builder.compile(name="loop").name == "loop"


def test_loop_whose_router_can_never_leave_has_no_path_to_end() -> None:
    builder = StateGraph()
    builder.add_node("work", step)
    builder.add_edge(START, "work")
    builder.add_conditional_edges("work", lambda s: "work", ["work"])
    with pytest.raises(GraphValidationError, match=r"'work' have no path to END"):
        builder.compile(name="g")


def test_router_targets_are_read_from_a_literal_return_annotation() -> None:
    def route(state: dict[str, Any]) -> Literal["a", "__end__"]:
        return "a"

    builder = StateGraph()
    builder.add_node("a", step)
    builder.add_node("b", step)
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", route)
    builder.add_edge("b", END)
    with pytest.raises(GraphValidationError, match=r"'b' cannot be reached"):
        builder.compile(name="g")


def test_graph_without_an_entry_point_is_refused() -> None:
    builder = StateGraph()
    builder.add_node("a", step)
    builder.add_edge("a", END)
    with pytest.raises(GraphValidationError, match=r"no entry point"):
        builder.compile(name="g")


def test_interrupt_on_an_unknown_node_is_refused() -> None:
    with pytest.raises(GraphValidationError, match=r"interrupt_before names unknown node 'x'"):
        linear("a").compile(name="g", interrupt_before=["x"])


def test_reserved_duplicate_and_malformed_node_names_are_refused() -> None:
    builder = linear("a")
    with pytest.raises(GraphValidationError, match=r"already in the graph"):
        builder.add_node("a", step)
    with pytest.raises(GraphValidationError, match=r"reserved"):
        builder.add_node(END, step)
    with pytest.raises(GraphValidationError, match=r"may not contain"):
        builder.add_node("a:b", step)


def test_node_function_must_take_the_state() -> None:
    def no_args() -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError, match=r"must take exactly one argument"):
        StateGraph().add_node("n", no_args)


def test_strategy_for_a_key_the_schema_lacks_is_refused() -> None:
    class State(TypedDict):
        items: list[int]

    with pytest.raises(ValueError, match=r"'missing', which is not a key of state"):
        StateGraph(State, strategies={"missing": append})


def test_bad_compile_options_are_refused() -> None:
    with pytest.raises(GraphValidationError, match=r"recursion_limit"):
        linear("a").compile(name="g", recursion_limit=0)
    with pytest.raises(GraphValidationError, match=r"graph name"):
        linear("a").compile(name="has space")
