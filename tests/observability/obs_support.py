"""Helpers shared by the observability tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

#: The start of every ManualClock: 2027-01-15T08:00:00Z.
CLOCK_START = 1_800_000_000.0

#: How long a test waits for something that should take milliseconds.
WAIT = 10.0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value (0 when absent): ``sample(r, "perdura_x_total", task_queue="q")``."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_until(
    probe: Callable[[], Awaitable[Any]] | Callable[[], Any], *, within: float = WAIT
) -> Any:
    """Poll ``probe`` (sync or async) every 10 ms until it returns something truthy."""
    async with asyncio.timeout(within):
        while True:
            found = probe()
            if asyncio.iscoroutine(found):
                found = await found
            if found:
                return found
            await asyncio.sleep(0.01)
