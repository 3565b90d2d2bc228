"""The scale-out store: PostgreSQL through asyncpg.

Many worker processes on many machines share one PostgreSQL database. The store keeps the
semantics of the SQLite store exactly (both pass one conformance suite); what changes is how
concurrency is handled:

* **Group commit, one round trip.** An append is one call of the server-side function
  ``append_one`` (installed by schema migration 2): it locks the run's row, checks the fence,
  the expected next event id and the status, and writes the events, the projections (timers,
  activity tasks, close) and the run row — every check before the first write, so a refused
  request returns a code and writes nothing. Appends made by one process meanwhile (its
  drivers append concurrently) travel together in one ``append_many`` statement, one commit;
  one request's refusal never touches the others, and a statement that fails outright is
  split into single requests. Rows are locked in run id order, so batches of two processes
  never deadlock. Run creations and history reads are grouped the same way. Requests that
  start runs or append to others (children, continuations, parent notices) run as one
  transaction of several statements.
* **Claims skip what others hold.** ``claim_runs`` and ``claim_activity_tasks`` select with
  ``FOR UPDATE SKIP LOCKED`` and update in the same statement, so concurrent pollers never wait
  on each other and never receive the same row; each run claim increments the run's fence.
* **Wake-ups by NOTIFY.** Triggers on the tables ``pg_notify`` a schema-specific channel when a
  run or an activity task becomes claimable (payload: the task queue), when a run closes
  (payload: the run id), and when an external event is appended to a run a worker holds
  (payload: the run id). One listening connection per store turns those into
  :meth:`add_work_listener` and :meth:`add_held_run_listener` callbacks and
  :meth:`wait_for_run` wake-ups, so an idle worker in any process reacts within milliseconds
  instead of at its next poll, and a held run's driver catches up at once. Notifications are
  hints: a dropped listening connection is re-opened in the background and everything that
  waits is woken to poll once.
* **Connections die.** A database restart kills every pooled connection; statements that can
  run twice (reads, lease renewals) are retried once on a fresh one, a claim whose answer was
  lost is recovered by its owner and lease expiry, and everything else fails with a
  ``StoreError`` its caller retries (the worker's poll loop) or recovers from (replay).
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
    WorkflowReset,
    WorkflowStarted,
    decode_event,
    encode_event,
)
from ._sqlite import (
    _COPYING,
    _decode_rows,
    _epoch,
    _payload_decoder,
    _payload_encoder,
    _ts,
)
from ._store import (
    CLOSING_EVENTS,
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
_OWN_PARAMETERS: Final = frozenset({"schema", "pool_size", "application_name"})

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
    # 2: appends in one round trip (server-side functions), wake-ups for held runs.
    (
        # One request: every check before the first write, so a refused request (a result
        # code, never an exception) has written nothing and needs no savepoint; the writes
        # are the projections the SQLite store makes (see SqliteStore._append).
        # Codes: 0 ok, 1 no such run, 2 stale fence, 3 expected next id moved, 4 the events
        # were numbered from a stale guess (external append: renumber and resubmit), 5 run
        # closed, 6 a started workflow id is taken, 7 activity task no longer leased.
        """
        CREATE FUNCTION {s}.append_one(
            p_run_id text, p_first bigint, p_strict boolean, p_fence bigint, p_now float8,
            p_mode integer, p_wake_at float8, p_closing text, p_closed_at float8,
            p_finish_task bigint, p_finish_worker text, p_events bytea[],
            p_timer_seqs bigint[], p_timer_fire float8[], p_ended_timers bigint[],
            p_cancelled bigint[], p_task_seqs bigint[], p_task_attempts bigint[],
            p_task_queues text[], p_task_visible float8[], p_task_payloads bytea[],
            p_start_ids text[],
            OUT o_code integer, OUT o_next bigint, OUT o_fence bigint,
            OUT o_detail text, OUT o_detail2 text)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_next bigint;
            v_status text;
            v_open text;
            v_new bigint;
            i integer;
        BEGIN
            SELECT r.next_event_id, r.fence, r.status INTO v_next, o_fence, v_status
            FROM {s}.runs r WHERE r.run_id = p_run_id FOR UPDATE;
            IF NOT FOUND THEN
                o_code := 1;
                RETURN;
            END IF;
            o_next := v_next;
            o_detail := v_status;
            IF p_fence IS NOT NULL AND o_fence <> p_fence THEN
                o_code := 2;
                RETURN;
            END IF;
            IF p_strict AND p_first <> v_next THEN
                o_code := 3;
                RETURN;
            END IF;
            IF v_status <> 'running' AND v_status <> 'copying' THEN
                o_code := 5;
                RETURN;
            END IF;
            FOR i IN 1 .. coalesce(array_length(p_start_ids, 1), 0) LOOP
                v_open := NULL;
                SELECT r.run_id INTO v_open FROM {s}.runs r
                WHERE r.workflow_id = p_start_ids[i] AND r.status = 'running';
                IF v_open IS NOT NULL AND v_open <> p_run_id THEN
                    o_code := 6;
                    o_detail := p_start_ids[i];
                    o_detail2 := v_open;
                    RETURN;
                END IF;
                IF i > 1 AND p_start_ids[i] = ANY (p_start_ids[1:i - 1]) THEN
                    o_code := 6;  -- o_detail2 NULL: an earlier run of this very request
                    o_detail := p_start_ids[i];
                    RETURN;
                END IF;
            END LOOP;
            IF NOT p_strict AND p_first <> v_next THEN
                o_code := 4;
                RETURN;
            END IF;
            IF p_finish_task IS NOT NULL THEN
                DELETE FROM {s}.activity_tasks t
                WHERE t.task_id = p_finish_task AND t.owner = p_finish_worker;
                IF NOT FOUND THEN
                    o_code := 7;
                    RETURN;
                END IF;
            END IF;
            v_new := v_next + coalesce(array_length(p_events, 1), 0);
            IF v_new > v_next THEN
                INSERT INTO {s}.events (run_id, event_id, data)
                SELECT p_run_id, v_next + u.o - 1, u.d
                FROM unnest(p_events) WITH ORDINALITY AS u(d, o);
            END IF;
            IF p_closing IS NOT NULL THEN
                DELETE FROM {s}.timers t WHERE t.run_id = p_run_id;
                DELETE FROM {s}.activity_tasks t WHERE t.run_id = p_run_id;
                UPDATE {s}.runs r SET next_event_id = v_new, status = p_closing,
                    closed_at = p_closed_at, owner = NULL, lease_expires_at = NULL,
                    wake_at = NULL
                WHERE r.run_id = p_run_id;
            ELSE
                IF coalesce(array_length(p_timer_seqs, 1), 0) > 0 THEN
                    INSERT INTO {s}.timers AS t (run_id, seq, fire_at)
                    SELECT p_run_id, u.q, u.f FROM unnest(p_timer_seqs, p_timer_fire) AS u(q, f)
                    ON CONFLICT (run_id, seq) DO UPDATE SET fire_at = EXCLUDED.fire_at;
                END IF;
                IF coalesce(array_length(p_ended_timers, 1), 0) > 0 THEN
                    DELETE FROM {s}.timers t
                    WHERE t.run_id = p_run_id AND t.seq = ANY (p_ended_timers);
                END IF;
                IF coalesce(array_length(p_cancelled, 1), 0) > 0 THEN
                    DELETE FROM {s}.activity_tasks t
                    WHERE t.run_id = p_run_id AND t.seq = ANY (p_cancelled);
                END IF;
                IF coalesce(array_length(p_task_seqs, 1), 0) > 0 THEN
                    INSERT INTO {s}.activity_tasks
                        (run_id, seq, attempt, task_queue, visible_at, payload)
                    SELECT p_run_id, u.q, u.a, u.t, u.v, u.p
                    FROM unnest(p_task_seqs, p_task_attempts, p_task_queues, p_task_visible,
                                p_task_payloads) AS u(q, a, t, v, p);
                END IF;
                IF p_mode = 1 THEN  -- release
                    UPDATE {s}.runs r SET next_event_id = v_new, owner = NULL,
                        lease_expires_at = NULL, wake_at = p_wake_at
                    WHERE r.run_id = p_run_id;
                ELSIF p_mode = 2 THEN  -- an external event that needs the owner now
                    UPDATE {s}.runs r SET next_event_id = v_new,
                        wake_at = CASE WHEN r.wake_at IS NULL OR r.wake_at > p_now
                                       THEN p_now ELSE r.wake_at END
                    WHERE r.run_id = p_run_id;
                ELSIF p_mode = 3 THEN
                    -- The owner is up to date: no pending wake-up, unless it has already
                    -- released the run (then nobody owns the new events: wake it).
                    UPDATE {s}.runs r SET next_event_id = v_new,
                        wake_at = CASE WHEN r.owner IS NOT NULL THEN NULL
                                       WHEN r.wake_at IS NULL OR r.wake_at > p_now THEN p_now
                                       ELSE r.wake_at END
                    WHERE r.run_id = p_run_id;
                ELSE
                    UPDATE {s}.runs r SET next_event_id = v_new WHERE r.run_id = p_run_id;
                END IF;
            END IF;
            o_code := 0;
            o_next := v_new;
        END $$
        """,
        # Many requests in one statement (one round trip, one commit): the variable-length
        # parts travel as flat arrays, each request's share ending at its ``*_ends`` entry.
        """
        CREATE FUNCTION {s}.append_many(
            p_run_ids text[], p_firsts bigint[], p_stricts boolean[], p_fences bigint[],
            p_nows float8[], p_modes integer[], p_wake_ats float8[], p_closings text[],
            p_closed_ats float8[], p_finish_tasks bigint[], p_finish_workers text[],
            p_ev_ends integer[], p_events bytea[],
            p_tm_ends integer[], p_tm_seqs bigint[], p_tm_fire float8[],
            p_te_ends integer[], p_te_seqs bigint[],
            p_ac_ends integer[], p_ac_seqs bigint[],
            p_tk_ends integer[], p_tk_seqs bigint[], p_tk_attempts bigint[],
            p_tk_queues text[], p_tk_visible float8[], p_tk_payloads bytea[],
            p_st_ends integer[], p_st_ids text[])
        RETURNS TABLE (o_code integer, o_next bigint, o_fence bigint, o_detail text,
                       o_detail2 text)
        LANGUAGE plpgsql AS $$
        DECLARE
            i integer;
            ev integer := 0;
            tm integer := 0;
            te integer := 0;
            ac integer := 0;
            tk integer := 0;
            st integer := 0;
        BEGIN
            FOR i IN 1 .. coalesce(array_length(p_run_ids, 1), 0) LOOP
                SELECT a.o_code, a.o_next, a.o_fence, a.o_detail, a.o_detail2
                INTO o_code, o_next, o_fence, o_detail, o_detail2
                FROM {s}.append_one(
                    p_run_ids[i], p_firsts[i], p_stricts[i], p_fences[i], p_nows[i],
                    p_modes[i], p_wake_ats[i], p_closings[i], p_closed_ats[i],
                    p_finish_tasks[i], p_finish_workers[i],
                    p_events[ev + 1:p_ev_ends[i]],
                    p_tm_seqs[tm + 1:p_tm_ends[i]], p_tm_fire[tm + 1:p_tm_ends[i]],
                    p_te_seqs[te + 1:p_te_ends[i]],
                    p_ac_seqs[ac + 1:p_ac_ends[i]],
                    p_tk_seqs[tk + 1:p_tk_ends[i]], p_tk_attempts[tk + 1:p_tk_ends[i]],
                    p_tk_queues[tk + 1:p_tk_ends[i]], p_tk_visible[tk + 1:p_tk_ends[i]],
                    p_tk_payloads[tk + 1:p_tk_ends[i]],
                    p_st_ids[st + 1:p_st_ends[i]]) AS a;
                RETURN NEXT;
                ev := p_ev_ends[i];
                tm := p_tm_ends[i];
                te := p_te_ends[i];
                ac := p_ac_ends[i];
                tk := p_tk_ends[i];
                st := p_st_ends[i];
            END LOOP;
        END $$
        """,
        # Runs created together (group commit of concurrent create_run calls): checked and
        # inserted one after another as separate calls would be; codes: 0 created, 1 the run
        # id is taken, 2 the workflow id has an open run (o_detail).
        """
        CREATE FUNCTION {s}.create_many(
            p_run_ids text[], p_workflow_ids text[], p_types text[], p_queues text[],
            p_started_ats float8[], p_wake_ats float8[], p_data bytea[])
        RETURNS TABLE (o_code integer, o_detail text)
        LANGUAGE plpgsql AS $$
        DECLARE
            i integer;
        BEGIN
            FOR i IN 1 .. coalesce(array_length(p_run_ids, 1), 0) LOOP
                o_detail := NULL;
                SELECT r.run_id INTO o_detail FROM {s}.runs r
                WHERE r.workflow_id = p_workflow_ids[i] AND r.status = 'running';
                IF o_detail IS NOT NULL THEN
                    o_code := 2;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
                INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, task_queue, status,
                                      started_at, next_event_id, wake_at)
                VALUES (p_run_ids[i], p_workflow_ids[i], p_types[i], p_queues[i], 'running',
                        p_started_ats[i], 2, p_wake_ats[i])
                ON CONFLICT (run_id) DO NOTHING;
                IF NOT FOUND THEN
                    o_code := 1;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
                INSERT INTO {s}.events (run_id, event_id, data) VALUES (p_run_ids[i], 1, p_data[i]);
                o_code := 0;
                RETURN NEXT;
            END LOOP;
        END $$
        """,
        # An external event appended to a run that a worker holds (a signal, a cancel
        # request, a remote activity's result) tells that worker at once: without it the
        # driver would see the event only when its keep-alive ends. Owner appends clear
        # wake_at, external ones set it, so this fires for external appends only.
        """
        CREATE FUNCTION {s}.notify_held() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('perdura_held_' || md5(TG_TABLE_SCHEMA), NEW.run_id);
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER runs_held_woken AFTER UPDATE ON {s}.runs FOR EACH ROW
        WHEN (NEW.status = 'running' AND NEW.owner IS NOT NULL AND NEW.wake_at IS NOT NULL
              AND NEW.next_event_id > OLD.next_event_id)
        EXECUTE FUNCTION {s}.notify_held()
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
    # A pooled connection the server cut while it was idle can fail its next use this way
    # before anything is sent (asyncpg has not yet noticed the socket close).
    asyncpg.InternalClientError,
)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to print and log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _channels(schema: str) -> tuple[str, str, str]:
    digest = hashlib.md5(schema.encode()).hexdigest()
    return f"perdura_work_{digest}", f"perdura_closed_{digest}", f"perdura_held_{digest}"


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


