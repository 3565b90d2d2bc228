"""Testing helpers for users' own workflows.

:class:`WorkflowEnvironment` runs a client and a worker on a temporary SQLite store in one
process, on a :class:`~engine.ManualClock` with time skipping: while the test waits for a
result and nothing is running, the clock jumps to the next timer or retry, so a workflow that
sleeps thirty days finishes in milliseconds, with timers firing in order and ``workflow.now()``
following the skipped clock.

:func:`crash_resume` proves a workflow survives a crash at every fault point of the runtime:
it runs the workflow once to count the points, then once per point with the worker killed
there, recovers with a fresh worker, and checks the result and that no activity whose
completion had been recorded ran again.

:class:`Replayer` replays recorded histories against the current workflow code — an exported
JSON file from production, a run in a store, or every run of a type — and raises
``NondeterminismError`` (recorded event and produced command side by side) when a code change
would break runs that are already in flight. Put it in CI next to a folder of exported
histories and a deploy can never strand a running workflow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine import (
    ActivityDefinition,
    Client,
    ManualClock,
    NondeterminismError,
    Registry,
    Worker,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowInstance,
    current_activity,
    replay_history,
    workflow_definition,
)
from engine._faults import FaultPoint, Faults, InjectedCrash
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    AnyEvent,
    Durability,
    PayloadConverter,
    RunQuery,
    SqliteStore,
    Store,
    WorkflowTaskFailed,
    dump_history,
    read_history_file,
)

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "CrashCase",
    "CrashPoint",
    "CrashResumeError",
    "CrashResumeReport",
    "FaultPoint",
    "Faults",
    "InjectedCrash",
    "Recovery",
    "ReplayResult",
    "Replayer",
    "WorkflowEnvironment",
    "crash_at",
    "crash_resume",
    "fault_points",
]


@dataclass(frozen=True)
class ReplayResult:
    run_id: str
    workflow_type: str
    events: int
    instance: WorkflowInstance
    """Where the code stands at the end of the history (completion, pending commands)."""


class Replayer:
    """Replays histories against the given workflow code; runs no activity, writes nothing."""

    def __init__(
        self,
        *,
        workflows: Iterable[object],
        converter: PayloadConverter | None = None,
        debug: bool = False,
    ) -> None:
        """``debug=True`` replays without the sandbox's guards and the blocked-loop watchdog,
        so that ``breakpoint()`` and a debugger work inside workflow code (see
        ``engine.replay_history``); it then checks determinism only, not the sandbox's rules."""
        self.registry = Registry(workflows)
        self.converter = converter or PayloadConverter()
        self.debug = debug

    def replay(self, history: Sequence[AnyEvent], *, run_id: str = "replay") -> ReplayResult:
        instance = replay_history(
            self.registry, history, run_id=run_id, converter=self.converter, debug=self.debug
        )
        return ReplayResult(run_id, instance.workflow_type, len(history), instance)

    def replay_file(self, path: str | Path) -> ReplayResult:
        """Replay an exported history (``history.dump_history``, ``perdura history --json``,
        ``WorkflowEnvironment.export_histories``); a mismatch names the file too."""
        exported = read_history_file(path)
        try:
            return self.replay(exported.events, run_id=exported.run_id)
        except NondeterminismError as exc:
            exc.add_note(f"history file: {path}")
            raise

    def replay_files(self, paths: Iterable[str | Path]) -> list[ReplayResult]:
        """Replay every file, in order (e.g. ``sorted(Path("histories").glob("*.json"))``);
        stops at the first ``NondeterminismError``."""
        return [self.replay_file(path) for path in paths]

    async def replay_run(self, store: Store, run_id: str) -> ReplayResult:
        return self.replay(await store.read_history(run_id), run_id=run_id)

    async def replay_all(
        self, store: Store, *, workflow_type: str | None = None, page_size: int = 500
    ) -> list[ReplayResult]:
        """Replay every stored run (of ``workflow_type``, if given); stops at the first
        ``NondeterminismError``, which names the run."""
        results: list[ReplayResult] = []
        offset = 0
        while True:
            runs = await store.list_runs(
                RunQuery(workflow_type=workflow_type, limit=page_size, offset=offset)
            )
            for run in runs:
                results.append(await self.replay_run(store, run.run_id))
            if len(runs) < page_size:
                return results
            offset += page_size


