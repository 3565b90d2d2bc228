"""Workflows the server tests drive through HTTP: loaded by the server as
``tests.server.server_app:app``, exactly as ``perdura server --app`` loads user code.

The server runs in another thread of the test process, so the switches the tests flip
(``FRAGILE_FAILS``, ``CRUNCH_RELEASE``) are thread-safe objects, not asyncio ones.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sdk import App, ApplicationError, RetryPolicy, activity, workflow

QUEUE = "default"

FRAGILE_FAILS = threading.Event()
"""While set, ``fragile`` fails for good (non-retryable): the run FAILS, to be recovered."""
CRUNCH_RELEASE = threading.Event()
"""``crunch`` heartbeats its progress and holds its last item until this is set."""


@activity.defn
async def compose(name: str) -> str:
    return f"hello {name}"


@activity.defn
async def crunch(items: int) -> int:
    """Works through ``items``, reporting ``{"done": i, "total": items}`` as it goes."""
    for done in range(items):
        activity.heartbeat({"done": done, "total": items})
        await asyncio.sleep(0.02)
    while not CRUNCH_RELEASE.is_set():
        activity.heartbeat({"done": items - 1, "total": items})
        await asyncio.sleep(0.05)
    return items


@activity.defn
async def fragile(order_id: str) -> str:
    if FRAGILE_FAILS.is_set():
        raise ApplicationError(f"card declined for {order_id}", non_retryable=True)
    return f"charged {order_id}"


@workflow.defn
async def greet(name: str) -> str:
    return await workflow.execute_activity(compose, name, start_to_close_timeout=10)


@workflow.defn
async def sleeper(seconds: float) -> str:
    """Waits on a durable timer: open for as long as a test needs a running run."""
    await workflow.sleep(seconds)
    return "woke"


@workflow.defn
async def batch(items: int) -> int:
    result: int = await workflow.execute_activity(
        crunch, items, start_to_close_timeout=60, heartbeat_timeout=30
    )
    return result


@workflow.defn
async def checkout(order_id: str) -> str:
    greeting = await workflow.execute_activity(compose, order_id, start_to_close_timeout=10)
    charged = await workflow.execute_activity(
        fragile,
        order_id,
        start_to_close_timeout=10,
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    return f"{greeting}; {charged}"


@workflow.defn
async def parent(name: str) -> str:
    child: str = await workflow.execute_child_workflow(greet, name, id=f"{name}-child")
    return f"parent of {child}"


@activity.defn
async def reserve(sku: str) -> str:
    """Fails its first two attempts (a flaky warehouse API), then succeeds."""
    if activity.info().attempt < 3:
        raise RuntimeError(f"warehouse timeout reserving {sku}")
    return f"reserved {sku}"


@workflow.defn
class Fulfilment:
    """A bit of everything for the timeline: a retried activity, a child run, a timer, a
    signal it waits for, and a long activity reporting progress."""

    def __init__(self) -> None:
        self.shipping: str | None = None

    @workflow.signal
    def ship_by(self, carrier: str) -> None:
        self.shipping = carrier

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.execute_activity(compose, order_id, start_to_close_timeout=10)
        reserved = await workflow.execute_activity(
            reserve,
            order_id,
            start_to_close_timeout=10,
            retry_policy=RetryPolicy(initial_interval=0.1, backoff_coefficient=1.5),
        )
        await workflow.execute_child_workflow(greet, order_id, id=f"{order_id}-notify")
        await workflow.sleep(0.3)
        await workflow.wait_condition(lambda: self.shipping is not None)
        items: int = await workflow.execute_activity(
            crunch, 5, start_to_close_timeout=60, heartbeat_timeout=30
        )
        return f"{reserved}, {items} items, via {self.shipping}"


@workflow.defn
class Approval:
    """Waits for an ``approve`` signal; ``state`` answers what it has seen so far."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.approved = False

    @workflow.signal
    def approve(self, note: str) -> None:
        self.notes.append(note)
        self.approved = True

    @workflow.signal
    def comment(self, note: str) -> None:
        self.notes.append(note)

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {"approved": self.approved, "notes": list(self.notes)}

    @workflow.query
    def note(self, index: int) -> str:
        return self.notes[index]

    @workflow.run
    async def run(self, request_id: str) -> str:
        await workflow.wait_condition(lambda: self.approved)
        return f"{request_id} approved: {', '.join(self.notes)}"


app = App(
    workflows=[greet, sleeper, batch, checkout, parent, Fulfilment, Approval],
    activities=[compose, crunch, fragile, reserve],
)
