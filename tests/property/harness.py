"""The crash/resume harness: workers on one SQLite file, a skipped clock, injected crashes,
and the invariants the runtime promises, checked against the store and the ledger.

:class:`Harness` owns everything one generated scenario touches: a store file, a
:class:`~engine.ManualClock`, a client (on its own connection, as a separate process would be),
and the live workers, each with its own connection and its own :class:`~sdk.testing.Faults`.
A crash is armed on one worker as "die at the n-th hit of fault point P from now"; the worker
then dies exactly as a killed process does. The harness reaps it (its queued writes drain —
they "committed just before the kill"), starts a new *epoch* of the ledger, and lets the
remaining or restarted workers recover.

Invariants (see :meth:`Harness.check` and :meth:`Harness.check_final`):

1. every run ends with the result the oracle (:func:`programs.expected_outcome`) computes;
2. an attempt whose outcome was recorded before an epoch began never executes in that epoch
   or later; within one epoch an attempt executes at most once (twice in the epoch a pause
   or a graceful stop opens, when a stale worker and its successor may both run it:
   at-least-once under lease expiry), so an attempt in flight at a crash runs again at most
   once per crash; every recorded outcome was produced by an execution the ledger saw, and
   no attempt has two recorded outcomes;
3. every history read is gap-free and extends every history read before it (append-only);
4. every stored history replays against the same code without ``NondeterminismError``, and a
   closed one replays to the outcome it recorded;
5. ``PRAGMA integrity_check`` is ``ok`` at the end of every scenario (and after every real
   SIGKILL, in ``test_sigkill.py``);
6. nothing the engine logs at error level happens (a driver that raised, a workflow task that
   failed): with correct code and a correct runtime, neither can.

Time: a jump of the clock is capped at a quarter of the lease while two or more workers are
alive, so their renewals keep up and no lease expires under a live worker by accident; only
:meth:`Harness.pause` jumps past the lease on purpose (a worker stalled past its lease — a
disruption, like a crash). With a single live worker the clock jumps straight to the next
deadline: a thirty-day timer costs one step.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import tempfile
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog
from programs import (
    LEDGER,
    Failed,
    Ledger,
    Ok,
    Outcome,
    Step,
    describe,
    expected_outcome,
    failing_key,
    interpret,
    step,
)
from stats import STATS

from engine import Client, Clock, ManualClock, NondeterminismError, Registry, Worker, replay_history
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    Durability,
    PayloadConverter,
    SqliteStore,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowTaskFailed,
    decode_event,
    encode_event,
)
from sdk.testing import FaultPoint, Faults

__all__ = ["CLOCK_START", "LEASE", "QUEUE", "Harness", "Violation", "captured_engine_errors"]

QUEUE = "harness"
LEASE = 30.0
"""Lease of every worker (seconds of the skipped clock)."""
SAFE_STEP = LEASE / 4
"""Largest clock jump while several workers are alive: renewals always keep up."""
CLOCK_START = 1_800_000_000.0
POLL_INTERVAL = 1.0
"""The workers' poll interval (the default)."""
SETTLE_POLL = 0.0005
"""Wall seconds between looks while a worker is busy (the store works in threads)."""
SETTLE_TURNS = 3
"""Loop turns every worker must stay idle for before the harness believes it."""
SETTLE_LIMIT = 10.0
"""Wall seconds a settle may take before the harness calls the runtime stuck."""

ENGINE_ERRORS: list[str] = []
"""Error-level log lines of the engine while a harness test runs (invariant 6)."""


class Violation(AssertionError):
    """A broken guarantee; the message shows the program, the crashes and the diverging event."""


# -- logging ----------------------------------------------------------------------------------


def _capture(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    if method in ("error", "exception", "critical"):
        fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "exc_info"))
        line = f"{event.get('event')} ({fields})"
        if event.get("exc_info"):
            line += "\n" + traceback.format_exc()
        ENGINE_ERRORS.append(line)
    raise structlog.DropEvent


