"""Moving a store's data: migration between stores, and SQLite backups and restores.

A user who outgrows the embedded SQLite store keeps every history: :func:`migrate` copies each
run of one store into another (either kind, either direction) through the store protocol
itself — ``create_run(history=…, activity_tasks=…)``, so the target projects status, close
time and pending timers from the copied events exactly as if they had been appended there —
and then verifies the copy run by run. :func:`backup_store` copies a SQLite store with the
online backup API while workers keep writing; :func:`restore_store` loads such a backup into
any store, verified the same way. A PostgreSQL store is backed up with ``pg_dump`` (see
docs/deployment.md).

What a copy does not carry over: leases (every open run is claimable at once on the target,
whose first worker replays it) and fencing tokens (they restart on the target). Run migrations
and restores with the workers of both stores stopped: a run that changes in the source while
it is being copied fails verification instead of being copied half-way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from ._errors import CorruptStoreError, RunNotFoundError, StoreError
from ._events import WorkflowStarted
from ._sqlite import SqliteStore
from ._store import RunInfo, RunQuery, Store

__all__ = ["MigrationReport", "backup_store", "migrate", "restore_store"]

_PAGE: Final = 1000
_CONCURRENCY: Final = 8

Progress = Callable[[int, int], None]
"""``progress(runs_done, runs_total)``, called after each run is copied."""


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`migrate` copied, checked and skipped."""

    source: str
    target: str
    runs: int
    """Runs copied (closed and open)."""
    open_runs: int
    events: int
    activity_tasks: int
    skipped: int = 0
    """Runs already in the target with the same history (``resume=True``)."""
    seconds: float = 0.0

    def summary(self) -> str:
        skipped = f", skipped {self.skipped} already there" if self.skipped else ""
        return (
            f"copied {self.runs} runs ({self.open_runs} open), {self.events} events and "
            f"{self.activity_tasks} activity tasks from {self.source} to {self.target} "
            f"in {self.seconds:.1f}s{skipped}; verified"
        )


async def migrate(
    source: Store,
    target: Store,
    *,
    progress: Progress | None = None,
    resume: bool = False,
    now: float | None = None,
) -> MigrationReport:
    """Copy every run of ``source`` into ``target``, oldest first, and verify the copy.

    Refuses a ``target`` that already holds runs, unless ``resume``: then runs already there
    (by run id) are checked to have the same history length and skipped, so an interrupted
    migration can be run again. Open runs become claimable on the target at ``now`` (default:
    the current time). Raises ``StoreError`` if the counts or any run's history length,
    status or events differ afterwards.
    """
    if source.url == target.url:
        raise StoreError(f"cannot migrate {source.url} onto itself")
    began = time.monotonic()
    now = time.time() if now is None else now
    existing = await target.count_runs(RunQuery())
    if existing and not resume:
        raise StoreError(
            f"target store {target.url} already holds {existing} runs; migrate into an empty "
            "store (or resume an interrupted migration with resume=True / --resume)"
        )
    runs = await _all_runs(source)
    total = len(runs)
    done = 0
    copied: list[RunInfo] = []
    skipped: list[RunInfo] = []
    counts = {"events": 0, "tasks": 0}
    slots = asyncio.Semaphore(_CONCURRENCY)

    async def copy(info: RunInfo) -> None:
        nonlocal done
        async with slots:
            history = await source.read_history(info.run_id)
            tasks = await source.list_activity_tasks(info.run_id)
            started = history[0]
            if not isinstance(started, WorkflowStarted):
                raise CorruptStoreError(
                    f"run {info.run_id} of {source.url} does not start with WorkflowStarted"
                )
            there = await _find(target, info.run_id) if resume else None
            if there is None:
                await target.create_run(
                    info.run_id,
                    started,
                    now=now,
                    history=history[1:],
                    activity_tasks=tasks,
                )
                copied.append(info)
                counts["events"] += len(history)
                counts["tasks"] += len(tasks)
            elif there.history_length != len(history):
                raise StoreError(
                    f"run {info.run_id} is already in {target.url} with "
                    f"{there.history_length} events, but {source.url} holds "
                    f"{len(history)}: refusing to resume over a different copy"
                )
            else:
                skipped.append(info)
            done += 1
            if progress is not None:
                progress(done, total)

    # Oldest first, in order of start: a workflow id's runs arrive in the order they ran.
    for start in range(0, total, _CONCURRENCY * 4):
        await asyncio.gather(*(copy(info) for info in runs[start : start + _CONCURRENCY * 4]))
    await _verify(source, target, runs, expected_total=existing + len(copied))
    return MigrationReport(
        source=source.url,
        target=target.url,
        runs=len(copied),
        open_runs=sum(1 for r in copied if r.status.is_open),
        events=counts["events"],
        activity_tasks=counts["tasks"],
        skipped=len(skipped),
        seconds=time.monotonic() - began,
    )


