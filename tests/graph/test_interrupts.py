"""Human in the loop: interrupts suspend a graph run durably until resume() answers them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

from graph_support import WAIT, wait_until_waiting

from engine import Client, describe_graph_run
from sdk import open_client, open_worker
from sdk.graph import (
    END,
    START,
    CompiledGraph,
    StateGraph,
    append,
    current_node,
    get_graph_state,
    interrupt,
    resume,
)

QUEUE = "graphs"


class Ticket(TypedDict, total=False):
    text: str
    answer: str
    log: Annotated[list[str], append]


@asynccontextmanager
async def serving(client: Client, graph: CompiledGraph) -> AsyncIterator[None]:
    async with open_worker(
        client, task_queue=QUEUE, workflows=graph.workflows, activities=graph.activities
    ):
        yield


def asking(ledger: Counter[str]) -> CompiledGraph:
    def prepare(state: Ticket) -> dict[str, Any]:
        ledger["prepare"] += 1
        return {"log": ["prepared"]}

    def ask(state: Ticket) -> dict[str, Any]:
        ledger["ask"] += 1
        answer = interrupt({"question": f"approve {state['text']}?"})
        return {"answer": answer, "log": [f"answered {answer}"]}

    builder = StateGraph(Ticket)
    builder.add_node("prepare", prepare)
    builder.add_node("ask", ask)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ask")
    builder.add_edge("ask", END)
    return builder.compile(name="asking")


async def test_interrupt_suspends_the_run_and_resume_returns_the_answer(db_path: Path) -> None:
    ledger: Counter[str] = Counter()
    graph = asking(ledger)
    async with open_client(db_path, workflows=graph.workflows) as client, serving(client, graph):
        handle = await graph.start(client, {"text": "refund"}, id="t-1", task_queue=QUEUE)
        await wait_until_waiting(handle)
        state = await get_graph_state(handle)
        await resume(handle, "yes")
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    assert state["status"] == "waiting"
    assert state["next"] == ["ask"]
    assert [(w["kind"], w["node"], w["value"]) for w in state["waiting"]] == [
        ("interrupt", "ask", {"question": "approve refund?"})
    ]
    assert result == {"text": "refund", "answer": "yes", "log": ["prepared", "answered yes"]}
    assert ledger == {"prepare": 1, "ask": 2}  # the interrupted node runs again, once


async def test_interrupted_run_is_resumed_by_a_signal_sent_while_no_worker_runs(
    db_path: Path,
) -> None:
    ledger: Counter[str] = Counter()
    graph = asking(ledger)
    async with open_client(db_path, workflows=graph.workflows) as client:
        async with serving(client, graph):
            handle = await graph.start(client, {"text": "visa"}, id="t-2", task_queue=QUEUE)
            description = await wait_until_waiting(handle)
        # No worker holds the run now; the answer waits in history, and the run no longer
        # waits for it: it is due to run "ask" again as soon as a worker picks it up.
        await resume(handle, "granted")
        after_resume = await get_graph_state(handle)
        assert (after_resume["status"], after_resume["next"]) == ("running", ["ask"])
    async with open_client(db_path) as client, serving(client, graph):
        async with asyncio.timeout(WAIT):
            result = await client.get_handle("t-2").result()
    assert description["waiting"][0]["value"] == {"question": "approve visa?"}
    assert "class ask waiting;" in description["mermaid"]
    assert result["answer"] == "granted"
    assert ledger == {"prepare": 1, "ask": 2}


async def test_interrupt_before_waits_and_the_resume_can_edit_the_state(db_path: Path) -> None:
    seen: list[str] = []

    def publish(state: Ticket) -> dict[str, Any]:
        seen.append(state["text"])
        return {"log": ["published"]}

    builder = StateGraph(Ticket)
    builder.add_node("publish", publish)
    builder.add_edge(START, "publish")
    builder.add_edge("publish", END)
    graph = builder.compile(name="review", interrupt_before=["publish"])
    async with open_client(db_path) as client, serving(client, graph):
        handle = await graph.start(client, {"text": "draft"}, id="r-1", task_queue=QUEUE)
        description = await wait_until_waiting(handle)
        assert seen == []
        await resume(handle, update={"text": "edited"})
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    assert [(w["kind"], w["node"]) for w in description["waiting"]] == [("before", "publish")]
    assert seen == ["edited"]
    assert result == {"text": "edited", "log": ["published"]}


async def test_interrupt_after_lets_the_resume_steer_the_router(db_path: Path) -> None:
    builder = StateGraph(Ticket)
    builder.add_node("draft", lambda s: {"log": ["drafted"]})
    builder.add_node("send", lambda s: {"log": ["sent"]})
    builder.add_node("discard", lambda s: {"log": ["discarded"]})
    builder.add_edge(START, "draft")
    builder.add_conditional_edges(
        "draft", lambda s: s.get("answer", "no"), {"yes": "send", "no": "discard"}
    )
    builder.add_edge("send", END)
    builder.add_edge("discard", END)
    graph = builder.compile(name="after", interrupt_after=["draft"])
    async with open_client(db_path) as client, serving(client, graph):
        handle = await graph.start(client, {}, id="a-1", task_queue=QUEUE)
        description = await wait_until_waiting(handle)
        await resume(handle, update={"answer": "yes"})
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    assert [w["kind"] for w in description["waiting"]] == ["after"]
    assert result["log"] == ["drafted", "sent"]


async def test_in_a_parallel_step_only_the_interrupted_branch_runs_again(db_path: Path) -> None:
    ledger: Counter[str] = Counter()

    def calm(state: Ticket) -> dict[str, Any]:
        ledger[current_node().task_id] += 1
        return {"log": ["calm"]}

    def curious(state: Ticket) -> dict[str, Any]:
        ledger[current_node().task_id] += 1
        return {"log": [f"curious got {interrupt('why?')}"]}

    builder = StateGraph(Ticket)
    builder.add_node("calm", calm)
    builder.add_node("curious", curious)
    builder.add_edge(START, "calm")
    builder.add_edge(START, "curious")
    builder.add_edge("calm", END)
    builder.add_edge("curious", END)
    graph = builder.compile(name="pair")
    async with open_client(db_path) as client, serving(client, graph):
        handle = await graph.start(client, {}, id="p-1", task_queue=QUEUE)
        description = await wait_until_waiting(handle)
        await resume(handle, "because")
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    assert [w["task"] for w in description["waiting"]] == ["0:curious"]
    assert result["log"] == ["calm", "curious got because"]
    assert ledger == {"0:calm": 1, "0:curious": 2}


async def test_a_node_may_interrupt_several_times_and_gets_each_answer(db_path: Path) -> None:
    def interview(state: Ticket) -> dict[str, Any]:
        name = interrupt("name?")
        city = interrupt("city?")
        return {"answer": f"{name} from {city}"}

    builder = StateGraph(Ticket)
    builder.add_node("interview", interview)
    builder.add_edge(START, "interview")
    builder.add_edge("interview", END)
    graph = builder.compile(name="interview")
    async with open_client(db_path) as client, serving(client, graph):
        handle = await graph.start(client, {}, id="i-1", task_queue=QUEUE)
        first = await wait_until_waiting(handle)
        await resume(handle, "Ann")

        async def second_question() -> dict[str, Any] | None:
            description = await wait_until_waiting(handle)
            return description if description["waiting"][0]["value"] == "city?" else None

        from graph_support import eventually

        second = await eventually(handle, second_question)
        await resume(handle, "Oslo")
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    assert first["waiting"][0]["value"] == "name?"
    assert second["waiting"][0]["id"].endswith(":1")
    assert result == {"answer": "Ann from Oslo"}


async def test_a_waiting_run_that_is_reset_is_described_as_reset_and_its_successor_waits(
    db_path: Path,
) -> None:
    ledger: Counter[str] = Counter()
    graph = asking(ledger)
    async with open_client(db_path, workflows=graph.workflows) as client, serving(client, graph):
        handle = await graph.start(client, {"text": "loan"}, id="t-reset", task_queue=QUEUE)
        await wait_until_waiting(handle)
        successor = await handle.reset(1, reason="start over")
        await wait_until_waiting(successor)
        original = await client.get_handle("t-reset", handle.run_id).history()

    assert describe_graph_run(original)["status"] == "reset"
    assert ledger == {"prepare": 2, "ask": 2}
