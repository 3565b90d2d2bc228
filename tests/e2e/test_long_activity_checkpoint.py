"""A long-running activity resumes from its last heartbeat checkpoint after its worker is
SIGKILLed: an activity processing 10,000 items, checkpointing every 100, is killed mid-way
between two checkpoints; the worker that takes the run over retries the activity, which
resumes from the last recorded checkpoint. Counting from the items ledger (one line per item
processed, written by the worker processes themselves): no item is lost, and at most 100 —
the items since the last checkpoint — are processed twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from checkpoint_app import ITEMS_LEDGER_ENV, SLOW_FROM_ENV, SLOW_SECONDS_ENV, read_items
from e2e_support import ROOT, Cluster, WorkerProcess, wait_until

from engine import Client
from history import ActivityCompleted, ActivityHeartbeat, ActivityScheduled, PayloadConverter

pytestmark = pytest.mark.slow

ITEMS = 10_000
EVERY = 100
KILL_CHECKPOINT = 5_000
"""The first worker slows down from this item on; it is killed after the checkpoint there is
recorded and half an interval later, i.e. mid-way between two checkpoints."""
KILL_AFTER = KILL_CHECKPOINT + EVERY // 2


def _start_worker(
    cluster: Cluster, identity: str, *, slow_from: int | None = None
) -> WorkerProcess:
    log = cluster.tmp / f"worker-{identity}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        ITEMS_LEDGER_ENV: str(cluster.tmp / "items.tsv"),
        SLOW_SECONDS_ENV: "0.01",
    }
    if slow_from is not None:
        env[SLOW_FROM_ENV] = str(slow_from)
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        "--app",
        "checkpoint_app:app",
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


def _checkpoints(cluster: Cluster, workflow_id: str) -> list[int]:
    converter = PayloadConverter()
    return [
        converter.decode(e.details[0])
        for e in cluster.history(workflow_id)
        if isinstance(e, ActivityHeartbeat)
    ]


def test_killed_long_activity_resumes_from_its_last_checkpoint(cluster: Cluster) -> None:
    items_path = cluster.tmp / "items.tsv"
    first = _start_worker(cluster, "worker-a", slow_from=KILL_CHECKPOINT)
    first.wait_ready()

    async def start(client: Client) -> str:
        handle = await client.start_workflow("batch", ITEMS, EVERY, id="batch-1")
        return str(handle.run_id)

    cluster._run(start)
    # Mid-way between two checkpoints: the one at KILL_CHECKPOINT is durable, the activity
    # is half an interval past it, and the next checkpoint is half an interval away.
    wait_until(
        f"checkpoint {KILL_CHECKPOINT} to be recorded",
        lambda: KILL_CHECKPOINT in _checkpoints(cluster, "batch-1"),
    )
    wait_until(
        f"item {KILL_AFTER} to be processed", lambda: len(read_items(items_path)) > KILL_AFTER
    )
    first.kill()

    before_kill = read_items(items_path)
    checkpoint_at_kill = max(_checkpoints(cluster, "batch-1"))
    assert checkpoint_at_kill == KILL_CHECKPOINT
    reached = max(item for item, _, _ in before_kill)
    assert KILL_AFTER <= reached < KILL_CHECKPOINT + EVERY  # killed between two checkpoints
    assert [i for i, _, _ in before_kill] == list(range(reached + 1))  # in order, none skipped

    # Another machine takes over once the dead worker's lease (1 s) expires.
    second = _start_worker(cluster, "worker-b")
    result = cluster.result("batch-1")

    assert result == {"resumed_from": KILL_CHECKPOINT, "processed": ITEMS - KILL_CHECKPOINT}
    processed = read_items(items_path)
    counts = Counter(item for item, _, _ in processed)
    assert set(counts) == set(range(ITEMS))  # every item processed, none lost
    twice = sorted(item for item, n in counts.items() if n > 1)
    assert max(counts.values()) == 2
    assert twice == list(range(KILL_CHECKPOINT, reached + 1))  # only those since the checkpoint
    assert 0 < len(twice) <= EVERY
    # The second worker's run of the activity starts exactly at the checkpoint.
    after_kill = processed[len(before_kill) :]
    assert {pid for _, _, pid in after_kill} == {second.pid}
    assert [item for item, _, _ in after_kill] == list(range(KILL_CHECKPOINT, ITEMS))

    history = cluster.history("batch-1")
    assert sum(isinstance(e, ActivityScheduled) for e in history) == 1
    assert sum(isinstance(e, ActivityCompleted) for e in history) == 1
    checkpoints = _checkpoints(cluster, "batch-1")
    assert checkpoints == sorted(checkpoints)
    assert KILL_CHECKPOINT in checkpoints
    assert cluster.integrity_check() == "ok"
