"""Fixtures for graph tests: real SQLite files in ``tmp_path``, real workers in-process.

Tests wait for observable conditions (a run's status, an event in its history, what the run
says it waits for), each bounded by ``WAIT`` so a regression fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import WorkflowHandle
from sdk.graph import describe_graph_run

T = TypeVar("T")

WAIT = 10.0
"""How long a test waits for something that should take milliseconds."""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "graph.db"


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


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn_worker(app, store_url, queue, identity, env={...})``: a worker process."""
    started: list[WorkerProcess] = []

    def spawn(
        app: str, store_url: str, queue: str, identity: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{identity}-{len(started)}.log"
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        command = [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "--app",
            app,
            "--store",
            store_url,
            "--task-queue",
            queue,
            "--identity",
            identity,
            "--lease-seconds",
            "1",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(proc, log)
        started.append(worker)
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.kill()
