"""The built-in ``graph`` extension of ``GET /executions/{id}``: a graph run's shape, the node
it runs or waits in, what it waits for and its states, read from history by a real server
(the worker in-process, a real SQLite file) without the caller passing a describer."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import describe_graph_run
from history import open_store
from tests.server import graph_app
from tests.server.conftest import LiveServer, start, start_server, wait_for, wait_status

API = "/api/durable"
QUESTION = {"question": "publish 'all about owls'?"}


@pytest.fixture
def graph_api(graph_server: LiveServer) -> Any:
    with graph_server.client() as client:
        yield client


def graph_of(api: httpx.Client, ident: str) -> dict[str, Any] | None:
    response = api.get(f"{API}/executions/{ident}")
    assert response.status_code == 200, response.text
    graph: dict[str, Any] | None = response.json()["extensions"].get("graph")
    return graph


def wait_graph(api: httpx.Client, ident: str, what: str, **expected: Any) -> dict[str, Any]:
    """The run's graph extension once its fields have the ``expected`` values."""

    def probe() -> dict[str, Any] | None:
        graph = graph_of(api, ident)
        if graph is None or any(graph.get(k) != v for k, v in expected.items()):
            return None
        return graph

    return wait_for(probe, what=f"{ident}: {what}")


def waiting_article(api: httpx.Client, workflow_id: str) -> dict[str, Any]:
    """An ``article`` run suspended in ``review``, asking whether to publish."""
    start(api, "article", workflow_id, {"topic": "owls"})
    return wait_graph(api, workflow_id, "review to wait", status="waiting")


def resume(api: httpx.Client, ident: str, request: dict[str, Any]) -> None:
    response = api.post(
        f"{API}/executions/{ident}/signals/__graph_resume", json={"args": [request]}
    )
    assert response.status_code == 202, response.text


def test_a_waiting_graph_run_names_the_waiting_node_and_its_question(
    graph_api: httpx.Client,
) -> None:
    graph = waiting_article(graph_api, "article-1")
    assert (graph["graph"], graph["workflow_id"], graph["step"]) == ("article", "article-1", 1)
    assert graph["running"] == []
    assert graph["waiting"] == [
        {
            "id": "1:interrupt:1:review:0",
            "kind": "interrupt",
            "node": "review",
            "task": "1:review",
            "value": QUESTION,
        }
    ]
    assert "class review waiting;" in graph["mermaid"]
    assert "<- waiting: review" in graph["ascii"]


def test_the_graph_extension_carries_the_nodes_and_edges_to_draw(
    graph_api: httpx.Client,
) -> None:
    graph = waiting_article(graph_api, "article-2")
    assert {n["name"]: n["kind"] for n in graph["nodes"]} == {
        "__start__": "start",
        "draft": "node",
        "review": "node",
        "publish": "node",
        "notify": "node",
        "archive": "node",
        "__end__": "end",
    }
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert set(edges) == {
        ("__start__", "draft"),
        ("draft", "review"),
        ("review", "publish"),
        ("review", "draft"),
        ("publish", "notify"),
        ("publish", "archive"),
        ("notify", "__end__"),
        ("archive", "__end__"),
    }
    assert edges[("review", "draft")] == {
        "source": "review",
        "target": "draft",
        "conditional": True,
        "label": "no",
        "join": False,
    }
    assert edges[("draft", "review")]["conditional"] is False


def test_the_graph_extension_lists_the_state_of_every_super_step(
    graph_api: httpx.Client,
) -> None:
    graph = waiting_article(graph_api, "article-3")
    assert [(s["step"], s["source"], s["next"]) for s in graph["states"]] == [
        (0, "input", ["draft"]),
        (1, "loop", ["review"]),
        (1, "interrupt", ["review"]),
    ]
    last = graph["states"][-1]
    assert last["state"] == {"topic": "owls", "text": "all about owls", "log": ["drafted"]}
    assert [w["node"] for w in last["waiting"]] == ["review"]


def test_the_graph_extension_is_describe_graph_run_of_the_stored_history(
    graph_server: LiveServer, graph_api: httpx.Client
) -> None:
    graph = waiting_article(graph_api, "article-4")
    history = asyncio.run(_history(graph_server.db_path, "article-4"))
    expected = describe_graph_run(history)
    # Timestamps are the same instants, written as JSON dates ("Z") rather than isoformat.
    for states in (graph["states"], expected["states"]):
        for snapshot in states:
            snapshot["timestamp"] = datetime.fromisoformat(snapshot["timestamp"])
    assert graph == expected


async def _history(db_path: Path, workflow_id: str) -> list[Any]:
    store = await open_store(f"sqlite:///{db_path}")
    try:
        run = await store.find_run(workflow_id)
        return list(await store.read_history(run.run_id))
    finally:
        await store.close()


def test_after_a_resume_signal_the_extension_names_the_running_node(
    graph_api: httpx.Client,
) -> None:
    waiting_article(graph_api, "article-5")
    resume(graph_api, "article-5", {"value": "yes"})
    graph = wait_graph(graph_api, "article-5", "archive to run", running=["archive"])
    assert graph["status"] == "running"
    assert graph["waiting"] == []
    assert "<- running: archive" in graph["ascii"]


def test_a_resumed_graph_run_completes_and_the_extension_says_so(
    graph_api: httpx.Client,
) -> None:
    graph_app.ARCHIVE_RELEASE.set()
    waiting_article(graph_api, "article-6")
    resume(graph_api, "article-6", {"value": "yes"})
    run = wait_status(graph_api, "article-6", "completed")
    assert sorted(run["result"]["log"]) == sorted(
        ["drafted", "reviewed: yes", "published", "notified", "archived"]
    )
    graph = run["extensions"]["graph"]
    assert (graph["status"], graph["running"], graph["waiting"]) == ("completed", [], [])


def test_a_run_that_is_not_a_graph_run_has_no_graph_extension(api: httpx.Client) -> None:
    start(api, "greet", "plain-greeting", "ada")
    assert wait_status(api, "plain-greeting", "completed")["extensions"] == {}


def test_a_describer_named_graph_replaces_the_built_in_one(tmp_path: Path) -> None:
    live = start_server(
        tmp_path / "perdura.db",
        app_specs=["tests.server.graph_app:app"],
        describers={"graph": lambda info, history: {"mine": info.workflow_type}},
    )
    try:
        with live.client() as api:
            start(api, "article", "article-7", {"topic": "owls"})
            assert graph_of(api, "article-7") == {"mine": "article"}
    finally:
        live.stop()


def test_the_openapi_document_describes_the_graph_extension(graph_api: httpx.Client) -> None:
    graph = waiting_article(graph_api, "article-8")
    schemas = graph_api.get(f"{API}/openapi.json").json()["components"]["schemas"]
    extensions = schemas["ExecutionDetail"]["properties"]["extensions"]
    assert extensions["properties"]["graph"]["anyOf"] == [
        {"$ref": "#/components/schemas/GraphView"},
        {"$ref": "#/components/schemas/ExtensionError"},
    ]
    assert set(schemas["GraphView"]["properties"]) == set(graph)
    assert set(schemas["GraphWaitView"]["properties"]) == set(graph["waiting"][0])
    assert set(schemas["GraphStateView"]["properties"]) == set(graph["states"][0])
    assert set(schemas["GraphEdgeView"]["properties"]) == set(graph["edges"][0])
