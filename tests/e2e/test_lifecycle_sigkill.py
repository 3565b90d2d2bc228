"""Child workflows and continue-as-new survive a SIGKILLed worker process.

A parent fans out to 40 children (3 activities each); its worker is killed with SIGKILL while
the children are half done, and a worker started on another "machine" (another identity)
takes every run over once the dead worker's leases expire. A chain of runs continuing as new
is killed mid-chain the same way. The step ledger, written by the worker processes
themselves, proves that no activity whose completion was recorded before the kill ran again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_support import ROOT, Cluster, WorkerProcess, wait_until
from lifecycle_app import LEDGER_ENV, STEP_SECONDS_ENV, read_steps

from engine import Client
from history import (
    ActivityCompleted,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowStarted,
    RunQuery,
    RunStatus,
    WorkflowCompleted,
)

pytestmark = pytest.mark.slow

CHILDREN = 40


def _start_worker(cluster: Cluster, identity: str) -> WorkerProcess:
    log = cluster.tmp / f"worker-{identity}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        LEDGER_ENV: str(cluster.tmp / "steps.tsv"),
        STEP_SECONDS_ENV: "0.3",
    }
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        "--app",
        "lifecycle_app:app",
        "--app-dir",
        str(Path(__file__).parent),
        "--store",
        cluster.store_url,
        "--identity",
        identity,
        "--lease-seconds",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = WorkerProcess(proc, identity, log)
    cluster.workers.append(worker)
    return worker


def _recorded_steps(cluster: Cluster, workflow_id: str | None = None) -> set[tuple[str, int]]:
    """``(owner, n)`` of every step whose completion the store holds."""

    async def read(client: Client) -> set[tuple[str, int]]:
        recorded = set()
        runs = await client.list_runs(RunQuery(workflow_id=workflow_id, limit=1000))
        for info in runs:
            history = await client.store.read_history(info.run_id)
            args = {
                e.seq: [client.converter.decode(a) for a in e.args]
                for e in history
                if isinstance(e, ActivityScheduled)
            }
            for event in history:
                if isinstance(event, ActivityCompleted):
                    owner, n = args[event.seq]
                    recorded.add((owner, n))
        return recorded

    result: set[tuple[str, int]] = cluster._run(read)
    return result


def test_a_fan_out_of_children_survives_a_sigkilled_worker(cluster: Cluster) -> None:
    ledger = cluster.tmp / "steps.tsv"
    first = _start_worker(cluster, "worker-a")
    first.wait_ready()

    async def start(client: Client) -> None:
        await client.start_workflow("lifecycle_fan_out", CHILDREN, id="fan-out")

    cluster._run(start)
    # Every child has run step 1 and some are in step 2: half done.
    wait_until(
        "children to be half done", lambda: len(read_steps(ledger)) >= CHILDREN + CHILDREN // 2
    )
    first.kill()
    recorded_before = _recorded_steps(cluster)
    executed_before = Counter((owner, n) for owner, n, _, _ in read_steps(ledger))
    assert recorded_before, "nothing was recorded before the kill"
    assert len(recorded_before) < 3 * CHILDREN, "the fan-out finished before the kill"

    second = _start_worker(cluster, "worker-b")  # takes over once the 1 s leases expire
    assert cluster.result("fan-out", timeout=60) == CHILDREN * 6

    executions = Counter((owner, n) for owner, n, _, _ in read_steps(ledger))
    assert set(executions) == {(f"c{i}", n) for i in range(CHILDREN) for n in (1, 2, 3)}
    rerun = sorted(key for key in recorded_before if executions[key] != executed_before[key])
    assert rerun == [], f"recorded before the kill but ran again: {rerun}"
    assert max(executions.values()) <= 2  # only attempts in flight at the kill ran twice
    assert {pid for _, _, _, pid in read_steps(ledger)} <= {first.pid, second.pid}

    runs = cluster.runs()
    children = [r for r in runs if r.workflow_type == "lifecycle_child"]
    assert sorted(r.workflow_id for r in children) == sorted(f"c{i}" for i in range(CHILDREN))
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    parent = cluster.history("fan-out")
    assert sum(isinstance(e, ChildWorkflowStarted) for e in parent) == CHILDREN
    assert sum(isinstance(e, ChildWorkflowCompleted) for e in parent) == CHILDREN
    for i in range(CHILDREN):
        history = cluster.history(f"c{i}")
        assert sum(isinstance(e, WorkflowCompleted) for e in history) == 1
        assert sum(isinstance(e, ActivityCompleted) for e in history) == 3
    assert cluster.integrity_check() == "ok"


def test_a_continue_as_new_chain_survives_a_sigkilled_worker(cluster: Cluster) -> None:
    ledger = cluster.tmp / "steps.tsv"
    first = _start_worker(cluster, "worker-a")
    first.wait_ready()

    async def start(client: Client) -> None:
        await client.start_workflow("lifecycle_countdown", 8, 0, id="chain")

    cluster._run(start)
    wait_until("the third run's step", lambda: len(read_steps(ledger)) >= 3)
    first.kill()
    recorded_before = _recorded_steps(cluster, "chain")
    executed_before = Counter((owner, n) for owner, n, _, _ in read_steps(ledger))
    assert recorded_before

    _start_worker(cluster, "worker-b")
    assert cluster.result("chain", timeout=60) == sum(range(1, 9))

    executions = Counter((owner, n) for owner, n, _, _ in read_steps(ledger))
    assert set(executions) == {("countdown", n) for n in range(1, 9)}
    rerun = sorted(key for key in recorded_before if executions[key] != executed_before[key])
    assert rerun == [], f"recorded before the kill but ran again: {rerun}"
    runs: list[Any] = cluster.runs()
    assert {r.workflow_id for r in runs} == {"chain"}
    assert Counter(r.status for r in runs) == {
        RunStatus.CONTINUED_AS_NEW: 8,
        RunStatus.COMPLETED: 1,
    }
    assert cluster.integrity_check() == "ok"
