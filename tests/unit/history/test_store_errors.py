"""Bad stores and bad URLs get a clear StoreError, and nothing on disk is harmed.

Files are damaged with plain file operations and the ``sqlite3`` module after the store has
been closed (and so checkpointed), the way an operator's disk or another program would.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from history import (
    DEFAULT_STORE_URL,
    STORE_URL_ENV,
    ActivityScheduled,
    ActivityTaskSpec,
    AppendRequest,
    CorruptStoreError,
    Payload,
    RunQuery,
    RunStatus,
    SchemaVersionError,
    SqliteStore,
    StoreError,
    TimerStarted,
    WorkflowCompleted,
    WorkflowStarted,
    encode_event,
    open_store,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()
PERDURA_APPLICATION_ID = 0x50455244  # "PERD"


def started(workflow_id: str, *, size: int = 0) -> WorkflowStarted:
    return WorkflowStarted(
        timestamp=T0,
        workflow_type="Order",
        workflow_id=workflow_id,
        task_queue="main",
        args=(Payload("json", b'"' + b"x" * size + b'"'),),
    )


def scheduled(seq: int) -> ActivityScheduled:
    return ActivityScheduled(timestamp=T0, seq=seq, activity_type="charge", task_queue="acts")


async def write_store(path: Path, *, runs: int = 2, events_per_run: int = 3, size: int = 0) -> None:
    """A closed store holding ``runs`` runs of ``1 + events_per_run`` events each."""
    store = await SqliteStore.open(path)
    try:
        run_ids = [f"run-{i}" for i in range(runs)]
        await asyncio.gather(
            *(store.create_run(r, started(f"wf-{r}", size=size), now=NOW) for r in run_ids)
        )
        events = [scheduled(seq) for seq in range(1, events_per_run + 1)]
        await store.append([AppendRequest(run_id=r, events=events, now=NOW) for r in run_ids])
    finally:
        await store.close()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def contents(path: Path) -> bytes:
    return path.read_bytes()


def truncate(path: Path, *, fraction: float = 1.0, keep: int | None = None) -> None:
    """Cut ``path`` to a fraction of its size, or to its first ``keep`` bytes."""
    with path.open("r+b") as file:
        file.truncate(int(os.path.getsize(path) * fraction) if keep is None else keep)


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Change a closed store behind perdura's back."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def open_and_read_everything(path: Path) -> None:
    store = await SqliteStore.open(path)
    try:
        for run in await store.list_runs(RunQuery(limit=10_000)):
            await store.read_history(run.run_id)
        await store.pending_timers()
    finally:
        await store.close()


# -- files that are not perdura stores ------------------------------------------------------


NOT_SQLITE: dict[str, bytes] = {
    "text": b"order_id,amount\n1,20.00\n2,35.50\n" * 200,
    "json": b'{"runs": []}',
    "binary": bytes(range(256)) * 64,
    "sqlite_lookalike": b"SQLite format 3\x00" + b"\xff" * 4080,
}


@pytest.mark.parametrize("content", NOT_SQLITE.values(), ids=NOT_SQLITE.keys())
async def test_opening_a_file_that_is_not_sqlite_raises_corrupt_store_error_naming_the_path(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(content)

    with pytest.raises(CorruptStoreError, match=str(path)):
        await SqliteStore.open(path)


@pytest.mark.parametrize("content", NOT_SQLITE.values(), ids=NOT_SQLITE.keys())
async def test_a_file_that_is_not_sqlite_is_left_unchanged_byte_for_byte(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(content)

    with pytest.raises(CorruptStoreError):
        await SqliteStore.open(path)

    assert path.read_bytes() == content
    assert siblings(path) == ["orders.csv"]


@pytest.fixture
def foreign_db(tmp_path: Path) -> Path:
    """Another application's SQLite database, in the default rollback-journal mode."""
    path = tmp_path / "crm.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO customers (name) VALUES (?)", [("Ada",), ("Grace",)])
    conn.commit()
    conn.close()
    return path


