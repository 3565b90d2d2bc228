"""How a workflow is written and how it ends: function and class definitions, typed
arguments, results and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from engine import Client, Registry, replay_history
from history import RunStatus, WorkflowCompleted, WorkflowFailed, WorkflowTaskFailed
from sdk import ApplicationError, WorkflowFailureError, activity, open_worker, workflow

QUEUE = "workflows"
WAIT = 10.0


@dataclass(frozen=True)
class Order:
    order_id: str
    items: list[str]


@activity.defn
async def pack(item: str) -> str:
    return f"packed {item}"


@workflow.defn
class Packer:
    """A class-based workflow: each run gets its own instance, so state lives on ``self``."""

    def __init__(self) -> None:
        self.packed: list[str] = []

    @workflow.run
    async def run(self, order: Order) -> list[str]:
        for item in order.items:
            self.packed.append(await pack(item))
        return self.packed


@workflow.defn
async def inspect_order(order: Order) -> str:
    return f"{type(order).__name__} {order.order_id} with {len(order.items)} item(s)"


@workflow.defn
async def reject_empty(order: Order) -> str:
    if not order.items:
        raise ValueError(f"order {order.order_id} has no items")
    return "accepted"


@workflow.defn
async def reject_fraud(order: Order) -> str:
    raise ApplicationError("card reported stolen", order.order_id, type="FraudSuspected")


@workflow.defn
async def unencodable_result(order: Order) -> Any:
    return object()


async def _start(client: Client, wf: Any, *args: Any, id: str) -> Any:
    return await client.start_workflow(wf, *args, id=id, task_queue=QUEUE)


async def test_class_based_workflow_runs_with_a_fresh_instance_per_run(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Packer], activities=[pack]):
        first = await _start(client, Packer, Order("o-1", ["hat", "scarf"]), id="pack-1")
        second = await _start(client, Packer, Order("o-2", ["boots"]), id="pack-2")
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(first.result(), second.result())

    assert results == [["packed hat", "packed scarf"], ["packed boots"]]
    replayed = replay_history(Registry([Packer]), await first.history())
    recorded = (await first.history())[-1]
    assert isinstance(recorded, WorkflowCompleted)
    assert replayed.completion is not None
    assert replayed.completion.result == recorded.result


async def test_dataclass_argument_reaches_the_workflow_as_that_dataclass(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[inspect_order]):
        async with asyncio.timeout(WAIT):
            result = await client.execute_workflow(
                inspect_order, Order("o-3", ["tea"]), id="inspect-3", task_queue=QUEUE
            )

    assert result == "Order o-3 with 1 item(s)"


async def test_configured_exception_type_raised_by_a_workflow_ends_it_failed_with_the_cause(
    client: Client,
) -> None:
    async with open_worker(
        client,
        task_queue=QUEUE,
        workflows=[reject_empty],
        workflow_failure_exception_types=[ValueError],
    ):
        handle = await _start(client, reject_empty, Order("o-4", []), id="reject-4")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()

    error = raised.value
    assert (error.workflow_id, error.run_id) == ("reject-4", handle.run_id)
    assert (error.failure.type, error.failure.message) == ("ValueError", "order o-4 has no items")
    cause = error.__cause__
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("ValueError", "order o-4 has no items")
    description = await handle.describe()
    assert description.status is RunStatus.FAILED
    assert description.failure == error.failure
    assert isinstance((await handle.history())[-1], WorkflowFailed)


async def test_unexpected_exception_in_workflow_code_keeps_the_run_open_and_retries_it(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(
        client, task_queue=QUEUE, workflows=[reject_empty], workflow_task_retry=0.05
    ):
        handle = await _start(client, reject_empty, Order("o-7", []), id="reject-7")
        async with asyncio.timeout(WAIT):
            await wait_for_event(handle, WorkflowTaskFailed)
            description = await handle.describe()

    assert description.status is RunStatus.RUNNING
    assert description.last_task_failure is not None
    assert description.last_task_failure.type == "ValueError"
    assert "order o-7 has no items" in description.last_task_failure.message


async def test_a_fixed_deploy_continues_a_run_whose_code_raised_unexpectedly(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(
        client, task_queue=QUEUE, workflows=[reject_empty], workflow_task_retry=0.05
    ):
        handle = await _start(client, reject_empty, Order("o-8", []), id="reject-8")
        async with asyncio.timeout(WAIT):
            await wait_for_event(handle, WorkflowTaskFailed)

    @workflow.defn(name="reject_empty")
    async def fixed(order: Order) -> str:
        return "accepted even when empty"

    async with open_worker(client, task_queue=QUEUE, workflows=[fixed], workflow_task_retry=0.05):
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "accepted even when empty"


@workflow.defn
async def spins_forever() -> str:
    while True:
        pass


@workflow.defn
async def quick() -> str:
    return "quick"


async def test_workflow_code_that_blocks_the_loop_is_interrupted_and_others_keep_running(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(
        client,
        task_queue=QUEUE,
        workflows=[spins_forever, quick],
        workflow_step_deadline=0.2,
        workflow_task_retry=60,
    ):
        stuck = await _start(client, spins_forever, id="spin-1")
        async with asyncio.timeout(WAIT):
            await wait_for_event(stuck, WorkflowTaskFailed)
            other = await _start(client, quick, id="quick-1")
            assert await other.result() == "quick"
        description = await stuck.describe()

    assert description.status is RunStatus.RUNNING
    failure = description.last_task_failure
    assert failure is not None
    assert failure.type.endswith("WorkflowBlockedError")
    assert "blocked the worker's event loop for more than 0.2s" in failure.message
    assert "spins_forever" in failure.message


async def test_application_error_raised_by_a_workflow_keeps_its_type_and_details(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[reject_fraud]):
        handle = await _start(client, reject_fraud, Order("o-5", ["tv"]), id="fraud-5")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()

    failure = raised.value.failure
    assert (failure.type, failure.message) == ("FraudSuspected", "card reported stolen")
    assert [client.converter.decode(d) for d in failure.details] == ["o-5"]


async def test_workflow_result_that_cannot_be_encoded_fails_the_run_naming_it(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[unencodable_result]):
        handle = await _start(client, unencodable_result, Order("o-6", []), id="bad-result-6")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()

    failure = raised.value.failure
    assert failure.type.endswith(".PayloadEncodeError")
    assert "result of workflow 'unencodable_result'" in failure.message
