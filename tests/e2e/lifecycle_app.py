"""The app the lifecycle end-to-end tests run in real worker processes: a parent that fans
out to child workflows, and a chain of runs that continues as new.

Every execution of ``lifecycle_step`` appends one line (``owner, n, attempt, pid``) to the
file named by ``$PERDURA_LIFECYCLE_LEDGER`` with a single ``write`` on an ``O_APPEND``
descriptor as the attempt starts, so the ledger survives a SIGKILL and counts executions
across processes. ``$PERDURA_STEP_SECONDS`` makes each step take that long, which gives a test
the time to kill a worker while children (or a chain) are half done.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sdk import App, RetryPolicy, activity, workflow

__all__ = ["LEDGER_ENV", "STEP_SECONDS_ENV", "app", "read_steps"]

LEDGER_ENV = "PERDURA_LIFECYCLE_LEDGER"
STEP_SECONDS_ENV = "PERDURA_STEP_SECONDS"


@activity.defn(name="lifecycle_step", retry_policy=RetryPolicy(initial_interval=0.1))
async def step(owner: str, n: int) -> int:
    info = activity.info()
    ledger = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(ledger, f"{owner}\t{n}\t{info.attempt}\t{os.getpid()}\n".encode())
    finally:
        os.close(ledger)
    await asyncio.sleep(float(os.environ.get(STEP_SECONDS_ENV, "0")))
    return n


@workflow.defn(name="lifecycle_child")
async def child(name: str) -> int:
    return sum([await step(name, n) for n in (1, 2, 3)])


@workflow.defn(name="lifecycle_fan_out")
async def fan_out(count: int) -> int:
    results = await asyncio.gather(
        *(workflow.execute_child_workflow(child, f"c{i}", id=f"c{i}") for i in range(count))
    )
    return sum(results)


@workflow.defn(name="lifecycle_countdown")
async def countdown(n: int, total: int) -> int:
    if n == 0:
        return total
    workflow.continue_as_new(n - 1, total + await step("countdown", n))


app = App(workflows=[fan_out, child, countdown], activities=[step])


def read_steps(path: str | Path) -> list[tuple[str, int, int, int]]:
    """``(owner, n, attempt, pid)`` for every step execution so far, in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        owner, n, attempt, pid = line.split("\t")
        rows.append((owner, int(n), int(attempt), int(pid)))
    return rows