async def test_opening_another_applications_sqlite_database_raises_corrupt_store_error(
    foreign_db: Path,
) -> None:
    with pytest.raises(CorruptStoreError, match="not a perdura store"):
        await SqliteStore.open(foreign_db)


async def test_another_applications_database_is_left_untouched(foreign_db: Path) -> None:
    before = contents(foreign_db)

    with pytest.raises(CorruptStoreError):
        await SqliteStore.open(foreign_db)

    assert contents(foreign_db) == before
    assert siblings(foreign_db) == ["crm.db"]
    assert pragma(foreign_db, "journal_mode") == "delete"


async def test_an_empty_file_becomes_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    async with await SqliteStore.open(path) as store:
        assert await store.count_runs(RunQuery()) == 0

    assert pragma(path, "application_id") == PERDURA_APPLICATION_ID


async def test_a_new_store_is_marked_as_perdura_and_uses_wal(db_path: Path) -> None:
    await write_store(db_path, runs=0)

    assert pragma(db_path, "application_id") == PERDURA_APPLICATION_ID
    assert pragma(db_path, "journal_mode") == "wal"


async def test_a_store_with_a_newer_schema_version_raises_schema_version_error(
    db_path: Path,
) -> None:
    await write_store(db_path)
    execute(db_path, "PRAGMA user_version = 999")

    with pytest.raises(SchemaVersionError, match="999"):
        await SqliteStore.open(db_path)

    assert pragma(db_path, "user_version") == 999


# -- damaged records ------------------------------------------------------------------------


async def test_a_garbage_event_blob_raises_corrupt_store_error_naming_run_and_event(
    db_path: Path,
) -> None:
    await write_store(db_path)
    execute(
        db_path,
        "UPDATE events SET data = ? WHERE run_id = 'run-1' AND event_id = 3",
        (b"\xc1\xc1 not msgpack",),
    )

    async with await SqliteStore.open(db_path) as store:
        with pytest.raises(CorruptStoreError, match=r"event 3 of run 'run-1'"):
            await store.read_history("run-1")


async def test_an_event_blob_of_the_wrong_shape_raises_corrupt_store_error(db_path: Path) -> None:
    await write_store(db_path)
    blob = msgspec.msgpack.encode({"type": "NoSuchEvent", "timestamp": T0})
    execute(db_path, "UPDATE events SET data = ? WHERE run_id = 'run-0' AND event_id = 2", (blob,))

    async with await SqliteStore.open(db_path) as store:
        with pytest.raises(CorruptStoreError, match=r"event 2 of run 'run-0'"):
            await store.read_history("run-0")


async def test_an_event_stored_under_another_event_id_raises_corrupt_store_error(
    db_path: Path,
) -> None:
    await write_store(db_path)
    misplaced = encode_event(msgspec.structs.replace(scheduled(1), event_id=7))
    execute(
        db_path, "UPDATE events SET data = ? WHERE run_id = 'run-0' AND event_id = 2", (misplaced,)
    )

    async with await SqliteStore.open(db_path) as store:
        with pytest.raises(CorruptStoreError, match="claims to be event 7"):
            await store.read_history("run-0")


async def test_a_corrupt_event_does_not_stop_other_runs_being_read(db_path: Path) -> None:
    await write_store(db_path)
    execute(db_path, "UPDATE events SET data = x'00' WHERE run_id = 'run-1' AND event_id = 2")

    async with await SqliteStore.open(db_path) as store:
        assert len(await store.read_history("run-0")) == 4


@pytest.mark.parametrize("after_event_id", [0, 1])
async def test_a_deleted_event_row_raises_corrupt_store_error_naming_the_gap(
    db_path: Path, after_event_id: int
) -> None:
    await write_store(db_path)
    execute(db_path, "DELETE FROM events WHERE run_id = 'run-0' AND event_id = 2")

    async with await SqliteStore.open(db_path) as store:
        with pytest.raises(CorruptStoreError, match=r"run 'run-0' has a gap: event 2 is missing"):
            await store.read_history("run-0", after_event_id=after_event_id)


