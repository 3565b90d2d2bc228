"""The raw SQLite floor for each benchmark (runs in a child process).

What a user would write by hand with the same library and the same durability as perdura's
default (WAL, ``synchronous=FULL``): one ~100-byte row per step in a table shaped like
perdura's event log, ``INSERT`` then ``commit`` through aiosqlite's public API. It does no
workflow work at all, so ``perdura / raw`` is the runtime's overhead over the disk and the
library. The stdlib ``sqlite3`` loop (no thread hop) is printed beside it for reference.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from benchmarks._harness import CRASH_EXIT_CODE, Metrics, Params, checkpointed_size, rss_mb

ROW_PAYLOAD_BYTES = 56
"""Blob size of a row: with a 36-character run id and the event id, about 100 bytes."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (run_id TEXT NOT NULL, event_id INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (run_id, event_id)) WITHOUT ROWID"
)
INSERT = "INSERT INTO events (run_id, event_id, data) VALUES (?, ?, ?)"


def _run_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}-raw-bench"[:36]


def make_rows(
    run_id: str, first: int, count: int, rng: random.Random
) -> list[tuple[str, int, bytes]]:
    return [(run_id, first + i, rng.randbytes(ROW_PAYLOAD_BYTES)) for i in range(count)]


async def connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute(SCHEMA)
    await db.commit()
    return db


async def commit_each(db: aiosqlite.Connection, rows: list[tuple[str, int, bytes]]) -> float:
    started = time.perf_counter()
    for row in rows:
        await db.execute(INSERT, row)
        await db.commit()
    return time.perf_counter() - started


def _stdlib_commit_each(path: Path, rows: list[tuple[str, int, bytes]]) -> float:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(SCHEMA)
        db.commit()
        started = time.perf_counter()
        for row in rows:
            db.execute(INSERT, row)
            db.commit()
        return time.perf_counter() - started
    finally:
        db.close()


# -- 1. step latency -----------------------------------------------------------------------


def latency(params: Params) -> Metrics:
    """``steps`` rows, one commit each: the floor of one durable write per step."""
    steps: int = params["steps"]
    inner: int = params["inner"]
    folder = Path(params["folder"])
    rng = random.Random(params.get("seed", 1))

    async def main() -> list[float]:
        db = await connect(folder / "raw.db")
        try:
            await commit_each(db, make_rows("warmup", 1, 10, rng))
            return [
                await commit_each(db, make_rows(_run_id(rng), 1, steps, rng)) for _ in range(inner)
            ]
        finally:
            await db.close()

    samples = asyncio.run(main())
    stdlib = [
        _stdlib_commit_each(folder / "stdlib.db", make_rows(_run_id(rng), 1, steps, rng))
        for _ in range(inner)
    ]
    return {
        "us_per_step": [s / steps * 1e6 for s in samples],
        "stdlib_us_per_step": [s / steps * 1e6 for s in stdlib],
    }


# -- 2. throughput -------------------------------------------------------------------------


