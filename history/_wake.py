"""Wake-ups: an optional store capability that tells pollers when work may be ready.

A worker finds work by polling (``claim_runs``, then ``next_wake_at`` to know how long it may
sleep). Polling alone means an idle worker notices new work only at its next poll. A store
that can tell when a write made something claimable implements :class:`WorkNotifier`; the
worker registers its wake-up for its task queue and polls at once when told.

It is a hint, never a guarantee: a notification may be lost (a dropped connection) or
spurious (the work was claimed by someone else first), so the worker's own poll interval and
``next_wake_at`` stay the source of truth. The PostgreSQL store delivers notifications from
every process through ``LISTEN``/``NOTIFY``; the SQLite store only from writes made by the
same process (other processes on the file are found by polling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["HeldRunNotifier", "WorkNotifier"]


@runtime_checkable
class WorkNotifier(Protocol):
    """A store that can call back when work on a task queue may have become ready."""

    async def add_work_listener(
        self, task_queue: str, callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``callback`` (on the event loop, without arguments) whenever a write may have
        made a run or an activity task of ``task_queue`` claimable, or moved its next wake-up
        earlier. Returns a function that removes the listener."""
        ...


@runtime_checkable
class HeldRunNotifier(Protocol):
    """A store that can call back when another process appends an external event (a signal,
    a cancel request, a remote activity's result) to a run some worker holds.

    The holder's driver would otherwise see the event only when its keep-alive ends or its
    next append conflicts; told, it catches up at once. A hint like :class:`WorkNotifier`'s.
    """

    async def add_held_run_listener(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(run_id)`` (on the event loop) for every such append, whoever holds
        the run: the listener ignores runs it does not drive. Returns a function that removes
        the listener."""
        ...
