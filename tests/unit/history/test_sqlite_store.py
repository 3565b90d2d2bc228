"""What only the SQLite store does: group commit and online backups.

The protocol's behaviour (appends, fencing, leases, projections, listing, activity tasks,
copied runs) is specified once for every store in ``tests/conformance``. Every test here runs
against a real SQLite file; time is virtual (the store takes ``now`` from its caller).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from history import (
    ActivityScheduled,
    AppendConflictError,
    AppendRequest,
    AppendResult,
    Event,
    RunInfo,
    RunQuery,
    SqliteStore,
    Store,
    StoreError,
    TimerStarted,
    WorkflowStarted,
)
from history._sqlite import _reserve_wal

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()


def started(workflow_id: str) -> WorkflowStarted:
    return WorkflowStarted(
        timestamp=T0, workflow_type="Order", workflow_id=workflow_id, task_queue="main"
    )


def scheduled(seq: int) -> ActivityScheduled:
    return ActivityScheduled(timestamp=T0, seq=seq, activity_type="charge", task_queue="acts")


async def new_run(store: Store, run_id: str) -> RunInfo:
    return await store.create_run(run_id, started(f"wf-{run_id}"), now=NOW)


async def external_append(store: Store, run_id: str, events: list[Event]) -> AppendResult:
    [result] = await store.append([AppendRequest(run_id=run_id, events=events, now=NOW)])
    return result


def files_named(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_appends_from_many_runs_share_fewer_transactions_than_requests(
    store: SqliteStore,
) -> None:
    run_ids = [f"run-{i}" for i in range(40)]
    await asyncio.gather(*(new_run(store, r) for r in run_ids))
    commits_before = store.commits

    results = await asyncio.gather(
        *(external_append(store, r, [scheduled(1), scheduled(2)]) for r in run_ids)
    )

    assert all(r.error is None for r in results)
    assert store.commits - commits_before < len(run_ids)


async def test_the_requests_of_one_append_call_share_one_transaction(store: SqliteStore) -> None:
    for run_id in ("run-1", "run-2", "run-3"):
        await new_run(store, run_id)
    timer = TimerStarted(timestamp=T0, seq=1, fire_at=T0, duration=0)
    commits_before = store.commits

    results = await store.append(
        [
            AppendRequest(run_id="run-1", events=[timer], now=NOW),
            AppendRequest(run_id="run-2", events=[timer], now=NOW, expected_next_event_id=9),
            AppendRequest(run_id="run-3", events=[timer], now=NOW),
        ]
    )

    assert store.commits == commits_before + 1
    assert [type(r.error) for r in results] == [type(None), AppendConflictError, type(None)]


# -- point reads ------------------------------------------------------------------------------


async def test_a_run_is_read_by_id_while_the_reader_thread_is_busy(store: SqliteStore) -> None:
    await new_run(store, "run-1")
    entered, release = threading.Event(), threading.Event()

    def long_read(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(30)

    scan = asyncio.ensure_future(store._read(long_read, "a long scan"))
    await asyncio.to_thread(entered.wait, 10)
    try:
        # Point reads are made on the event loop's thread: no queueing behind the scan.
        async with asyncio.timeout(5):
            by_id = await store.get_run("run-1")
            by_workflow = await store.find_run("wf-run-1")
    finally:
        release.set()
        await scan

    assert by_id.run_id == by_workflow.run_id == "run-1"


async def test_a_run_read_from_another_thread_goes_through_the_reader_thread(
    store: SqliteStore,
) -> None:
    await new_run(store, "run-1")

    info = await asyncio.to_thread(asyncio.run, store.get_run("run-1"))

    assert info.run_id == "run-1"


# -- the write-ahead log --------------------------------------------------------------------

#: The WAL between two checkpoints: 1,000 frames of a 24-byte header and a 4 KiB page.
FULL_WAL_BYTES = 1000 * (4096 + 24)


async def test_opening_a_store_reserves_its_wal_at_full_size(
    store: SqliteStore, db_path: Path
) -> None:
    # Commits then overwrite reserved space instead of growing the file, which costs an
    # fdatasync a journal write of the new size.
    assert db_path.with_name(db_path.name + "-wal").stat().st_size >= FULL_WAL_BYTES


async def test_reserving_the_wal_leaves_the_database_as_it_was(db_path: Path) -> None:
    first = await SqliteStore.open(db_path)
    await new_run(first, "run-1")
    history = await first.read_history("run-1")
    await first.close()

    reopened = await SqliteStore.open(db_path)  # reserves the WAL again (close removed it)
    try:
        assert await reopened.read_history("run-1") == history
        assert [info.run_id for info in await reopened.list_runs(RunQuery())] == ["run-1"]
        assert await reopened.integrity_check() == "ok"
    finally:
        await reopened.close()
    tables = sqlite3.connect(db_path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("perdura_wal_reserve",) not in tables


async def test_the_wal_is_not_reserved_while_another_process_holds_the_write_lock(
    db_path: Path,
) -> None:
    await (await SqliteStore.open(db_path)).close()
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        _reserve_wal(conn, db_path)  # an optimisation: it gives way instead of waiting
        reserved = db_path.with_name(db_path.name + "-wal").stat().st_size
    finally:
        conn.close()
        lock.execute("ROLLBACK")
        lock.close()

    assert reserved < FULL_WAL_BYTES


# -- online backup ----------------------------------------------------------------------------


async def test_a_backup_holds_every_run_and_event_of_the_store(
    store: SqliteStore, tmp_path: Path
) -> None:
    for i in range(5):
        await new_run(store, f"run-{i}")
        (await external_append(store, f"run-{i}", [scheduled(1), scheduled(2)])).unwrap()

    written = await store.backup(tmp_path / "copy.db")

    copy = await SqliteStore.open(written)
    try:
        assert await copy.count_runs(RunQuery()) == 5
        assert [len(await copy.read_history(f"run-{i}")) for i in range(5)] == [3] * 5
        assert await copy.integrity_check() == "ok"
    finally:
        await copy.close()


async def test_a_backup_taken_while_appends_go_on_is_a_consistent_snapshot(
    store: SqliteStore, tmp_path: Path
) -> None:
    run_ids = [f"run-{i}" for i in range(20)]
    await asyncio.gather(*(new_run(store, r) for r in run_ids))
    stop = asyncio.Event()

    async def keep_appending() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            await asyncio.gather(*(external_append(store, r, [scheduled(seq)]) for r in run_ids))

    writer = asyncio.create_task(keep_appending())
    await asyncio.sleep(0.05)
    await store.backup(tmp_path / "copy.db")
    stop.set()
    await writer

    copy = await SqliteStore.open(tmp_path / "copy.db")
    try:
        # Every run's recorded length matches its events (read_history checks it), and no
        # event is half-written: each history is a gap-free prefix of the live one.
        for run_id in run_ids:
            copied = await copy.read_history(run_id)
            live = await store.read_history(run_id)
            assert copied == live[: len(copied)]
            assert (await copy.get_run(run_id)).history_length == len(copied)
    finally:
        await copy.close()


async def test_a_backup_is_one_self_contained_file(store: SqliteStore, tmp_path: Path) -> None:
    await new_run(store, "run-1")

    await store.backup(tmp_path / "copy.db")

    assert files_named(tmp_path, "copy") == ["copy.db"]
    conn = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_backup_refuses_to_overwrite_an_existing_file(
    store: SqliteStore, tmp_path: Path
) -> None:
    existing = tmp_path / "copy.db"
    existing.write_bytes(b"keep me")

    with pytest.raises(StoreError, match="already exists"):
        await store.backup(existing)

    assert existing.read_bytes() == b"keep me"


async def test_a_backup_overwrites_an_existing_file_when_asked(
    store: SqliteStore, tmp_path: Path
) -> None:
    await new_run(store, "run-1")
    existing = tmp_path / "copy.db"
    existing.write_bytes(b"old")

    await store.backup(existing, overwrite=True)

    copy = await SqliteStore.open(existing)
    try:
        assert await copy.count_runs(RunQuery()) == 1
    finally:
        await copy.close()


async def test_a_backup_into_a_missing_folder_raises_store_error(
    store: SqliteStore, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await store.backup(tmp_path / "missing" / "copy.db")


async def test_a_store_cannot_be_backed_up_onto_itself(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="onto itself"):
        await store.backup(store.path, overwrite=True)


async def test_a_closed_store_refuses_to_back_up(db_path: Path, tmp_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.backup(tmp_path / "copy.db")