async def test_a_deleted_last_event_row_raises_corrupt_store_error(db_path: Path) -> None:
    await write_store(db_path, events_per_run=3)
    execute(db_path, "DELETE FROM events WHERE run_id = 'run-0' AND event_id = 4")

    async with await SqliteStore.open(db_path) as store:
        with pytest.raises(CorruptStoreError, match=r"run 'run-0' .*event 4 is missing"):
            await store.read_history("run-0")


# -- truncated files ------------------------------------------------------------------------


@pytest.fixture
async def sizeable_store(db_path: Path) -> Path:
    """A closed, checkpointed store of a few hundred kilobytes."""
    await write_store(db_path, runs=150, events_per_run=4, size=1500)
    assert siblings(db_path) == [db_path.name]  # closing checkpointed and removed the WAL
    return db_path


@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.25, 0.02])
async def test_a_truncated_store_raises_corrupt_store_error_not_a_sqlite3_error(
    sizeable_store: Path, fraction: float
) -> None:
    truncate(sizeable_store, fraction=fraction)

    with pytest.raises(CorruptStoreError, match=str(sizeable_store)):
        await open_and_read_everything(sizeable_store)


async def test_a_store_cut_inside_its_header_raises_corrupt_store_error(
    sizeable_store: Path,
) -> None:
    truncate(sizeable_store, keep=60)

    with pytest.raises(CorruptStoreError):
        await open_and_read_everything(sizeable_store)


# -- paths and URLs -------------------------------------------------------------------------


async def test_a_directory_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        await SqliteStore.open(tmp_path)


async def test_a_path_in_a_missing_folder_raises_store_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing" / "perdura.db"

    with pytest.raises(StoreError, match=r"folder .*missing.* does not exist"):
        await SqliteStore.open(path)

    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("mysql://localhost/perdura", "mysql"),
        ("https://example.com/perdura.db", "https"),
    ],
)
async def test_an_unsupported_url_scheme_raises_store_error_naming_it(
    url: str, scheme: str
) -> None:
    with pytest.raises(StoreError, match=f"unsupported store URL scheme '{scheme}'"):
        await open_store(url)


@pytest.mark.parametrize("url", ["sqlite://perdura.db", "sqlite://", "sqlite:///"])
async def test_a_malformed_sqlite_url_raises_store_error(url: str) -> None:
    with pytest.raises(StoreError, match="bad store URL"):
        await open_store(url)


async def test_open_store_accepts_an_absolute_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"

    store = await open_store(f"sqlite:///{path}")
    await store.close()

    assert path.exists()


async def test_open_store_resolves_a_relative_sqlite_url_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = await open_store("sqlite:///data.db")
    await store.close()

    assert (tmp_path / "data.db").exists()


@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
async def test_open_store_accepts_a_plain_file_path(tmp_path: Path, as_path: bool) -> None:
    path = tmp_path / "plain.db"

    store = await open_store(path if as_path else str(path))
    await store.close()

    assert path.exists()


async def test_open_store_without_a_url_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_URL_ENV, f"sqlite:///{tmp_path / 'from-env.db'}")

    store = await open_store()
    await store.close()

    assert (tmp_path / "from-env.db").exists()


async def test_open_store_without_url_or_environment_uses_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)

    store = await open_store()
    await store.close()

    assert DEFAULT_STORE_URL == "sqlite:///perdura.db"
    assert (tmp_path / "perdura.db").exists()


async def test_open_store_with_a_bad_url_in_the_environment_raises_store_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(STORE_URL_ENV, "redis://cache")

    with pytest.raises(StoreError, match="'redis'"):
        await open_store()


