"""Activities on another task queue: scheduled with an activity task, run by a worker polling
that queue, their outcome appended to the run's history from there."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import Client
from history import ActivityCompleted, ActivityFailed, ActivityHeartbeat, ActivityScheduled
from sdk import RetryPolicy, activity, open_worker, workflow

ORDERS = "orders"
PAYMENTS = "payments"
WAIT = 10.0

#: The workflow worker only hears about remote outcomes by polling: keep its polls short.
POLL = {"poll_interval": 0.02}


async def test_activity_on_another_task_queue_runs_on_the_worker_polling_that_queue(
    client: Client,
) -> None:
    ran_on: list[str] = []

    @activity.defn
    async def charge(order_id: str, amount_cents: int) -> str:
        ran_on.append(activity.info().task_queue)
        return f"charged {order_id} {amount_cents}"

    @workflow.defn
    async def checkout(order_id: str) -> str:
        return await workflow.execute_activity(charge, order_id, 1999, task_queue=PAYMENTS)

    async with (
        open_worker(client, task_queue=ORDERS, workflows=[checkout], **POLL),
        open_worker(client, task_queue=PAYMENTS, activities=[charge], **POLL),
    ):
        handle = await client.start_workflow(checkout, "o-1", id="checkout-1", task_queue=ORDERS)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "charged o-1 1999"

    assert ran_on == [PAYMENTS]
    history = await handle.history()
    [scheduled] = [e for e in history if isinstance(e, ActivityScheduled)]
    assert scheduled.task_queue == PAYMENTS
    [completed] = [e for e in history if isinstance(e, ActivityCompleted)]
    assert completed.event_id > scheduled.event_id


async def test_activity_the_workflow_worker_does_not_have_is_run_by_one_that_does(
    client: Client,
) -> None:
    @activity.defn
    async def render(page: str) -> str:
        return f"<h1>{page}</h1>"

    @workflow.defn
    async def publish(page: str) -> str:
        return await render(page)  # same task queue, but only the second worker has it

    async with (
        open_worker(client, task_queue=ORDERS, workflows=[publish], **POLL),
        open_worker(client, task_queue=ORDERS, activities=[render], **POLL),
    ):
        async with asyncio.timeout(WAIT):
            result = await client.execute_workflow(publish, "home", id="pub-1", task_queue=ORDERS)

    assert result == "<h1>home</h1>"


async def test_remote_activity_is_retried_with_its_heartbeat_details(client: Client) -> None:
    seen: list[tuple[int, tuple[Any, ...]]] = []

    @activity.defn
    async def settle(batch: str) -> str:
        info = activity.info()
        seen.append((info.attempt, info.heartbeat_details))
        if info.attempt == 1:
            activity.heartbeat("settled", 40)
            raise ConnectionError("bank offline")
        return f"{batch} resumed from {info.heartbeat_details}"

    @workflow.defn
    async def nightly(batch: str) -> str:
        return await workflow.execute_activity(
            settle,
            batch,
            task_queue=PAYMENTS,
            retry_policy=RetryPolicy(initial_interval=0.01),
        )

    async with (
        open_worker(client, task_queue=ORDERS, workflows=[nightly], **POLL),
        open_worker(client, task_queue=PAYMENTS, activities=[settle], **POLL),
    ):
        handle = await client.start_workflow(nightly, "b-7", id="nightly-7", task_queue=ORDERS)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "b-7 resumed from ('settled', 40)"

    assert seen == [(1, ()), (2, ("settled", 40))]
    history = await handle.history()
    assert [e.attempt for e in history if isinstance(e, ActivityHeartbeat)] == [1]
    [failed] = [e for e in history if isinstance(e, ActivityFailed)]
    assert (failed.attempt, failed.retry_at is not None) == (1, True)
    [completed] = [e for e in history if isinstance(e, ActivityCompleted)]
    assert completed.attempt == 2
