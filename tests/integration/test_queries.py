"""Queries: answered from the run's replayed state, by a client holding the workflow code,
with no worker involved (none running at all), for open and closed runs — and they write
nothing. A query that would change the run (schedule an activity, change state) is refused.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from engine import Client
from history import RunStatus
from sdk import QueryError, activity, open_client, open_worker, workflow

QUEUE = "queries"
WAIT = 10.0

CHARGED: list[int] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    CHARGED.clear()


@activity.defn
async def charge(cents: int) -> int:
    CHARGED.append(cents)
    return cents


@workflow.defn
class Cart:
    def __init__(self) -> None:
        self.items: dict[str, int] = {}
        self.charged = 0
        self.stage = "shopping"

    @workflow.signal
    def add(self, item: str, cents: int) -> None:
        self.items[item] = cents

    @workflow.signal
    def checkout(self) -> None:
        self.stage = "checking out"

    @workflow.query
    def total(self) -> int:
        return sum(self.items.values())

    @workflow.query
    def status(self) -> dict[str, object]:
        return {"stage": self.stage, "items": sorted(self.items), "charged": self.charged}

    @workflow.query
    def price_of(self, item: str) -> int | None:
        return self.items.get(item)

    @workflow.query(name="sneaky-discount")
    def sneaky_discount(self) -> int:
        self.items = {name: cents // 2 for name, cents in self.items.items()}
        return sum(self.items.values())

    @workflow.query(name="charge-now")
    def charge_now(self) -> str:
        pending = charge(sum(self.items.values()))  # schedules an activity: refused
        if inspect.iscoroutine(pending):
            pending.close()  # (only to keep the test quiet about a never-awaited coroutine)
        return "charged"

    @workflow.run
    async def run(self, customer: str) -> int:
        await workflow.wait_condition(lambda: self.stage == "checking out")
        self.charged = await charge(sum(self.items.values()))
        self.stage = "done"
        return self.charged


async def _fill_cart(db_path: Path) -> str:
    """A run that a worker drove to a resting point; on return no worker runs at all."""
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[Cart], activities=[charge]):
            handle = await client.start_workflow(Cart, "ann", id="cart-1", task_queue=QUEUE)
            await handle.signal("add", "book", 1200)
            await handle.signal("add", "pen", 300)
            async with asyncio.timeout(WAIT):
                while True:  # released: no worker holds it any more
                    if (await handle.run_info()).owner is None:
                        break
                    await asyncio.sleep(0.01)
    return "cart-1"


async def test_query_is_answered_from_replayed_state_with_no_worker_running(
    db_path: Path,
) -> None:
    workflow_id = await _fill_cart(db_path)

    async with open_client(db_path, workflows=[Cart]) as client:
        handle = client.get_handle(workflow_id)
        info_before = await handle.run_info()
        history_before = await handle.history()

        assert await handle.query("total") == 1500
        assert await handle.query("status") == {
            "stage": "shopping",
            "items": ["book", "pen"],
            "charged": 0,
        }
        assert await handle.query("price_of", "pen") == 300
        assert await handle.query("price_of", "mug") is None

        # A query writes nothing: same history, same row (status, length, owner, wake time).
        assert await handle.history() == history_before
        assert await handle.run_info() == info_before
    assert info_before.owner is None
    assert info_before.status is RunStatus.RUNNING
    assert CHARGED == []  # replaying for a query runs no activity


async def test_query_of_a_run_no_worker_has_ever_touched(client: Client) -> None:
    handle = await client.start_workflow(Cart, "ann", id="cart-new", task_queue=QUEUE)
    await handle.signal("add", "mug", 900)

    querying = Client(client.store, workflows=[Cart])
    assert await querying.get_handle("cart-new").query("total") == 900
    assert len(await handle.history()) == 2


async def test_query_of_a_closed_run_sees_its_final_state(db_path: Path) -> None:
    workflow_id = await _fill_cart(db_path)
    async with open_client(db_path) as client:
        handle = client.get_handle(workflow_id)
        async with open_worker(client, task_queue=QUEUE, workflows=[Cart], activities=[charge]):
            await handle.signal("checkout")
            async with asyncio.timeout(WAIT):
                assert await handle.result() == 1500
    assert CHARGED == [1500]

    async with open_client(db_path, workflows=[Cart]) as client:
        handle = client.get_handle(workflow_id)
        length = (await handle.run_info()).history_length
        assert await handle.query("status") == {
            "stage": "done",
            "items": ["book", "pen"],
            "charged": 1500,
        }
        assert (await handle.run_info()).history_length == length
    assert CHARGED == [1500]


async def test_query_while_a_worker_holds_the_run_does_not_disturb_it(client: Client) -> None:
    querying = Client(client.store, workflows=[Cart])
    async with open_worker(
        client, task_queue=QUEUE, workflows=[Cart], activities=[charge], keep_alive=60
    ):
        handle = await client.start_workflow(Cart, "bob", id="cart-live", task_queue=QUEUE)
        await handle.signal("add", "lamp", 4500)
        async with asyncio.timeout(WAIT):
            while True:
                if await querying.get_handle("cart-live").query("total") == 4500:
                    break
                await asyncio.sleep(0.01)
        await handle.signal("checkout")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == 4500
    assert CHARGED == [4500]


async def test_query_that_changes_state_is_refused_with_a_clear_error(db_path: Path) -> None:
    workflow_id = await _fill_cart(db_path)
    async with open_client(db_path, workflows=[Cart]) as client:
        handle = client.get_handle(workflow_id)
        before = await handle.history()

        with pytest.raises(QueryError) as raised:
            await handle.query("sneaky-discount")

        assert str(raised.value) == (
            "query 'sneaky-discount' of workflow 'Cart' changed the workflow's state; "
            "a query may only read it"
        )
        assert await handle.history() == before
        assert await handle.query("total") == 1500  # and the real state is untouched


async def test_query_that_schedules_an_activity_is_refused_with_a_clear_error(
    db_path: Path,
) -> None:
    workflow_id = await _fill_cart(db_path)
    async with open_client(db_path, workflows=[Cart]) as client:
        handle = client.get_handle(workflow_id)
        before = await handle.history()

        with pytest.raises(QueryError) as raised:
            await handle.query("charge-now")

        assert str(raised.value) == (
            "query 'charge-now' of workflow 'Cart' tried to schedule work; "
            "a query may only read the workflow's state"
        )
        assert await handle.history() == before
    assert CHARGED == []


async def test_unknown_query_name_lists_the_known_ones(client: Client) -> None:
    await client.start_workflow(Cart, "ann", id="cart-unknown", task_queue=QUEUE)
    querying = Client(client.store, workflows=[Cart])

    with pytest.raises(QueryError) as raised:
        await querying.get_handle("cart-unknown").query("grand_total")

    assert str(raised.value) == (
        "workflow 'Cart' has no query 'grand_total'; its queries: charge-now, price_of, "
        "sneaky-discount, status, total"
    )


async def test_query_needs_the_workflow_code(client: Client) -> None:
    handle = await client.start_workflow(Cart, "ann", id="cart-nocode", task_queue=QUEUE)

    with pytest.raises(QueryError) as raised:
        await handle.query("total")

    assert "pass workflows=[...] to the client" in str(raised.value)
    assert "'Cart'" in str(raised.value)