#: How many requests one group commit statement carries at most.
_BATCH_LIMIT: Final = 256
#: How many group commit statements one store object has on their way at a time: while the
#: server applies one batch, the next is being filled and sent.
_IN_FLIGHT: Final = 2
#: How many runs' next event ids a store object remembers (to number external appends).
_NEXT_ID_MEMORY: Final = 4096

_MODE_PLAIN: Final = 0
_MODE_RELEASE: Final = 1
_MODE_WAKE: Final = 2
_MODE_FENCED: Final = 3


def _is_plain(request: AppendRequest) -> bool:
    """A request the group commit queue can take: it touches one run only."""
    return not request.start_runs and not request.linked


class _Prepared:
    """One append request as ``append_one`` takes it: events numbered and encoded, and the
    projections of the log (close, timers, cancelled activities) worked out."""

    __slots__ = (
        "cancelled",
        "closed_at",
        "closing",
        "data",
        "ended_timers",
        "events",
        "first",
        "mode",
        "request",
        "started_timers",
        "strict",
    )

    def __init__(self, request: AppendRequest, *, first: int, strict: bool) -> None:
        self.request = request
        self.strict = strict
        self.closing: str | None = None
        self.closed_at: float | None = None
        timers: dict[int, float | None] = {}
        self.cancelled: list[int] = []
        for event in request.events:
            closes_as = CLOSING_EVENTS.get(type(event))
            if closes_as is not None:
                self.closing, self.closed_at = closes_as.value, _epoch(event.timestamp)
            elif isinstance(event, TimerStarted):
                timers[event.seq] = _epoch(event.fire_at)
            elif isinstance(event, TimerFired | TimerCancelled):
                timers[event.seq] = None
            elif isinstance(event, ActivityCancelled):
                # A worker running it elsewhere loses the task: its lease renewal fails and
                # the attempt is abandoned, even while the run goes on.
                self.cancelled.append(event.seq)
        self.started_timers = {seq: at for seq, at in timers.items() if at is not None}
        self.ended_timers = [seq for seq, at in timers.items() if at is None]
        if request.release:
            self.mode = _MODE_RELEASE
        elif request.wake:
            self.mode = _MODE_WAKE
        elif request.fence is not None:
            self.mode = _MODE_FENCED
        else:
            self.mode = _MODE_PLAIN
        self.events: tuple[AnyEvent, ...] = ()
        self.data: list[bytes] = []
        self.first = first
        self.number(first)

    def number(self, first: int) -> None:
        """Number (and encode) the events from ``first`` on."""
        self.first = first
        events: list[Any] = []
        for offset, event in enumerate(self.request.events):
            if event.event_id != first + offset:
                event = msgspec.structs.replace(event, event_id=first + offset)
            events.append(event)
        self.events = tuple(events)
        self.data = [encode_event(event) for event in events]


