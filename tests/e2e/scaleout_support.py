"""Helpers for the multi-process tests: worker processes on one store, killed, paused and
restarted with real signals, and the checks every such test ends with.

The test process starts runs and reads the store through its own store object, as an
operator's tooling would; it waits for observable conditions with deadlines, never for a
fixed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scaleout_app import LEDGER_ENV, WORK_ENV, read_ledger, short

from history import (
    ActivityCompleted,
    ActivityScheduled,
    PayloadConverter,
    RunQuery,
    RunStatus,
    Store,
    WorkflowCompleted,
)
from sdk import open_client

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("scaleout_worker.py")
QUEUE = "scaleout"


@dataclass
class WorkerProcess:
    identity: str
    proc: subprocess.Popen[bytes]
    log: Path
    paused: bool = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Fleet:
    """Worker processes on one store, and what happened to them."""

    tmp: Path
    store_url: str
    lease: float = 2.0
    work: float = 0.0
    workers: list[WorkerProcess] = field(default_factory=list)
    interrupted_pids: set[int] = field(default_factory=set)
    """Processes killed or paused: they may have run an activity whose result they never
    recorded (at-least-once), so they are allowed to appear twice in the ledger."""

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.tsv"

    def start(self, identity: str) -> WorkerProcess:
        log = self.tmp / f"{identity}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), str(WORKER.parent), os.environ.get("PYTHONPATH")) if p
            ),
            LEDGER_ENV: str(self.ledger),
            WORK_ENV: str(self.work),
        }
        command = [
            sys.executable,
            str(WORKER),
            "--store",
            self.store_url,
            "--identity",
            identity,
            "--lease",
            str(self.lease),
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(identity, proc, log)
        self.workers.append(worker)
        return worker

    async def wait_ready(self, worker: WorkerProcess, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while "worker ready" not in worker.output():
            if not worker.alive():
                raise AssertionError(f"{worker.identity} exited early:\n{worker.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker.identity} not ready after {within}s")
            await asyncio.sleep(0.05)

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no cleanup of any kind runs in the worker."""
        self.interrupted_pids.add(worker.proc.pid)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    def pause(self, worker: WorkerProcess) -> None:
        self.interrupted_pids.add(worker.proc.pid)
        worker.proc.send_signal(signal.SIGSTOP)
        worker.paused = True

    def resume(self, worker: WorkerProcess) -> None:
        worker.proc.send_signal(signal.SIGCONT)
        worker.paused = False

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive() and not w.paused]

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive():
                if worker.paused:
                    worker.proc.send_signal(signal.SIGCONT)
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"== {w.identity}\n{w.output()}" for w in self.workers)


async def start_runs(store: Store, count: int, *, prefix: str = "s") -> None:
    async with open_client(store) as client:
        for n in range(count):
            await client.start_workflow(short, n, id=f"{prefix}-{n}", task_queue=QUEUE)


async def wait_all_closed(store: Store, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        closed = await store.count_runs(RunQuery(status=RunStatus.COMPLETED))
        if closed >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {closed} of {count} runs completed after {within}s")
        await asyncio.sleep(0.1)


async def held_by(store: Store, owner: str) -> set[str]:
    """The open runs ``owner`` holds a lease on (expired or not)."""
    runs = await store.list_runs(RunQuery(status=RunStatus.RUNNING, limit=100_000))
    return {r.run_id for r in runs if r.owner == owner}


async def check_results_and_ledger(fleet: Fleet, store: Store, count: int, prefix: str) -> None:
    """Every run completed with ``n + 3``; each activity completed exactly once in its
    history; and ran more than once only in processes that were killed or paused."""
    converter = PayloadConverter()
    runs = await store.list_runs(RunQuery(limit=100_000))
    assert len(runs) == count
    wrong: list[str] = []
    completions: Counter[tuple[str, int]] = Counter()
    for info in runs:
        history = await store.read_history(info.run_id)
        last = history[-1]
        n = int(info.workflow_id.removeprefix(f"{prefix}-"))
        if not isinstance(last, WorkflowCompleted) or converter.decode(last.result) != n + 3:
            wrong.append(f"{info.workflow_id}: {last!r}")
        scheduled = Counter(e.seq for e in history if isinstance(e, ActivityScheduled))
        for event in history:
            if isinstance(event, ActivityCompleted):
                completions[info.run_id, event.seq] += 1
        assert set(scheduled.values()) <= {1}, f"{info.run_id} scheduled a step twice"
    assert wrong == []
    assert set(completions.values()) == {1}
    assert len(completions) == 2 * count
    executions = Counter((line.run_id, line.seq) for line in read_ledger(fleet.ledger))
    assert set(executions) == set(completions)
    by_survivors = Counter(
        (line.run_id, line.seq)
        for line in read_ledger(fleet.ledger)
        if line.pid not in fleet.interrupted_pids
    )
    twice = {key: n for key, n in by_survivors.items() if n > 1}
    assert twice == {}, f"activities run twice by processes never interrupted: {twice}"
