"""The workload of the multi-process tests: a short workflow of two activities.

Each activity appends one line to a ledger file (``$PERDURA_SCALEOUT_LEDGER``) as it
*finishes* — run id, activity seq and the pid of the process that ran it — with a single
``O_APPEND`` write, so lines from many processes never interleave. The test compares it with
the histories: a completed activity must have run once, or more only in processes that were
killed or paused while it was in flight (at-least-once, never "again after it was recorded").
``$PERDURA_SCALEOUT_WORK`` is how long each activity works (seconds, default 0).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import NamedTuple

from sdk import activity, workflow

__all__ = ["LEDGER_ENV", "WORK_ENV", "LedgerLine", "bump", "read_ledger", "short"]

LEDGER_ENV = "PERDURA_SCALEOUT_LEDGER"
WORK_ENV = "PERDURA_SCALEOUT_WORK"


class LedgerLine(NamedTuple):
    run_id: str
    seq: int
    pid: int


@activity.defn
async def bump(value: int, by: int) -> int:
    work = float(os.environ.get(WORK_ENV, "0") or 0)
    if work:
        await asyncio.sleep(work)
    info = activity.info()
    path = os.environ.get(LEDGER_ENV)
    if path:
        line = f"{info.run_id}\t{info.activity_id}\t{os.getpid()}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return value + by


@workflow.defn
async def short(n: int) -> int:
    first = await bump(n, 1)
    return await bump(first, 2)


def read_ledger(path: Path) -> list[LedgerLine]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines():
        run_id, seq, pid = raw.split("\t")
        lines.append(LedgerLine(run_id, int(seq), int(pid)))
    return lines
