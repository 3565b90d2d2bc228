"""Automatic recovery: a worker service that recovers runs failed by a transient cause, once
they have been failed for a while, a bounded number of times, and never twice at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from obs_support import WAIT, sample
from prometheus_client import CollectorRegistry

from engine import Client, ManualClock, PerduraConfig, RecoveryConfig, Worker
from history import ActivityCompleted, RunQuery, RunStatus, SqliteStore, WorkflowStarted
from sdk import RetryPolicy, WorkflowFailureError, activity, listeners, workflow

QUEUE = "recovery"
ONCE = RetryPolicy(maximum_attempts=1)


class Bank:
    """A dependency the test turns on and off; counts the calls it gets."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0
        self.prepared = 0


BANK = Bank()


@activity.defn(name="prepare")
async def prepare(account: str) -> str:
    BANK.prepared += 1
    return f"prepared {account}"


@activity.defn(name="call_bank")
async def call_bank(account: str) -> str:
    BANK.calls += 1
    if not BANK.up:
        raise ConnectionRefusedError("bank API refused the connection")
    return f"transferred from {account}"


@activity.defn(name="parse_statement")
async def parse_statement(text: str) -> str:
    raise ValueError(f"statement {text!r} is malformed")


@workflow.defn(name="transfer")
async def transfer(account: str) -> str:
    await prepare(account)
    return await workflow.execute_activity(call_bank, account, retry_policy=ONCE)


@workflow.defn(name="import_statement")
async def import_statement(text: str) -> str:
    return await workflow.execute_activity(parse_statement, text, retry_policy=ONCE)


@pytest.fixture(autouse=True)
def bank() -> Bank:
    BANK.__init__()  # type: ignore[misc]
    return BANK


def _config(**recovery: Any) -> PerduraConfig:
    settings = {"enabled": True, "interval": 10.0, "delay": 30.0, "window": 3600.0}
    return PerduraConfig(recovery=RecoveryConfig(**{**settings, **recovery}))


async def _failed(client: Client, wf: Any, arg: str, workflow_id: str) -> str:
    handle = await client.start_workflow(wf, arg, id=workflow_id, task_queue=QUEUE)
    async with asyncio.timeout(WAIT):
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert handle.run_id is not None
    return handle.run_id


async def _runs(client: Client, workflow_id: str) -> list[Any]:
    return await client.list_runs(RunQuery(workflow_id=workflow_id))


class _Env:
    def __init__(self, store: SqliteStore, clock: ManualClock, registry: CollectorRegistry):
        self.store, self.clock, self.registry = store, clock, registry
        self.client = Client(store, clock=clock)
        self.seen: list[listeners.ExecutionEvent] = []

    def worker(self, config: PerduraConfig, identity: str = "w1") -> Worker:
        worker = Worker(
            self.store,
            task_queue=QUEUE,
            workflows=[transfer, import_statement],
            activities=[prepare, call_bank, parse_statement],
            identity=identity,
            clock=self.clock,
            config=config,
            metrics_registry=self.registry,
            listeners=[self.seen.append],
        )
        self.client.add_listener(worker)
        return worker


@pytest.fixture
async def env(db_path: Path, clock: ManualClock, registry: CollectorRegistry) -> Any:
    store = await SqliteStore.open(db_path)
    try:
        yield _Env(store, clock, registry)
    finally:
        await store.close()


async def test_a_transient_failure_is_recovered_after_the_delay_and_a_permanent_one_is_not(
    env: _Env, bank: Bank
) -> None:
    async with env.worker(_config()) as worker:
        transfer_run = await _failed(env.client, transfer, "acct-1", "transfer-1")
        import_run = await _failed(env.client, import_statement, "%%%", "import-1")
        bank.up = True  # the outage is over

        env.clock.advance(31)  # past the delay: the service's next pass recovers
        async with asyncio.timeout(WAIT):
            while len(await _runs(env.client, "transfer-1")) < 2:
                await env.store.wait_for_run(transfer_run, 0.01)
            result = await env.client.get_handle("transfer-1").result()
        await worker.listeners.drain()

    assert result == "transferred from acct-1"
    newest = await env.client.get_handle("transfer-1").history()
    started = newest[0]
    assert isinstance(started, WorkflowStarted)
    assert started.origin is not None
    assert (started.origin.kind, started.origin.run_id) == ("recover", transfer_run)
    # The step before the failing one was kept, not run again.
    assert bank.prepared == 1
    assert sum(isinstance(e, ActivityCompleted) for e in newest) == 2
    # The permanent failure was left alone.
    assert [r.run_id for r in await _runs(env.client, "import-1")] == [import_run]
    assert (
        sample(
            env.registry,
            "perdura_executions_recovered_total",
            task_queue=QUEUE,
            workflow_type="transfer",
            failure_class="transient",
        )
        == 1
    )
    [recovered] = [e for e in env.seen if isinstance(e, listeners.ExecutionRecovered)]
    assert (recovered.from_run_id, recovered.workflow_id) == (transfer_run, "transfer-1")


async def test_a_failure_is_left_alone_until_the_delay_has_passed(env: _Env) -> None:
    async with env.worker(_config(interval=3600.0)) as worker:
        assert worker.recovery is not None
        failed = await _failed(env.client, transfer, "acct-2", "transfer-2")
        env.clock.advance(20)
        assert await worker.recovery.run_once() == []
        env.clock.advance(11)
        [new_run] = await worker.recovery.run_once()
        assert await worker.recovery.run_once() == []  # recovered once, not again

    assert {r.run_id for r in await _runs(env.client, "transfer-2")} == {new_run, failed}


async def test_a_failure_older_than_the_window_is_left_for_a_person(env: _Env) -> None:
    async with env.worker(_config(interval=3600.0, window=600.0)) as worker:
        assert worker.recovery is not None
        await _failed(env.client, transfer, "acct-3", "transfer-3")
        env.clock.advance(601)
        assert await worker.recovery.run_once() == []


async def test_recovery_stops_after_the_maximum_number_of_attempts(env: _Env, bank: Bank) -> None:
    async with env.worker(_config(interval=3600.0, max_attempts=2)) as worker:
        assert worker.recovery is not None
        await _failed(env.client, transfer, "acct-4", "transfer-4")
        for _ in range(2):
            env.clock.advance(31)
            [new_run] = await worker.recovery.run_once()
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowFailureError):  # the bank is still down
                    await env.client.get_handle("transfer-4", new_run).result()
        env.clock.advance(31)
        assert await worker.recovery.run_once() == []

    runs = await _runs(env.client, "transfer-4")
    assert [r.status for r in runs] == [RunStatus.FAILED] * 3
    assert bank.calls == 3


async def test_two_workers_never_recover_one_failure_twice(env: _Env) -> None:
    config = _config(interval=3600.0)
    async with env.worker(config, "w1") as first, env.worker(config, "w2") as second:
        assert first.recovery is not None
        assert second.recovery is not None
        await _failed(env.client, transfer, "acct-5", "transfer-5")
        env.clock.advance(31)
        results = await asyncio.gather(first.recovery.run_once(), second.recovery.run_once())

    assert sum(len(r) for r in results) == 1
    assert len(await _runs(env.client, "transfer-5")) == 2


async def test_recovery_is_off_unless_configured(env: _Env) -> None:
    async with env.worker(PerduraConfig()) as worker:
        assert worker.recovery is None
