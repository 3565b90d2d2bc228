"""Helpers for graph tests (the fixtures are in ``conftest``): waiting for observable
conditions, each bounded by ``WAIT`` so a regression fails fast instead of hanging, and
worker processes that can be SIGKILLed.

A module of its own rather than ``conftest``: ``from conftest import ...`` would find another
test directory's ``conftest`` when several directories run in one session.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from engine import WorkflowHandle
from sdk.graph import describe_graph_run

T = TypeVar("T")

WAIT = 10.0
"""How long a test waits for something that should take milliseconds."""


async def eventually(
    handle: WorkflowHandle, probe: Callable[[], Awaitable[T | None]], within: float = WAIT
) -> T:
    """Call ``probe`` until it returns something other than ``None``."""
    async with asyncio.timeout(within):
        while True:
            found = await probe()
            if found is not None:
                return found
            info = await handle.run_info()
            await handle.client.store.wait_for_run(info.run_id, 0.05)


async def wait_until_waiting(handle: WorkflowHandle, within: float = WAIT) -> dict[str, Any]:
    """The run's description (from its history) once it is suspended on an interrupt."""

    async def probe() -> dict[str, Any] | None:
        description = describe_graph_run(await handle.history())
        return description if description.get("status") == "waiting" else None

    return await eventually(handle, probe, within)


# -- real worker processes --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``python -m engine.cli worker --app ...`` on a real SQLite file; SIGKILL-able."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while "worker ready" not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {within:g}s:\n{self.output()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: nothing at all runs in the worker afterwards."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
