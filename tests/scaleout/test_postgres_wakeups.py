"""A held run hears about external events at once, whichever process appends them.

A worker keeps a run it expects to need soon (a timer due within its keep-alive, an activity
running) instead of releasing it. A signal or cancel request appended meanwhile through
another store object (as another process would) must reach that worker's driver through
PostgreSQL's ``NOTIFY``, not wait for the keep-alive to run out.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from engine import Client
from history import (
    AppendRequest,
    Event,
    HeldRunNotifier,
    Payload,
    RunClaim,
    SignalReceived,
    WorkflowStarted,
    open_store,
)
from history.postgres import PostgresStore
from sdk import open_worker, workflow

QUEUE = "held"
T0 = datetime(2024, 5, 1, tzinfo=UTC)
KEEP_ALIVE = 60.0
"""Far longer than any assertion waits: without the wake-up nothing would happen in time."""


@workflow.defn
class Patient:
    def __init__(self) -> None:
        self.word: str | None = None

    @workflow.signal
    def say(self, word: str) -> None:
        self.word = word

    @workflow.run
    async def run(self) -> str:
        # A durable 30 s timeout: due within the keep-alive, so the worker holds the run.
        await workflow.wait_condition(lambda: self.word is not None, timeout=30)
        return f"heard {self.word}"


async def wait_until_held(client: Client, workflow_id: str, owner: str) -> str:
    async with asyncio.timeout(20):
        while True:
            info = await client.get_handle(workflow_id).run_info()
            timers = await client.store.pending_timers(info.run_id)
            if info.owner == owner and timers:
                return info.run_id
            await asyncio.sleep(0.02)


async def test_a_signal_from_another_process_wakes_the_worker_holding_the_run(
    postgres_url: str,
) -> None:
    worker_store = await open_store(postgres_url)
    sender_store = await open_store(postgres_url)
    try:
        client = Client(worker_store)
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[Patient],
            identity="holder",
            keep_alive=KEEP_ALIVE,
            poll_interval=KEEP_ALIVE,
        ) as worker:
            await client.start_workflow(Patient, id="patient", task_queue=QUEUE)
            run_id = await wait_until_held(client, "patient", "holder")
            driver = worker.drivers[run_id]
            async with asyncio.timeout(20):
                while not driver.waiting:  # noqa: ASYNC110 -- a plain attribute, no event
                    await asyncio.sleep(0.01)

            # Another store object: nothing in this process tells the worker.
            sent = time.monotonic()
            await Client(sender_store).get_handle("patient").signal("say", "hello")
            result = await asyncio.wait_for(client.get_handle("patient").result(), 10)
            heard_after = time.monotonic() - sent

        assert result == "heard hello"
        print(f"\nsignal from another store object acted on after {heard_after * 1000:.0f} ms")
        assert heard_after < 1.0, heard_after
    finally:
        await sender_store.close()
        await worker_store.close()


async def test_the_store_names_a_held_run_only_for_external_appends(postgres_url: str) -> None:
    listening = await PostgresStore.open(postgres_url)
    writing = await PostgresStore.open(postgres_url)
    try:
        assert isinstance(listening, HeldRunNotifier)
        heard: asyncio.Queue[str] = asyncio.Queue()
        remove = await listening.add_held_run_listener(heard.put_nowait)
        for run_id in ("held", "free"):
            await writing.create_run(run_id, started(run_id), now=0.0)
        claims = {
            c.run_id: c
            for c in await writing.claim_runs(QUEUE, owner="x", now=1.0, lease_seconds=60, limit=2)
        }
        free = claims["free"]
        await writing.append([owner_request(free, [], release=True)])

        # The owner's own append is no news to it; an external append to a run nobody holds
        # is new work (a work notification), not a held run's.
        await writing.append([owner_request(claims["held"], [signal("own")])])
        await writing.append([AppendRequest(run_id="free", events=[signal()], now=2.0, wake=True)])
        await writing.append([AppendRequest(run_id="held", events=[signal()], now=2.0, wake=True)])

        assert await asyncio.wait_for(heard.get(), 5) == "held"
        await asyncio.sleep(0.2)
        assert heard.empty()
        remove()
    finally:
        await writing.close()
        await listening.close()


def started(workflow_id: str) -> WorkflowStarted:
    return WorkflowStarted(
        timestamp=T0, workflow_type="Patient", workflow_id=workflow_id, task_queue=QUEUE
    )


def signal(name: str = "say") -> SignalReceived:
    return SignalReceived(timestamp=T0, name=name, args=(Payload("json", b'"hi"'),))


def owner_request(claim: RunClaim, events: list[Event], **options: Any) -> AppendRequest:
    return AppendRequest(
        run_id=claim.run_id,
        events=events,
        now=2.0,
        expected_next_event_id=claim.history_length + 1,
        fence=claim.fence,
        **options,
    )
