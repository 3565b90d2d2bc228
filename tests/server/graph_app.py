"""The graph the server's graph tests drive through HTTP and the web UI, loaded by the server
as ``tests.server.graph_app:app`` like any ``perdura server --app`` module.

``review``: ``draft`` writes a text, ``review`` asks a human through ``interrupt()`` whether
to publish it; "yes" publishes (then ``notify`` and ``archive`` run in parallel), anything
else sends it back to ``draft`` (a conditional back edge). ``archive`` holds until a test
sets ``ARCHIVE_RELEASE``, so a test can see a node running.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any, TypedDict

from engine import App
from sdk.graph import END, START, CompiledGraph, StateGraph, append, interrupt

ARCHIVE_RELEASE = threading.Event()
"""``archive`` finishes once this is set (the server runs in another thread: not asyncio)."""


class Article(TypedDict, total=False):
    topic: str
    text: str
    answer: str
    log: Annotated[list[str], append]


def draft(state: Article) -> dict[str, Any]:
    return {"text": f"all about {state['topic']}", "log": ["drafted"]}


def review(state: Article) -> dict[str, Any]:
    answer = interrupt({"question": f"publish {state['text']!r}?"})
    return {"answer": answer, "log": [f"reviewed: {answer}"]}


def publish(state: Article) -> dict[str, Any]:
    return {"log": ["published"]}


def notify(state: Article) -> dict[str, Any]:
    return {"log": ["notified"]}


async def archive(state: Article) -> dict[str, Any]:
    # Polled: the switch is flipped from the test's thread, and a worker that stops must be
    # able to cancel the wait (a thread blocked in Event.wait could not be).
    while not ARCHIVE_RELEASE.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return {"log": ["archived"]}


def _review() -> CompiledGraph:
    builder = StateGraph(Article)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_node("notify", notify)
    builder.add_node("archive", archive)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_conditional_edges(
        "review",
        lambda s: "yes" if s["answer"] == "yes" else "no",
        {"yes": "publish", "no": "draft"},
    )
    builder.add_edge("publish", "notify")
    builder.add_edge("publish", "archive")
    builder.add_edge("notify", END)
    builder.add_edge("archive", END)
    return builder.compile(name="article")


article = _review()
app = App(workflows=list(article.workflows), activities=list(article.activities))
