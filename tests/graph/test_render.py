"""Drawing a graph as Mermaid and as ASCII."""

from __future__ import annotations

from typing import Any

from sdk.graph import END, START, StateGraph, draw_ascii


def step(state: dict[str, Any]) -> None:
    return None


def branching() -> Any:
    builder = StateGraph()
    for name in ("fetch", "check", "fix", "publish"):
        builder.add_node(name, step)
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "check")
    builder.add_conditional_edges("check", lambda s: "ok", {"ok": "publish", "bad": "fix"})
    builder.add_edge("fix", "check")
    builder.add_edge("publish", END)
    return builder.compile(name="render")


def test_mermaid_has_every_node_solid_edges_and_labelled_dashed_conditional_edges() -> None:
    text = branching().to_mermaid()
    assert text.startswith("graph TD;")
    for node in ("fetch", "check", "fix", "publish"):
        assert f'\t{node}["{node}"]' in text
    assert "\t__start__ --> fetch;" in text
    assert "\tcheck -. ok .-> publish;" in text
    assert "\tcheck -. bad .-> fix;" in text
    assert "\tpublish --> __end__;" in text


def test_ascii_drawing_lists_layers_top_down_and_marks_loops() -> None:
    text = branching().draw_ascii()
    lines = text.splitlines()
    assert lines[1] == "( __start__ )"
    positions = [text.index(f"| {name} |") for name in ("fetch", "check", "publish")]
    assert positions == sorted(positions)
    assert "    fix --> check   (loops back)" in lines
    assert "    check -.ok.-> publish" in lines
    assert lines[-2] == "( __end__ )"


def test_ascii_drawing_marks_the_running_and_the_waiting_nodes() -> None:
    graph = branching()
    lines = draw_ascii(graph.shape, running=["fetch"], waiting=["fix"]).splitlines()
    running = lines.index("| fetch |   <- running: fetch")
    waiting = lines.index("| fix |  | publish |   <- waiting: fix")
    assert lines[running - 1] == lines[running + 1] == "+=======+"
    assert lines[waiting - 1] == "+=====+  +---------+"
    assert "| check |" in lines  # unmarked nodes keep their plain boxes


def test_ascii_drawing_ignores_marks_for_nodes_the_graph_does_not_have() -> None:
    graph = branching()
    assert draw_ascii(graph.shape, running=["ghost"]) == graph.draw_ascii()
