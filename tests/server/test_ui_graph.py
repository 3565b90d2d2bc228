"""A graph run in the web UI, end to end: Debian's headless Chromium driven by Playwright
against a real server, SQLite store and in-process worker running ``graph_app``.

The execution page of a graph run draws the graph as SVG with the waiting (then running)
node highlighted, says what the run waits for, resumes it with a JSON answer through the
``__graph_resume`` signal, and lists its states. The browser fixtures and the screenshot
helper are those of ``test_ui.py``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import httpx
import pytest

from tests.server import graph_app
from tests.server.conftest import LiveServer, start, wait_for
from tests.server.test_ui import ARTIFACTS, ROOT, browser, page, screenshot

__all__ = ["browser", "page"]  # fixtures, imported to be found here

pytestmark = pytest.mark.slow

API = "/api/durable"


@pytest.fixture
def graph_api(graph_server: LiveServer) -> Any:
    with graph_server.client() as client:
        yield client


def waiting_article(api: httpx.Client, workflow_id: str) -> None:
    start(api, "article", workflow_id, {"topic": "owls"})
    wait_for(
        lambda: (
            api.get(f"{API}/executions/{workflow_id}")
            .json()["extensions"]
            .get("graph", {})
            .get("status")
            == "waiting"
        ),
        what=f"{workflow_id} to wait in review",
    )


def node(page: Any, name: str) -> Any:
    return page.locator(f"#graph-svg g.graph-node[data-node='{name}']")


def test_a_waiting_graph_run_is_drawn_with_its_waiting_node_highlighted(
    graph_server: LiveServer, graph_api: httpx.Client, page: Any
) -> None:
    waiting_article(graph_api, "article-ui-1")
    page.goto(f"{graph_server.url}/ui/#/executions/article-ui-1")
    page.locator("#graph-svg").wait_for()

    assert "node-waiting" in node(page, "review").get_attribute("class")
    assert "node-ran" in node(page, "draft").get_attribute("class")
    assert "node-idle" in node(page, "publish").get_attribute("class")
    assert page.locator("#graph-svg g.node-waiting").count() == 1
    assert page.locator("#graph-svg g.graph-node").count() == 7
    assert page.locator("#graph-svg path.graph-edge").count() == 8
    back = page.locator("#graph-svg path.edge-back")
    assert back.count() == 1
    assert back.get_attribute("data-source") == "review"
    assert "edge-conditional" in back.get_attribute("class")
    # The waiting node is drawn below the node before it, and the highlight is visible.
    draft_box = node(page, "draft").bounding_box()
    review_box = node(page, "review").bounding_box()
    assert review_box["y"] > draft_box["y"] + draft_box["height"]
    assert "waiting for an answer" in page.locator("#graph-legend").inner_text()

    panel = page.locator("#graph-waiting")
    assert "review asks" in panel.inner_text()
    assert "1:interrupt:1:review:0" in panel.inner_text()
    assert "publish 'all about owls'?" in panel.locator(".graph-question").inner_text()

    rows = page.locator("#graph-states tbody tr")
    assert rows.count() == 3
    assert rows.nth(2).locator("td").nth(1).inner_text() == "interrupt"
    rows.nth(2).locator("summary").click()
    assert '"text": "all about owls"' in rows.nth(2).locator("pre").inner_text()


def test_resume_with_a_json_answer_runs_the_graph_to_completion(
    graph_server: LiveServer, graph_api: httpx.Client, page: Any
) -> None:
    waiting_article(graph_api, "article-ui-2")
    page.goto(f"{graph_server.url}/ui/#/executions/article-ui-2")
    node(page, "review").and_(page.locator(".node-waiting")).wait_for()
    screenshot(page, "ui-graph-waiting.png")
    # For the docs: the page down to the end of the graph panel.
    bottom = page.locator("#graph").bounding_box()
    path = ARTIFACTS / "ui-graph.png"
    page.screenshot(
        path=str(path),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1360, "height": bottom["y"] + bottom["height"] + 16},
    )
    if os.environ.get("PERDURA_UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(path, ROOT / "docs" / "ui-graph.png")

    # Not JSON: refused with a reason, the dialog opens again with the text kept.
    page.click("#graph-resume")
    page.fill("#dialog-input", "yes")
    page.click("#dialog-confirm")
    page.locator(".toast-error", has_text="not JSON").wait_for()
    assert page.locator("#dialog").get_attribute("open") is not None
    assert page.input_value("#dialog-input") == "yes"
    page.fill("#dialog-input", '"yes"')
    page.click("#dialog-confirm")

    # publish ran, archive holds: the drawing shows it running, nothing waits any more.
    node(page, "archive").and_(page.locator(".node-running")).wait_for()
    assert page.locator("#graph-waiting").count() == 0
    assert "node-ran" in node(page, "publish").get_attribute("class")
    screenshot(page, "ui-graph-running.png")

    graph_app.ARCHIVE_RELEASE.set()
    page.locator("#run-status .badge[data-status='completed']").wait_for()
    page.locator("#graph-status .badge[data-status='completed']").wait_for()
    assert page.locator("#graph-svg g.node-running, #graph-svg g.node-waiting").count() == 0
    assert "reviewed: yes" in page.locator("#run-result").inner_text()
    screenshot(page, "ui-graph-completed.png")


LAYOUT = """
async ([nodes, edges]) => {
  const { layoutGraph } = await import("/ui/js/graph.js");
  const layout = layoutGraph(nodes, edges);
  return {
    width: layout.width,
    height: layout.height,
    boxes: Object.fromEntries([...layout.boxes].map(([name, b]) => [name, [b.x, b.y, b.w, b.h]])),
    back: layout.edges.filter((r) => r.back).map((r) => [r.edge.source, r.edge.target]),
    points: layout.edges.map((r) => r.points.length),
  };
}
"""


def shape(names: list[str], edges: list[tuple[str, str, bool]]) -> list[Any]:
    kinds = {"__start__": "start", "__end__": "end"}
    return [
        [{"name": n, "kind": kinds.get(n, "node")} for n in names],
        [
            {"source": a, "target": b, "conditional": c, "label": None, "join": False}
            for a, b, c in edges
        ],
    ]


def test_the_layout_layers_nodes_below_their_predecessors_and_sets_loops_apart(
    server: LiveServer, page: Any
) -> None:
    page.goto(f"{server.url}/ui/")
    names = ["__start__", "a", "b", "c", "d", "__end__"]
    edges = [
        ("__start__", "a", False),
        ("a", "b", False),
        ("b", "c", False),
        ("c", "c", True),  # a node looping on itself
        ("c", "d", False),
        ("a", "d", False),  # forward across two layers: through waypoints
        ("d", "a", True),  # back across three layers
        ("d", "__end__", True),
    ]
    layout = page.evaluate(LAYOUT, shape(names, edges))
    y = {name: box[1] for name, box in layout["boxes"].items()}
    assert y["__start__"] < y["a"] < y["b"] < y["c"] < y["d"] < y["__end__"]
    assert sorted(map(tuple, layout["back"])) == [("c", "c"), ("d", "a")]
    assert layout["points"][5] == 4  # a -> d passes two waypoints
    assert layout["points"][6] == 4  # and d -> a climbs back past them
    # No two boxes overlap, and all lie inside the picture.
    boxes = list(layout["boxes"].values())
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        assert x1 - w1 / 2 >= 0
        assert x1 + w1 / 2 <= layout["width"]
        assert y1 - h1 / 2 >= 0
        assert y1 + h1 / 2 <= layout["height"]
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert abs(x1 - x2) >= (w1 + w2) / 2 or abs(y1 - y2) >= (h1 + h2) / 2


def test_the_layout_puts_parallel_branches_side_by_side(server: LiveServer, page: Any) -> None:
    page.goto(f"{server.url}/ui/")
    names = ["__start__", "split", "left", "right", "merge", "__end__"]
    edges = [
        ("__start__", "split", False),
        ("split", "left", False),
        ("split", "right", False),
        ("left", "merge", False),
        ("right", "merge", False),
        ("merge", "__end__", False),
    ]
    layout = page.evaluate(LAYOUT, shape(names, edges))
    boxes = layout["boxes"]
    assert boxes["left"][1] == boxes["right"][1]
    assert boxes["left"][0] < boxes["split"][0] < boxes["right"][0]
    assert boxes["merge"][0] == boxes["split"][0]
    assert layout["back"] == []
