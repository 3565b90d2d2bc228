"""(d) An approval flow: the run suspends on ``interrupt()`` until a human answers.

``draft -> approve -> (execute | reject)``. ``approve`` calls ``interrupt(request)``: the
run records what it waits for and suspends; no worker holds it, so workers may be restarted
or scaled to zero meanwhile. ``resume(handle, {"approved": True, "by": "ann"})`` (the
``__graph_resume`` signal) answers it, also while no worker runs; the next worker re-runs
``approve``, whose ``interrupt()`` now returns the answer, and the router picks the branch.

Serve it and drive it from a shell::

    perdura worker --app examples.graph.approval:graph --task-queue approvals
    python -m examples.graph.approval start spend-1 laptop 1800
    python -m examples.graph.approval approve spend-1 ann
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any, Literal

import msgspec

from sdk import open_client
from sdk.graph import END, START, StateGraph, append, interrupt, resume

__all__ = ["Spend", "graph", "main"]


class Spend(msgspec.Struct, kw_only=True):
    item: str
    amount: int
    memo: str = ""
    approved: bool | None = None
    approver: str = ""
    outcome: str = ""
    trail: Annotated[list[str], append] = []


def draft(spend: Spend) -> dict[str, Any]:
    return {"memo": f"Purchase of {spend.item} for {spend.amount} EUR", "trail": ["drafted"]}


def approve(spend: Spend) -> dict[str, Any]:
    answer = interrupt({"memo": spend.memo, "amount": spend.amount})
    return {
        "approved": bool(answer.get("approved")),
        "approver": str(answer.get("by", "")),
        "trail": [f"decided by {answer.get('by', '?')}"],
    }


def route(spend: Spend) -> Literal["execute", "reject"]:
    return "execute" if spend.approved else "reject"


def execute(spend: Spend) -> dict[str, Any]:
    return {"outcome": f"ordered {spend.item}", "trail": ["ordered"]}


def reject(spend: Spend) -> dict[str, Any]:
    return {"outcome": "rejected", "trail": ["rejected"]}


builder = StateGraph(Spend)
builder.add_node("draft", draft)
builder.add_node("approve", approve)
builder.add_node("execute", execute)
builder.add_node("reject", reject)
builder.add_edge(START, "draft")
builder.add_edge("draft", "approve")
builder.add_conditional_edges("approve", route)
builder.add_edge("execute", END)
builder.add_edge("reject", END)
graph = builder.compile(name="approval")


async def main(argv: list[str], store: str = "sqlite:///perdura.db") -> None:
    command, workflow_id, *rest = argv
    async with open_client(store) as client:
        if command == "start":
            item, amount = rest
            spend = Spend(item=item, amount=int(amount))
            await graph.start(client, spend, id=workflow_id, task_queue="approvals")
        elif command == "approve":
            await resume(client.get_handle(workflow_id), {"approved": True, "by": rest[0]})
        elif command == "reject":
            await resume(client.get_handle(workflow_id), {"approved": False, "by": rest[0]})
        else:
            raise SystemExit(f"unknown command {command!r}: use start, approve or reject")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