@contextmanager
def captured_engine_errors() -> Iterator[list[str]]:
    """Silence the engine's logs (thousands of crashes are noisy) but keep its errors."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[_capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    ENGINE_ERRORS.clear()
    try:
        yield ENGINE_ERRORS
    finally:
        structlog.configure(**saved)


# -- formatting -------------------------------------------------------------------------------


def format_event(event: AnyEvent) -> str:
    """``#5 ActivityCompleted seq=2 attempt=1 'a2@1'``: one event, as a counterexample shows it."""
    parts = [f"#{event.event_id}", type(event).__name__]
    if isinstance(event, ActivityScheduled):
        parts.append(f"seq={event.seq}")
        parts.append(_payload_text(event.args[0]) if event.args else "")
    elif isinstance(event, ActivityCompleted):
        parts += [f"seq={event.seq}", f"attempt={event.attempt}", _payload_text(event.result)]
    elif isinstance(event, ActivityFailed):
        retry = "retry" if event.retry_at is not None else "final"
        parts += [f"seq={event.seq}", f"attempt={event.attempt}", retry, event.failure.message]
    elif isinstance(event, ActivityTimedOut | ActivityHeartbeat):
        parts += [f"seq={event.seq}", f"attempt={event.attempt}"]
    elif isinstance(event, TimerStarted | TimerFired):
        parts.append(f"seq={event.seq}")
    elif isinstance(event, WorkflowCompleted):
        parts.append(_payload_text(event.result))
    elif isinstance(event, WorkflowFailed | WorkflowTaskFailed):
        parts.append(f"{event.failure.type}: {event.failure.message}")
    return " ".join(p for p in parts if p)


def _payload_text(payload: Any) -> str:
    try:
        return repr(msgspec.json.decode(payload.data))
    except Exception:
        return "<payload>"


def format_history(history: list[AnyEvent], limit: int = 60) -> str:
    lines = [f"    {format_event(e)}" for e in history[:limit]]
    if len(history) > limit:
        lines.append(f"    … {len(history) - limit} more")
    return "\n".join(lines)


# -- state ------------------------------------------------------------------------------------


class CrashPlan:
    """Crash at the ``countdown``-th hit of ``point`` from the moment it is armed."""

    def __init__(self) -> None:
        self.point: FaultPoint | None = None
        self.countdown = 0
        self.hits: Counter[FaultPoint] = Counter()

    def arm(self, point: FaultPoint, nth: int) -> None:
        self.point, self.countdown = point, nth

    def disarm(self) -> None:
        self.point = None

    def decide(self, point: FaultPoint, hit: int) -> bool:
        STATS.fault_hits[point.value] += 1
        self.hits[point] += 1
        if point is not self.point:
            return False
        self.countdown -= 1
        return self.countdown == 0


@dataclass(eq=False)
class LiveWorker:
    name: str
    worker: Worker
    store: SqliteStore
    plan: CrashPlan


@dataclass
class RunRecord:
    label: str
    run_id: str
    program: Step
    expected: Outcome
    seen: list[bytes] = field(default_factory=list)
    """The longest history read so far, event by event, as stored bytes."""

    def header(self) -> str:
        return f"run {self.label} ({self.run_id[:8]}) program: {describe(self.program)}"


@dataclass
class Disruption:
    """A crash, a graceful stop or a pause: the start of a new ledger epoch."""

    epoch: int
    kind: str
    worker: str
    point: FaultPoint | None
    hit: int | None
    last_events: dict[str, str]
    """Per run label: the last event in its history at that moment."""

    def describe(self, label: str | None = None) -> str:
        where = f" at {self.point.value} (hit #{self.hit})" if self.point is not None else ""
        text = f"epoch {self.epoch}: {self.kind} of worker {self.worker}{where}"
        if label is not None and label in self.last_events:
            text += f"; run {label} stood at {self.last_events[label]}"
        return text


