"""Clocks: where the runtime reads the time and waits for it.

Everything the engine does with wall time — event timestamps, timer deadlines, retry times,
leases — goes through one :class:`Clock`, so tests can swap in :class:`ManualClock` and skip
a thirty-day timer in microseconds without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]

# Taken before the workflow sandbox wraps ``time.time``: the runtime's own clock reads are not
# workflow code and should not pay for the wrapper.
_wall_time = time.time


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        """Return when ``event`` is set or ``now() >= deadline``, whichever comes first."""
        ...


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class SystemClock:
    def now(self) -> float:
        return _wall_time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - _wall_time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        if event.is_set():
            return
        if deadline is None:
            await event.wait()
            return
        try:
            async with asyncio.timeout(max(deadline - _wall_time(), 0.0)):
                await event.wait()
        except TimeoutError:
            pass


class ManualClock:
    """A clock that moves only when told to (``advance``/``set``), waking sleepers in order."""

    def __init__(self, start: float | None = None) -> None:
        self._now = _wall_time() if start is None else start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        heapq.heappush(self._sleepers, (deadline, self._counter, future))
        await future

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        if event.is_set():
            return
        if deadline is None:
            await event.wait()
            return
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep_until(deadline))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, value: float) -> None:
        if value < self._now:
            raise ValueError(f"a clock does not go backwards ({value} < {self._now})")
        self._now = value
        while self._sleepers and self._sleepers[0][0] <= value:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)
