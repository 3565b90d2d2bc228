"""The scale-out store: PostgreSQL through asyncpg.

Many worker processes on many machines share one PostgreSQL database. The store keeps the
semantics of the SQLite store exactly (both pass one conformance suite); what changes is how
concurrency is handled:

* **One transaction per request.** Every append request, run creation or lease operation is
  its own transaction on a pooled connection, so one request's conflict never undoes another's.
  An append first locks its run's row (``SELECT … FOR UPDATE``), which serialises writers of one
  history; the fence and the expected next event id are checked under that lock. The writes of
  one append (events, timer and activity-task projections, the run row) go in one statement of
  data-modifying CTEs: one round trip whatever the number of events.
* **Claims skip what others hold.** ``claim_runs`` and ``claim_activity_tasks`` select with
  ``FOR UPDATE SKIP LOCKED`` and update in the same statement, so concurrent pollers never wait
  on each other and never receive the same row; each run claim increments the run's fence.
* **Wake-ups by NOTIFY.** Triggers on the tables ``pg_notify`` a schema-specific channel when a
  run or an activity task becomes claimable (payload: the task queue) and when a run closes
  (payload: the run id). One listening connection per store turns those into
  :meth:`add_work_listener` callbacks and :meth:`wait_for_run` wake-ups, so an idle worker in
  any process reacts within milliseconds instead of at its next poll. Notifications are hints:
  a dropped listening connection is re-opened in the background and everything that waits is
  woken to poll once.
* **Schema migrations** are numbered; ``schema_migrations`` records the versions applied. They
  run under an advisory lock (workers starting together do not race), forward only; a schema
  written by a newer perdura is refused with :class:`SchemaVersionError`, and a schema holding
  tables that are not a perdura store's is refused with :class:`CorruptStoreError`.

Time comes from the callers (``now``), as in the SQLite store: workers on several machines
compare lease expiries written by one another's clocks, so their clocks must be kept in sync
(NTP); a skew shortens or lengthens leases by that much (see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy
import structlog

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
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowContinuedAsNew,
    WorkflowStarted,
    decode_event,
    encode_event,
)
from ._sqlite import (
    _CLOSING_STATUS,
    _COPYING,
    _decode_rows,
    _epoch,
    _payload_decoder,
    _payload_encoder,
    _ts,
)
from ._store import (
    ActivityTask,
    ActivityTaskSpec,
    AppendRequest,
    AppendResult,
    NewRun,
    RunClaim,
    RunInfo,
    RunQuery,
    RunStatus,
    TimerInfo,
)

__all__ = ["DEFAULT_SCHEMA", "PostgresStore", "redact_url"]

T = TypeVar("T")
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

log = structlog.get_logger("perdura.store.postgres")

DEFAULT_SCHEMA: Final = "perdura"
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

#: Query parameters of a store URL that perdura reads itself (the rest go to asyncpg).
_OWN_PARAMETERS: Final = frozenset({"schema", "pool_size"})

# Each migration is a list of statements; ``{s}`` is the quoted schema name.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: runs (also the workflow-task queue), events, timers, activity tasks, wake-up triggers.
    (
        """
        CREATE TABLE {s}.runs (
            run_id           text COLLATE "C" PRIMARY KEY,
            workflow_id      text COLLATE "C" NOT NULL,
            workflow_type    text COLLATE "C" NOT NULL,
            task_queue       text COLLATE "C" NOT NULL,
            status           text COLLATE "C" NOT NULL,
            started_at       double precision NOT NULL,
            closed_at        double precision,
            next_event_id    bigint NOT NULL,
            fence            bigint NOT NULL DEFAULT 0,
            owner            text COLLATE "C",
            lease_expires_at double precision,
            wake_at          double precision,
            created          bigint GENERATED ALWAYS AS IDENTITY
        )
        """,
        "CREATE INDEX runs_by_workflow_id ON {s}.runs (workflow_id, started_at)",
        "CREATE UNIQUE INDEX runs_open_workflow_id ON {s}.runs (workflow_id) "
        "WHERE status = 'running'",
        "CREATE INDEX runs_by_started_at ON {s}.runs (started_at DESC, run_id)",
        "CREATE INDEX runs_by_status ON {s}.runs (status, started_at)",
        "CREATE INDEX runs_by_type ON {s}.runs (workflow_type, started_at)",
        "CREATE INDEX runs_ready ON {s}.runs (task_queue, wake_at) "
        "WHERE status = 'running' AND owner IS NULL",
        "CREATE INDEX runs_leased ON {s}.runs (task_queue, lease_expires_at) "
        "WHERE status = 'running' AND owner IS NOT NULL",
        "CREATE INDEX runs_by_owner ON {s}.runs (owner) WHERE owner IS NOT NULL",
        """
        CREATE TABLE {s}.events (
            run_id   text COLLATE "C" NOT NULL,
            event_id bigint NOT NULL,
            data     bytea NOT NULL,
            PRIMARY KEY (run_id, event_id)
        )
        """,
        """
        CREATE TABLE {s}.timers (
            run_id  text COLLATE "C" NOT NULL,
            seq     bigint NOT NULL,
            fire_at double precision NOT NULL,
            PRIMARY KEY (run_id, seq)
        )
        """,
        "CREATE INDEX timers_by_fire_at ON {s}.timers (fire_at)",
        """
        CREATE TABLE {s}.activity_tasks (
            task_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id           text COLLATE "C" NOT NULL,
            seq              bigint NOT NULL,
            attempt          bigint NOT NULL,
            task_queue       text COLLATE "C" NOT NULL,
            visible_at       double precision NOT NULL,
            owner            text COLLATE "C",
            lease_expires_at double precision,
            payload          bytea NOT NULL
        )
        """,
        "CREATE INDEX activity_tasks_ready ON {s}.activity_tasks (task_queue, visible_at)",
        "CREATE INDEX activity_tasks_by_run ON {s}.activity_tasks (run_id)",
        "CREATE INDEX activity_tasks_by_owner ON {s}.activity_tasks (owner) "
        "WHERE owner IS NOT NULL",
        # Wake-ups. The channel names derive from the schema (md5 keeps them under
        # PostgreSQL's 63-byte limit); ``_channels`` computes the same names in Python.
        """
        CREATE FUNCTION {s}.notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('perdura_work_' || md5(TG_TABLE_SCHEMA), NEW.task_queue);
            RETURN NULL;
        END $$
        """,
        """
        CREATE FUNCTION {s}.notify_closed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('perdura_closed_' || md5(TG_TABLE_SCHEMA), NEW.run_id);
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER runs_created AFTER INSERT ON {s}.runs FOR EACH ROW
        WHEN (NEW.status = 'running' AND NEW.wake_at IS NOT NULL)
        EXECUTE FUNCTION {s}.notify_work()
        """,
        """
        CREATE TRIGGER runs_woken AFTER UPDATE ON {s}.runs FOR EACH ROW
        WHEN (NEW.status = 'running' AND NEW.owner IS NULL AND NEW.wake_at IS NOT NULL
              AND (OLD.owner IS NOT NULL OR OLD.wake_at IS DISTINCT FROM NEW.wake_at))
        EXECUTE FUNCTION {s}.notify_work()
        """,
        """
        CREATE TRIGGER runs_closed AFTER UPDATE OF status ON {s}.runs FOR EACH ROW
        WHEN (NEW.status NOT IN ('running', 'copying') AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION {s}.notify_closed()
        """,
        """
        CREATE TRIGGER activity_tasks_created AFTER INSERT ON {s}.activity_tasks FOR EACH ROW
        EXECUTE FUNCTION {s}.notify_work()
        """,
        """
        CREATE TRIGGER activity_tasks_freed AFTER UPDATE ON {s}.activity_tasks FOR EACH ROW
        WHEN (NEW.owner IS NULL AND OLD.owner IS NOT NULL)
        EXECUTE FUNCTION {s}.notify_work()
        """,
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_RUN_COLUMNS: Final = (
    "run_id, workflow_id, workflow_type, task_queue, status, started_at, closed_at, "
    "next_event_id, owner, lease_expires_at, wake_at"
)

#: Errors after which a transaction is known to have rolled back and may simply be retried.
_RETRYABLE: Final = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
#: Errors that mean the server could not be reached or dropped the connection.
_UNREACHABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to print and log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _channels(schema: str) -> tuple[str, str]:
    digest = hashlib.md5(schema.encode()).hexdigest()
    return f"perdura_work_{digest}", f"perdura_closed_{digest}"


def _run_info(row: Any) -> RunInfo:
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


def _map_error(exc: BaseException, where: str, url: str) -> StoreError:
    """Translate by exception type (SQLSTATE), never by message text."""
    if isinstance(exc, asyncpg.DiskFullError):
        return StoreError(f"{where}: the database server's disk is full ({exc})")
    if isinstance(exc, _UNREACHABLE):
        detail = str(exc) or type(exc).__name__
        return StoreError(f"{where}: cannot reach PostgreSQL at {url} ({detail})")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreError(f"{where}: {exc} (at {url})")
    if isinstance(
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError
    ):
        return StoreError(f"{where}: PostgreSQL at {url} refused the login ({exc})")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


class _Refused(Exception):
    """Rolls back a request's transaction and carries the result that refused it."""

    def __init__(self, result: AppendResult) -> None:
        self.result = result


class _Sql:
    """Positional parameters for a statement built piece by piece."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.params.append(value)
        return f"${len(self.params)}{'::' + cast if cast else ''}"


class PostgresStore:
    """The scale-out store. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], dsn: str, schema: str, url: str):
        self.url = url
        """The store's URL with any password replaced by ``***``."""
        self.schema = schema
        self._dsn = dsn
        self._pool = pool
        self._s = f'"{schema}"'
        self._work_channel, self._closed_channel = _channels(schema)
        self._closed = False
        self._run_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._work_listeners: dict[str, list[Callable[[], None]]] = {}
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._listener_lock = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None
        self._sql_cache: dict[str, str] = {}

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        connect_timeout: float = 10.0,
    ) -> PostgresStore:
        """Connect to the database named by ``url`` (``postgresql://user@host:port/db``) and
        bring the store's schema up to date, creating it if needed.

        ``schema`` (or the URL's ``?schema=``) names the PostgreSQL schema holding the
        store's tables (default ``perdura``): several stores can share one database.
        ``pool_size`` (or ``?pool_size=``) bounds the connections this process opens.
        """
        dsn, options = _split_url(url)
        shown = redact_url(url)
        schema = schema or options.get("schema") or DEFAULT_SCHEMA
        if not _SCHEMA_NAME.match(schema):
            raise StoreError(
                f"bad schema name {schema!r} for store {shown}: use lower-case letters, "
                "digits and underscores, starting with a letter or underscore (at most 63)"
            )
        if pool_size is None:
            raw = options.get("pool_size", "10")
            try:
                pool_size = int(raw)
            except ValueError:
                raise StoreError(
                    f"bad pool_size {raw!r} in store URL {shown}: expected an integer"
                ) from None
        if pool_size < 1:
            raise StoreError(f"pool_size must be at least 1 for store {shown}, got {pool_size}")
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=connect_timeout,
                command_timeout=60,
                # JIT compilation costs more than these short statements take to run.
                server_settings={"application_name": "perdura", "jit": "off"},
            )
        except (asyncpg.PostgresError, *_UNREACHABLE) as exc:
            raise _map_error(exc, "opening the store", shown) from exc
        except ValueError as exc:  # asyncpg's DSN parser
            raise StoreError(f"bad store URL {shown}: {exc}") from exc
        store = cls(pool, dsn, schema, _display_url(shown, schema))
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        s = self._s
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Workers starting together: one migrates, the others wait and find it done.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"perdura:{self.schema}"
                )
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                tables = {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                        self.schema,
                    )
                }
                if "schema_migrations" not in tables:
                    if tables:
                        raise CorruptStoreError(
                            f"schema {self.schema!r} of {self.url} holds tables "
                            f"({', '.join(sorted(tables)[:5])}) but is not a perdura store; "
                            "refusing to touch it (choose another ?schema=)"
                        )
                    await conn.execute(
                        f"CREATE TABLE {s}.schema_migrations ("
                        "version integer PRIMARY KEY, "
                        "applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                version = await conn.fetchval(
                    f"SELECT COALESCE(MAX(version), 0) FROM {s}.schema_migrations"
                )
                if version > SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"schema {self.schema!r} of {self.url} has schema version {version}, "
                        f"newer than this perdura understands ({SCHEMA_VERSION}); upgrade "
                        "perdura to open it"
                    )
                for number in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[number]:
                        await conn.execute(statement.format(s=s))
                    await conn.execute(
                        f"INSERT INTO {s}.schema_migrations (version) VALUES ($1)", number + 1
                    )
        except StoreError:
            raise
        except (asyncpg.PostgresError, *_UNREACHABLE) as exc:
            raise _map_error(exc, "migrating the store's schema", self.url) from exc

    async def schema_version(self) -> int:
        """The newest migration applied to this store's schema."""
        with self._errors("reading the schema version"):
            version: int = await self._pool.fetchval(
                f"SELECT MAX(version) FROM {self._s}.schema_migrations"
            )
            return version

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)
        for waiters in self._run_waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except (TimeoutError, asyncpg.InterfaceError):
            self._pool.terminate()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")

    @contextlib.contextmanager
    def _errors(self, where: str) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except StoreError:
            raise
        except (asyncpg.PostgresError, *_UNREACHABLE) as exc:
            raise _map_error(exc, where, self.url) from exc

    def _q(self, sql: str) -> str:
        """``sql`` with ``{s}`` replaced by this store's schema (cached per statement)."""
        text = self._sql_cache.get(sql)
        if text is None:
            text = self._sql_cache[sql] = sql.replace("{s}", self._s)
        return text

    async def _transaction(self, fn: Callable[[Connection], Awaitable[T]], where: str) -> T:
        """Run ``fn`` in a transaction of its own; retry it if PostgreSQL rolled it back to
        break a deadlock or a serialization conflict (it wrote nothing then)."""
        with self._errors(where):
            for attempt in itertools.count(1):
                try:
                    async with self._pool.acquire() as conn, conn.transaction():
                        return await fn(conn)
                except _RETRYABLE:
                    if attempt >= 8:
                        raise
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    # -- creating runs ---------------------------------------------------------------------

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
        try:
            return await self._transaction(
                lambda conn: self._create_run(conn, new, now), f"creating run {run_id!r}"
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                # Lost a race with another creator: report it as the check would have.
                raise await self._creation_conflict(new) from None
            raise

    async def _creation_conflict(self, new: NewRun) -> StoreError:
        closes = any(type(e) in _CLOSING_STATUS for e in new.history)
        with self._errors(f"creating run {new.run_id!r}"):
            if not closes:
                open_run = await self._pool.fetchval(
                    self._q(
                        "SELECT run_id FROM {s}.runs WHERE workflow_id = $1 AND status = 'running'"
                    ),
                    new.started.workflow_id,
                )
                if open_run is not None:
                    return WorkflowAlreadyRunningError(new.started.workflow_id, open_run)
        return RunAlreadyExistsError(new.run_id)

    async def _create_run(self, conn: Connection, new: NewRun, now: float) -> RunInfo:
        run_id, started = new.run_id, new.started
        closes = any(type(e) in _CLOSING_STATUS for e in new.history)
        if not closes:
            open_run = await conn.fetchval(
                self._q(
                    "SELECT run_id FROM {s}.runs WHERE workflow_id = $1 AND status = 'running'"
                ),
                started.workflow_id,
            )
            if open_run is not None:
                raise WorkflowAlreadyRunningError(started.workflow_id, open_run)
        first = msgspec.structs.replace(started, event_id=1)
        # A copied history that closes the run never counts as the workflow id's open run,
        # not even for the moment before its closing event is projected.
        status = _COPYING if closes else RunStatus.RUNNING.value
        # ON CONFLICT on the run id only: a taken workflow id must raise (the caller maps it).
        created = await conn.fetchval(
            self._q(
                """
                WITH run AS (
                    INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, task_queue,
                                          status, started_at, next_event_id, wake_at)
                    VALUES ($1, $2, $3, $4, $5, $6, 2, $7)
                    ON CONFLICT (run_id) DO NOTHING
                    RETURNING run_id
                ), event AS (
                    INSERT INTO {s}.events (run_id, event_id, data)
                    SELECT run_id, 1, $8 FROM run
                )
                SELECT count(*) FROM run
                """
            ),
            run_id,
            first.workflow_id,
            first.workflow_type,
            first.task_queue,
            status,
            _epoch(first.timestamp),
            now,
            encode_event(first),
        )
        if not created:
            raise RunAlreadyExistsError(run_id)
        history_length = 1
        if new.history or new.activity_tasks:
            # The copied events are projected (status, close time, timers) exactly as if they
            # had been appended one by one.
            copied = (
                await self._append(
                    conn,
                    AppendRequest(
                        run_id=run_id,
                        events=new.history,
                        now=now,
                        activity_tasks=new.activity_tasks,
                    ),
                )
            ).unwrap()
            if closes:
                row = await conn.fetchrow(
                    self._q(f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = $1"), run_id
                )
                return _run_info(row)
            history_length = copied.next_event_id - 1
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

    # -- appending -------------------------------------------------------------------------

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        # In order, each in a transaction of its own: requests for one run apply in the order
        # given, and a refused request leaves the others untouched.
        return [await self._append_one(request) for request in requests]

    async def _append_one(self, request: AppendRequest) -> AppendResult:
        async def attempt(conn: Connection) -> AppendResult:
            result = await self._append(conn, request)
            if result.error is not None:
                raise _Refused(result)
            return result

        try:
            return await self._transaction(attempt, f"appending to run {request.run_id!r}")
        except _Refused as refused:
            return refused.result
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, asyncpg.UniqueViolationError) and request.start_runs:
                # A run this request starts lost a race for its workflow id.
                for new_run in request.start_runs:
                    conflict = await self._creation_conflict(new_run)
                    if isinstance(conflict, WorkflowAlreadyRunningError):
                        return AppendResult(run_id=request.run_id, error=conflict)
                raise await self._creation_conflict(request.start_runs[0]) from None
            raise

    async def _append(self, conn: Connection, req: AppendRequest) -> AppendResult:
        """One request inside the caller's transaction. An error result means nothing was
        written: every check comes before the first write."""
        row = await conn.fetchrow(
            self._q(
                "SELECT next_event_id, fence, status FROM {s}.runs WHERE run_id = $1 FOR UPDATE"
            ),
            req.run_id,
        )
        if row is None:
            return AppendResult(run_id=req.run_id, error=RunNotFoundError(f"run id {req.run_id!r}"))
        next_id, fence, status = row[0], row[1], row[2]
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
            open_run = await conn.fetchval(
                self._q(
                    "SELECT run_id FROM {s}.runs WHERE workflow_id = $1 AND status = 'running'"
                ),
                started.workflow_id,
            )
            if open_run is not None and open_run != req.run_id:
                return AppendResult(
                    run_id=req.run_id,
                    error=WorkflowAlreadyRunningError(started.workflow_id, open_run),
                )
            if started.workflow_id in starting:
                return AppendResult(
                    run_id=req.run_id,
                    error=WorkflowAlreadyRunningError(
                        started.workflow_id, starting[started.workflow_id]
                    ),
                )
            starting[started.workflow_id] = new_run.run_id

        if req.finish_activity_task is not None:
            task_id, worker = req.finish_activity_task
            deleted = await conn.fetchval(
                self._q(
                    "DELETE FROM {s}.activity_tasks WHERE task_id = $1 AND owner = $2 "
                    "RETURNING task_id"
                ),
                task_id,
                worker,
            )
            if deleted is None:
                return AppendResult(
                    run_id=req.run_id,
                    error=LeaseLostError(
                        req.run_id, f"activity task {task_id} is no longer leased by {worker!r}"
                    ),
                )

        events: list[AnyEvent] = []
        closing: tuple[RunStatus, float] | None = None
        timers: dict[int, float | None] = {}
        cancelled_activities: list[int] = []
        for offset, event in enumerate(req.events):
            numbered: Any = event
            if event.event_id != next_id + offset:
                numbered = msgspec.structs.replace(event, event_id=next_id + offset)
            events.append(numbered)
            closes_as = _CLOSING_STATUS.get(type(numbered))
            if closes_as is not None:
                closing = closes_as, _epoch(numbered.timestamp)
            elif isinstance(numbered, TimerStarted):
                timers[numbered.seq] = _epoch(numbered.fire_at)
            elif isinstance(numbered, TimerFired | TimerCancelled):
                timers[numbered.seq] = None
            elif isinstance(numbered, ActivityCancelled):
                # A worker running it elsewhere loses the task: its lease renewal fails and
                # the attempt is abandoned, even while the run goes on.
                cancelled_activities.append(numbered.seq)
        new_next = next_id + len(events)

        # Every write of the request in one statement: data-modifying CTEs all run to
        # completion, whether or not the final UPDATE reads them.
        p = _Sql()
        rid = p(req.run_id)
        ctes: list[str] = []
        if events:
            ctes.append(
                f"ev AS (INSERT INTO {{s}}.events (run_id, event_id, data) "
                f"SELECT {rid}, u.i, u.d FROM unnest("
                f"{p([e.event_id for e in events], 'bigint[]')}, "
                f"{p([encode_event(e) for e in events], 'bytea[]')}) AS u(i, d))"
            )
        if closing is not None:
            ctes.append(f"td AS (DELETE FROM {{s}}.timers WHERE run_id = {rid})")
            ctes.append(f"ad AS (DELETE FROM {{s}}.activity_tasks WHERE run_id = {rid})")
        else:
            started_timers = {seq: at for seq, at in timers.items() if at is not None}
            if started_timers:
                ctes.append(
                    f"ts AS (INSERT INTO {{s}}.timers (run_id, seq, fire_at) "
                    f"SELECT {rid}, u.q, u.f FROM unnest("
                    f"{p(list(started_timers), 'bigint[]')}, "
                    f"{p(list(started_timers.values()), 'float8[]')}) AS u(q, f) "
                    "ON CONFLICT (run_id, seq) DO UPDATE SET fire_at = EXCLUDED.fire_at)"
                )
            ended_timers = [seq for seq, at in timers.items() if at is None]
            if ended_timers:
                ctes.append(
                    f"te AS (DELETE FROM {{s}}.timers WHERE run_id = {rid} "
                    f"AND seq = ANY({p(ended_timers, 'bigint[]')}))"
                )
            if cancelled_activities:
                ctes.append(
                    f"ac AS (DELETE FROM {{s}}.activity_tasks WHERE run_id = {rid} "
                    f"AND seq = ANY({p(cancelled_activities, 'bigint[]')}))"
                )
            if req.activity_tasks:
                tasks = req.activity_tasks
                ctes.append(
                    "ai AS (INSERT INTO {s}.activity_tasks "
                    "(run_id, seq, attempt, task_queue, visible_at, payload) "
                    f"SELECT {rid}, u.q, u.a, u.t, u.v, u.p FROM unnest("
                    f"{p([t.seq for t in tasks], 'bigint[]')}, "
                    f"{p([t.attempt for t in tasks], 'bigint[]')}, "
                    f"{p([t.task_queue for t in tasks], 'text[]')}, "
                    f"{p([t.visible_at for t in tasks], 'float8[]')}, "
                    f"{p([_payload_encoder.encode(t.payload) for t in tasks], 'bytea[]')}"
                    ") AS u(q, a, t, v, p))"
                )
        n = p(new_next, "bigint")
        if closing is not None:
            update = (
                f"next_event_id = {n}, status = {p(closing[0].value, 'text')}, "
                f"closed_at = {p(closing[1], 'float8')}, owner = NULL, "
                "lease_expires_at = NULL, wake_at = NULL"
            )
        elif req.release:
            update = (
                f"next_event_id = {n}, owner = NULL, lease_expires_at = NULL, "
                f"wake_at = {p(req.wake_at, 'float8')}"
            )
        elif req.wake:
            now = p(req.now, "float8")
            update = (
                f"next_event_id = {n}, wake_at = CASE WHEN wake_at IS NULL OR wake_at > {now} "
                f"THEN {now} ELSE wake_at END"
            )
        elif req.fence is not None:
            # The owner is up to date with everything before its append: no pending wake-up.
            # Unless it has already released the run (its fence still matches until the next
            # claim): then nobody owns the new events, and clearing wake_at would strand the
            # run, so it is woken like an external append.
            now = p(req.now, "float8")
            update = (
                f"next_event_id = {n}, wake_at = CASE WHEN owner IS NOT NULL THEN NULL "
                f"WHEN wake_at IS NULL OR wake_at > {now} THEN {now} ELSE wake_at END"
            )
        else:
            update = f"next_event_id = {n}"
        with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
        await conn.execute(
            self._q(f"{with_clause}UPDATE {{s}}.runs SET {update} WHERE run_id = {rid}"),
            *p.params,
        )
        # After this run's own close, so a continuation may reuse its workflow id.
        for new_run in req.start_runs:
            await self._create_run(conn, new_run, req.now)
        for linked in req.linked:
            if linked.follow_continuations:
                linked = msgspec.structs.replace(
                    linked, run_id=await self._chain_head(conn, linked.run_id)
                )
            outcome = await self._append(conn, linked)
            if outcome.error is not None and not isinstance(
                outcome.error, RunClosedError | RunNotFoundError
            ):
                raise outcome.error
        return AppendResult(run_id=req.run_id, next_event_id=new_next, events=tuple(events))

    async def _chain_head(self, conn: Connection, run_id: str) -> str:
        """The newest run of ``run_id``'s continue-as-new chain (``run_id`` itself if it did
        not continue as new)."""
        while True:
            row = await conn.fetchrow(
                self._q(
                    """
                    SELECT r.status, e.data FROM {s}.runs r
                    LEFT JOIN {s}.events e
                      ON e.run_id = r.run_id AND e.event_id = r.next_event_id - 1
                    WHERE r.run_id = $1
                    """
                ),
                run_id,
            )
            if row is None or row[0] != RunStatus.CONTINUED_AS_NEW.value or row[1] is None:
                return run_id
            last = decode_event(row[1])
            if not isinstance(last, WorkflowContinuedAsNew):
                return run_id
            run_id = last.new_run_id

    # -- wake-ups --------------------------------------------------------------------------

    async def wait_for_run(self, run_id: str, max_wait: float) -> None:
        self._check_open()
        await self._ensure_listener()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters.setdefault(run_id, []).append(future)
        try:
            await asyncio.wait_for(future, max_wait)
        except TimeoutError:
            pass
        finally:
            waiters = self._run_waiters.get(run_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._run_waiters[run_id]

    async def add_work_listener(
        self, task_queue: str, callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Call ``callback`` when a write in any process may have made work of ``task_queue``
        ready (see :class:`history.WorkNotifier`)."""
        self._check_open()
        await self._ensure_listener()
        self._work_listeners.setdefault(task_queue, []).append(callback)

        def remove() -> None:
            callbacks = self._work_listeners.get(task_queue)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._work_listeners[task_queue]

        return remove

    async def _ensure_listener(self) -> None:
        """Open the listening connection if it is not; a failure only logs (waiters fall back
        to their timeouts) and leaves reconnecting to the background."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listener_lock:
            if self._closed or (self._listener is not None and not self._listener.is_closed()):
                return
            try:
                await self._connect_listener()
            except (asyncpg.PostgresError, *_UNREACHABLE) as exc:
                log.warning("cannot listen for wake-ups; polling", store=self.url, error=str(exc))
                self._schedule_reconnect()

    async def _connect_listener(self) -> None:
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": "perdura-listener"}
        )
        try:
            await conn.add_listener(self._work_channel, self._on_work)
            await conn.add_listener(self._closed_channel, self._on_closed)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_work(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for callback in list(self._work_listeners.get(str(payload), ())):
            callback()

    def _on_closed(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for future in self._run_waiters.pop(str(payload), ()):
            if not future.done():
                future.set_result(None)

    def _wake_everyone(self) -> None:
        """Notifications may have been missed: every waiter polls once."""
        for callbacks in list(self._work_listeners.values()):
            for callback in list(callbacks):
                callback()
        waiters, self._run_waiters = self._run_waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def _on_listener_lost(self, conn: object) -> None:
        if self._closed:
            return
        self._listener = None
        self._wake_everyone()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closed or (self._reconnect is not None and not self._reconnect.done()):
            return
        self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.1
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                async with self._listener_lock:
                    if self._closed:
                        return
                    await self._connect_listener()
            except (asyncpg.PostgresError, *_UNREACHABLE):
                delay = min(delay * 2, 5.0)
                continue
            log.info("listening for wake-ups again", store=self.url)
            self._wake_everyone()
            return

    # -- leases ----------------------------------------------------------------------------

    async def claim_runs(
        self, task_queue: str, *, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[RunClaim]:
        # An owner never takes a run over from itself (see SqliteStore.claim_runs); a lease is
        # expired from the instant lease_expires_at on, the time next_wake_at reports.
        with self._errors(f"claiming runs of queue {task_queue!r}"):
            rows = await self._pool.fetch(
                self._q(
                    """
                    WITH ready AS (
                        SELECT run_id FROM {s}.runs
                        WHERE status = 'running' AND task_queue = $3 AND (
                            (owner IS NULL AND wake_at <= $4)
                            OR (owner IS NOT NULL AND lease_expires_at <= $4 AND owner <> $1))
                        LIMIT $5
                        FOR UPDATE SKIP LOCKED
                    )
                    UPDATE {s}.runs r
                    SET owner = $1, lease_expires_at = $2, fence = r.fence + 1, wake_at = NULL
                    FROM ready WHERE r.run_id = ready.run_id
                    RETURNING r.run_id, r.fence, r.workflow_type, r.next_event_id
                    """
                ),
                owner,
                now + lease_seconds,
                task_queue,
                now,
                limit,
            )
        return [
            RunClaim(run_id=r[0], fence=r[1], workflow_type=r[2], history_length=r[3] - 1)
            for r in rows
        ]

    async def renew_leases(self, owner: str, *, until: float) -> set[str]:
        with self._errors(f"renewing the leases of {owner!r}"):
            rows = await self._pool.fetch(
                self._q(
                    "UPDATE {s}.runs SET lease_expires_at = $1 "
                    "WHERE owner = $2 AND status = 'running' RETURNING run_id"
                ),
                until,
                owner,
            )
        return {r[0] for r in rows}

    async def release_owner(self, owner: str) -> int:
        async def op(conn: Connection) -> int:
            # The dropped owner may have been mid-activation: its runs need a worker now,
            # not when the lease nobody will renew would have run out.
            released = await conn.fetch(
                self._q(
                    "UPDATE {s}.runs SET owner = NULL, lease_expires_at = NULL, "
                    "wake_at = COALESCE(wake_at, 0) WHERE owner = $1 RETURNING run_id"
                ),
                owner,
            )
            await conn.execute(
                self._q(
                    "UPDATE {s}.activity_tasks SET owner = NULL, lease_expires_at = NULL "
                    "WHERE owner = $1"
                ),
                owner,
            )
            return len(released)

        return await self._transaction(op, f"releasing the leases of {owner!r}")

    async def reschedule_run(self, run_id: str, *, now: float) -> RunInfo:
        async def op(conn: Connection) -> RunInfo:
            status = await conn.fetchval(
                self._q("SELECT status FROM {s}.runs WHERE run_id = $1 FOR UPDATE"), run_id
            )
            if status is None:
                raise RunNotFoundError(f"run id {run_id!r}")
            if status != RunStatus.RUNNING.value:
                raise RunClosedError(run_id, status)
            row = await conn.fetchrow(
                self._q(
                    "UPDATE {s}.runs SET owner = NULL, lease_expires_at = NULL, wake_at = $2 "
                    f"WHERE run_id = $1 RETURNING {_RUN_COLUMNS}"
                ),
                run_id,
                now,
            )
            await conn.execute(
                self._q(
                    "UPDATE {s}.activity_tasks SET owner = NULL, lease_expires_at = NULL, "
                    "visible_at = LEAST(visible_at, $2) WHERE run_id = $1 AND owner IS NOT NULL"
                ),
                run_id,
                now,
            )
            return _run_info(row)

        return await self._transaction(op, f"rescheduling run {run_id!r}")

    # -- activity tasks --------------------------------------------------------------------

    async def list_activity_tasks(self, run_id: str) -> list[ActivityTaskSpec]:
        with self._errors(f"activity tasks of run {run_id!r}"):
            rows = await self._pool.fetch(
                self._q(
                    "SELECT seq, task_queue, attempt, visible_at, payload FROM {s}.activity_tasks "
                    "WHERE run_id = $1 ORDER BY seq, attempt, task_id"
                ),
                run_id,
            )
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
        with self._errors(f"claiming activity tasks of queue {task_queue!r}"):
            rows = await self._pool.fetch(
                self._q(
                    """
                    WITH visible AS (
                        SELECT task_id FROM {s}.activity_tasks
                        WHERE task_queue = $3 AND visible_at <= $4
                          AND (owner IS NULL OR lease_expires_at < $4)
                        ORDER BY visible_at LIMIT $5
                        FOR UPDATE SKIP LOCKED
                    )
                    UPDATE {s}.activity_tasks t SET owner = $1, lease_expires_at = $2
                    FROM visible WHERE t.task_id = visible.task_id
                    RETURNING t.task_id, t.run_id, t.seq, t.attempt, t.task_queue, t.payload,
                              t.lease_expires_at, t.visible_at
                    """
                ),
                owner,
                now + lease_seconds,
                task_queue,
                now,
                limit,
            )
        rows = sorted(rows, key=lambda r: (r[7], r[0]))
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

    async def renew_activity_tasks(
        self, owner: str, task_ids: list[int], *, until: float
    ) -> set[int]:
        if not task_ids:
            return set()
        with self._errors(f"renewing activity tasks of {owner!r}"):
            rows = await self._pool.fetch(
                self._q(
                    "UPDATE {s}.activity_tasks SET lease_expires_at = $1 "
                    "WHERE owner = $2 AND task_id = ANY($3::bigint[]) RETURNING task_id"
                ),
                until,
                owner,
                task_ids,
            )
        return {r[0] for r in rows}

    # -- reading ---------------------------------------------------------------------------

    async def read_history(self, run_id: str, *, after_event_id: int = 0) -> list[AnyEvent]:
        with self._errors(f"reading history of run {run_id!r}"):
            # One statement, one snapshot: the run's length and its events agree.
            rows = await self._pool.fetch(
                self._q(
                    """
                    SELECT r.next_event_id, e.event_id, e.data FROM {s}.runs r
                    LEFT JOIN {s}.events e ON e.run_id = r.run_id AND e.event_id > $2
                    WHERE r.run_id = $1 ORDER BY e.event_id
                    """
                ),
                run_id,
                after_event_id,
            )
        if not rows:
            raise RunNotFoundError(f"run id {run_id!r}")
        next_event_id = rows[0][0]
        events = _decode_rows(
            run_id, after_event_id, [(r[1], r[2]) for r in rows if r[1] is not None]
        )
        last = events[-1].event_id if events else after_event_id
        if last < next_event_id - 1:
            raise CorruptStoreError(
                f"history of run {run_id!r} ends at event {last}, but the run records "
                f"{next_event_id - 1} events: event {last + 1} is missing"
            )
        return events

    async def get_run(self, run_id: str) -> RunInfo:
        with self._errors(f"reading run {run_id!r}"):
            row = await self._pool.fetchrow(
                self._q(f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = $1"), run_id
            )
        if row is None:
            raise RunNotFoundError(f"run id {run_id!r}")
        return _run_info(row)

    async def find_run(self, workflow_id: str) -> RunInfo:
        with self._errors(f"finding workflow {workflow_id!r}"):
            row = await self._pool.fetchrow(
                self._q(
                    f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE workflow_id = $1 "
                    "ORDER BY status = 'running' DESC, started_at DESC, created DESC LIMIT 1"
                ),
                workflow_id,
            )
        if row is None:
            raise RunNotFoundError(f"workflow id {workflow_id!r}")
        return _run_info(row)

    async def list_runs(self, query: RunQuery) -> list[RunInfo]:
        p = _Sql()
        where = _where(query, p)
        with self._errors("listing runs"):
            rows = await self._pool.fetch(
                self._q(
                    f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs{where} "
                    f"ORDER BY started_at DESC, run_id LIMIT {p(query.limit, 'bigint')} "
                    f"OFFSET {p(query.offset, 'bigint')}"
                ),
                *p.params,
            )
        return [_run_info(row) for row in rows]

    async def count_runs(self, query: RunQuery) -> int:
        p = _Sql()
        where = _where(query, p)
        with self._errors("counting runs"):
            count: int = await self._pool.fetchval(
                self._q(f"SELECT COUNT(*) FROM {{s}}.runs{where}"), *p.params
            )
        return count

    async def pending_timers(self, run_id: str | None = None) -> list[TimerInfo]:
        with self._errors("reading timers"):
            if run_id is None:
                rows = await self._pool.fetch(
                    self._q("SELECT run_id, seq, fire_at FROM {s}.timers ORDER BY fire_at")
                )
            else:
                rows = await self._pool.fetch(
                    self._q(
                        "SELECT run_id, seq, fire_at FROM {s}.timers WHERE run_id = $1 "
                        "ORDER BY fire_at"
                    ),
                    run_id,
                )
        return [TimerInfo(run_id=r[0], seq=r[1], fire_at=_ts(r[2])) for r in rows]

    async def next_wake_at(
        self,
        task_queue: str,
        *,
        runs: bool = True,
        activity_tasks: bool = True,
        owner: str | None = None,
    ) -> float | None:
        p = _Sql()
        parts: list[str] = []
        if runs:
            queue = p(task_queue)
            parts.append(
                "SELECT MIN(wake_at) AS t FROM {s}.runs"
                f" WHERE status = 'running' AND owner IS NULL AND task_queue = {queue}"
            )
            parts.append(
                "SELECT MIN(lease_expires_at) AS t FROM {s}.runs"
                f" WHERE status = 'running' AND owner IS NOT NULL AND task_queue = {queue}"
                + ("" if owner is None else f" AND owner <> {p(owner)}")
            )
        if activity_tasks:
            parts.append(
                "SELECT MIN(visible_at) AS t FROM {s}.activity_tasks"
                f" WHERE task_queue = {p(task_queue)} AND owner IS NULL"
            )
        if not parts:
            return None
        with self._errors("reading the next wake-up time"):
            value: float | None = await self._pool.fetchval(
                self._q(f"SELECT MIN(t) FROM ({' UNION ALL '.join(parts)}) AS wake"), *p.params
            )
        return value


def _where(query: RunQuery, p: _Sql) -> str:
    clauses: list[str] = []
    if query.workflow_id is not None:
        clauses.append(f"workflow_id = {p(query.workflow_id)}")
    if query.workflow_type is not None:
        clauses.append(f"workflow_type = {p(query.workflow_type)}")
    if query.status is not None:
        clauses.append(f"status = {p(query.status.value)}")
    if query.task_queue is not None:
        clauses.append(f"task_queue = {p(query.task_queue)}")
    if query.started_after is not None:
        clauses.append(f"started_at >= {p(_epoch(query.started_after), 'float8')}")
    if query.started_before is not None:
        clauses.append(f"started_at < {p(_epoch(query.started_before), 'float8')}")
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """Separate perdura's own query parameters from the DSN handed to asyncpg."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(
            f"bad PostgreSQL store URL {redact_url(url)}: it must start with postgresql://"
        )
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OWN_PARAMETERS:
            own[key] = value
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), own


def _display_url(url: str, schema: str) -> str:
    """The URL as shown to people: it names the schema whenever that is not the default."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    if schema != DEFAULT_SCHEMA:
        query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))