# -- locks ----------------------------------------------------------------------------------


async def test_opening_a_store_locked_past_the_busy_timeout_raises_store_error(
    db_path: Path,
) -> None:
    await write_store(db_path)
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await SqliteStore.open(db_path, busy_timeout=0.05)
    finally:
        lock.execute("ROLLBACK")
        lock.close()


async def test_a_write_locked_past_the_busy_timeout_raises_store_error_and_later_succeeds(
    db_path: Path,
) -> None:
    store = await SqliteStore.open(db_path, busy_timeout=0.05)
    try:
        lock = sqlite3.connect(db_path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                await store.create_run("run-1", started("wf-1"), now=NOW)
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        info = await store.create_run("run-1", started("wf-1"), now=NOW)
    finally:
        await store.close()

    assert info.history_length == 1


async def test_writes_wait_for_another_process_s_write_lock_without_blocking_the_loop(
    db_path: Path,
) -> None:
    store = await SqliteStore.open(db_path, busy_timeout=5)
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        asyncio.get_running_loop().call_later(0.3, lock.execute, "ROLLBACK")
        infos = await asyncio.gather(
            *(store.create_run(f"run-{i}", started(f"wf-{i}"), now=NOW) for i in range(5))
        )
    finally:
        ticker.cancel()
        lock.close()
        await store.close()

    assert [info.run_id for info in infos] == [f"run-{i}" for i in range(5)]
    assert ticks >= 10  # the loop ran on while the writes waited for the lock


# -- reopening ------------------------------------------------------------------------------


async def test_reopening_a_store_keeps_all_its_data(db_path: Path) -> None:
    store = await SqliteStore.open(db_path)
    await store.create_run("run-1", started("wf-1"), now=NOW)
    await store.create_run("run-2", started("wf-2"), now=NOW)
    [claim] = await store.claim_runs("main", owner="w", now=NOW, lease_seconds=30, limit=1)
    timer = TimerStarted(timestamp=T0, seq=1, fire_at=T0 + timedelta(minutes=5), duration=300)
    task = ActivityTaskSpec(
        seq=1, task_queue="acts", attempt=1, visible_at=NOW, payload=Payload("json", b"1")
    )
    other = "run-2" if claim.run_id == "run-1" else "run-1"
    done = WorkflowCompleted(timestamp=T0, result=Payload("json", b"null"))
    await store.append(
        [
            AppendRequest(
                run_id=claim.run_id,
                events=[scheduled(1), timer],
                now=NOW,
                expected_next_event_id=2,
                fence=claim.fence,
                activity_tasks=[task],
                release=True,
                wake_at=NOW + 300,
            ),
            AppendRequest(run_id=other, events=[done], now=NOW),
        ]
    )
    histories = {r: await store.read_history(r) for r in ("run-1", "run-2")}
    runs = await store.list_runs(RunQuery())
    timers = await store.pending_timers()
    await store.close()

    reopened = await SqliteStore.open(db_path)
    try:
        assert {r: await reopened.read_history(r) for r in ("run-1", "run-2")} == histories
        assert await reopened.list_runs(RunQuery()) == runs
        assert await reopened.pending_timers() == timers
        assert (await reopened.get_run(other)).status is RunStatus.COMPLETED
        tasks = await reopened.claim_activity_tasks(
            "acts", owner="a", now=NOW, lease_seconds=10, limit=10
        )
        assert [(t.run_id, t.payload) for t in tasks] == [(claim.run_id, task.payload)]
        [again] = await reopened.claim_runs(
            "main", owner="w", now=NOW + 300, lease_seconds=30, limit=1
        )
        assert again.fence == claim.fence + 1
    finally:
        await reopened.close()


async def test_integrity_check_of_a_healthy_store_is_ok(db_path: Path) -> None:
    await write_store(db_path, runs=20)

    async with await SqliteStore.open(db_path) as store:
        assert await store.integrity_check() == "ok"