class Harness:
    def __init__(
        self,
        directory: Path,
        *,
        durability: Durability = Durability.NORMAL,
        clock: Clock | None = None,
        shared_store: bool = False,
    ) -> None:
        """``clock``: a :class:`SystemClock` when the workers are other processes (they run
        on the wall clock); by default a :class:`ManualClock` the harness skips.
        ``shared_store``: workers use the client's connection instead of one each (cheaper;
        a dead worker's queued writes are then drained, not closed)."""
        self.shared_store = shared_store
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "store.db"
        self.durability = durability
        self.manual = ManualClock(CLOCK_START)
        self.clock: Clock = clock or self.manual
        self.registry = Registry([interpret], [step])
        self.converter = PayloadConverter()
        self.ledger: Ledger = LEDGER
        self.ledger.reset()
        self.live: list[LiveWorker] = []
        self.dead: list[str] = []
        self.runs: dict[str, RunRecord] = {}
        self.disruptions: list[Disruption] = []
        self.recorded_at_start: dict[int, set[tuple[str, int, int]]] = {}
        self.allowance: dict[int, int] = {}
        self._names = 0
        self._run_numbers = 0
        self.store: SqliteStore | None = None
        self.client: Client | None = None
        self.observer: sqlite3.Connection | None = None
        """A plain sqlite3 connection the checks read through, synchronously: while they
        read, the event loop does not run, so no worker moves under them — an operator's
        tool reading the file from another process."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if not self.path.exists():
            # A copy of an empty store is cheaper than creating the schema every time.
            shutil.copyfile(await _template(), self.path)
        self.store = await SqliteStore.open(self.path, durability=self.durability)
        self.client = Client(self.store, clock=self.clock, seed=0, converter=self.converter)
        self.observer = sqlite3.connect(self.path, isolation_level=None)

    async def close_client(self) -> None:
        """Close the client's connection; the checks keep reading through the observer."""
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def close(self) -> None:
        for live in list(self.live):
            live.plan.disarm()
            await live.worker.stop()
            await self._release_store(live)
        self.live.clear()
        if self.observer is not None:
            self.observer.close()
        if self.store is not None:
            await self.store.close()

    # -- reading the store, as another process would -------------------------------------------

    def read_history(self, run_id: str) -> list[AnyEvent]:
        assert self.observer is not None
        rows = self.observer.execute(
            "SELECT data FROM events WHERE run_id = ? ORDER BY event_id", (run_id,)
        ).fetchall()
        return [decode_event(row[0]) for row in rows]

    def histories(self) -> dict[str, list[AnyEvent]]:
        return {run_id: self.read_history(run_id) for run_id in self.runs}

    def run_row(self, run_id: str) -> tuple[Any, ...]:
        assert self.observer is not None
        row: tuple[Any, ...] = self.observer.execute(
            "SELECT status, owner, lease_expires_at, wake_at FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return row

    def all_closed(self) -> bool:
        return all(self.run_row(run_id)[0] != "running" for run_id in self.runs)

    def integrity_check(self) -> str:
        assert self.observer is not None
        rows = self.observer.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    @property
    def _store(self) -> SqliteStore:
        assert self.store is not None
        return self.store

    # -- actions -----------------------------------------------------------------------------

    async def start_run(self, program: Step) -> RunRecord:
        assert self.client is not None
        self._run_numbers += 1
        label = f"r{self._run_numbers}"
        handle = await self.client.start_workflow(interpret, program, id=label, task_queue=QUEUE)
        assert handle.run_id is not None
        record = RunRecord(label, handle.run_id, program, expected_outcome(program))
        self.runs[record.run_id] = record
        for live in self.live:
            live.worker.notify()
        STATS.runs += 1
        return record

    async def start_worker(
        self, *, reuse_identity: bool, crash: tuple[FaultPoint, int] | None = None
    ) -> LiveWorker:
        """A worker with a dead worker's identity (a restarted process: it releases the old
        leases at once) or, otherwise, with a new identity (it waits for them to expire).
        ``crash`` arms it before it starts: it dies at that hit of that point."""
        live_names = {w.name for w in self.live}
        reusable = [n for n in self.dead if n not in live_names]
        if reuse_identity and reusable:
            name = reusable[-1]
            self.dead.remove(name)
        else:
            self._names += 1
            name = f"w{self._names}"
        if self.shared_store:
            store = self._store
        else:
            store = await SqliteStore.open(self.path, durability=self.durability)
        plan = CrashPlan()
        if crash is not None:
            plan.arm(*crash)
        worker = Worker(
            store,
            task_queue=QUEUE,
            workflows=[interpret],
            activities=[step],
            identity=name,
            lease_seconds=LEASE,
            clock=self.clock,
            converter=self.converter,
            faults=Faults(decide=plan.decide),
        )
        await worker.start()
        live = LiveWorker(name, worker, store, plan)
        self.live.append(live)
        return live

    async def drive(
        self, *, advances: int, crash: tuple[LiveWorker, FaultPoint, int] | None = None
    ) -> list[Disruption]:
        """Let the workers work, moving the clock up to ``advances`` times; with ``crash``,
        until that worker dies there (or the scenario runs out of things to do)."""
        if crash is not None:
            target, point, nth = crash
            target.plan.arm(point, nth)
        try:
            for attempt in range(advances + 1):
                await self.settle()
                reaped = await self.reap()
                if reaped:
                    return reaped
                if attempt == advances or self.all_closed():
                    return []
                if not await self.advance():
                    return []
            return []
        finally:
            for live in self.live:
                live.plan.disarm()

    async def settle(self) -> None:
        """Run the loop until every live worker is idle (or one of them died).

        Idle (``Worker.is_idle``: nothing running, every driver waiting on the clock or an
        outcome, the poller waiting) must hold over a few loop turns, so that whatever a
        turn made ready (a woken poller, a fed outcome) has run.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT
        idle = 0
        while self.live:
            if any(w.worker.stopped.is_set() for w in self.live):
                return
            if all(w.worker.is_idle() for w in self.live):
                idle += 1
                if idle > SETTLE_TURNS:
                    return
                await asyncio.sleep(0)
                continue
            idle = 0
            if loop.time() > deadline:
                busy = [w.name for w in self.live if not w.worker.is_idle()]
                raise Violation(
                    f"workers {busy} never became idle within {SETTLE_LIMIT:g}s of wall time "
                    f"(a busy loop?)\n{self.describe_runs()}"
                )
            # Work in progress waits on the store's threads: give them real time.
            await asyncio.sleep(SETTLE_POLL)

    async def reap(self) -> list[Disruption]:
        """Bury every worker that died; each death opens a new epoch."""
        found = []
        for live in list(self.live):
            if not live.worker.stopped.is_set():
                continue
            crash = live.worker.crashed
            await live.worker.stop()
            # Whatever it had queued reaches the file now: those writes "committed just
            # before the kill", and nothing of this worker runs any more.
            await self._release_store(live)
            self.live.remove(live)
            self.dead.append(live.name)
            if crash is None:
                raise Violation(f"worker {live.name} stopped without being told or crashing")
            STATS.crashes[crash.point.value] += 1
            found.append(self.open_epoch("crash", live.name, crash.point, crash.hit))
        return found

    async def stop_worker(self, live: LiveWorker) -> Disruption:
        """A graceful stop: in-flight work is cancelled and every run handed back.

        An epoch opens before the stop begins: a run handed back may be claimed by another
        worker, which runs the cancelled attempt again while this one is still stopping (and
        an attempt this one started in its last loop turn may run on both: at-least-once).
        Once the stop is over, another epoch opens in which every attempt runs at most once.
        """
        disruption = self.open_epoch("graceful stop", live.name, None, None, allowance=2)
        await live.worker.stop()
        await self._release_store(live)
        self.live.remove(live)
        self.dead.append(live.name)
        self.open_epoch("end of graceful stop", live.name, None, None)
        STATS.stops += 1
        return disruption

    async def pause(self) -> Disruption:
        """Every live worker stalls past its lease (a GC pause, a suspended VM): the clock
        jumps beyond the lease, so another worker may take a run over from a live one.

        The stalled owner learns it lost the run at its next lease renewal (at most a third
        of the lease later) or when an append of its is refused; until then it acts on what
        it knew, and an attempt it starts may run on the new owner too (at-least-once). So
        the epoch of the pause, in which an attempt may run twice, lasts until every worker
        has renewed once after the jump; from then on, once again.
        """
        disruption = self.open_epoch("pause past the lease", "all", None, None, allowance=2)
        self.manual.advance(LEASE + 1.0)
        renewed_by = self.manual.now() + LEASE / 3
        while True:
            await self.settle()
            await self.reap()
            now = self.manual.now()
            if now > renewed_by:
                break
            self.manual.set(min(now + SAFE_STEP, renewed_by + 0.001))
        self.open_epoch("end of pause", "all", None, None)
        STATS.pauses += 1
        return disruption

    async def _release_store(self, live: LiveWorker) -> None:
        if live.store is not self.store:
            await live.store.close()
        else:
            # A write queued after the dead worker's own commits after them: once it is
            # answered, everything the worker had queued is in the file.
            await live.store.renew_leases("(drain)", until=0.0)

    async def retire(self) -> None:
        """Stop every live worker once all runs are closed (between cases: no disruption,
        nothing is in flight)."""
        for live in list(self.live):
            await live.worker.stop()
            await self._release_store(live)
            self.live.remove(live)

    def new_case(self) -> None:
        """Forget the bookkeeping of the runs so far (all closed, no worker alive) and
        start afresh on the same store file: cheaper than a new file per case."""
        assert not self.live, "stop every worker before a new case"
        self.runs.clear()
        self.dead.clear()
        self.disruptions.clear()
        self.recorded_at_start.clear()
        self.allowance.clear()
        self.ledger.reset()

    async def advance(self) -> bool:
        """Jump to the next deadline (capped while several workers are alive)."""
        deadline = await self.next_deadline()
        now = self.clock.now()
        if deadline is None:
            return False
        if deadline <= now:
            # Due now, yet every worker is idle: a run was handed back by another worker (no
            # notification crosses processes). Pollers look again after their interval.
            deadline = now + POLL_INTERVAL
        if len(self.live) > 1:
            deadline = min(deadline, now + SAFE_STEP)
        self.manual.set(deadline)
        return True

    async def next_deadline(self) -> float | None:
        candidates = [
            driver.wait_deadline
            for live in self.live
            for driver in live.worker.drivers.values()
            if driver.waiting and driver.wait_deadline is not None
        ]
        stored = await self._store.next_wake_at(QUEUE, owner=None)
        if stored is not None:
            candidates.append(stored)
        return min(candidates) if candidates else None

    async def finish(self, *, max_advances: int = 400) -> None:
        """Recover and run every run to its end on a single worker, then check it all."""
        await self.reap()
        while len(self.live) > 1:
            await self.stop_worker(self.live[-1])
        if not self.live:
            await self.start_worker(reuse_identity=True)
        for _ in range(max_advances):
            await self.settle()
            if await self.reap():
                raise Violation("a worker crashed while no crash was armed")
            if self.all_closed():
                break
            if not await self.advance():
                raise Violation(f"runs are open but nothing is due:\n{self.describe_runs()}")
        else:
            raise Violation(
                f"runs still open after {max_advances} clock jumps:\n{self.describe_runs()}"
            )
        self.check(replay=True)
        self.check_final()

    # -- bookkeeping -------------------------------------------------------------------------

    def open_epoch(
        self,
        kind: str,
        worker: str,
        point: FaultPoint | None,
        hit: int | None,
        *,
        allowance: int = 1,
    ) -> Disruption:
        histories = self.histories()
        recorded = {
            (run_id, seq, attempt)
            for run_id, history in histories.items()
            for seq, attempt in _outcomes(history)
        }
        epoch = self.ledger.epoch + 1
        disruption = Disruption(
            epoch=epoch,
            kind=kind,
            worker=worker,
            point=point,
            hit=hit,
            last_events={
                self.runs[run_id].label: format_event(history[-1])
                for run_id, history in histories.items()
            },
        )
        self.recorded_at_start[epoch] = recorded
        self.allowance[epoch] = allowance
        self.disruptions.append(disruption)
        self.ledger.epoch = epoch
        return disruption

    def describe_runs(self) -> str:
        lines = [f"clock: {self.clock.now() - CLOCK_START:g}s after start"]
        lines.append(f"live workers: {[w.name for w in self.live]}; dead: {self.dead}")
        for run_id, record in self.runs.items():
            status, owner, lease, wake = self.run_row(run_id)
            lines.append(
                f"{record.header()}\n  status={status} owner={owner} "
                f"lease_until={_relative(lease)} wake_at={_relative(wake)}\n"
                f"{format_history(self.read_history(run_id))}"
            )
        lines.extend(d.describe() for d in self.disruptions)
        return "\n".join(lines)

    def crash_log(self, label: str) -> str:
        if not self.disruptions:
            return "  (no crash)"
        return "\n".join(f"  {d.describe(label)}" for d in self.disruptions)

    # -- invariants --------------------------------------------------------------------------

    def check(self, *, replay: bool) -> None:
        """Invariants 2, 3, 6 (and 4 with ``replay``) on what the store holds now."""
        if ENGINE_ERRORS:
            raise Violation("the engine logged an error:\n" + "\n".join(ENGINE_ERRORS[:3]))
        histories = self.histories()
        for run_id, history in histories.items():
            self._check_append_only(self.runs[run_id], history)
            duplicate = _duplicate_outcome(history)
            if duplicate is not None:
                record = self.runs[run_id]
                raise Violation(
                    f"{record.header()}\none attempt has two recorded outcomes:\n"
                    f"  first:  {format_event(duplicate[0])}\n"
                    f"  second: {format_event(duplicate[1])}\n{self.crash_log(record.label)}"
                )
        self._check_ledger(histories)
        if replay:
            for run_id, history in histories.items():
                self._check_replay(self.runs[run_id], history)

    def _check_append_only(self, record: RunRecord, history: list[AnyEvent]) -> None:
        for index, event in enumerate(history, start=1):
            if event.event_id != index:
                raise Violation(
                    f"{record.header()}\nhistory has a gap: position {index} holds "
                    f"{format_event(event)}\n{self.crash_log(record.label)}"
                )
        encoded = [encode_event(e) for e in history]
        if len(encoded) < len(record.seen):
            raise Violation(
                f"{record.header()}\nhistory shrank from {len(record.seen)} to "
                f"{len(encoded)} events\n{self.crash_log(record.label)}"
            )
        for index, (old, new) in enumerate(zip(record.seen, encoded, strict=False)):
            if old != new:
                before = msgspec.msgpack.decode(old)
                raise Violation(
                    f"{record.header()}\nevent #{index + 1} was rewritten:\n"
                    f"  read earlier: {before}\n  read now:     {format_event(history[index])}\n"
                    f"{self.crash_log(record.label)}"
                )
        record.seen = encoded

    def _check_ledger(self, histories: dict[str, list[AnyEvent]]) -> None:
        outcomes = {
            (run_id, seq, attempt): event
            for run_id, history in histories.items()
            for (seq, attempt), event in _outcomes(history).items()
        }
        per_epoch: dict[tuple[str, int, int], Counter[int]] = defaultdict(Counter)
        for execution in self.ledger.entries:
            if execution.run_id not in self.runs:
                continue
            key = (execution.run_id, execution.seq, execution.attempt)
            per_epoch[key][execution.epoch] += 1
            if key in self.recorded_at_start.get(execution.epoch, ()):
                record = self.runs[execution.run_id]
                event = outcomes.get(key)
                recorded = format_event(event) if event is not None else "an outcome"
                raise Violation(
                    f"{record.header()}\nactivity {execution.key} (seq {execution.seq}, "
                    f"attempt {execution.attempt}) executed again in epoch {execution.epoch} "
                    f"although {recorded} was recorded before that epoch began\n"
                    f"{self.crash_log(record.label)}"
                )
        for key, epochs in per_epoch.items():
            for epoch, count in epochs.items():
                if count > self.allowance.get(epoch, 1):
                    record = self.runs[key[0]]
                    raise Violation(
                        f"{record.header()}\nactivity seq {key[1]} attempt {key[2]} executed "
                        f"{count} times in epoch {epoch} (at most "
                        f"{self.allowance.get(epoch, 1)} without a crash)\n"
                        f"{self.crash_log(record.label)}"
                    )
        for key, event in outcomes.items():
            if key not in per_epoch:
                record = self.runs[key[0]]
                raise Violation(
                    f"{record.header()}\n{format_event(event)} records an attempt that never "
                    f"executed\n{self.crash_log(record.label)}"
                )

    def _check_replay(self, record: RunRecord, history: list[AnyEvent]) -> None:
        try:
            instance = replay_history(
                self.registry, history, run_id=record.run_id, converter=self.converter
            )
        except NondeterminismError as exc:
            raise Violation(
                f"{record.header()}\nreplaying the stored history with the same code failed:\n"
                f"{exc}\n  history:\n{format_history(history)}\n{self.crash_log(record.label)}"
            ) from exc
        last = history[-1]
        completion = instance.completion
        if isinstance(last, WorkflowCompleted):
            same = completion is not None and completion.result == last.result
        elif isinstance(last, WorkflowFailed):
            same = (
                completion is not None
                and completion.failure is not None
                and (completion.failure.type, completion.failure.message)
                == (last.failure.type, last.failure.message)
            )
        else:
            return
        if not same:
            raise Violation(
                f"{record.header()}\nreplay ends differently from the recorded close:\n"
                f"  recorded: {format_event(last)}\n  replayed: {completion}\n"
                f"{self.crash_log(record.label)}"
            )

    def check_final(self) -> None:
        """Invariants 1 and 5, once every run is closed."""
        for run_id, record in self.runs.items():
            history = self.read_history(run_id)
            last = history[-1]
            got: str
            if isinstance(last, WorkflowCompleted):
                value = msgspec.json.decode(last.result.data)
                if isinstance(record.expected, Ok) and value == record.expected.value:
                    continue
                got = f"completed with {value!r}"
            elif isinstance(last, WorkflowFailed):
                key = failing_key(last.failure.message)
                if isinstance(record.expected, Failed) and key in record.expected.keys:
                    continue
                got = f"failed: {last.failure.type}: {last.failure.message}"
            else:
                got = f"still open at {format_event(last)}"
            raise Violation(
                f"{record.header()}\n"
                f"  expected: {_expected_text(record.expected)}\n"
                f"  got:      {got}\n"
                f"crashes:\n{self.crash_log(record.label)}\n"
                f"  history:\n{format_history(history)}"
            )
        integrity = self.integrity_check()
        if integrity != "ok":
            raise Violation(f"PRAGMA integrity_check: {integrity}")


_TEMPLATE: list[Path] = []


async def _template() -> Path:
    """An empty, checkpointed store file, made once per process."""
    if not _TEMPLATE:
        directory = Path(tempfile.mkdtemp(prefix="perdura-template-"))
        store = await SqliteStore.open(directory / "empty.db")
        await store.close()
        _TEMPLATE.append(directory / "empty.db")
    return _TEMPLATE[0]


def _relative(epoch: float | None) -> str:
    return "-" if epoch is None else f"{epoch - CLOCK_START:g}s"


def _expected_text(outcome: Outcome) -> str:
    if isinstance(outcome, Ok):
        return f"completed with {outcome.value!r}"
    return f"failed by one of {sorted(outcome.keys)}"


def _outcomes(history: list[AnyEvent]) -> dict[tuple[int, int], AnyEvent]:
    """``(seq, attempt)`` of every attempt whose outcome the history records (the first
    event, if — wrongly — there are several)."""
    found: dict[tuple[int, int], AnyEvent] = {}
    for e in history:
        if isinstance(e, ActivityCompleted | ActivityFailed | ActivityTimedOut):
            found.setdefault((e.seq, e.attempt), e)
    return found


def _duplicate_outcome(history: list[AnyEvent]) -> tuple[AnyEvent, AnyEvent] | None:
    """Two outcome events for one attempt (the first and the second), if any."""
    seen: dict[tuple[int, int], AnyEvent] = {}
    for e in history:
        if isinstance(e, ActivityCompleted | ActivityFailed | ActivityTimedOut):
            first = seen.setdefault((e.seq, e.attempt), e)
            if first is not e:
                return first, e
    return None