async def _find(store: Store, run_id: str) -> RunInfo | None:
    try:
        return await store.get_run(run_id)
    except RunNotFoundError:
        return None


async def _all_runs(store: Store) -> list[RunInfo]:
    """Every run, oldest first (``list_runs`` pages newest first)."""
    runs: list[RunInfo] = []
    while True:
        page = await store.list_runs(RunQuery(limit=_PAGE, offset=len(runs)))
        runs.extend(page)
        if len(page) < _PAGE:
            break
    runs.reverse()
    return runs


async def _verify(
    source: Store, target: Store, runs: list[RunInfo], *, expected_total: int
) -> None:
    problems: list[str] = []
    total = await target.count_runs(RunQuery())
    if total != expected_total:
        problems.append(f"the target holds {total} runs, expected {expected_total}")
    slots = asyncio.Semaphore(_CONCURRENCY)

    async def check(info: RunInfo) -> None:
        async with slots:
            there = await target.get_run(info.run_id)
            if there.history_length != info.history_length:
                problems.append(
                    f"run {info.run_id}: {there.history_length} events in the target, "
                    f"{info.history_length} in the source"
                )
            elif there.status is not info.status:
                problems.append(
                    f"run {info.run_id}: {there.status.value} in the target, "
                    f"{info.status.value} in the source"
                )
            elif await target.read_history(info.run_id) != await source.read_history(info.run_id):
                problems.append(f"run {info.run_id}: the copied events differ")

    await asyncio.gather(*(check(info) for info in runs))
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise StoreError(
            f"verifying the copy from {source.url} to {target.url} failed: {shown}{more}"
        )


async def backup_store(store: Store, destination: str | Path, *, overwrite: bool = False) -> Path:
    """Back a SQLite store up to the file ``destination`` while workers keep writing (the
    online backup API: one consistent snapshot). A PostgreSQL store is backed up with
    ``pg_dump``; asking for it here raises ``StoreError`` saying so."""
    if isinstance(store, SqliteStore):
        return await store.backup(destination, overwrite=overwrite)
    raise StoreError(
        f"{store.url} is not a SQLite store: back PostgreSQL up with pg_dump "
        "(pg_dump --schema=SCHEMA --format=custom), see docs/deployment.md"
    )


async def restore_store(
    backup: str | Path,
    target: Store,
    *,
    progress: Progress | None = None,
    resume: bool = False,
) -> MigrationReport:
    """Load a SQLite backup file (from :func:`backup_store`, or any perdura SQLite store)
    into ``target``, a store of either kind, verified like :func:`migrate`."""
    path = Path(backup)
    if not await asyncio.to_thread(path.is_file):
        raise StoreError(f"backup file {str(path)!r} does not exist")
    source = await SqliteStore.open(path)
    try:
        return await migrate(source, target, progress=progress, resume=resume)
    finally:
        await source.close()