def _batch_args(batch: list[_Prepared]) -> list[Any]:
    """The arguments of ``append_many`` for ``batch``, in its order."""
    run_ids: list[str] = []
    firsts: list[int] = []
    stricts: list[bool] = []
    fences: list[int | None] = []
    nows: list[float] = []
    modes: list[int] = []
    wake_ats: list[float | None] = []
    closings: list[str | None] = []
    closed_ats: list[float | None] = []
    finish_tasks: list[int | None] = []
    finish_workers: list[str | None] = []
    ev_ends: list[int] = []
    events: list[bytes] = []
    tm_ends: list[int] = []
    tm_seqs: list[int] = []
    tm_fire: list[float] = []
    te_ends: list[int] = []
    te_seqs: list[int] = []
    ac_ends: list[int] = []
    ac_seqs: list[int] = []
    tk_ends: list[int] = []
    tk_seqs: list[int] = []
    tk_attempts: list[int] = []
    tk_queues: list[str] = []
    tk_visible: list[float] = []
    tk_payloads: list[bytes] = []
    st_ends: list[int] = []
    st_ids: list[str] = []
    for p in batch:
        req = p.request
        run_ids.append(req.run_id)
        firsts.append(p.first)
        stricts.append(p.strict)
        fences.append(req.fence)
        nows.append(req.now)
        modes.append(p.mode)
        wake_ats.append(req.wake_at)
        closings.append(p.closing)
        closed_ats.append(p.closed_at)
        finish = req.finish_activity_task
        finish_tasks.append(None if finish is None else finish[0])
        finish_workers.append(None if finish is None else finish[1])
        events.extend(p.data)
        ev_ends.append(len(events))
        tm_seqs.extend(p.started_timers)
        tm_fire.extend(p.started_timers.values())
        tm_ends.append(len(tm_seqs))
        te_seqs.extend(p.ended_timers)
        te_ends.append(len(te_seqs))
        ac_seqs.extend(p.cancelled)
        ac_ends.append(len(ac_seqs))
        for task in req.activity_tasks:
            tk_seqs.append(task.seq)
            tk_attempts.append(task.attempt)
            tk_queues.append(task.task_queue)
            tk_visible.append(task.visible_at)
            tk_payloads.append(_payload_encoder.encode(task.payload))
        tk_ends.append(len(tk_seqs))
        st_ids.extend(new.started.workflow_id for new in req.start_runs)
        st_ends.append(len(st_ids))
    return [
        run_ids,
        firsts,
        stricts,
        fences,
        nows,
        modes,
        wake_ats,
        closings,
        closed_ats,
        finish_tasks,
        finish_workers,
        ev_ends,
        events,
        tm_ends,
        tm_seqs,
        tm_fire,
        te_ends,
        te_seqs,
        ac_ends,
        ac_seqs,
        tk_ends,
        tk_seqs,
        tk_attempts,
        tk_queues,
        tk_visible,
        tk_payloads,
        st_ends,
        st_ids,
    ]


