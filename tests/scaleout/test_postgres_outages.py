"""Workers ride out PostgreSQL going away: real terminated connections, real refused logins.

* A driver whose append fails because the database went away dies, and cannot hand its run
  back either; the worker releases the run at its first lease renewal once the database is
  back, and drives it to completion itself (it never claims back its own leases, so with one
  worker the run would otherwise be renewed forever and never finish).
* ``pg_terminate_backend`` on every connection of a worker (pool and listener), as a
  database restart does, while it drives runs: the same worker object finishes all of them,
  nothing is recorded twice, and wake-ups from other processes reach it again afterwards.

The outage is confined to this test: its store logs in as a role of its own, which the test
forbids to log in (``ALTER ROLE … NOLOGIN``) and whose connections it terminates; other
sessions on the server are untouched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pg_support import POSTGRES_URL, postgres_schema, schema_url

from engine import Client
from history import ActivityCompleted, RunQuery, RunStatus, open_store
from history.postgres import PostgresStore
from sdk import activity, open_worker, workflow

pytestmark = pytest.mark.slow

QUEUE = "outage"


@dataclass
class Outage:
    """A login role of the test's own, and the power to cut it off from the database."""

    role: str
    schema: str

    @property
    def url(self) -> str:
        parts = urlsplit(schema_url(self.schema))
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{self.role}@{host}"))

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def begin(self) -> None:
        """The database goes away for this role: new logins refused, connections cut."""
        await self.admin(f'ALTER ROLE "{self.role}" NOLOGIN')
        await self.terminate()

    async def terminate(self) -> None:
        await self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = '{self.role}' AND pid <> pg_backend_pid()"
        )

    async def end(self) -> None:
        await self.admin(f'ALTER ROLE "{self.role}" LOGIN')


@pytest.fixture
async def outage() -> AsyncIterator[Outage]:
    role = f"perdura_outage_{uuid.uuid4().hex[:10]}"
    async with postgres_schema("outage") as (_, schema):
        cut = Outage(role, schema)
        database = urlsplit(POSTGRES_URL).path.lstrip("/")
        await cut.admin(f'CREATE ROLE "{role}" LOGIN')
        await cut.admin(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
        try:
            yield cut
        finally:
            await cut.end()
            await cut.terminate()
            await cut.admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await cut.admin(f'DROP OWNED BY "{role}"')
            await cut.admin(f'DROP ROLE "{role}"')


# -- a driver that dies on a store error -------------------------------------------------

CUT: list[Outage] = []
"""The outage the ``cut_off`` activity starts, the first time it runs (set by the test)."""


@activity.defn
async def cut_off(n: int) -> int:
    if CUT:
        await CUT.pop().begin()
    return n + 1


@workflow.defn
async def cut_short(n: int) -> int:
    return await cut_off(n)


async def test_a_run_whose_driver_died_on_a_store_error_is_released_and_completed(
    outage: Outage,
) -> None:
    store = await open_store(outage.url)
    # The superuser still reaches the schema while the role is shut out.
    observer = await PostgresStore.open(POSTGRES_URL, schema=outage.schema)
    try:
        client = Client(store)
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[cut_short],
            activities=[cut_off],
            identity="solo",
            lease_seconds=1.5,
            poll_interval=0.2,
        ) as worker:
            CUT.append(outage)
            handle = await client.start_workflow(cut_short, 41, id="cut", task_queue=QUEUE)
            # The activity cut the database off: the driver's append of its result failed
            # and so did its attempt to release the run.
            async with asyncio.timeout(20):
                while handle.run_id in worker.drivers or CUT:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            held = await observer.get_run(str(handle.run_id))
            assert held.owner == "solo", held
            assert held.status is RunStatus.RUNNING

            await outage.end()
            async with asyncio.timeout(20):
                # Polling the store from outside, as an operator's tooling would.
                while (await observer.get_run(str(handle.run_id))).status.is_open:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

        history = await observer.read_history(str(handle.run_id))
        assert (await observer.get_run(str(handle.run_id))).status is RunStatus.COMPLETED
        assert [type(e).__name__ for e in history][-1] == "WorkflowCompleted"
        assert sum(isinstance(e, ActivityCompleted) for e in history) == 1
    finally:
        CUT.clear()
        await observer.close()
        await store.close()


# -- every connection of a worker terminated ---------------------------------------------


@activity.defn
async def step(n: int) -> int:
    await asyncio.sleep(0.02)
    return n + 1


@workflow.defn
async def stepping(n: int) -> int:
    for _ in range(4):
        n = await step(n)
    return n


async def test_a_worker_recovers_by_itself_when_all_its_connections_are_terminated(
    outage: Outage,
) -> None:
    count = 60
    store = await open_store(outage.url)
    other = await open_store(outage.url)
    try:
        client = Client(store)
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[stepping],
            activities=[step],
            identity="survivor",
            lease_seconds=2.0,
            poll_interval=5.0,
        ):
            for n in range(count):
                await client.start_workflow(stepping, n, id=f"s-{n}", task_queue=QUEUE)
            for _ in range(3):  # a restart, as the worker sees it: every connection cut
                await asyncio.sleep(0.15)
                await outage.terminate()
            async with asyncio.timeout(60):
                finished = RunQuery(status=RunStatus.COMPLETED)
                while await other.count_runs(finished) < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)

            # Wake-ups from another process reach the worker again: far sooner than its poll.
            began = time.monotonic()
            late = await Client(other).start_workflow(stepping, 100, id="late", task_queue=QUEUE)
            assert await asyncio.wait_for(late.result(), 10) == 104
            assert time.monotonic() - began < 2.5

        runs = await other.list_runs(RunQuery(limit=1000))
        completed: Counter[tuple[str, int]] = Counter()
        for info in runs:
            history = await other.read_history(info.run_id)
            n = int(info.workflow_id.split("-")[-1]) if info.workflow_id != "late" else 100
            assert info.status is RunStatus.COMPLETED, info
            assert await Client(other).get_handle(info.workflow_id).result() == n + 4
            for event in history:
                if isinstance(event, ActivityCompleted):
                    completed[info.run_id, event.seq] += 1
        assert set(completed.values()) == {1}
        assert len(completed) == 4 * (count + 1)
    finally:
        await other.close()
        await store.close()