class WorkflowEnvironment:
    """A client and a worker on a temporary store, with a skippable clock.

    Use ``async with WorkflowEnvironment.start(workflows=[...], activities=[...]) as env``.
    """

    def __init__(self, client: Client, worker: Worker, clock: ManualClock, path: Path) -> None:
        self.client = client
        self.worker = worker
        self.clock = clock
        self.path = path
        self.task_queue = worker.task_queue
        self._ids = 0

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        *,
        workflows: Iterable[object] = (),
        activities: Iterable[object] = (),
        task_queue: str = "test",
        path: str | Path | None = None,
        start_time: float | None = None,
        **worker_options: Any,
    ) -> AsyncIterator[WorkflowEnvironment]:
        """``path`` keeps the store (to inspect it afterwards); otherwise a temporary file."""
        with tempfile.TemporaryDirectory(prefix="perdura-test-") as tmp:
            store_path = Path(path) if path is not None else Path(tmp) / "test.db"
            clock = ManualClock(start_time)
            store = await SqliteStore.open(store_path)
            try:
                client = Client(store, clock=clock)
                worker = Worker(
                    store,
                    task_queue=task_queue,
                    workflows=workflows,
                    activities=activities,
                    clock=clock,
                    converter=client.converter,
                    **worker_options,
                )
                client.add_listener(worker)
                async with worker:
                    yield cls(client, worker, clock, store_path)
            finally:
                await store.close()

    async def export_histories(self, directory: str | Path) -> list[Path]:
        """Write the history of every run in this environment's store to ``directory``, one
        ``<workflow id>.<run id>.json`` file each: check them in, and replay them in CI
        with :meth:`Replayer.replay_files` so a code change cannot strand a running run."""
        exports: list[tuple[str, bytes]] = []
        for run in await self.client.list_runs(RunQuery(limit=1_000_000)):
            events = await self.client.store.read_history(run.run_id)
            name = f"{_file_safe(run.workflow_id)}.{run.run_id}.json"
            exports.append((name, dump_history(run.run_id, events)))
        return _write_files(Path(directory), exports)

    async def start_workflow(
        self, workflow: object, *args: Any, id: str | None = None
    ) -> WorkflowHandle:
        if id is None:
            self._ids += 1
            id = f"{workflow_definition(workflow).name}-{self._ids}"
        return await self.client.start_workflow(workflow, *args, id=id, task_queue=self.task_queue)

    async def execute_workflow(self, workflow: object, *args: Any, id: str | None = None) -> Any:
        handle = await self.start_workflow(workflow, *args, id=id)
        return await self.result(handle)

    async def result(self, handle: WorkflowHandle, *, result_type: Any = None) -> Any:
        """Wait for the run's result, skipping time whenever nothing is running."""
        waiter = asyncio.ensure_future(handle.result(result_type=result_type))
        try:
            while not waiter.done():
                await self._skip_once()
                await asyncio.wait({waiter}, timeout=0.001)
            return waiter.result()
        finally:
            waiter.cancel()

    async def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, stopping at every due timer on the way."""
        target = self.clock.now() + seconds
        while True:
            await self._settle()
            deadline = await self._next_deadline()
            if deadline is None or deadline > target:
                break
            self.clock.set(max(deadline, self.clock.now()))
        self.clock.set(max(target, self.clock.now()))
        await self._settle()

    async def _skip_once(self) -> None:
        if not await self._settle():
            return
        deadline = await self._next_deadline()
        if deadline is not None and deadline > self.clock.now():
            self.clock.set(deadline)

    async def _settle(self, rounds: int = 3) -> bool:
        """Let in-flight work finish; True once the worker stayed idle for ``rounds`` checks."""
        idle = 0
        for _ in range(200):
            await asyncio.sleep(0.0005)
            idle = idle + 1 if self.worker.is_idle() else 0
            if idle >= rounds:
                return True
        return False

    async def _next_deadline(self) -> float | None:
        candidates = [
            d.wait_deadline
            for d in self.worker.drivers.values()
            if d.waiting and d.wait_deadline is not None
        ]
        stored = await self.client.store.next_wake_at(self.task_queue, owner=None)
        if stored is not None:
            candidates.append(stored)
        return min(candidates) if candidates else None


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "run"


def _write_files(directory: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files:
        target = directory / name
        target.write_bytes(data)
        written.append(target)
    return written


# -- crash/resume ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashPoint:
    """Where a worker dies: the ``hit``-th time (1-based) it passes ``point``."""

    point: FaultPoint
    hit: int = 1

    def __str__(self) -> str:
        return f"{self.point.value} (hit #{self.hit})"


def fault_points(
    *, points: Iterable[FaultPoint] | None = None, max_hit: int = 10
) -> SearchStrategy[CrashPoint]:
    """A hypothesis strategy of :class:`CrashPoint` values, for :func:`crash_at`.

    ``points`` narrows the fault points (default: all of them); ``max_hit`` bounds how late
    the crash comes. A crash point the run never reaches is a case without a crash
    (``CrashCase.crashed`` is False), which hypothesis shrinks away from a failure anyway.
    """
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # hypothesis is a test dependency, not a runtime one
        raise ImportError("sdk.testing.fault_points() needs hypothesis installed") from exc
    chosen = list(points) if points is not None else list(FaultPoint)
    if not chosen:
        raise ValueError("fault_points() needs at least one fault point")
    if max_hit < 1:
        raise ValueError(f"fault_points() max_hit must be >= 1, got {max_hit}")
    return st.builds(CrashPoint, st.sampled_from(chosen), st.integers(1, max_hit))


Recovery = Literal["restart", "takeover"]
"""How a crashed worker is replaced: ``"restart"`` — the same identity comes back and takes
its runs at once; ``"takeover"`` — another worker claims them once the dead one's lease has
expired (the clock is skipped past it)."""


@dataclass(frozen=True)
class CrashCase:
    point: FaultPoint
    hit: int
    crashed: bool
    """False when the run finished before reaching that hit (nothing to recover)."""
    executions_after: Counter[int]
    """Executions per activity seq by the recovering worker."""
    recorded_before: frozenset[int] = frozenset()
    """Activity seqs whose completion was recorded when the worker died."""

    def __str__(self) -> str:
        where = f"crash at {self.point.value} (hit #{self.hit})"
        if not self.crashed:
            return f"{where}: not reached"
        ran = ", ".join(f"#{seq} x{n}" for seq, n in sorted(self.executions_after.items()))
        return f"{where}: recovered; activities run after the crash: {ran or 'none'}"


@dataclass
class CrashResumeReport:
    result: Any
    """The result of the uninterrupted run (``None`` if it failed)."""
    points: Counter[FaultPoint]
    """How often the uninterrupted run passed each fault point."""
    cases: list[CrashCase] = field(default_factory=list)
    failure: tuple[str, str] | None = None
    """``(type, message)`` of the uninterrupted run's failure, if the workflow fails: every
    recovered run must fail the same way."""

    @property
    def crashes(self) -> int:
        return sum(1 for case in self.cases if case.crashed)

    def __str__(self) -> str:
        passed = ", ".join(f"{p.value} x{n}" for p, n in self.points.items() if n)
        outcome = (
            f"result {self.result!r}"
            if self.failure is None
            else f"failure {self.failure[0]}: {self.failure[1]}"
        )
        return (
            f"{self.crashes} crashes recovered ({len(self.cases)} cases) at the fault points "
            f"of one run ({passed}); {outcome}"
        )


class CrashResumeError(AssertionError):
    """A guarantee did not hold after a crash; the message names the fault point."""


_IDENTITY = "crash-resume"
_QUEUE = "crash-resume"
_ID = "crash-resume"
_STUCK_AFTER = 10_000
"""Clock jumps after which a run that neither closes nor fails is reported as stuck."""
_SETTLE_WALL = 30.0
"""Wall seconds a worker may stay busy before crash_resume reports it (a busy loop?)."""


@dataclass(frozen=True)
class _Outcome:
    value: Any = None
    failure: tuple[str, str] | None = None
    """``(type, message)`` of the recorded failure, for a run that failed."""

    def describe(self) -> str:
        if self.failure is None:
            return f"result {self.value!r}"
        return f"failure {self.failure[0]}: {self.failure[1]}"


def _counting(
    definition: ActivityDefinition[Any, Any], ledger: list[tuple[str, int, int]]
) -> ActivityDefinition[Any, Any]:
    """The same activity (same recorded name), recording each execution in ``ledger``."""
    fn: Any = definition.fn

    def record() -> None:
        info = current_activity("activity.info()").info
        ledger.append((info.run_id, info.activity_id, info.attempt))

    if definition.is_async:

        async def counted_async(*args: Any) -> Any:
            record()
            return await fn(*args)

        wrapper: Callable[..., Any] = counted_async
    else:

        def counted(*args: Any) -> Any:
            record()
            return fn(*args)

        wrapper = counted
    return dataclasses.replace(definition, fn=wrapper)


class _Scenario:
    """One store holding one run of the workflow, on a clock skipped whenever the worker
    driving it is idle, and the ledger of every activity execution."""

    def __init__(
        self,
        path: Path,
        workflow: object,
        args: tuple[Any, ...],
        workflows: list[object],
        activities: list[object],
    ) -> None:
        self.path = path
        self.workflow = workflow
        self.args = args
        self.workflows = workflows
        self.ledger: list[tuple[str, int, int]] = []
        self.activities = [
            _counting(a, self.ledger) for a in activities if isinstance(a, ActivityDefinition)
        ]
        self.clock = ManualClock()
        self._store: SqliteStore | None = None
        self._client: Client | None = None

    async def __aenter__(self) -> _Scenario:
        self._store = await SqliteStore.open(self.path, durability=Durability.NORMAL)
        self._client = Client(self._store, clock=self.clock, seed=0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._store is not None:
            await self._store.close()

    @property
    def store(self) -> SqliteStore:
        assert self._store is not None
        return self._store

    @property
    def client(self) -> Client:
        assert self._client is not None
        return self._client

    async def start(self) -> WorkflowHandle:
        return await self.client.start_workflow(
            self.workflow, *self.args, id=_ID, task_queue=_QUEUE
        )

    def worker(self, identity: str, faults: Faults | None = None) -> Worker:
        return Worker(
            self.store,
            task_queue=_QUEUE,
            workflows=self.workflows,
            activities=self.activities,
            identity=identity,
            faults=faults,
            clock=self.clock,
            converter=self.client.converter,
        )

    async def drive(self, worker: Worker, handle: WorkflowHandle, where: str) -> bool:
        """Skip time until the run closes (True) or the worker dies (False)."""
        for _ in range(_STUCK_AFTER):
            await self._settle(worker, where)
            if worker.stopped.is_set():
                return False
            info = await handle.run_info()
            if not info.status.is_open:
                return True
            history = await self.store.read_history(info.run_id)
            failed = [e for e in history if isinstance(e, WorkflowTaskFailed)]
            if failed:
                failure = failed[-1].failure
                raise CrashResumeError(
                    f"{where}: the workflow cannot make progress — "
                    f"{failure.type}: {failure.message}"
                )
            deadline = await self._next_deadline(worker)
            now = self.clock.now()
            if deadline is None:
                raise CrashResumeError(f"{where}: the run is open but waits for nothing")
            # Due already, yet the worker idles: it polls again after its interval.
            self.clock.set(deadline if deadline > now else now + worker.poll_interval)
        raise CrashResumeError(f"{where}: the run did not finish after {_STUCK_AFTER} clock jumps")

    async def _settle(self, worker: Worker, where: str) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _SETTLE_WALL
        idle = 0
        while not worker.stopped.is_set():
            if worker.is_idle():
                idle += 1
                if idle > 3:
                    return
                await asyncio.sleep(0)
                continue
            idle = 0
            if loop.time() > give_up:
                raise CrashResumeError(
                    f"{where}: the worker stayed busy for {_SETTLE_WALL:g}s of wall time "
                    "(an activity that never returns?)"
                )
            await asyncio.sleep(0.0005)

    async def _next_deadline(self, worker: Worker) -> float | None:
        candidates = [
            d.wait_deadline
            for d in worker.drivers.values()
            if d.waiting and d.wait_deadline is not None
        ]
        stored = await self.store.next_wake_at(_QUEUE, owner=None)
        if stored is not None:
            candidates.append(stored)
        return min(candidates) if candidates else None

    async def outcome(self, handle: WorkflowHandle) -> _Outcome:
        try:
            return _Outcome(value=await handle.result())
        except WorkflowFailureError as exc:
            return _Outcome(failure=(exc.failure.type, exc.failure.message))


async def _reference(
    path: Path,
    workflow: object,
    args: tuple[Any, ...],
    workflows: list[object],
    activities: list[object],
) -> tuple[_Outcome, Counter[FaultPoint]]:
    """The uninterrupted run: its outcome, and how often it passed each fault point."""
    async with _Scenario(path, workflow, args, workflows, activities) as scenario:
        counter = Faults()
        worker = scenario.worker(_IDENTITY, counter)
        handle = await scenario.start()
        async with worker:
            await scenario.drive(worker, handle, "the uninterrupted run")
        return await scenario.outcome(handle), Counter(counter.hits)


async def _crash_case(
    path: Path,
    crash: CrashPoint,
    workflow: object,
    args: tuple[Any, ...],
    workflows: list[object],
    activities: list[object],
    expected: _Outcome,
    recovery: Recovery,
) -> CrashCase:
    where = f"crash at {crash}"
    async with _Scenario(path, workflow, args, workflows, activities) as scenario:
        handle = await scenario.start()
        faults = Faults.crash_at(crash.point, crash.hit)
        doomed = scenario.worker(_IDENTITY, faults)
        await doomed.start()
        try:
            closed = await scenario.drive(doomed, handle, where)
        finally:
            await doomed.stop()
        if closed:
            got = await scenario.outcome(handle)
            if got != expected:
                raise CrashResumeError(
                    f"{where} (never reached): {got.describe()} differs from {expected.describe()}"
                )
            return CrashCase(crash.point, crash.hit, False, Counter())

        # What the dead worker had queued reaches the file before anything else: a write
        # made after it commits after it.
        await scenario.store.renew_leases("(drain)", until=0.0)
        history = await scenario.store.read_history(handle.run_id or "")
        recorded_attempts = {
            (e.seq, e.attempt)
            for e in history
            if isinstance(e, ActivityCompleted | ActivityFailed | ActivityTimedOut)
        }
        completed = frozenset(e.seq for e in history if isinstance(e, ActivityCompleted))
        before = len(scenario.ledger)
        identity = _IDENTITY if recovery == "restart" else f"{_IDENTITY}-2"
        rescuer = scenario.worker(identity)
        async with rescuer:
            await scenario.drive(rescuer, handle, f"{where}, recovering")
        got = await scenario.outcome(handle)
        if got != expected:
            raise CrashResumeError(
                f"{where}: after recovery, {got.describe()} differs from {expected.describe()}"
            )
        after = [(seq, attempt) for _, seq, attempt in scenario.ledger[before:]]
        rerun = sorted({seq for seq, attempt in after if (seq, attempt) in recorded_attempts})
        if rerun:
            raise CrashResumeError(
                f"{where}: activities {rerun} ran again although the outcome of that attempt "
                "was recorded before the crash"
            )
        twice = sorted(key for key, n in Counter(after).items() if n > 1)
        if twice:
            raise CrashResumeError(
                f"{where}: (activity, attempt) {twice} ran more than once after a single crash"
            )
        return CrashCase(crash.point, crash.hit, True, Counter(seq for seq, _ in after), completed)


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _expected_outcome(reference: _Outcome, expected: Any) -> _Outcome:
    return reference if expected is inspect.Parameter.empty else _Outcome(value=expected)


async def crash_at(
    crash: CrashPoint,
    workflow: object,
    *args: Any,
    workflows: Iterable[object] = (),
    activities: Iterable[object] = (),
    expected: Any = inspect.Parameter.empty,
    recovery: Recovery = "restart",
    directory: str | Path | None = None,
) -> CrashCase:
    """Run ``workflow(*args)`` with the worker dying at ``crash``, recover, check.

    The unit of :func:`crash_resume`, for hypothesis (``@given(crash=fault_points())``) or
    for one case a test wants pinned. Without ``expected``, an uninterrupted run first
    provides the result to compare with. Raises :class:`CrashResumeError` on a violation.
    """
    workflow_list = [workflow, *workflows]
    activity_list = list(activities)
    with tempfile.TemporaryDirectory(prefix="perdura-crash-") as tmp:
        root = Path(directory) if directory is not None else Path(tmp)
        if expected is inspect.Parameter.empty:
            reference, _ = await _reference(
                root / "reference.db", workflow, args, workflow_list, activity_list
            )
        else:
            reference = _Outcome(value=expected)
        path = root / "crash.db"
        try:
            return await _crash_case(
                path, crash, workflow, args, workflow_list, activity_list, reference, recovery
            )
        finally:
            _remove_store(path)


async def crash_resume(
    workflow: object,
    *args: Any,
    workflows: Iterable[object] = (),
    activities: Iterable[object] = (),
    expected: Any = inspect.Parameter.empty,
    points: Iterable[FaultPoint] | None = None,
    max_hits_per_point: int = 50,
    recovery: Recovery = "restart",
    directory: str | Path | None = None,
) -> CrashResumeReport:
    """Crash the worker at every fault point the run passes, recover, check the guarantees.

    An uninterrupted run counts how often the worker passes each fault point. Then, for
    each point and hit (up to ``max_hits_per_point``): a fresh store, a worker that dies at
    that hit, and a fresh worker (``recovery``) that must finish the run with the
    uninterrupted outcome (or ``expected``), without executing again any activity attempt
    whose outcome was recorded before the crash, and without running the attempt that was
    in flight more than once more. Time is skipped, so timers and retry intervals cost no
    wall time. Raises :class:`CrashResumeError` naming the first violation — also when the
    workflow cannot replay its own history (a ``NondeterminismError``).

    Activities run at least once per attempt: one in flight at the crash runs again, with
    the same ``activity.info().idempotency_key``.
    """
    activity_list = list(activities)
    workflow_list = [workflow, *workflows]
    chosen = set(points) if points is not None else set(FaultPoint)

    with tempfile.TemporaryDirectory(prefix="perdura-crash-") as tmp:
        root = Path(directory) if directory is not None else Path(tmp)
        reference, hits = await _reference(
            root / "reference.db", workflow, args, workflow_list, activity_list
        )
        wanted = _expected_outcome(reference, expected)
        if wanted != reference:
            raise CrashResumeError(
                f"the uninterrupted run gave {reference.describe()}, not {wanted.describe()}"
            )
        report = CrashResumeReport(result=reference.value, points=hits, failure=reference.failure)
        case_number = 0
        for point in FaultPoint:
            if point not in chosen:
                continue
            for hit in range(1, min(hits[point], max_hits_per_point) + 1):
                case_number += 1
                path = root / f"case-{case_number}.db"
                report.cases.append(
                    await _crash_case(
                        path,
                        CrashPoint(point, hit),
                        workflow,
                        args,
                        workflow_list,
                        activity_list,
                        wanted,
                        recovery,
                    )
                )
                _remove_store(path)
        return report