def _new_run_info(new: NewRun, now: float, history_length: int) -> RunInfo:
    started = new.started
    return RunInfo(
        run_id=new.run_id,
        workflow_id=started.workflow_id,
        workflow_type=started.workflow_type,
        task_queue=started.task_queue,
        status=RunStatus.RUNNING,
        started_at=started.timestamp,
        history_length=history_length,
        wake_at=now,
    )


async def _keep_session(conn: Any) -> None:
    """Hand a connection back to the pool as it is. asyncpg's default reset costs a round
    trip per use (``RESET ALL``, ``UNLISTEN *``, …) to undo session state this store never
    sets: no ``SET``, no cursors, no ``LISTEN`` and only transaction-scoped advisory locks on
    pooled connections. An open transaction is still rolled back by the pool itself."""


#: Errors after which the connection is known dead (the server restarted, or cut it).
_CONNECTION_LOST: Final = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class _Retrying:
    """The pool's ``fetch``/``fetchrow``/``fetchval`` for statements that can safely run
    twice: a database restart leaves every pooled connection dead, and each one's next use
    fails once; that use is retried on a fresh connection instead of failing its caller."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def _twice(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _CONNECTION_LOST:
            return await call()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._twice(lambda: self._pool.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._twice(lambda: self._pool.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._twice(lambda: self._pool.fetchval(query, *args))


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

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        dsn: str,
        schema: str,
        url: str,
        application_name: str = "perdura",
    ):
        self.url = url
        """The store's URL with any password replaced by ``***``."""
        self.schema = schema
        self._dsn = dsn
        self._pool = pool
        self._retrying = _Retrying(pool)
        """The pool for statements that may simply run again (reads, lease renewals)."""
        self._s = f'"{schema}"'
        self._work_channel, self._closed_channel, self._held_channel = _channels(schema)
        self.application_name = application_name
        self._closed = False
        self._run_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._work_listeners: dict[str, list[Callable[[], None]]] = {}
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._listener_lock = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None
        self._sql_cache: dict[str, str] = {}
        self._queue: list[tuple[_Prepared, asyncio.Future[AppendResult]]] = []
        self._in_flight: dict[asyncio.Task[None], set[str]] = {}
        self._kick_scheduled = False
        self._creations: list[tuple[NewRun, float, asyncio.Future[None]]] = []
        self._creating: set[asyncio.Task[None]] = set()
        self._creations_scheduled = False
        self._reads: list[tuple[str, int, asyncio.Future[list[Any]]]] = []
        self._reading: set[asyncio.Task[None]] = set()
        self._reads_scheduled = False
        self._next_ids: dict[str, int] = {}
        self._run_listeners: list[Callable[[str], None]] = []
        self._append_many_sql = self._q(
            "SELECT * FROM {s}.append_many(" + ", ".join(f"${n}" for n in range(1, 29)) + ")"
        )

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
        # Shown in pg_stat_activity (the listening connection adds "-listener").
        application_name = options.get("application_name") or "perdura"
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
                server_settings={"application_name": application_name, "jit": "off"},
                reset=_keep_session,
            )
        except (asyncpg.PostgresError, *_UNREACHABLE) as exc:
            raise _map_error(exc, "opening the store", shown) from exc
        except ValueError as exc:  # asyncpg's DSN parser
            raise StoreError(f"bad store URL {shown}: {exc}") from exc
        store = cls(pool, dsn, schema, _display_url(shown, schema), application_name)
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
            version: int = await self._retrying.fetchval(
                f"SELECT MAX(version) FROM {self._s}.schema_migrations"
            )
            return version

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Writes already queued are applied (their callers are waiting for them).
        while self._queue or self._in_flight or self._creations or self._creating:
            if self._in_flight or self._creating:
                await asyncio.gather(*self._in_flight, *self._creating, return_exceptions=True)
            if self._queue and not self._in_flight:
                self._kick()
            if self._creations and not self._creating:
                self._kick_creations()
        if self._reading:
            await asyncio.gather(*self._reading, return_exceptions=True)
        for _, _, pending in self._reads:
            if not pending.done():
                pending.set_exception(StoreError(f"store {self.url} is closed"))
        self._reads.clear()
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
        where = f"creating run {run_id!r}"
        try:
            if new.history or new.activity_tasks:
                return await self._transaction(lambda conn: self._create_run(conn, new, now), where)
            # The common case joins the creations of this process under way in one statement.
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._creations.append((new, now, future))
            if not self._creations_scheduled:
                self._creations_scheduled = True
                asyncio.get_running_loop().call_soon(self._kick_creations)
            await future
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                # Lost a race with another creator: report it as the check would have.
                raise await self._creation_conflict(new) from None
            raise
        self._remember_next(run_id, 2)
        return _new_run_info(new, now, 1)

    def _kick_creations(self) -> None:
        self._creations_scheduled = False
        loop = asyncio.get_running_loop()
        while self._creations and len(self._creating) < _IN_FLIGHT:
            batch = self._creations[:_BATCH_LIMIT]
            del self._creations[:_BATCH_LIMIT]
            task = loop.create_task(self._create_batch(batch))
            self._creating.add(task)
            task.add_done_callback(self._creation_done)

    def _creation_done(self, task: asyncio.Task[None]) -> None:
        """A batch finished: its slot is free only now, so creations queued meanwhile start
        here (kicking from the batch's own last line would find the slot still taken)."""
        self._creating.discard(task)
        if self._creations and not self._creations_scheduled:
            self._creations_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick_creations)

    async def _create_batch(self, batch: list[tuple[NewRun, float, asyncio.Future[None]]]) -> None:
        try:
            await self._create_many(batch)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            for _, _, future in batch:
                if not future.done():
                    future.cancel()

    async def _create_many(self, batch: list[tuple[NewRun, float, asyncio.Future[None]]]) -> None:
        """Create ``batch`` in one statement; if the statement fails (a creator in another
        process took a workflow id meanwhile), each run in a statement of its own."""
        # One workflow id's runs keep their order (the first one wins).
        ordered = sorted(batch, key=lambda item: item[0].started.workflow_id)
        firsts = [msgspec.structs.replace(new.started, event_id=1) for new, _, _ in ordered]
        where = (
            f"creating run {batch[0][0].run_id!r}"
            if len(batch) == 1
            else f"creating {len(batch)} runs"
        )
        try:
            with self._errors(where):
                for attempt in itertools.count(1):
                    try:
                        rows = await self._pool.fetch(
                            self._q("SELECT * FROM {s}.create_many($1, $2, $3, $4, $5, $6, $7)"),
                            [new.run_id for new, _, _ in ordered],
                            [f.workflow_id for f in firsts],
                            [f.workflow_type for f in firsts],
                            [f.task_queue for f in firsts],
                            [_epoch(f.timestamp) for f in firsts],
                            [now for _, now, _ in ordered],
                            [encode_event(f) for f in firsts],
                        )
                        break
                    except _RETRYABLE:
                        if attempt >= 8:
                            raise
                    await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        except StoreError as exc:
            if len(batch) > 1 and not isinstance(exc.__cause__, _UNREACHABLE):
                for item in batch:
                    await self._create_many([item])
                return
            for new, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                    future.set_exception(await self._creation_conflict(new))
                else:
                    future.set_exception(exc)
            return
        for (new, _, future), (code, detail) in zip(ordered, rows, strict=True):
            if future.done():
                continue
            if code == 0:
                future.set_result(None)
            elif code == 1:
                future.set_exception(RunAlreadyExistsError(new.run_id))
            else:
                future.set_exception(WorkflowAlreadyRunningError(new.started.workflow_id, detail))

    async def _creation_conflict(self, new: NewRun) -> StoreError:
        with self._errors(f"creating run {new.run_id!r}"):
            if not new.closes:
                open_run = await self._retrying.fetchval(
                    self._q(
                        "SELECT run_id FROM {s}.runs WHERE workflow_id = $1 AND status = 'running'"
                    ),
                    new.started.workflow_id,
                )
                if open_run is not None:
                    return WorkflowAlreadyRunningError(new.started.workflow_id, open_run)
        return RunAlreadyExistsError(new.run_id)

    def _insert_run(self, new: NewRun, now: float) -> tuple[Any, ...]:
        """The statement (and its arguments) inserting ``new`` with its first event; it
        returns how many runs it inserted (0: the run id is taken)."""
        first = msgspec.structs.replace(new.started, event_id=1)
        # A copied history that closes the run never counts as the workflow id's open run,
        # not even for the moment before its closing event is projected.
        status = _COPYING if new.closes else RunStatus.RUNNING.value
        # ON CONFLICT on the run id only: a taken workflow id must raise (the caller maps it).
        return (
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
            new.run_id,
            first.workflow_id,
            first.workflow_type,
            first.task_queue,
            status,
            _epoch(first.timestamp),
            now,
            encode_event(first),
        )

    async def _create_run(self, conn: Connection, new: NewRun, now: float) -> RunInfo:
        """Create ``new`` inside the caller's transaction (a copy, or a run an append starts)."""
        closes = new.closes
        if not closes:
            open_run = await conn.fetchval(
                self._q(
                    "SELECT run_id FROM {s}.runs WHERE workflow_id = $1 AND status = 'running'"
                ),
                new.started.workflow_id,
            )
            if open_run is not None:
                raise WorkflowAlreadyRunningError(new.started.workflow_id, open_run)
        if not await conn.fetchval(*self._insert_run(new, now)):
            raise RunAlreadyExistsError(new.run_id)
        if not (new.history or new.activity_tasks):
            return _new_run_info(new, now, 1)
        # The copied events are projected (status, close time, timers) exactly as if they had
        # been appended one by one.
        copy = AppendRequest(
            run_id=new.run_id, events=new.history, now=now, activity_tasks=new.activity_tasks
        )
        copied = (await self._apply(conn, _Prepared(copy, first=2, strict=True))).unwrap()
        if closes:
            row = await conn.fetchrow(
                self._q(f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = $1"), new.run_id
            )
            return _run_info(row)
        return _new_run_info(new, now, copied.next_event_id - 1)

    # -- appending -------------------------------------------------------------------------

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        # Requests for one run apply in the order given; each is atomic on its own. Plain
        # appends (no runs to start, no linked appends) go to the group commit queue, which
        # applies everything this process appends meanwhile in one statement.
        self._check_open()
        if all(_is_plain(request) for request in requests):
            if len(requests) == 1:
                return [await self._enqueue(self._prepare(requests[0]))]
            return list(await asyncio.gather(*(self._enqueue(self._prepare(r)) for r in requests)))
        results: list[AppendResult] = []
        for request in requests:
            if _is_plain(request):
                results.append(await self._enqueue(self._prepare(request)))
            else:
                results.append(await self._append_in_transaction(request))
        return results

    def _prepare(self, request: AppendRequest) -> _Prepared:
        if request.expected_next_event_id is not None:
            return _Prepared(request, first=request.expected_next_event_id, strict=True)
        # An external append goes after whatever the history holds: number its events from
        # the best guess; a wrong guess is refused before any write and renumbered.
        return _Prepared(request, first=self._next_ids.get(request.run_id, 2), strict=False)

    def _remember_next(self, run_id: str, next_event_id: int) -> None:
        """Remember a run's next event id: the guess an external append numbers from."""
        known = self._next_ids
        known.pop(run_id, None)
        known[run_id] = next_event_id
        if len(known) > _NEXT_ID_MEMORY:
            del known[next(iter(known))]

    async def _enqueue(self, prepared: _Prepared) -> AppendResult:
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, future))
        if not self._kick_scheduled:
            # After the callbacks already due: appends made in this turn of the loop share
            # the statement.
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick)
        return await future

    def _kick(self) -> None:
        """Group commit: send what is queued, up to ``_IN_FLIGHT`` statements at a time;
        while they are on their way the queue fills up for the next."""
        self._kick_scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and len(self._in_flight) < _IN_FLIGHT:
            batch = self._take()
            if not batch:
                return
            task = loop.create_task(self._flush(batch))
            self._in_flight[task] = {prepared.request.run_id for prepared, _ in batch}

    def _take(self) -> list[tuple[_Prepared, asyncio.Future[AppendResult]]]:
        """The next batch: queued requests in order, leaving behind (with every later request
        for its run) any whose run has a request in a statement on its way, so one run's
        requests are applied in the order they were made."""
        busy = set().union(*self._in_flight.values())
        taken: list[tuple[_Prepared, asyncio.Future[AppendResult]]] = []
        rest: list[tuple[_Prepared, asyncio.Future[AppendResult]]] = []
        for item in self._queue:
            run_id = item[0].request.run_id
            if len(taken) < _BATCH_LIMIT and run_id not in busy:
                taken.append(item)
            else:
                busy.add(run_id)
                rest.append(item)
        self._queue = rest
        return taken

    async def _flush(self, batch: list[tuple[_Prepared, asyncio.Future[AppendResult]]]) -> None:
        renumbered: list[tuple[_Prepared, asyncio.Future[AppendResult]]] = []
        try:
            outcomes = await self._run_batch([prepared for prepared, _ in batch])
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"appending: {type(exc).__name__}: {exc}")
            )
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(error)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for (prepared, future), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, int):  # numbered from a stale guess
                    prepared.number(outcome)
                    renumbered.append((prepared, future))
                elif not future.done():
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.pop(task, None)
            # Ahead of what came in meanwhile: requests for one run keep their order.
            self._queue[:0] = renumbered
            if self._queue and not self._kick_scheduled:
                self._kick_scheduled = True
                asyncio.get_running_loop().call_soon(self._kick)

    async def _run_batch(self, batch: list[_Prepared]) -> list[AppendResult | int | BaseException]:
        """Apply ``batch`` in one statement. A request the server refuses writes nothing and
        leaves the others alone; one that raises (it never should) would undo the whole
        statement, so then each request is applied in a statement of its own instead."""
        where = (
            f"appending to run {batch[0].request.run_id!r}"
            if len(batch) == 1
            else f"appending to {len(batch)} runs"
        )
        # Rows are locked in run id order (stable: one run's requests keep theirs), so two
        # processes' batches can never wait on each other in a cycle.
        order = sorted(range(len(batch)), key=lambda i: batch[i].request.run_id)
        ordered = [batch[i] for i in order]
        try:
            with self._errors(where):
                for attempt in itertools.count(1):
                    try:
                        rows = await self._pool.fetch(self._append_many_sql, *_batch_args(ordered))
                        break
                    except _RETRYABLE:
                        if attempt >= 8:
                            raise
                    await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        except StoreError as exc:
            if len(batch) == 1 or isinstance(exc.__cause__, _UNREACHABLE):
                raise
            # Find the culprit: nothing of the batch was written.
            singles: list[AppendResult | int | BaseException] = []
            for prepared in batch:
                try:
                    [single] = await self._run_batch([prepared])
                except StoreError as error:
                    single = error
                singles.append(single)
            return singles
        outcomes: list[AppendResult | int | BaseException] = [0] * len(batch)
        for position, row in zip(order, rows, strict=True):
            outcomes[position] = self._outcome(batch[position], row)
        return outcomes

    def _outcome(self, prepared: _Prepared, row: Any) -> AppendResult | int:
        """The result of one request from its row of ``append_many``: an ``AppendResult``,
        or the next event id to renumber from."""
        req = prepared.request
        code, next_id, fence, detail, detail2 = row
        run_id = req.run_id
        if code == 0:
            self._remember_next(run_id, next_id)
            return AppendResult(run_id=run_id, next_event_id=next_id, events=prepared.events)
        if code == 4:
            self._remember_next(run_id, next_id)
            return int(next_id)
        error: StoreError
        if code == 1:
            error = RunNotFoundError(f"run id {run_id!r}")
        elif code == 2:
            error = LeaseLostError(
                run_id, f"fencing token {req.fence} is stale (current is {fence})"
            )
        elif code == 3:
            self._remember_next(run_id, next_id)
            error = AppendConflictError(run_id, prepared.first, next_id)
        elif code == 5:
            error = RunClosedError(run_id, detail)
        elif code == 6:
            if detail2 is None:  # two runs of one workflow id in this request: the first wins
                detail2 = next(n.run_id for n in req.start_runs if n.started.workflow_id == detail)
            error = WorkflowAlreadyRunningError(detail, detail2)
        elif code == 7:
            assert req.finish_activity_task is not None
            task_id, worker = req.finish_activity_task
            error = LeaseLostError(
                run_id, f"activity task {task_id} is no longer leased by {worker!r}"
            )
        else:
            raise CorruptStoreError(f"append to run {run_id!r}: unknown result code {code}")
        return AppendResult(run_id=run_id, error=error)

    async def _apply(self, conn: Connection, prepared: _Prepared) -> AppendResult:
        """One request inside the caller's transaction (renumbered until it fits: the first
        call locked the run's row, so a second one always does)."""
        while True:
            [row] = await conn.fetch(self._append_many_sql, *_batch_args([prepared]))
            outcome = self._outcome(prepared, row)
            if isinstance(outcome, AppendResult):
                return outcome
            prepared.number(outcome)

    async def _append_in_transaction(self, request: AppendRequest) -> AppendResult:
        """A request that starts runs or appends to others: several statements, one
        transaction."""

        async def attempt(conn: Connection) -> AppendResult:
            result = await self._apply(conn, self._prepare(request))
            if result.error is not None:
                raise _Refused(result)
            # After this run's own close, so a continuation may reuse its workflow id.
            for new_run in request.start_runs:
                await self._create_run(conn, new_run, request.now)
            for linked in request.linked:
                if linked.follow_continuations:
                    linked = msgspec.structs.replace(
                        linked, run_id=await self._chain_head(conn, linked.run_id)
                    )
                outcome = await self._apply(conn, self._prepare(linked))
                if outcome.error is not None and not isinstance(
                    outcome.error, RunClosedError | RunNotFoundError
                ):
                    raise outcome.error
            return result

        try:
            result = await self._transaction(attempt, f"appending to run {request.run_id!r}")
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
        for new_run in request.start_runs:
            self._remember_next(new_run.run_id, 2)
        return result

    async def _chain_head(self, conn: Connection, run_id: str) -> str:
        """The newest run of ``run_id``'s chain of successors (continue-as-new, reset);
        ``run_id`` itself if it has none."""
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
            if row is None or not RunStatus(row[0]).has_successor or row[1] is None:
                return run_id
            last = decode_event(row[1])
            if not isinstance(last, WorkflowContinuedAsNew | WorkflowReset):
                return run_id
            run_id = last.new_run_id

    # -- wake-ups --------------------------------------------------------------------------

    async def wait_for_run(self, run_id: str, max_wait: float) -> AnyEvent | None:
        """Always ``None``: waiters are woken by NOTIFY, closes in this process included."""
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
        return None

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

    async def add_held_run_listener(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(run_id)`` when a process appends an external event to a run that
        a worker holds (see :class:`history.HeldRunNotifier`): the trigger ``runs_held_woken``
        notifies for appends that set ``wake_at`` on an owned run, which only external ones
        do (an owner's append clears it)."""
        self._check_open()
        await self._ensure_listener()
        self._run_listeners.append(callback)

        def remove() -> None:
            if callback in self._run_listeners:
                self._run_listeners.remove(callback)

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
            self._dsn,
            timeout=10,
            server_settings={"application_name": f"{self.application_name}-listener"},
        )
        try:
            await conn.add_listener(self._work_channel, self._on_work)
            await conn.add_listener(self._closed_channel, self._on_closed)
            await conn.add_listener(self._held_channel, self._on_held)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_work(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for callback in list(self._work_listeners.get(str(payload), ())):
            callback()

    def _on_held(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for callback in list(self._run_listeners):
            callback(str(payload))

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
            rows = await self._claim(
                "SELECT run_id, fence, workflow_type, next_event_id FROM {s}.runs "
                "WHERE owner = $1 AND lease_expires_at = $2 AND status = 'running'",
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

    async def _claim(self, recover: str, sql: str, owner: str, until: float, *args: Any) -> Any:
        """Run a claim (``sql`` with ``owner, until, *args``). If the connection dies on the
        way, the claim may have committed with its answer lost; what it took carries exactly
        this owner and lease expiry, so ``recover`` finds it (or nothing) on a fresh
        connection. Without that, runs leased to a worker that never learnt of them would
        have their leases renewed by it for ever, and never be driven."""
        try:
            return await self._pool.fetch(sql, owner, until, *args)
        except _CONNECTION_LOST:
            return await self._retrying.fetch(self._q(recover), owner, until)

    async def renew_leases(self, owner: str, *, until: float) -> set[str]:
        with self._errors(f"renewing the leases of {owner!r}"):
            rows = await self._retrying.fetch(
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
            rows = await self._retrying.fetch(
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
            rows = await self._claim(
                "SELECT task_id, run_id, seq, attempt, task_queue, payload, lease_expires_at, "
                "visible_at FROM {s}.activity_tasks WHERE owner = $1 AND lease_expires_at = $2",
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
            rows = await self._retrying.fetch(
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
        self._check_open()
        # Reads made meanwhile (a worker loading the runs it just claimed) share a statement.
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._reads.append((run_id, after_event_id, future))
        if not self._reads_scheduled:
            self._reads_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick_reads)
        rows = await future
        if not rows:
            raise RunNotFoundError(f"run id {run_id!r}")
        next_event_id = rows[0][1]
        events = _decode_rows(
            run_id, after_event_id, [(r[2], r[3]) for r in rows if r[2] is not None]
        )
        last = events[-1].event_id if events else after_event_id
        if last < next_event_id - 1:
            raise CorruptStoreError(
                f"history of run {run_id!r} ends at event {last}, but the run records "
                f"{next_event_id - 1} events: event {last + 1} is missing"
            )
        self._remember_next(run_id, next_event_id)
        return events

    def _kick_reads(self) -> None:
        self._reads_scheduled = False
        loop = asyncio.get_running_loop()
        while self._reads and len(self._reading) < _IN_FLIGHT:
            batch = self._reads[:_BATCH_LIMIT]
            del self._reads[:_BATCH_LIMIT]
            task = loop.create_task(self._read_batch(batch))
            self._reading.add(task)
            task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task[None]) -> None:
        """A batch finished: its slot is free only now (not when its coroutine's last line
        ran), so this is where reads queued meanwhile get started."""
        self._reading.discard(task)
        if self._reads and not self._reads_scheduled:
            self._reads_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick_reads)

    async def _read_batch(self, batch: list[tuple[str, int, asyncio.Future[list[Any]]]]) -> None:
        """Read the histories of ``batch`` in one statement, one snapshot: each run's length
        and its events agree."""
        where = (
            f"reading history of run {batch[0][0]!r}"
            if len(batch) == 1
            else f"reading the histories of {len(batch)} runs"
        )
        try:
            with self._errors(where):
                rows = await self._retrying.fetch(
                    self._q(
                        """
                        SELECT q.i, r.next_event_id, e.event_id, e.data
                        FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS q(run_id, a, i)
                        JOIN {s}.runs r ON r.run_id = q.run_id
                        LEFT JOIN {s}.events e ON e.run_id = q.run_id AND e.event_id > q.a
                        ORDER BY q.i, e.event_id
                        """
                    ),
                    [run_id for run_id, _, _ in batch],
                    [after for _, after, _ in batch],
                )
        except BaseException as exc:
            for _, _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        by_read: list[list[Any]] = [[] for _ in batch]
        for row in rows:
            by_read[row[0] - 1].append(row)
        for (_, _, future), found in zip(batch, by_read, strict=True):
            if not future.done():
                future.set_result(found)

    async def get_run(self, run_id: str) -> RunInfo:
        with self._errors(f"reading run {run_id!r}"):
            row = await self._retrying.fetchrow(
                self._q(f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = $1"), run_id
            )
        if row is None:
            raise RunNotFoundError(f"run id {run_id!r}")
        return _run_info(row)

    async def find_run(self, workflow_id: str) -> RunInfo:
        with self._errors(f"finding workflow {workflow_id!r}"):
            row = await self._retrying.fetchrow(
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
            rows = await self._retrying.fetch(
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
            count: int = await self._retrying.fetchval(
                self._q(f"SELECT COUNT(*) FROM {{s}}.runs{where}"), *p.params
            )
        return count

    async def pending_timers(self, run_id: str | None = None) -> list[TimerInfo]:
        with self._errors("reading timers"):
            if run_id is None:
                rows = await self._retrying.fetch(
                    self._q("SELECT run_id, seq, fire_at FROM {s}.timers ORDER BY fire_at")
                )
            else:
                rows = await self._retrying.fetch(
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
            value: float | None = await self._retrying.fetchval(
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
