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
from typing import Any

from engine import (
    ActivityDefinition,
    Client,
    ManualClock,
    Registry,
    Worker,
    WorkflowHandle,
    WorkflowInstance,
    current_activity,
    replay_history,
    workflow_definition,
)
from engine._faults import FaultPoint, Faults
from history import (
    ActivityCompleted,
    AnyEvent,
    PayloadConverter,
    RunQuery,
    SqliteStore,
    Store,
    read_history_file,
)

__all__ = [
    "CrashCase",
    "CrashResumeReport",
    "FaultPoint",
    "ReplayResult",
    "Replayer",
    "WorkflowEnvironment",
    "crash_resume",
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
        self, *, workflows: Iterable[object], converter: PayloadConverter | None = None
    ) -> None:
        self.registry = Registry(workflows)
        self.converter = converter or PayloadConverter()

    def replay(self, history: Sequence[AnyEvent], *, run_id: str = "replay") -> ReplayResult:
        instance = replay_history(self.registry, history, run_id=run_id, converter=self.converter)
        return ReplayResult(run_id, instance.workflow_type, len(history), instance)

    def replay_file(self, path: str | Path) -> ReplayResult:
        exported = read_history_file(path)
        return self.replay(exported.events, run_id=exported.run_id)

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


# -- crash/resume ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashCase:
    point: FaultPoint
    hit: int
    crashed: bool
    """False when the run finished before reaching that hit (nothing to recover)."""
    executions_after: Counter[int]
    """Executions per activity seq by the recovering worker."""


@dataclass
class CrashResumeReport:
    result: Any
    points: Counter[FaultPoint]
    """How often the uninterrupted run passed each fault point."""
    cases: list[CrashCase] = field(default_factory=list)

    @property
    def crashes(self) -> int:
        return sum(1 for case in self.cases if case.crashed)


class CrashResumeError(AssertionError):
    """A guarantee did not hold after a crash; the message names the fault point."""


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


async def crash_resume(
    workflow: object,
    *args: Any,
    workflows: Iterable[object] = (),
    activities: Iterable[object] = (),
    expected: Any = inspect.Parameter.empty,
    points: Iterable[FaultPoint] | None = None,
    max_hits_per_point: int = 50,
    directory: str | Path | None = None,
) -> CrashResumeReport:
    """Crash the worker at every fault point the run passes, recover, check the guarantees.

    For each point and hit: a fresh store, a worker that dies at that hit, then a fresh worker
    (same identity, as a restarted process) that must finish the run with the uninterrupted
    result (or ``expected``), without executing again any activity whose completion was
    recorded before the crash. Raises :class:`CrashResumeError` naming the first violation.
    Activities should be idempotent-friendly: in-flight ones run again (at-least-once).
    """
    activity_list = list(activities)
    workflow_list = [workflow, *workflows]
    chosen = set(points) if points is not None else set(FaultPoint)

    with tempfile.TemporaryDirectory(prefix="perdura-crash-") as tmp:
        root = Path(directory) if directory is not None else Path(tmp)
        counter = Faults()
        reference = await _run_once(
            root / "reference.db", workflow, args, workflow_list, activity_list, counter, []
        )
        result = reference if expected is inspect.Parameter.empty else expected
        report = CrashResumeReport(result=result, points=Counter(counter.hits))
        case_number = 0
        for point in FaultPoint:
            if point not in chosen:
                continue
            for hit in range(1, min(counter.hits[point], max_hits_per_point) + 1):
                case_number += 1
                path = root / f"case-{case_number}.db"
                report.cases.append(
                    await _crash_case(
                        path, point, hit, workflow, args, workflow_list, activity_list, result
                    )
                )
                path.unlink(missing_ok=True)
        return report


async def _run_once(
    path: Path,
    workflow: object,
    args: tuple[Any, ...],
    workflows: list[object],
    activities: list[object],
    faults: Faults | None,
    ledger: list[tuple[str, int, int]],
) -> Any:
    counted = [_counting(a, ledger) for a in activities if isinstance(a, ActivityDefinition)]
    store = await SqliteStore.open(path)
    try:
        client = Client(store, seed=0)
        worker = Worker(
            store,
            task_queue="crash-resume",
            workflows=workflows,
            activities=counted,
            identity="crash-resume",
            faults=faults,
            converter=client.converter,
        )
        client.add_listener(worker)
        async with worker:
            handle = await client.start_workflow(
                workflow, *args, id="crash-resume", task_queue="crash-resume"
            )
            return await handle.result()
    finally:
        await store.close()


async def _crash_case(
    path: Path,
    point: FaultPoint,
    hit: int,
    workflow: object,
    args: tuple[Any, ...],
    workflows: list[object],
    activities: list[object],
    expected: Any,
) -> CrashCase:
    ledger: list[tuple[str, int, int]] = []
    counted = [_counting(a, ledger) for a in activities if isinstance(a, ActivityDefinition)]
    store = await SqliteStore.open(path)
    try:
        client = Client(store, seed=0)
        faults = Faults.crash_at(point, hit)
        worker = Worker(
            store,
            task_queue="crash-resume",
            workflows=workflows,
            activities=counted,
            identity="crash-resume",
            faults=faults,
            converter=client.converter,
        )
        client.add_listener(worker)
        handle = await client.start_workflow(
            workflow, *args, id="crash-resume", task_queue="crash-resume"
        )
        await worker.start()
        result_task = asyncio.ensure_future(handle.result())
        stopped = asyncio.ensure_future(worker.stopped.wait())
        await asyncio.wait({result_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        where = f"crash at {point.value} (hit #{hit})"
        if faults.crashed is None:
            await worker.stop()
            value = await result_task
            if value != expected:
                raise CrashResumeError(f"{where}: result {value!r} differs from {expected!r}")
            return CrashCase(point, hit, False, Counter())
        result_task.cancel()
        await worker.stop()
        client.remove_listener(worker)

        history = await store.read_history(handle.run_id or "")
        recorded = {e.seq for e in history if isinstance(e, ActivityCompleted)}
        before = len(ledger)
        recovering = Worker(
            store,
            task_queue="crash-resume",
            workflows=workflows,
            activities=counted,
            identity="crash-resume",
            converter=client.converter,
        )
        client.add_listener(recovering)
        async with recovering:
            value = await handle.result()
        after: Counter[int] = Counter(seq for _, seq, _ in ledger[before:])
        if value != expected:
            raise CrashResumeError(f"{where}: result {value!r} differs from {expected!r}")
        rerun = sorted(seq for seq in after if seq in recorded)
        if rerun:
            raise CrashResumeError(
                f"{where}: activities {rerun} ran again although their completion was recorded"
            )
        return CrashCase(point, hit, True, after)
    finally:
        await store.close()
