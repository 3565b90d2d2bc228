"""Fixtures for integration tests: real SQLite files in ``tmp_path``, real workers in-process.

Nothing here sleeps to let things settle. Tests wait for a result (``handle.result()``), for
an event to appear in a run's history (``wait_for_event``) or for the run's row to reach a
state (``wait_for_run``), each bounded by a timeout so a regression fails fast instead of
hanging; time itself is skipped with ``engine.ManualClock``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import Client, ManualClock, WorkflowHandle
from history import RunInfo
from sdk import open_client

E = TypeVar("E")
T = TypeVar("T")

#: The start of every ManualClock: a fixed, recognisable instant (2027-01-15T08:00:00Z).
CLOCK_START = 1_800_000_000.0

#: How long a test waits for something that should take milliseconds.
WAIT = 10.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "perdura.db"


@pytest.fixture
async def client(db_path: Path) -> AsyncIterator[Client]:
    """A client on a fresh store, on the system clock."""
    async with open_client(db_path) as opened:
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=CLOCK_START)


@pytest.fixture
async def manual_client(db_path: Path, clock: ManualClock) -> AsyncIterator[Client]:
    """A client on a fresh store whose time only moves when the test moves ``clock``."""
    async with open_client(db_path, clock=clock) as opened:
        yield opened


async def _poll(
    handle: WorkflowHandle, probe: Callable[[], Awaitable[T | None]], within: float
) -> T:
    """Call ``probe`` until it returns something other than ``None``, at most ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            found = await probe()
            if found is not None:
                return found
            info = await handle.run_info()
            # Look again in 50 ms, or as soon as this process closes the run.
            await handle.client.store.wait_for_run(info.run_id, 0.05)


@pytest.fixture
def wait_for_event() -> Callable[..., Awaitable[Any]]:
    """``await wait_for_event(handle, EventType)``: the first event of that type in the run."""

    async def wait(handle: WorkflowHandle, event_type: type[E], *, within: float = WAIT) -> E:
        async def probe() -> E | None:
            return next((e for e in await handle.history() if isinstance(e, event_type)), None)

        return await _poll(handle, probe, within)

    return wait


@pytest.fixture
def wait_for_run() -> Callable[..., Awaitable[RunInfo]]:
    """``await wait_for_run(handle, predicate)``: the run's info once ``predicate(info)``."""

    async def wait(
        handle: WorkflowHandle, predicate: Callable[[RunInfo], bool], *, within: float = WAIT
    ) -> RunInfo:
        async def probe() -> RunInfo | None:
            info = await handle.run_info()
            return info if predicate(info) else None

        return await _poll(handle, probe, within)

    return wait
