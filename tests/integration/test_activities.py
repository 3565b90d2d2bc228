"""Activities run by a real worker: attempts, retries, non-retryable failures, heartbeats,
sync functions in threads and typed results."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import Client
from history import ActivityCompleted, ActivityFailed, ActivityHeartbeat, ActivityScheduled
from sdk import (
    ActivityError,
    ApplicationError,
    RetryPolicy,
    WorkflowFailureError,
    activity,
    open_worker,
    workflow,
)

QUEUE = "activities"
WAIT = 10.0

#: Unlimited attempts, 10 ms apart: retries are fast and only the test decides when they end.
FAST_RETRY = RetryPolicy(initial_interval=0.01, backoff_coefficient=2.0)


class InvalidAddress(Exception):
    """A domain error the retry policy lists as non-retryable."""


@dataclass(frozen=True)
class Receipt:
    order_id: str
    amount_cents: int
    charged_at: datetime


async def _run(client: Client, wf: Any, *args: Any, activities: list[Any], id: str) -> Any:
    """Start ``wf`` on a worker that runs ``activities``; return its handle and result."""
    async with open_worker(client, task_queue=QUEUE, workflows=[wf], activities=activities):
        handle = await client.start_workflow(wf, *args, id=id, task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    return handle, result


# -- retries ------------------------------------------------------------------------------


async def test_failed_attempts_are_retried_until_one_succeeds(client: Client) -> None:
    attempts: list[int] = []

    @activity.defn
    async def charge(order_id: str) -> str:
        attempts.append(activity.info().attempt)
        if activity.info().attempt < 3:
            raise ConnectionError("payment gateway unreachable")
        return f"charged {order_id} on attempt {activity.info().attempt}"

    @workflow.defn
    async def checkout(order_id: str) -> str:
        return await workflow.execute_activity(charge, order_id, retry_policy=FAST_RETRY)

    handle, result = await _run(client, checkout, "o-1", activities=[charge], id="checkout-1")

    assert result == "charged o-1 on attempt 3"
    assert attempts == [1, 2, 3]
    history = await handle.history()
    failed = [e for e in history if isinstance(e, ActivityFailed)]
    assert [(e.attempt, e.failure.type, e.failure.message) for e in failed] == [
        (1, "ConnectionError", "payment gateway unreachable"),
        (2, "ConnectionError", "payment gateway unreachable"),
    ]
    # Each failure records when the next attempt runs: initial_interval, then doubled.
    delays = [(e.retry_at - e.timestamp).total_seconds() for e in failed if e.retry_at]
    assert delays == pytest.approx([0.01, 0.02], abs=1e-5)
    completed = [e for e in history if isinstance(e, ActivityCompleted)]
    assert [e.attempt for e in completed] == [3]


async def test_application_error_marked_non_retryable_fails_the_activity_at_once(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def charge(card: str) -> str:
        attempts.append(activity.info().attempt)
        raise ApplicationError(
            "card declined", "issuer-51", type="CardDeclined", non_retryable=True
        )

    @workflow.defn
    async def pay(card: str) -> dict[str, Any]:
        try:
            await workflow.execute_activity(charge, card, retry_policy=FAST_RETRY)
        except ActivityError as err:
            cause = err.__cause__
            assert isinstance(cause, ApplicationError)
            return {"attempt": err.attempt, "type": cause.type, "message": cause.message}
        return {}

    handle, result = await _run(client, pay, "4111", activities=[charge], id="pay-1")

    assert result == {"attempt": 1, "type": "CardDeclined", "message": "card declined"}
    assert attempts == [1]
    [failed] = [e for e in await handle.history() if isinstance(e, ActivityFailed)]
    assert failed.retry_at is None
    assert failed.failure.non_retryable


async def test_error_type_listed_as_non_retryable_fails_the_activity_at_once(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def validate(address: str) -> str:
        attempts.append(activity.info().attempt)
        raise InvalidAddress(f"no such street: {address}")

    policy = RetryPolicy(initial_interval=0.01, non_retryable_error_types=("InvalidAddress",))

    @workflow.defn
    async def ship(address: str) -> dict[str, Any]:
        try:
            await workflow.execute_activity(validate, address, retry_policy=policy)
        except ActivityError as err:
            cause = err.__cause__
            assert isinstance(cause, ApplicationError)
            return {"attempt": err.attempt, "type": cause.type, "message": cause.message}
        return {}

    handle, result = await _run(client, ship, "Nowhere 1", activities=[validate], id="ship-1")

    assert result == {
        "attempt": 1,
        "type": f"{InvalidAddress.__module__}.InvalidAddress",
        "message": "no such street: Nowhere 1",
    }
    assert attempts == [1]
    [failed] = [e for e in await handle.history() if isinstance(e, ActivityFailed)]
    assert failed.retry_at is None


async def test_activity_fails_for_good_once_maximum_attempts_are_exhausted(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def reserve(sku: str) -> str:
        attempts.append(activity.info().attempt)
        raise RuntimeError(f"warehouse busy (attempt {activity.info().attempt})")

    policy = RetryPolicy(initial_interval=0.01, maximum_attempts=3)

    @workflow.defn
    async def restock(sku: str) -> dict[str, Any]:
        try:
            await workflow.execute_activity(reserve, sku, retry_policy=policy)
        except ActivityError as err:
            cause = err.__cause__
            assert isinstance(cause, ApplicationError)
            return {"attempt": err.attempt, "type": cause.type, "message": cause.message}
        return {}

    handle, result = await _run(client, restock, "sku-9", activities=[reserve], id="restock-1")

    assert result == {
        "attempt": 3,
        "type": "RuntimeError",
        "message": "warehouse busy (attempt 3)",
    }
    assert attempts == [1, 2, 3]
    failed = [e for e in await handle.history() if isinstance(e, ActivityFailed)]
    assert [(e.attempt, e.retry_at is not None) for e in failed] == [
        (1, True),
        (2, True),
        (3, False),
    ]


async def test_unhandled_activity_error_fails_the_workflow_with_the_activity_failure_as_cause(
    client: Client,
) -> None:
    @activity.defn
    async def reserve(sku: str) -> str:
        raise ApplicationError("out of stock", type="OutOfStock", non_retryable=True)

    @workflow.defn
    async def restock(sku: str) -> str:
        return await reserve(sku)

    async with open_worker(client, task_queue=QUEUE, workflows=[restock], activities=[reserve]):
        handle = await client.start_workflow(restock, "sku-1", id="restock-2", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()

    failure = raised.value.failure
    assert failure.type.endswith(".ActivityError")
    assert failure.cause is not None
    assert (failure.cause.type, failure.cause.message) == ("OutOfStock", "out of stock")


# -- heartbeats -----------------------------------------------------------------------------


async def test_heartbeat_details_reach_the_next_attempt(client: Client) -> None:
    seen: list[tuple[int, tuple[Any, ...]]] = []

    @activity.defn
    async def import_rows(path: str) -> str:
        info = activity.info()
        seen.append((info.attempt, info.heartbeat_details))
        if info.attempt == 1:
            activity.heartbeat("rows", 4200)
            raise ConnectionError("database went away")
        return f"resumed at {info.heartbeat_details}"

    @workflow.defn
    async def load(path: str) -> str:
        return await workflow.execute_activity(import_rows, path, retry_policy=FAST_RETRY)

    handle, result = await _run(client, load, "rows.csv", activities=[import_rows], id="load-1")

    assert seen == [(1, ()), (2, ("rows", 4200))]
    assert result == "resumed at ('rows', 4200)"
    heartbeats = [e for e in await handle.history() if isinstance(e, ActivityHeartbeat)]
    assert [e.attempt for e in heartbeats] == [1]


async def test_heartbeat_records_the_scheduling_while_the_activity_still_runs(
    client: Client, wait_for_event: Any
) -> None:
    release = asyncio.Event()

    @activity.defn
    async def long_export(name: str) -> str:
        activity.heartbeat("halfway")
        await release.wait()
        return f"exported {name}"

    @workflow.defn
    async def export(name: str) -> str:
        return await long_export(name)

    async with open_worker(client, task_queue=QUEUE, workflows=[export], activities=[long_export]):
        handle = await client.start_workflow(export, "ledger", id="export-1", task_queue=QUEUE)
        await wait_for_event(handle, ActivityHeartbeat)
        description = await handle.describe()
        [pending] = description.pending_activities
        assert (pending.activity_type, pending.last_heartbeat_details) == (
            long_export.name,
            ("halfway",),
        )
        release.set()
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "exported ledger"

    history = await handle.history()
    kinds = [type(e) for e in history if isinstance(e, ActivityScheduled | ActivityHeartbeat)]
    assert kinds == [ActivityScheduled, ActivityHeartbeat]


async def test_latest_heartbeat_is_recorded_even_if_it_arrives_during_an_append(
    client: Client,
) -> None:
    """Heartbeats coalesce (only the newest details are kept), but the newest one must still
    be recorded when it comes in while the previous one is being written: it is the
    checkpoint a retried attempt resumes from."""
    proceed = threading.Event()

    @activity.defn
    def scan(rows: int) -> int:
        for row in range(1, rows + 1):
            activity.heartbeat(row)  # far faster than a durable write
        proceed.wait(WAIT)  # then quiet: nothing else will push the last checkpoint out
        return rows

    @workflow.defn
    async def audit(rows: int) -> int:
        return await scan(rows)

    async with open_worker(client, task_queue=QUEUE, workflows=[audit], activities=[scan]):
        handle = await client.start_workflow(audit, 500, id="audit-1", task_queue=QUEUE)

        async def last_checkpoint() -> Any:
            beats = [e for e in await handle.history() if isinstance(e, ActivityHeartbeat)]
            return client.converter.decode(beats[-1].details[0]) if beats else None

        try:
            async with asyncio.timeout(WAIT):
                while True:
                    if await last_checkpoint() == 500:
                        break
                    await asyncio.sleep(0.01)
        finally:
            proceed.set()
        async with asyncio.timeout(WAIT):
            assert await handle.result() == 500


# -- how activities run -----------------------------------------------------------------------


async def test_sync_activity_runs_in_a_worker_thread(client: Client) -> None:
    loop_thread = threading.get_ident()

    @activity.defn
    def resize(image: str) -> dict[str, Any]:
        return {
            "image": image,
            "attempt": activity.info().attempt,
            "thread": threading.get_ident(),
        }

    @workflow.defn
    async def thumbnail(image: str) -> dict[str, Any]:
        return await resize(image)

    _, result = await _run(client, thumbnail, "cat.png", activities=[resize], id="thumb-1")

    assert result["image"] == "cat.png"
    assert result["attempt"] == 1
    assert result["thread"] != loop_thread


async def test_sync_activity_heartbeats_from_its_thread(
    client: Client, wait_for_event: Any
) -> None:
    proceed = threading.Event()

    @activity.defn
    def resize(image: str) -> str:
        activity.heartbeat("halfway")
        proceed.wait(WAIT)  # blocks this worker thread, not the event loop
        return f"resized {image}"

    @workflow.defn
    async def thumbnail(image: str) -> str:
        return await resize(image)

    async with open_worker(client, task_queue=QUEUE, workflows=[thumbnail], activities=[resize]):
        handle = await client.start_workflow(thumbnail, "cat.png", id="thumb-2", task_queue=QUEUE)
        heartbeat = await wait_for_event(handle, ActivityHeartbeat)
        proceed.set()
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "resized cat.png"

    assert [client.converter.decode(d) for d in heartbeat.details] == ["halfway"]


async def test_activity_returning_a_dataclass_reaches_the_workflow_as_that_dataclass(
    client: Client,
) -> None:
    charged_at = datetime(2027, 1, 15, 8, 30, tzinfo=UTC)

    @activity.defn
    async def charge(order_id: str, amount_cents: int) -> Receipt:
        return Receipt(order_id, amount_cents, charged_at)

    @workflow.defn
    async def order(order_id: str) -> Receipt:
        receipt = await charge(order_id, 1999)
        assert isinstance(receipt, Receipt), f"got {type(receipt).__name__}"
        return Receipt(receipt.order_id, receipt.amount_cents * 2, receipt.charged_at)

    async with open_worker(client, task_queue=QUEUE, workflows=[order], activities=[charge]):
        async with asyncio.timeout(WAIT):
            result = await client.execute_workflow(order, "o-7", id="order-7", task_queue=QUEUE)

    assert result == Receipt("o-7", 3998, charged_at)


async def test_handle_from_start_workflow_decodes_the_result_as_the_workflow_return_type(
    client: Client,
) -> None:
    charged_at = datetime(2027, 1, 15, 8, 30, tzinfo=UTC)

    @activity.defn
    async def charge(order_id: str, amount_cents: int) -> Receipt:
        return Receipt(order_id, amount_cents, charged_at)

    @workflow.defn
    async def order(order_id: str) -> Receipt:
        return await charge(order_id, 500)

    _, result = await _run(client, order, "o-8", activities=[charge], id="order-8")

    assert result == Receipt("o-8", 500, charged_at)


async def test_activity_info_identifies_the_attempt_and_gives_a_stable_idempotency_key(
    client: Client,
) -> None:
    keys: list[str] = []

    @activity.defn
    async def send_email(to: str) -> str:
        info = activity.info()
        keys.append(info.idempotency_key)
        if info.attempt == 1:
            raise TimeoutError("smtp timeout")
        return f"{info.workflow_id}/{info.activity_type}/{info.attempt}"

    @workflow.defn
    async def welcome(to: str) -> str:
        return await workflow.execute_activity(send_email, to, retry_policy=FAST_RETRY)

    handle, result = await _run(client, welcome, "a@b.c", activities=[send_email], id="welcome-1")

    assert result == f"welcome-1/{send_email.name}/2"
    info = await handle.run_info()
    assert keys == [f"{info.run_id}-1", f"{info.run_id}-1"]


async def test_retry_time_grows_with_the_backoff_coefficient_up_to_the_maximum_interval(
    client: Client,
) -> None:
    @activity.defn
    async def poll_status(job: str) -> str:
        if activity.info().attempt < 5:
            raise RuntimeError("not ready")
        return "ready"

    policy = RetryPolicy(initial_interval=0.01, backoff_coefficient=3.0, maximum_interval=0.05)

    @workflow.defn
    async def wait_job(job: str) -> str:
        return await workflow.execute_activity(poll_status, job, retry_policy=policy)

    handle, result = await _run(client, wait_job, "j", activities=[poll_status], id="wait-job-1")

    assert result == "ready"
    failed = [e for e in await handle.history() if isinstance(e, ActivityFailed)]
    delays = [e.retry_at - e.timestamp for e in failed if e.retry_at is not None]
    assert [d.total_seconds() for d in delays] == pytest.approx([0.01, 0.03, 0.05, 0.05], abs=1e-5)
    assert all(d > timedelta(0) for d in delays)
