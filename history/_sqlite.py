"""The embedded store: one SQLite file through aiosqlite.

Settings follow the design contract: WAL journal, ``synchronous=FULL`` unless the caller
chooses NORMAL, ``BEGIN IMMEDIATE`` for every write so concurrent processes queue on the
busy timeout instead of failing on a lock upgrade, and a schema version in ``PRAGMA
user_version`` with forward-only migrations. ``PRAGMA application_id`` marks the file as a
perdura store, so pointing perdura at some other SQLite database is refused, not "migrated".

Group commit: every write (run creation, appends from any number of runs) joins a queue; one
writer takes everything queued and applies it in a single transaction, one fsync for all.
Callers are answered only after that transaction commits, so nothing is acknowledged before it
is durable. Each operation runs inside its own SAVEPOINT, so one refused request never undoes
another that shares its transaction.

A whole transaction runs as one function on aiosqlite's connection thread (``_execute``), not
as one round trip per statement: the thread hop costs more than the statements themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, cast, get_args

import aiosqlite
import msgspec

from ._errors import (
    AppendConflictError,
    CorruptStoreError,
    LeaseLostError,
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    WorkflowAlreadyRunningError,
)
from ._events import (
    ActivityCancelled,
    AnyEvent,
    Event,
    Payload,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowContinuedAsNew,
    WorkflowReset,
    WorkflowStarted,
    decode_event,
    encode_event,
)
from ._store import (
    CLOSING_EVENTS,
    ActivityTask,
    ActivityTaskSpec,
    AppendRequest,
    AppendResult,
    Durability,
    NewRun,
    RunClaim,
    RunInfo,
    RunQuery,
    RunStatus,
    TimerInfo,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

APPLICATION_ID: Final = 0x50455244  # "PERD"

#: How often waiters' runs are checked for a close by another process.
CLOSE_POLL_SECONDS: Final = 0.2

_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: runs (also the workflow-task queue), events, timers, activity tasks.
    """
    CREATE TABLE runs (
        run_id           TEXT PRIMARY KEY,
        workflow_id      TEXT NOT NULL,
        workflow_type    TEXT NOT NULL,
        task_queue       TEXT NOT NULL,
        status           TEXT NOT NULL,
        started_at       REAL NOT NULL,
        closed_at        REAL,
        next_event_id    INTEGER NOT NULL,
        fence            INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_expires_at REAL,
        wake_at          REAL
    );
    CREATE INDEX runs_by_workflow_id ON runs (workflow_id, started_at);
    CREATE UNIQUE INDEX runs_open_workflow_id ON runs (workflow_id) WHERE status = 'running';
    CREATE INDEX runs_by_status ON runs (status, started_at);
    CREATE INDEX runs_by_type ON runs (workflow_type, started_at);
    CREATE INDEX runs_ready ON runs (task_queue, wake_at)
        WHERE status = 'running' AND owner IS NULL;
    CREATE INDEX runs_leased ON runs (owner, lease_expires_at) WHERE owner IS NOT NULL;

    CREATE TABLE events (
        run_id   TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        data     BLOB NOT NULL,
        PRIMARY KEY (run_id, event_id)
    ) WITHOUT ROWID;

    CREATE TABLE timers (
        run_id  TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        fire_at REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX timers_by_fire_at ON timers (fire_at);

    CREATE TABLE activity_tasks (
        task_id          INTEGER PRIMARY KEY,
        run_id           TEXT NOT NULL,
        seq              INTEGER NOT NULL,
        attempt          INTEGER NOT NULL,
        task_queue       TEXT NOT NULL,
        visible_at       REAL NOT NULL,
        owner            TEXT,
        lease_expires_at REAL,
        payload          BLOB NOT NULL
    );
    CREATE INDEX activity_tasks_ready ON activity_tasks (task_queue, visible_at);
    CREATE INDEX activity_tasks_by_run ON activity_tasks (run_id);
    """,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


#: The status of a run being created from a copied history that closes it, for the duration
#: of the transaction that creates it.
_COPYING: Final = "copying"

_RUN_COLUMNS: Final = (
    "run_id, workflow_id, workflow_type, task_queue, status, started_at, closed_at, "
    "next_event_id, owner, lease_expires_at, wake_at"
)

_payload_encoder: Final = msgspec.msgpack.Encoder()
_payload_decoder: Final = msgspec.msgpack.Decoder(Payload)


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _run_info(row: Sequence[Any]) -> RunInfo:
    return RunInfo(
        run_id=row[0],
        workflow_id=row[1],
        workflow_type=row[2],
        task_queue=row[3],
        status=RunStatus(row[4]),
        started_at=_ts(row[5]),
        closed_at=None if row[6] is None else _ts(row[6]),
        history_length=row[7] - 1,
        owner=row[8],
        lease_expires_at=row[9],
        wake_at=row[10],
    )


def _map_sqlite_error(exc: sqlite3.Error, where: str) -> StoreError:
    """Translate by SQLite's result code, never by message text."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptStoreError(f"{where}: the store is damaged or not a SQLite file ({exc})")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(f"{where}: the store stayed locked past the busy timeout ({exc})")
    if primary == sqlite3.SQLITE_FULL:
        return StoreError(f"{where}: the disk is full ({exc})")
    return StoreError(f"{where}: {exc}")


class _Batch:
    """Operations waiting for the next group commit, with their callers' futures."""

    __slots__ = ("futures", "ops")

    def __init__(self) -> None:
        self.ops: list[Callable[[sqlite3.Connection], Any]] = []
        self.futures: list[asyncio.Future[Any]] = []


class SqliteStore:
    """The embedded default store. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        durability: Durability,
        busy_timeout: float = 30.0,
        point_reader: sqlite3.Connection | None = None,
    ) -> None:
        self.path = path
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self.url = f"sqlite:///{path}"
        self.durability = durability
        self._writer = writer
        self._reader = reader
        self._point_reader = point_reader
        """Reads of one row by key, made on the event loop's thread (``_read_now``)."""
        self._point_thread = threading.get_ident()
        """The thread the store was opened on: the only one that uses ``_point_reader``."""
        self._queued = _Batch()
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self._run_waiters: dict[str, list[asyncio.Future[AnyEvent | None]]] = {}
        self._close_watcher: asyncio.Task[None] | None = None
        self._work_listeners: dict[str, list[Callable[[], None]]] = {}
        self.commits = 0
        """Transactions committed by this process: the benchmarks report ops per commit."""

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        durability: Durability = Durability.FULL,
        busy_timeout: float = 30.0,
    ) -> SqliteStore:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date."""
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"store path {str(path)!r} is a directory, not a SQLite file")
        if not path.parent.exists():
            raise StoreError(
                f"store path {str(path)!r}: folder {str(path.parent)!r} does not exist"
            )
        writer = await cls._connect(path, durability, busy_timeout)
        try:
            await _on(writer, _migrate, path)
            # From here on the writer waits for another process's write lock itself
            # (``_begin``): the loop thread's inline commits must never block on it.
            await _on(writer, _execute, "PRAGMA busy_timeout = 0")
            await _on(writer, _reserve_wal, path)
            reader = await cls._connect(path, durability, busy_timeout)
        except sqlite3.Error as exc:
            await writer.close()
            raise _map_sqlite_error(exc, f"opening {path}") from exc
        except BaseException:
            await writer.close()
            raise
        try:
            point_reader = _point_reader(path)
        except sqlite3.Error:
            point_reader = None  # every read then goes through the reader thread
        return cls(path, writer, reader, durability, busy_timeout, point_reader)

    @staticmethod
    async def _connect(
        path: Path, durability: Durability, busy_timeout: float
    ) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, f"opening {path}") from exc
        try:
            await _on(conn, _configure, path, durability, busy_timeout)
        except sqlite3.Error as exc:
            await conn.close()
            raise _map_sqlite_error(exc, f"opening {path}") from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flush_task is not None:
            await self._flush_task
        if self._close_watcher is not None:
            self._close_watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_watcher
        await self._reader.close()
        await self._writer.close()
        if self._point_reader is not None:
            self._point_reader.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the write path: group commit ------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        loop = asyncio.get_running_loop()
        if not self._flushing and not getattr(loop, "_ready", True):
            # Nothing else could run meanwhile: commit on this thread and spare the two
            # thread hops, which cost about as much as the commit itself.
            done, value = self._write_inline(op)
            if done:
                return cast(T, value)
        future: asyncio.Future[T] = loop.create_future()
        self._queued.ops.append(op)
        self._queued.futures.append(future)
        if not self._flushing:
            self._flushing = True
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())
        return await future

    def _write_inline(self, op: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        """Commit ``op`` alone on the calling thread: ``(True, its result)``, or ``(False,
        None)`` when another process holds the write lock (the queue then waits for it on
        the writer thread, never blocking the event loop on the busy timeout).

        Safe because the writer thread only touches the connection inside ``_flush``, which
        is not running (``_flushing`` is false) and cannot start until this returns.
        """
        conn: sqlite3.Connection = self._writer._conn
        try:
            staged = _stage_batch(conn, [op])
            if staged is None:
                return False, None
            _commit(conn)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False, None
            raise _map_sqlite_error(exc, f"writing to {self.path}") from exc
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, f"writing to {self.path}") from exc
        self.commits += 1
        [(ok, value)] = staged
        if ok:
            return True, value
        if isinstance(value, sqlite3.Error):
            raise _map_sqlite_error(value, f"writing to {self.path}") from value
        raise value

    async def _flush(self) -> None:
        try:
            while self._queued.ops:
                batch, self._queued = self._queued, _Batch()
                try:
                    outcomes = await self._commit_batch(batch.ops)
                except sqlite3.Error as exc:
                    error = _map_sqlite_error(exc, f"writing to {self.path}")
                    for future in batch.futures:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException as exc:
                    for future in batch.futures:
                        if not future.done():
                            future.set_exception(exc)
                    raise
                self.commits += 1
                for future, (ok, value) in zip(batch.futures, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    elif isinstance(value, sqlite3.Error):
                        future.set_exception(_map_sqlite_error(value, f"writing to {self.path}"))
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    async def _commit_batch(
        self, ops: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        """Apply ``ops`` in one transaction and commit it.

        The statements run on the event loop's thread and only the commit (the fsync) on the
        writer thread: a statement takes microseconds, and each one run on the writer thread
        released and took back the GIL twice, contended by the loop's thread, which cost
        more than the statement. When another process holds the write lock, the whole batch
        goes to the writer thread, which waits for the lock without blocking the loop.
        """
        outcomes = _stage_batch(self._writer._conn, ops)
        if outcomes is None:
            return await _on(self._writer, _run_batch, ops, self._busy_timeout_ms / 1000)
        await _on(self._writer, _commit)
        return outcomes

    async def create_run(
        self,
        run_id: str,
        started: WorkflowStarted,
        *,
        now: float,
        history: Sequence[Event] = (),
        activity_tasks: Sequence[ActivityTaskSpec] = (),
    ) -> RunInfo:
        new = NewRun(
            run_id=run_id,
            started=started,
            history=tuple(history),
            activity_tasks=tuple(activity_tasks),
        )
        info = await self._write(lambda conn: _create_run(conn, new, now))
        if not info.status.is_open:
            self._notify_run(run_id)
        else:
            self._notify_work(info.task_queue)
        return info

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        if len(requests) == 1:
            results = [await self._write(_append_op(requests[0]))]
        else:
            results = list(await asyncio.gather(*(self._write(_append_op(r)) for r in requests)))
        for request, result in zip(requests, results, strict=True):
            if result.error is not None:
                continue
            # Only a close is worth waking result() waiters for; they get the closing event.
            for event in result.events:
                if type(event) in CLOSING_EVENTS:
                    self._notify_run(result.run_id, event)
            if _may_make_work(request):
                self._notify_work(None)
        return results

    async def add_work_listener(
        self, task_queue: str, callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``callback`` when a write through this store object may have made work of
        ``task_queue`` ready (see :class:`history.WorkNotifier`). Other processes writing to
        the file are not seen: their work is found by polling."""
        self._work_listeners.setdefault(task_queue, []).append(callback)

        def remove() -> None:
            callbacks = self._work_listeners.get(task_queue)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._work_listeners[task_queue]

        return remove

    def _notify_work(self, task_queue: str | None) -> None:
        """Wake the listeners of ``task_queue`` (of every queue when ``None``: an append
        names its run, not the run's queue, and a spurious wake-up costs one poll)."""
        if task_queue is None:
            callbacks = [c for cs in self._work_listeners.values() for c in cs]
        else:
            callbacks = list(self._work_listeners.get(task_queue, ()))
        for callback in callbacks:
            callback()

    async def wait_for_run(self, run_id: str, max_wait: float) -> AnyEvent | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AnyEvent | None] = loop.create_future()
        self._run_waiters.setdefault(run_id, []).append(future)
        if self._close_watcher is None or self._close_watcher.done():
            self._close_watcher = loop.create_task(self._watch_closes())
        bound = loop.call_later(max_wait, _resolve, future)
        try:
            return await future
        finally:
            bound.cancel()
            waiters = self._run_waiters.get(run_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._run_waiters[run_id]

    async def _watch_closes(self) -> None:
        """While anyone waits for runs, look every ``CLOSE_POLL_SECONDS`` for those another
        process closed (this process's own closes wake waiters at once): one query for all
        waiters instead of one read per waiter per poll."""
        while self._run_waiters and not self._closed:
            await asyncio.sleep(CLOSE_POLL_SECONDS)
            waited = list(self._run_waiters)
            if not waited or self._closed:
                continue

            def fn(conn: sqlite3.Connection, ids: list[str] = waited) -> list[Any]:
                closed: list[Any] = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    closed += conn.execute(
                        f"SELECT run_id FROM runs WHERE status != 'running' "
                        f"AND run_id IN ({marks})",
                        chunk,
                    ).fetchall()
                return closed

            try:
                rows = await self._read(fn, "closed runs")
            except StoreError:
                continue  # a waiter's own re-read reports what is wrong
            for (run_id,) in rows:
                self._notify_run(run_id)

    def _notify_run(self, run_id: str, closing: AnyEvent | None = None) -> None:
        for future in self._run_waiters.pop(run_id, ()):
            if not future.done():
                future.set_result(closing)

    async def claim_runs(
        self, task_queue: str, *, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[RunClaim]:
        # An owner never takes a run over from itself: a lease of its own that ran out (the
        # process was paused, or a test clock jumped) is renewed, not re-claimed under a new
        # fence while its driver is still at work on the run. A lease is expired from the
        # instant ``lease_expires_at`` on, the time ``next_wake_at`` reports: a poller woken
        # then must find the run claimable, or (on a clock that stands still) it would poll
        # again at once, forever.
        def op(conn: sqlite3.Connection) -> list[RunClaim]:
            rows = conn.execute(
                """
                UPDATE runs SET owner = ?, lease_expires_at = ?, fence = fence + 1, wake_at = NULL
                WHERE run_id IN (
                    SELECT run_id FROM runs
                    WHERE status = 'running' AND owner IS NULL AND task_queue = ?
                      AND wake_at <= ?
                    UNION ALL
                    SELECT run_id FROM runs
                    WHERE status = 'running' AND owner IS NOT NULL AND task_queue = ?
                      AND lease_expires_at <= ? AND owner != ?
                    LIMIT ?
                )
                RETURNING run_id, fence, workflow_type, next_event_id
                """,
                (owner, now + lease_seconds, task_queue, now, task_queue, now, owner, limit),
            ).fetchall()
            return [
                RunClaim(run_id=r[0], fence=r[1], workflow_type=r[2], history_length=r[3] - 1)
                for r in rows
            ]

        return await self._write(op)

    async def renew_leases(self, owner: str, *, until: float) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE owner = ? AND status = 'running' "
                "RETURNING run_id",
                (until, owner),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._write(op)

    async def release_owner(self, owner: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            # The dropped owner may have been mid-activation: its runs need a worker now,
            # not when the lease nobody will renew would have run out.
            cursor = conn.execute(
                "UPDATE runs SET owner = NULL, lease_expires_at = NULL, "
                "wake_at = COALESCE(wake_at, 0) WHERE owner = ?",
                (owner,),
            )
            conn.execute(
                "UPDATE activity_tasks SET owner = NULL, lease_expires_at = NULL WHERE owner = ?",
                (owner,),
            )
            return cursor.rowcount

        released = await self._write(op)
        if released:
            self._notify_work(None)
        return released

    async def reschedule_run(self, run_id: str, *, now: float) -> RunInfo:
        def op(conn: sqlite3.Connection) -> RunInfo:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFoundError(f"run id {run_id!r}")
            if row[4] != RunStatus.RUNNING.value:
                raise RunClosedError(run_id, row[4])
            row = conn.execute(
                f"UPDATE runs SET owner = NULL, lease_expires_at = NULL, wake_at = ? "
                f"WHERE run_id = ? RETURNING {_RUN_COLUMNS}",
                (now, run_id),
            ).fetchone()
            conn.execute(
                "UPDATE activity_tasks SET owner = NULL, lease_expires_at = NULL, "
                "visible_at = MIN(visible_at, ?) WHERE run_id = ? AND owner IS NOT NULL",
                (now, run_id),
            )
            return _run_info(row)

        info = await self._write(op)
        self._notify_work(info.task_queue)
        return info

    async def list_activity_tasks(self, run_id: str) -> list[ActivityTaskSpec]:
        def fn(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT seq, task_queue, attempt, visible_at, payload FROM activity_tasks "
                "WHERE run_id = ? ORDER BY seq, attempt",
                (run_id,),
            ).fetchall()

        rows = await self._read(fn, f"activity tasks of run {run_id!r}")
        return [
            ActivityTaskSpec(
                seq=r[0],
                task_queue=r[1],
                attempt=r[2],
                visible_at=r[3],
                payload=_payload_decoder.decode(r[4]),
            )
            for r in rows
        ]

    async def claim_activity_tasks(
        self, task_queue: str, *, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[ActivityTask]:
        def op(conn: sqlite3.Connection) -> list[ActivityTask]:
            rows = conn.execute(
                """
                UPDATE activity_tasks SET owner = ?, lease_expires_at = ?
                WHERE task_id IN (
                    SELECT task_id FROM activity_tasks
                    WHERE task_queue = ? AND visible_at <= ?
                      AND (owner IS NULL OR lease_expires_at < ?)
                    ORDER BY visible_at LIMIT ?
                )
                RETURNING task_id, run_id, seq, attempt, task_queue, payload, lease_expires_at
                """,
                (owner, now + lease_seconds, task_queue, now, now, limit),
            ).fetchall()
            return [
                ActivityTask(
                    task_id=r[0],
                    run_id=r[1],
                    seq=r[2],
                    attempt=r[3],
                    task_queue=r[4],
                    payload=_payload_decoder.decode(r[5]),
                    lease_expires_at=r[6],
                )
                for r in rows
            ]

        return await self._write(op)

    async def renew_activity_tasks(
        self, owner: str, task_ids: list[int], *, until: float
    ) -> set[int]:
        if not task_ids:
            return set()

        def op(conn: sqlite3.Connection) -> set[int]:
            marks = ", ".join("?" * len(task_ids))
            rows = conn.execute(
                f"UPDATE activity_tasks SET lease_expires_at = ? "
                f"WHERE owner = ? AND task_id IN ({marks}) RETURNING task_id",
                (until, owner, *task_ids),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._write(op)

    # -- the read path ---------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T], where: str) -> T:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        try:
            result: T = await _on(self._reader, fn)
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, where) from exc
        return result

    async def read_history(self, run_id: str, *, after_event_id: int = 0) -> list[AnyEvent]:
        def fn(conn: sqlite3.Connection) -> list[AnyEvent] | None:
            # The run's length is read before its events: events are only ever added, so
            # every event it counts is among the rows read next, whatever commits between.
            run = conn.execute(
                "SELECT next_event_id FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if run is None:
                return None
            rows = conn.execute(
                "SELECT event_id, data FROM events WHERE run_id = ? AND event_id > ? "
                "ORDER BY event_id",
                (run_id, after_event_id),
            ).fetchall()
            events = _decode_rows(run_id, after_event_id, rows)
            last = events[-1].event_id if events else after_event_id
            if last < run[0] - 1:
                raise CorruptStoreError(
                    f"history of run {run_id!r} ends at event {last}, but the run records "
                    f"{run[0] - 1} events: event {last + 1} is missing"
                )
            return events

        events = await self._read(fn, f"reading history of run {run_id!r}")
        if events is None:
            raise RunNotFoundError(f"run id {run_id!r}")
        return events

    async def _read_now(self, fn: Callable[[sqlite3.Connection], T], where: str) -> T:
        """A read of a row or two by key, made at once on the event loop's thread.

        Through the reader thread such a read cost more than itself (a thread hop each way,
        the GIL handed back and forth with the loop's thread) and queued behind any scan
        running there. A point read in WAL mode takes microseconds and never waits for a
        writer; should SQLite still report the database busy (it can while it recovers a
        WAL), or the call come from another thread than the store's, the read goes to the
        reader thread.
        """
        conn = self._point_reader
        if conn is not None and not self._closed and threading.get_ident() == self._point_thread:
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise _map_sqlite_error(exc, where) from exc
            except sqlite3.Error as exc:
                raise _map_sqlite_error(exc, where) from exc
        return await self._read(fn, where)

    async def get_run(self, run_id: str) -> RunInfo:
        def fn(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()

        row = await self._read_now(fn, f"reading run {run_id!r}")
        if row is None:
            raise RunNotFoundError(f"run id {run_id!r}")
        return _run_info(row)

    async def find_run(self, workflow_id: str) -> RunInfo:
        def fn(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE workflow_id = ? "
                "ORDER BY status = 'running' DESC, started_at DESC, rowid DESC LIMIT 1",
                (workflow_id,),
            ).fetchone()

        row = await self._read_now(fn, f"finding workflow {workflow_id!r}")
        if row is None:
            raise RunNotFoundError(f"workflow id {workflow_id!r}")
        return _run_info(row)

    async def list_runs(self, query: RunQuery) -> list[RunInfo]:
        where, params = _where(query)

        def fn(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs{where} "
                "ORDER BY started_at DESC, run_id LIMIT ? OFFSET ?",
                (*params, query.limit, query.offset),
            ).fetchall()

        return [_run_info(row) for row in await self._read(fn, "listing runs")]

    async def count_runs(self, query: RunQuery) -> int:
        where, params = _where(query)

        def fn(conn: sqlite3.Connection) -> int:
            count: int = conn.execute(f"SELECT COUNT(*) FROM runs{where}", params).fetchone()[0]
            return count

        return await self._read(fn, "counting runs")

    async def pending_timers(self, run_id: str | None = None) -> list[TimerInfo]:
        def fn(conn: sqlite3.Connection) -> list[Any]:
            if run_id is None:
                return conn.execute(
                    "SELECT run_id, seq, fire_at FROM timers ORDER BY fire_at"
                ).fetchall()
            return conn.execute(
                "SELECT run_id, seq, fire_at FROM timers WHERE run_id = ? ORDER BY fire_at",
                (run_id,),
            ).fetchall()

        rows = await self._read(fn, "reading timers")
        return [TimerInfo(run_id=r[0], seq=r[1], fire_at=_ts(r[2])) for r in rows]

    async def next_wake_at(
        self,
        task_queue: str,
        *,
        runs: bool = True,
        activity_tasks: bool = True,
        owner: str | None = None,
    ) -> float | None:
        parts: list[str] = []
        params: list[Any] = []
        if runs:
            parts.append(
                "SELECT MIN(wake_at) AS t FROM runs"
                " WHERE status = 'running' AND owner IS NULL AND task_queue = ?"
            )
            parts.append(
                "SELECT MIN(lease_expires_at) AS t FROM runs"
                " WHERE status = 'running' AND owner IS NOT NULL AND task_queue = ?"
                + ("" if owner is None else " AND owner != ?")
            )
            params += [task_queue, task_queue] + ([] if owner is None else [owner])
        if activity_tasks:
            parts.append(
                "SELECT MIN(visible_at) AS t FROM activity_tasks"
                " WHERE task_queue = ? AND owner IS NULL"
            )
            params.append(task_queue)
        if not parts:
            return None
        sql = f"SELECT MIN(t) FROM ({' UNION ALL '.join(parts)})"

        def fn(conn: sqlite3.Connection) -> float | None:
            value: float | None = conn.execute(sql, params).fetchone()[0]
            return value

        return await self._read(fn, "reading the next wake-up time")

    async def backup(self, destination: str | Path, *, overwrite: bool = False) -> Path:
        """Copy the store to ``destination`` with SQLite's online backup API.

        The copy is one consistent snapshot (a single read transaction: under WAL, workers go
        on writing meanwhile and their later commits are simply not in it), written to a
        temporary file beside ``destination`` and renamed into place, so a crash never leaves
        half a backup under the final name. Refuses an existing ``destination`` unless
        ``overwrite``. Returns the path written.
        """
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        return await asyncio.to_thread(_backup_file, self.path, Path(destination), overwrite)

    async def integrity_check(self) -> str:
        """SQLite's full ``PRAGMA integrity_check``: ``"ok"`` or the problems it found."""

        def fn(conn: sqlite3.Connection) -> str:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            return "\n".join(str(r[0]) for r in rows)

        return await self._read(fn, "checking integrity")


# -- functions that run on the connection thread ------------------------------------------


async def _on(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` on ``conn``'s thread, in one hop."""
    result: T = await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call]
    return result


def _backup_file(source: Path, target: Path, overwrite: bool) -> Path:
    """Copy ``source`` to ``target`` in one step of the backup API (one read snapshot)."""
    if target.resolve() == source.resolve():
        raise StoreError(f"cannot back the store {source} up onto itself")
    if target.exists() and not overwrite:
        raise StoreError(f"backup destination {str(target)!r} already exists")
    if not target.parent.is_dir():
        raise StoreError(
            f"backup destination {str(target)!r}: folder {str(target.parent)!r} does not exist"
        )
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                # Fold the copy's WAL into its file: the backup is one self-contained file.
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                dst.close()
        finally:
            src.close()
        partial.replace(target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise _map_sqlite_error(exc, f"backing {source} up to {target}") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backing {source} up to {target}: {exc}") from exc
    return target


def _point_reader(path: Path) -> sqlite3.Connection:
    """The connection for ``SqliteStore._read_now``: read-only, and never waiting for a lock
    (it runs on the event loop's thread)."""
    # Used on one thread only (``SqliteStore._point_thread``), but closable from any.
    conn = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = 1")
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(
    conn: sqlite3.Connection, path: Path, durability: Durability, busy_timeout: float
) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    # Forces SQLite to read the header now: a file that is not a database fails here.
    conn.execute("PRAGMA schema_version").fetchone()
    # Switching to WAL rewrites the file header, so another application's database is
    # refused before that; ``_migrate`` checks again under the write lock.
    _check_application(conn, path)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"could not switch the store to WAL mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {durability.value.upper()}")


_WAL_RESERVE_PAGES: Final = 1000
"""The WAL's size between checkpoints, in pages: SQLite's default ``wal_autocheckpoint``."""


def _reserve_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Grow the WAL file to the size it reaches between checkpoints, committing nothing.

    A commit that appends past the end of the WAL file grows it, and its ``fdatasync`` then
    also writes the file's new size to the file system's journal: on ext4 that made a
    commit cost twice as much (about 180 against 90 µs) as one that overwrites WAL space
    already there, which is what every commit does once a checkpoint has restarted the WAL.
    SQLite deletes the WAL when the last connection closes, so without this each opening of
    a store paid double for its first thousand pages of commits (some hundreds of steps).

    The space is reserved the way SQLite itself fills a WAL: a transaction whose pages spill
    out of a small page cache into the WAL, rolled back. The file keeps its size; the
    database and its committed WAL frames are unchanged (SQLite ignores frames past the last
    commit, and a crash in the middle leaves only such frames). Skipped when the WAL is
    already that big or another process holds the write lock: an optimisation only.
    """
    page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    wanted = _WAL_RESERVE_PAGES * (page_size + 24)  # each frame: a 24-byte header and a page
    try:
        if Path(f"{path}-wal").stat().st_size >= wanted:
            return
    except FileNotFoundError:
        pass
    cache_size: int = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute("PRAGMA cache_size = 16")  # pages: the rest spills into the WAL
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return
            raise
        try:
            conn.execute("CREATE TABLE perdura_wal_reserve (filler BLOB)")
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO perdura_wal_reserve SELECT zeroblob(?) FROM n",
                # A row of nearly a page each, and some more rows than pages: the last pages
                # written stay in the cache and never reach the WAL.
                (_WAL_RESERVE_PAGES + 64, page_size - 128),
            )
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA cache_size = {int(cache_size)}")


def _check_application(conn: sqlite3.Connection, path: Path) -> int:
    """Refuse a database that belongs to another application; return its schema version."""
    app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    tables: int = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
    ).fetchone()[0]
    if app_id != APPLICATION_ID and (tables or version):
        raise CorruptStoreError(
            f"{path} is a SQLite database but not a perdura store "
            f"(application_id {app_id:#x}, {tables} tables); refusing to touch it"
        )
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_application(conn, path)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} has schema version {version}, newer than this perdura understands "
                f"({SCHEMA_VERSION}); upgrade perdura to open it"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_PLAIN_EVENTS: Final = frozenset(get_args(AnyEvent)) - {
    TimerStarted,
    TimerFired,
    TimerCancelled,
    ActivityCancelled,
    *CLOSING_EVENTS,
}
"""Events an append stores as their own row and nothing more (no timer, task or run change)."""

_BUSY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)
"""Waits between attempts to take the write lock: the schedule of SQLite's own busy handler."""


def _resolve(future: asyncio.Future[AnyEvent | None]) -> None:
    if not future.done():
        future.set_result(None)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _execute(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql)


def _begin(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """``BEGIN IMMEDIATE``, waiting up to ``busy_timeout`` seconds for another process's
    write lock.

    The writer connection's own busy timeout is 0 so that a commit made on the event loop's
    thread fails at once instead of blocking the loop (``SqliteStore._write_inline``); the
    writer thread waits here instead, as SQLite's busy handler would.
    """
    waited = 0.0
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or waited >= busy_timeout:
                raise
        delay = min(_BUSY_DELAYS[min(attempt, len(_BUSY_DELAYS) - 1)], busy_timeout - waited)
        time.sleep(delay)
        waited += delay
        attempt += 1


class _WriteLockBusy(Exception):
    """Another process holds the write lock, and this thread must not wait for it."""


def _begin_now(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` on the event loop's thread, which must never wait for the lock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _WriteLockBusy from None
        raise


def _run_batch(
    conn: sqlite3.Connection,
    ops: list[Callable[[sqlite3.Connection], Any]],
    busy_timeout: float,
) -> list[tuple[bool, Any]]:
    """Apply ``ops`` in one transaction and commit it, waiting up to ``busy_timeout`` seconds
    for another process's write lock (on the writer thread)."""
    outcomes = _apply_ops(conn, ops, functools.partial(_begin, busy_timeout=busy_timeout))
    _commit(conn)
    return outcomes


def _stage_batch(
    conn: sqlite3.Connection, ops: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]] | None:
    """Apply ``ops`` in a transaction left open for :func:`_commit`; ``None``, with nothing
    done, when another process holds the write lock."""
    try:
        return _apply_ops(conn, ops, _begin_now)
    except _WriteLockBusy:
        return None


def _commit(conn: sqlite3.Connection) -> None:
    """Commit the open transaction, if any (a batch whose only op failed has none)."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply_ops(
    conn: sqlite3.Connection,
    ops: list[Callable[[sqlite3.Connection], Any]],
    begin: Callable[[sqlite3.Connection], None],
) -> list[tuple[bool, Any]]:
    """Begin a transaction and apply ``ops`` in it; each op's failure is confined to itself.

    Any ``Exception`` counts as the op's own failure (an event that cannot be encoded, say):
    it must neither undo the other callers' operations nor escape into ``_flush``, which
    would stop serving the queue and leave later writers waiting forever.

    Ops almost never raise (a refused append returns its error without writing), so the
    batch first runs without savepoints; if one raises, the transaction is rolled back and
    the batch runs again with a savepoint around each op. An op is a function of what the
    database holds, so the second run decides as the first did. On any other exception
    nothing stays applied.
    """
    begin(conn)
    try:
        try:
            return [(True, op(conn)) for op in ops]
        except Exception as exc:
            conn.execute("ROLLBACK")
            if len(ops) == 1:
                return [(False, exc)]
        begin(conn)
        outcomes: list[tuple[bool, Any]] = []
        for op in ops:
            conn.execute("SAVEPOINT op")
            try:
                outcomes.append((True, op(conn)))
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                outcomes.append((False, exc))
            conn.execute("RELEASE op")
        return outcomes
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_run(conn: sqlite3.Connection, new: NewRun, now: float) -> RunInfo:
    run_id, started = new.run_id, new.started
    closes = new.closes
    if not closes:
        row = conn.execute(
            "SELECT run_id FROM runs WHERE workflow_id = ? AND status = 'running'",
            (started.workflow_id,),
        ).fetchone()
        if row is not None:
            raise WorkflowAlreadyRunningError(started.workflow_id, row[0])
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None:
        raise RunAlreadyExistsError(run_id)
    first = msgspec.structs.replace(started, event_id=1)
    started_at = _epoch(first.timestamp)
    # A copied history that closes the run never counts as the workflow id's open run, not
    # even for the moment before its closing event is projected.
    status = _COPYING if closes else RunStatus.RUNNING.value
    conn.execute(
        "INSERT INTO runs (run_id, workflow_id, workflow_type, task_queue, status, started_at, "
        "next_event_id, wake_at) VALUES (?, ?, ?, ?, ?, ?, 2, ?)",
        (run_id, first.workflow_id, first.workflow_type, first.task_queue, status, started_at, now),
    )
    conn.execute(
        "INSERT INTO events (run_id, event_id, data) VALUES (?, 1, ?)",
        (run_id, encode_event(first)),
    )
    if new.history or new.activity_tasks:
        # The copied events are projected (status, close time, timers) exactly as if they
        # had been appended one by one.
        copied = _append(
            conn,
            AppendRequest(
                run_id=run_id,
                events=new.history,
                now=now,
                activity_tasks=new.activity_tasks,
            ),
        ).unwrap()
        if closes:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return _run_info(row)
        history_length = copied.next_event_id - 1
    else:
        history_length = 1
    return RunInfo(
        run_id=run_id,
        workflow_id=first.workflow_id,
        workflow_type=first.workflow_type,
        task_queue=first.task_queue,
        status=RunStatus.RUNNING,
        started_at=first.timestamp,
        history_length=history_length,
        wake_at=now,
    )


def _append_op(request: AppendRequest) -> Callable[[sqlite3.Connection], AppendResult]:
    return functools.partial(_append, req=request)


def _owner_step(conn: sqlite3.Connection, req: AppendRequest) -> bool:
    """The common append, checked and counted in one statement: the owner's events and
    nothing else, to a running run it still holds, whose history is as long as it expects
    and which no one has woken (so ``wake_at`` stays as it is). False, with nothing written,
    for any other append: the full checks then say what is wrong, if anything."""
    expected = req.expected_next_event_id
    if (
        expected is None
        or req.fence is None
        or req.release
        or req.wake
        or req.start_runs
        or req.linked
        or req.finish_activity_task is not None
    ):
        return False
    counted: int = conn.execute(
        "UPDATE runs SET next_event_id = ? WHERE run_id = ? AND next_event_id = ? "
        "AND fence = ? AND status = 'running' AND owner IS NOT NULL AND wake_at IS NULL",
        (expected + len(req.events), req.run_id, expected, req.fence),
    ).rowcount
    return counted == 1


def _append(conn: sqlite3.Connection, req: AppendRequest) -> AppendResult:
    if _owner_step(conn, req):
        assert req.expected_next_event_id is not None
        return _write_events(conn, req, req.expected_next_event_id, counted=True)
    row = conn.execute(
        "SELECT next_event_id, fence, status FROM runs WHERE run_id = ?", (req.run_id,)
    ).fetchone()
    if row is None:
        return AppendResult(run_id=req.run_id, error=RunNotFoundError(f"run id {req.run_id!r}"))
    next_id, fence, status = row
    if req.fence is not None and fence != req.fence:
        return AppendResult(
            run_id=req.run_id,
            error=LeaseLostError(
                req.run_id, f"fencing token {req.fence} is stale (current is {fence})"
            ),
        )
    if req.expected_next_event_id is not None and req.expected_next_event_id != next_id:
        return AppendResult(
            run_id=req.run_id,
            error=AppendConflictError(req.run_id, req.expected_next_event_id, next_id),
        )
    if status != RunStatus.RUNNING.value and status != _COPYING:
        return AppendResult(run_id=req.run_id, error=RunClosedError(req.run_id, status))
    starting: dict[str, str] = {}
    for new_run in req.start_runs:
        started = new_run.started
        open_row = conn.execute(
            "SELECT run_id FROM runs WHERE workflow_id = ? AND status = 'running'",
            (started.workflow_id,),
        ).fetchone()
        closes_it = open_row is not None and open_row[0] == req.run_id
        if open_row is not None and not closes_it:
            return AppendResult(
                run_id=req.run_id,
                error=WorkflowAlreadyRunningError(started.workflow_id, open_row[0]),
            )
        # Two runs of one workflow id in one request: the second is refused like the first
        # would be once created (not with an exception that fails the whole transaction).
        if started.workflow_id in starting:
            return AppendResult(
                run_id=req.run_id,
                error=WorkflowAlreadyRunningError(
                    started.workflow_id, starting[started.workflow_id]
                ),
            )
        starting[started.workflow_id] = new_run.run_id
    # Last of the checks and the first write: a refused request has written nothing.
    if req.finish_activity_task is not None:
        task_id, worker = req.finish_activity_task
        deleted = conn.execute(
            "DELETE FROM activity_tasks WHERE task_id = ? AND owner = ?", (task_id, worker)
        ).rowcount
        if not deleted:
            return AppendResult(
                run_id=req.run_id,
                error=LeaseLostError(
                    req.run_id, f"activity task {task_id} is no longer leased by {worker!r}"
                ),
            )
    return _write_events(conn, req, next_id, counted=False)


def _write_events(
    conn: sqlite3.Connection, req: AppendRequest, next_id: int, *, counted: bool
) -> AppendResult:
    """The writes of an append whose checks passed; ``counted``: the run's
    ``next_event_id`` already says how many events it will hold (``_owner_step``)."""
    events: list[AnyEvent] = []
    new_status: RunStatus | None = None
    closed_at: float | None = None
    for offset, event in enumerate(req.events):
        numbered: Any = event
        if event.event_id != next_id + offset:
            numbered = msgspec.structs.replace(event, event_id=next_id + offset)
        events.append(numbered)
        kind = type(numbered)
        if kind in _PLAIN_EVENTS:
            continue  # no row but its own (nearly every event)
        closing = CLOSING_EVENTS.get(kind)
        if closing is not None:
            new_status, closed_at = closing, _epoch(numbered.timestamp)
        elif isinstance(numbered, TimerStarted):
            conn.execute(
                "INSERT OR REPLACE INTO timers (run_id, seq, fire_at) VALUES (?, ?, ?)",
                (req.run_id, numbered.seq, _epoch(numbered.fire_at)),
            )
        elif isinstance(numbered, TimerFired | TimerCancelled):
            conn.execute(
                "DELETE FROM timers WHERE run_id = ? AND seq = ?", (req.run_id, numbered.seq)
            )
        elif isinstance(numbered, ActivityCancelled):
            # A worker running it elsewhere loses the task: its lease renewal fails and the
            # attempt is abandoned (its next heartbeat raises), even while the run goes on.
            conn.execute(
                "DELETE FROM activity_tasks WHERE run_id = ? AND seq = ?",
                (req.run_id, numbered.seq),
            )
    conn.executemany(
        "INSERT INTO events (run_id, event_id, data) VALUES (?, ?, ?)",
        [(req.run_id, e.event_id, encode_event(e)) for e in events],
    )
    for task in req.activity_tasks:
        conn.execute(
            "INSERT INTO activity_tasks (run_id, seq, attempt, task_queue, visible_at, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                req.run_id,
                task.seq,
                task.attempt,
                task.task_queue,
                task.visible_at,
                _payload_encoder.encode(task.payload),
            ),
        )
    new_next = next_id + len(events)
    if new_status is not None:
        conn.execute(
            "UPDATE runs SET next_event_id = ?, status = ?, closed_at = ?, owner = NULL, "
            "lease_expires_at = NULL, wake_at = NULL WHERE run_id = ?",
            (new_next, new_status.value, closed_at, req.run_id),
        )
        conn.execute("DELETE FROM timers WHERE run_id = ?", (req.run_id,))
        conn.execute("DELETE FROM activity_tasks WHERE run_id = ?", (req.run_id,))
    elif counted:
        pass
    elif req.release:
        conn.execute(
            "UPDATE runs SET next_event_id = ?, owner = NULL, lease_expires_at = NULL, "
            "wake_at = ? WHERE run_id = ?",
            (new_next, req.wake_at, req.run_id),
        )
    elif req.wake:
        conn.execute(
            "UPDATE runs SET next_event_id = ?, "
            "wake_at = CASE WHEN wake_at IS NULL OR wake_at > ? THEN ? ELSE wake_at END "
            "WHERE run_id = ?",
            (new_next, req.now, req.now, req.run_id),
        )
    elif req.fence is not None:
        # The owner is up to date with everything before its append: no pending wake-up.
        # Unless it has already released the run (its fence still matches until the next
        # claim): then nobody owns the new events, and clearing wake_at would strand the
        # run, so it is woken like an external append.
        conn.execute(
            "UPDATE runs SET next_event_id = ?, wake_at = CASE "
            "WHEN owner IS NOT NULL THEN NULL "
            "WHEN wake_at IS NULL OR wake_at > ? THEN ? ELSE wake_at END "
            "WHERE run_id = ?",
            (new_next, req.now, req.now, req.run_id),
        )
    else:
        conn.execute("UPDATE runs SET next_event_id = ? WHERE run_id = ?", (new_next, req.run_id))
    # After this run's own close, so a continuation may reuse its workflow id.
    for new_run in req.start_runs:
        _create_run(conn, new_run, req.now)
    for linked in req.linked:
        if linked.follow_continuations:
            linked = msgspec.structs.replace(linked, run_id=_chain_head(conn, linked.run_id))
        outcome = _append(conn, linked)
        if outcome.error is not None and not isinstance(
            outcome.error, RunClosedError | RunNotFoundError
        ):
            raise outcome.error
    return AppendResult(run_id=req.run_id, next_event_id=new_next, events=tuple(events))


def _may_make_work(request: AppendRequest) -> bool:
    """Whether an append may make work claimable or bring a wake-up time forward."""
    return bool(
        request.wake
        or (request.release and request.wake_at is not None)
        or request.activity_tasks
        or request.start_runs
        or any(_may_make_work(linked) for linked in request.linked)
    )


def _chain_head(conn: sqlite3.Connection, run_id: str) -> str:
    """The newest run of ``run_id``'s chain of successors (continue-as-new, reset);
    ``run_id`` itself if it has none."""
    while True:
        row = conn.execute(
            "SELECT status, next_event_id FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None or not RunStatus(row[0]).has_successor:
            return run_id
        data = conn.execute(
            "SELECT data FROM events WHERE run_id = ? AND event_id = ?", (run_id, row[1] - 1)
        ).fetchone()[0]
        last = decode_event(data)
        if not isinstance(last, WorkflowContinuedAsNew | WorkflowReset):
            return run_id
        run_id = last.new_run_id


def _decode_rows(run_id: str, after: int, rows: list[Any]) -> list[AnyEvent]:
    events: list[AnyEvent] = []
    expected = after + 1
    for event_id, data in rows:
        if event_id != expected:
            raise CorruptStoreError(
                f"history of run {run_id!r} has a gap: event {expected} is missing "
                f"(next stored event is {event_id})"
            )
        try:
            event = decode_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptStoreError(
                f"event {event_id} of run {run_id!r} cannot be decoded: {exc}"
            ) from exc
        if event.event_id != event_id:
            raise CorruptStoreError(
                f"event {event_id} of run {run_id!r} claims to be event {event.event_id}"
            )
        events.append(event)
        expected += 1
    return events


def _where(query: RunQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.workflow_id is not None:
        clauses.append("workflow_id = ?")
        params.append(query.workflow_id)
    if query.workflow_type is not None:
        clauses.append("workflow_type = ?")
        params.append(query.workflow_type)
    if query.status is not None:
        clauses.append("status = ?")
        params.append(query.status.value)
    if query.task_queue is not None:
        clauses.append("task_queue = ?")
        params.append(query.task_queue)
    if query.started_after is not None:
        clauses.append("started_at >= ?")
        params.append(_epoch(query.started_after))
    if query.started_before is not None:
        clauses.append("started_at < ?")
        params.append(_epoch(query.started_before))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, tuple(params)