class _GroupCommit:
    """The least a group commit can do: queue rows, one ``executemany`` + ``commit`` for all
    rows queued meanwhile, then answer every writer. Public aiosqlite API only."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.rows: list[tuple[str, int, bytes]] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None
        self.commits = 0

    async def write(self, row: tuple[str, int, bytes]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rows.append(row)
        self.waiters.append(future)
        if self.task is None:
            self.task = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self.rows:
                rows, self.rows = self.rows, []
                waiters, self.waiters = self.waiters, []
                await self.db.executemany(INSERT, rows)
                await self.db.commit()
                self.commits += 1
                for waiter in waiters:
                    waiter.set_result(None)
        finally:
            self.task = None


def throughput(params: Params) -> Metrics:
    """``runs`` concurrent writers of ``steps`` sequential rows each, every row awaited until
    its group commit is durable: the ceiling for many runs sharing fsyncs."""
    runs: int = params["runs"]
    steps: int = params["steps"]
    rng = random.Random(params.get("seed", 1))

    async def main() -> Metrics:
        db = await connect(Path(params["folder"]) / "raw.db")
        try:
            group = _GroupCommit(db)

            async def writer(run: int) -> None:
                run_id = _run_id(rng)
                for step in range(steps):
                    await group.write((run_id, step + 1, rng.randbytes(ROW_PAYLOAD_BYTES)))

            started = time.perf_counter()
            await asyncio.gather(*(writer(i) for i in range(runs)))
            elapsed = time.perf_counter() - started
            return {
                "seconds": elapsed,
                "workflows_per_s": runs / elapsed,
                "steps_per_s": runs * steps / elapsed,
                "commits_per_step": group.commits / (runs * steps),
            }
        finally:
            await db.close()

    return asyncio.run(main())


# -- 3. recovery ---------------------------------------------------------------------------

_RECOVERY_RUN = "raw-recovery-run"


def recovery_crash(params: Params) -> Metrics:
    """Phase 1: ``crash_at`` rows committed one by one, then the process dies."""

    async def main() -> None:
        db = await connect(Path(params["folder"]) / "raw.db")
        rng = random.Random(1)
        await commit_each(db, make_rows(_RECOVERY_RUN, 1, params["crash_at"], rng))
        os._exit(CRASH_EXIT_CODE)

    asyncio.run(main())
    raise AssertionError("unreachable")


def recovery_resume(params: Params) -> Metrics:
    """Phase 2: open, read the whole log back (the least a resume must do), commit the next
    row (the first new step), then the rest one commit each."""
    steps: int = params["steps"]

    async def main() -> Metrics:
        t_start = time.perf_counter()
        db = await connect(Path(params["folder"]) / "raw.db")
        t_open = time.perf_counter()
        try:
            async with db.execute(
                "SELECT event_id, data FROM events WHERE run_id = ? ORDER BY event_id",
                (_RECOVERY_RUN,),
            ) as cursor:
                rows = list(await cursor.fetchall())
            done = len(rows)
            rng = random.Random(2)
            await db.execute(INSERT, (_RECOVERY_RUN, done + 1, rng.randbytes(ROW_PAYLOAD_BYTES)))
            await db.commit()
            t_first = time.perf_counter()
            await commit_each(db, make_rows(_RECOVERY_RUN, done + 2, steps - done - 1, rng))
            t_done = time.perf_counter()
        finally:
            await db.close()
        return {
            "open_ms": (t_open - t_start) * 1e3,
            "first_step_after_open_ms": (t_first - t_open) * 1e3,
            "first_step_from_start_ms": (t_first - t_start) * 1e3,
            "done_from_start_ms": (t_done - t_start) * 1e3,
            "reexecuted": 0,
            "first_index": done,
        }

    return asyncio.run(main())


# -- 5. memory -----------------------------------------------------------------------------


def memory(params: Params) -> Metrics:
    """The interpreter floor: a process with aiosqlite that wrote one timer row per run."""
    runs: int = params["runs"]

    async def main() -> Metrics:
        db = await connect(Path(params["folder"]) / "raw.db")
        try:
            await db.execute(
                "CREATE TABLE timers (run_id TEXT PRIMARY KEY, fire_at REAL) WITHOUT ROWID"
            )
            await db.executemany(
                "INSERT INTO timers VALUES (?, ?)",
                [(f"run-{i}", time.time() + 3600) for i in range(runs)],
            )
            await db.commit()
        finally:
            await db.close()
        return {"runs": runs, "rss_mb": rss_mb()}

    return asyncio.run(main())


# -- 6. storage ----------------------------------------------------------------------------


def storage(params: Params) -> Metrics:
    """``steps`` ~100-byte rows; database size after a WAL checkpoint, less an empty one."""
    steps: int = params["steps"]
    folder = Path(params["folder"])

    async def main() -> None:
        db = await connect(folder / "empty.db")
        await db.close()
        db = await connect(folder / "raw.db")
        try:
            await commit_each(db, make_rows(_run_id(random.Random(1)), 1, steps, random.Random(1)))
        finally:
            await db.close()

    asyncio.run(main())
    empty = checkpointed_size(folder / "empty.db")
    total = checkpointed_size(folder / "raw.db")
    return {"steps": steps, "bytes": total, "bytes_per_step": (total - empty) / steps}


# -- 7. fan-out ----------------------------------------------------------------------------


def fanout(params: Params) -> Metrics:
    """``activities`` rows in one transaction: the floor for a perfectly grouped fan-out."""
    n: int = params["activities"]
    inner: int = params["inner"]
    rng = random.Random(1)

    async def main() -> list[float]:
        db = await connect(Path(params["folder"]) / "raw.db")
        try:
            seconds: list[float] = []
            for _ in range(inner):
                rows = make_rows(_run_id(rng), 1, n, rng)
                started = time.perf_counter()
                await db.executemany(INSERT, rows)
                await db.commit()
                seconds.append(time.perf_counter() - started)
            return seconds
        finally:
            await db.close()

    return {"seconds": asyncio.run(main()), "commits": [1] * inner}


BENCHES: dict[str, Callable[[Params], Any]] = {
    "latency": latency,
    "throughput": throughput,
    "recovery_crash": recovery_crash,
    "recovery_resume": recovery_resume,
    "memory": memory,
    "storage": storage,
    "fanout": fanout,
}
