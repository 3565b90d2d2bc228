"""(b) A long-running node that works through 1,000 items and checkpoints every 100.

``prepare -> process -> summarize``. ``process`` is one activity that may run for minutes:
it reports progress with ``activity.heartbeat(checkpoint, checksum, position)`` every 10
items and moves its checkpoint every 100. When the worker running it dies, the attempt that
takes over reads the last recorded heartbeat from ``activity.info().heartbeat_details`` and
resumes at the checkpoint; at most the 100 items since the last checkpoint are processed
twice, none is lost. Its ``heartbeat_timeout`` declares an attempt that stops reporting lost.

Environment: ``$PERDURA_BATCH_LEDGER`` (a file that gets one ``item\\tattempt\\tpid`` line per
item processed, to count executions across processes) and ``$PERDURA_BATCH_ITEM_SECONDS``
(time per item, default 0.002).

Serve it with ``perdura worker --app examples.graph.batch:graph``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import msgspec

from sdk import RetryPolicy, activity, open_client, open_worker
from sdk.graph import END, START, StateGraph

__all__ = [
    "ITEM_SECONDS_ENV",
    "LEDGER_ENV",
    "Batch",
    "expected_checksum",
    "graph",
    "main",
    "read_items",
]

LEDGER_ENV = "PERDURA_BATCH_LEDGER"
ITEM_SECONDS_ENV = "PERDURA_BATCH_ITEM_SECONDS"


class Batch(msgspec.Struct, kw_only=True):
    total: int = 1000
    every: int = 100
    items: list[int] = []
    resumed_from: int = 0
    processed: int = 0
    checksum: int = 0
    summary: str = ""


def prepare(batch: Batch) -> dict[str, list[int]]:
    return {"items": list(range(batch.total))}


def _work(item: int) -> int:
    return (item * item + 7) % 1_000_003


def process(batch: Batch) -> dict[str, int]:
    info = activity.info()
    start, checksum = (0, 0)
    if info.heartbeat_details:
        start, checksum = int(info.heartbeat_details[0]), int(info.heartbeat_details[1])
    pause = float(os.environ.get(ITEM_SECONDS_ENV, "0.002"))
    ledger_path = os.environ.get(LEDGER_ENV)
    ledger = (
        os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if ledger_path else None
    )
    checkpoint, at_checkpoint = start, checksum
    try:
        for position in range(start, len(batch.items)):
            item = batch.items[position]
            if pause:
                time.sleep(pause)
            checksum = (checksum + _work(item)) % 1_000_000_007
            if ledger is not None:
                os.write(ledger, f"{item}\t{info.attempt}\t{os.getpid()}\n".encode())
            done = position + 1
            if done % batch.every == 0:
                checkpoint, at_checkpoint = done, checksum
                activity.heartbeat(checkpoint, at_checkpoint, done)  # checkpoint
            elif done % 10 == 0:
                activity.heartbeat(checkpoint, at_checkpoint, done)  # progress only
    finally:
        if ledger is not None:
            os.close(ledger)
    return {"resumed_from": start, "processed": len(batch.items) - start, "checksum": checksum}


def summarize(batch: Batch) -> dict[str, str]:
    return {"summary": f"{len(batch.items)} items, checksum {batch.checksum}"}


builder = StateGraph(Batch)
builder.add_node("prepare", prepare)
builder.add_node(
    "process",
    process,
    timeout=600,
    heartbeat_timeout=10,
    retry_policy=RetryPolicy(initial_interval=0.1, maximum_attempts=10),
)
builder.add_node("summarize", summarize)
builder.add_edge(START, "prepare")
builder.add_edge("prepare", "process")
builder.add_edge("process", "summarize")
builder.add_edge("summarize", END)
graph = builder.compile(name="batch-graph")


def expected_checksum(total: int = 1000) -> int:
    checksum = 0
    for item in range(total):
        checksum = (checksum + _work(item)) % 1_000_000_007
    return checksum


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


async def main(store: str = "sqlite:///batch.db") -> Batch:
    async with open_client(store) as client:
        async with open_worker(
            client, task_queue="batch", workflows=graph.workflows, activities=graph.activities
        ):
            handle = await graph.start(client, Batch(), id="batch-1", task_queue="batch")
            result: Batch = await handle.result()
            return result


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:])).summary)
