"""The graphs the ``perdura describe`` / ``perdura graph`` tests run.

``review`` drafts a text, asks a human through ``interrupt()`` and publishes it or drafts
again; ``watched`` has a node that holds until the test opens ``gate``; ``ticker`` loops
``rounds`` times (a test lowers the history limit to make it continue as new).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypedDict

from engine import App
from sdk.graph import END, START, CompiledGraph, StateGraph, append, interrupt


class Review(TypedDict, total=False):
    text: str
    answer: str
    rounds: int
    log: Annotated[list[str], append]


def draft(state: Review) -> dict[str, Any]:
    return {"log": [f"drafted {state['text']}"]}


def judge(state: Review) -> dict[str, Any]:
    answer = interrupt({"question": f"publish {state['text']}?"})
    return {"answer": answer}


def publish(state: Review) -> dict[str, Any]:
    return {"log": ["published"]}


def _review() -> CompiledGraph:
    builder = StateGraph(Review)
    builder.add_node("draft", draft)
    builder.add_node("judge", judge)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "judge")
    builder.add_conditional_edges(
        "judge",
        lambda s: "ok" if s["answer"] == "yes" else "again",
        {"ok": "publish", "again": "draft"},
    )
    builder.add_edge("publish", END)
    return builder.compile(name="review")


gate = asyncio.Event()
"""Opened by a test to let ``watched``'s ``slow`` node finish (each test sets a new one)."""


async def slow(state: Review) -> dict[str, Any]:
    await gate.wait()
    return {"log": ["slow done"]}


def _watched() -> CompiledGraph:
    builder = StateGraph(Review)
    builder.add_node("first", lambda s: {"log": ["first"]})
    builder.add_node("slow", slow)
    builder.add_edge(START, "first")
    builder.add_edge("first", "slow")
    builder.add_edge("slow", END)
    return builder.compile(name="watched")


def tick(state: Review) -> dict[str, Any]:
    return {"rounds": state.get("rounds", 0) + 1}


def _ticker() -> CompiledGraph:
    builder = StateGraph(Review)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges(
        "tick", lambda s: "again" if s["rounds"] < 6 else "done", {"again": "tick", "done": END}
    )
    return builder.compile(name="ticker")


review = _review()
watched = _watched()
ticker = _ticker()
app = App(
    workflows=[*review.workflows, *watched.workflows, *ticker.workflows],
    activities=[*review.activities, *watched.activities, *ticker.activities],
)
