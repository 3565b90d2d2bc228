"""The app the long-activity checkpoint test runs in real worker processes.

``process_items`` works through ``total`` items, one at a time, and checkpoints its progress
with ``activity.heartbeat(next_item)`` every ``every`` items. A retried attempt — after a crash,
a lost lease or a heartbeat timeout — reads the last recorded checkpoint from
``activity.info().heartbeat_details`` and resumes there instead of starting over.

Each item processed appends one line (``item, attempt, pid``) to the file named by
``$PERDURA_ITEMS_LEDGER`` with a single ``write`` on an ``O_APPEND`` descriptor, so a line is
either fully there or not at all when the process is SIGKILLed: the ledger is the ground truth
of which items were processed, and how often. ``$PERDURA_SLOW_FROM`` makes every item from that
index on take ``$PERDURA_SLOW_SECONDS`` (a downstream that slowed down), which lets a test kill
the worker at a chosen place between two checkpoints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sdk import App, RetryPolicy, activity, workflow

__all__ = ["ITEMS_LEDGER_ENV", "SLOW_FROM_ENV", "SLOW_SECONDS_ENV", "app", "read_items"]

ITEMS_LEDGER_ENV = "PERDURA_ITEMS_LEDGER"
SLOW_FROM_ENV = "PERDURA_SLOW_FROM"
SLOW_SECONDS_ENV = "PERDURA_SLOW_SECONDS"


@activity.defn(
    name="process_items",
    heartbeat_timeout=10,
    start_to_close_timeout=300,
    retry_policy=RetryPolicy(initial_interval=0.1),
)
def process_items(total: int, every: int) -> dict[str, int]:
    info = activity.info()
    start = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
    slow_from = int(os.environ.get(SLOW_FROM_ENV, "-1"))
    slow_seconds = float(os.environ.get(SLOW_SECONDS_ENV, "0.01"))
    ledger = os.open(os.environ[ITEMS_LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for item in range(start, total):
            if 0 <= slow_from <= item:
                time.sleep(slow_seconds)
            os.write(ledger, f"{item}\t{info.attempt}\t{os.getpid()}\n".encode())
            if (item + 1) % every == 0:
                activity.heartbeat(item + 1)  # the checkpoint: resume at item + 1
    finally:
        os.close(ledger)
    return {"resumed_from": start, "processed": total - start}


@workflow.defn(name="batch")
async def batch(total: int, every: int) -> dict[str, int]:
    outcome: dict[str, int] = await process_items(total, every)
    return outcome


app = App(workflows=[batch], activities=[process_items])


def read_items(path: str | Path) -> list[tuple[int, int, int]]:
    """``(item, attempt, pid)`` for every item processed so far, in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        item, attempt, pid = line.split("\t")
        rows.append((int(item), int(attempt), int(pid)))
    return rows
