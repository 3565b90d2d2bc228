"""End-to-end helpers: real worker processes (``python -m engine.cli worker``) on a real
SQLite file, killed with real signals.

Tests here drive the order workflow of ``examples/orders.py``. Its activities append one
line per execution to a ledger file, written as the attempt starts, which is how a test
counts executions across processes that no longer exist. The test process itself only reads
the store (and starts runs), each time through a short-lived client, as an operator's
tooling would.

Waiting is always for an observable condition (an event in the history, a ledger line, a
run's owner) with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from examples.orders import (
    CHARGE_FAILURES_ENV,
    LEDGER_ENV,
    WORK_SECONDS_ENV,
    LedgerEntry,
    read_ledger,
)
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    RunInfo,
    RunQuery,
)
from sdk import open_client

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

WAIT = 20.0
"""Seconds any single condition may take before the test fails (generous for slow CI)."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Call ``probe`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def recorded_attempts(history: list[AnyEvent]) -> set[tuple[str, int]]:
    """``(activity, attempt)`` for every attempt whose outcome the history holds."""
    names = {e.seq: e.activity_type for e in history if isinstance(e, ActivityScheduled)}
    return {
        (names[e.seq], e.attempt)
        for e in history
        if isinstance(e, ActivityCompleted | ActivityFailed | ActivityTimedOut)
    }


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    identity: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_until(f"worker {self.identity} to be ready", self._ready)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.identity} exited early:\n{self.output()}")
        return "worker ready" in self.output()

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the worker."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """One store, one ledger, and the worker processes started on them."""

    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "perdura.db"

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def ledger_path(self) -> Path:
        return self.tmp / "ledger.tsv"

    def env(self, work_seconds: float, charge_failures: int = 0) -> dict[str, str]:
        pythonpath = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            LEDGER_ENV: str(self.ledger_path),
            WORK_SECONDS_ENV: str(work_seconds),
            CHARGE_FAILURES_ENV: str(charge_failures),
        }

    def start_worker(
        self,
        identity: str,
        *,
        lease_seconds: float = 10.0,
        work_seconds: float = 0.3,
        charge_failures: int = 0,
        extra: tuple[str, ...] = (),
    ) -> WorkerProcess:
        log = self.tmp / f"worker-{identity}-{len(self.workers)}.log"
        command = [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "--app",
            "examples.orders:app",
            "--store",
            self.store_url,
            "--identity",
            identity,
            "--lease-seconds",
            str(lease_seconds),
            *extra,
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env(work_seconds, charge_failures),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(proc, identity, log)
        self.workers.append(worker)
        return worker

    # -- reading and writing the store from the test process ------------------------------

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        async def go() -> Any:
            async with open_client(self.store_url) as client:
                return await fn(client)

        return asyncio.run(go())

    def start_order(self, order_id: str, *, amount: int = 4200, ship_after: float = 1.5) -> str:
        async def start(client: Any) -> str:
            handle = await client.start_workflow("order", order_id, amount, ship_after, id=order_id)
            run_id: str = handle.run_id
            return run_id

        run_id: str = self._run(start)
        return run_id

    def history(self, workflow_id: str) -> list[AnyEvent]:
        history: list[AnyEvent] = self._run(lambda c: c.get_handle(workflow_id).history())
        return history

    def run_info(self, workflow_id: str) -> RunInfo:
        info: RunInfo = self._run(lambda c: c.get_handle(workflow_id).run_info())
        return info

    def runs(self) -> list[RunInfo]:
        runs: list[RunInfo] = self._run(lambda c: c.list_runs(RunQuery(limit=1000)))
        return runs

    def result(self, workflow_id: str, timeout: float = WAIT) -> Any:
        async def result(client: Any) -> Any:
            async with asyncio.timeout(timeout):
                return await client.get_handle(workflow_id).result()

        return self._run(result)

    def wait_history(
        self, workflow_id: str, what: str, done: Callable[[list[AnyEvent]], bool]
    ) -> list[AnyEvent]:
        def probe() -> list[AnyEvent] | None:
            history = self.history(workflow_id)
            return history if done(history) else None

        return wait_until(what, probe)

    def ledger(self, order_id: str | None = None) -> list[LedgerEntry]:
        entries = read_ledger(self.ledger_path)
        return [e for e in entries if order_id is None or e.order_id == order_id]

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` through a plain sqlite3 connection, as a DBA would."""
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        return "\n".join(str(row[0]) for row in rows)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait(timeout=10)


def expected_result(order_id: str, amount: int = 4200) -> dict[str, Any]:
    return {
        "receipt": f"rcpt-{order_id}-{amount}",
        "tracking": f"trk-{order_id}",
        "points": amount // 100,
    }


def assert_order_result(result: Any, order_id: str) -> None:
    assert isinstance(result, dict)
    expected = expected_result(order_id)
    assert {k: result[k] for k in expected} == expected
