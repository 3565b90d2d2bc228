"""Starting runs: bad input gets a clear error and loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import Client, ManualClock
from history import (
    PayloadEncodeError,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    WorkflowStarted,
    WorkflowTaskFailed,
)
from sdk import WorkflowAlreadyRunningError, open_worker, workflow

QUEUE = "clients"
WAIT = 10.0


@workflow.defn
async def greet(customer: str) -> str:
    return f"hello {customer}"


@workflow.defn
async def farewell(customer: str) -> str:
    return f"goodbye {customer}"


@workflow.defn(name="send_invoice")
async def send_invoice(customer: str, amount_cents: int) -> str:
    return f"invoiced {customer} {amount_cents}"


async def test_unknown_workflow_type_fails_the_task_naming_it_and_the_registered_types(
    manual_client: Client, clock: ManualClock, wait_for_event: Any
) -> None:
    client = manual_client
    async with open_worker(
        client, task_queue=QUEUE, workflows=[greet, farewell], workflow_task_retry=30
    ):
        unknown = await client.start_workflow(
            "send_invoice", "acme", 1999, id="invoice-1", task_queue=QUEUE
        )
        known = await client.start_workflow(greet, "bob", id="greet-1", task_queue=QUEUE)
        task_failed = await wait_for_event(unknown, WorkflowTaskFailed)
        async with asyncio.timeout(WAIT):
            # The unknown type stalls only its own run.
            assert await known.result() == "hello bob"

    assert task_failed.failure.type.endswith(".WorkflowNotRegisteredError")
    assert task_failed.failure.message == (
        "unknown workflow type 'send_invoice'; registered: farewell, greet"
    )
    assert (await unknown.describe()).status is RunStatus.RUNNING

    # Nothing is lost: a worker that knows the type runs it with the arguments it was given.
    async with open_worker(client, task_queue=QUEUE, workflows=[send_invoice]):
        clock.advance(30)
        async with asyncio.timeout(WAIT):
            assert await unknown.result() == "invoiced acme 1999"


async def test_unencodable_argument_raises_payload_encode_error_and_writes_nothing(
    client: Client,
) -> None:
    before = await client.count_runs()

    with pytest.raises(PayloadEncodeError) as raised:
        await client.start_workflow(greet, object(), id="greet-bad", task_queue=QUEUE)

    message = str(raised.value)
    assert "argument 'customer' of workflow 'greet'" in message
    assert "object" in message
    assert await client.count_runs() == before
    with pytest.raises(RunNotFoundError):
        await client.get_handle("greet-bad").run_info()


async def test_starting_a_workflow_id_that_already_has_an_open_run_raises(
    client: Client,
) -> None:
    first = await client.start_workflow(greet, "ann", id="greet-ann", task_queue=QUEUE)

    with pytest.raises(WorkflowAlreadyRunningError) as raised:
        await client.start_workflow(farewell, "ann", id="greet-ann", task_queue=QUEUE)

    assert (raised.value.workflow_id, raised.value.run_id) == ("greet-ann", first.run_id)
    assert await client.count_runs(RunQuery(workflow_id="greet-ann")) == 1
    [started] = await first.history()
    assert isinstance(started, WorkflowStarted)
    assert started.workflow_type == "greet"


async def test_workflow_id_can_be_reused_once_its_run_has_closed(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[greet]):
        async with asyncio.timeout(WAIT):
            assert await client.execute_workflow(greet, "ann", id="ann", task_queue=QUEUE) == (
                "hello ann"
            )
            again = await client.start_workflow(greet, "ann again", id="ann", task_queue=QUEUE)
            assert await again.result() == "hello ann again"

    runs = await client.list_runs(RunQuery(workflow_id="ann"))
    assert [r.status for r in runs] == [RunStatus.COMPLETED, RunStatus.COMPLETED]
    assert (await client.get_handle("ann").run_info()).run_id == again.run_id
