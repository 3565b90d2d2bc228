"""The worker: claims runs and activity tasks from one task queue and drives them.

A worker holds every run it drives under a lease, renewed in one statement for all of them
every third of the lease. A run whose renewal fails has been taken over (this process was
paused past its lease): its driver stops at once, and the fencing token makes sure any append
it still attempts is refused. On start, a worker first drops the leases of a previous process
with the same identity (it is that process, restarted), so recovery does not wait for lease
expiry; runs of other dead workers are claimed as their leases expire.

Stopping is graceful: no new claims, in-flight drivers are cancelled, and each releases its run
for immediate pickup by another worker.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from history import (
    AppendRequest,
    HeldRunNotifier,
    PayloadConverter,
    Store,
    StoreError,
    WorkflowStarted,
    WorkNotifier,
)

from ._autorecover import AutoRecovery
from ._classify import Classifier, FailurePolicy
from ._clock import Clock, SystemClock
from ._config import PerduraConfig, RetryDefaults
from ._definitions import ActivityOptions, Registry
from ._driver import DriverEnv, RunDriver
from ._faults import FaultPoint, Faults, InjectedCrash
from ._listeners import Listener, ListenerSet
from ._metrics import MetricsServer, WorkerMetrics, start_metrics_server
from ._observe import Observer
from ._remote import ActivityTaskRunner
from ._sandbox import install as install_sandbox
from ._tracing import Tracing

__all__ = ["Worker"]


def _nothing() -> None:
    pass


log = structlog.get_logger("perdura.worker")

FRESH_RUNS_KEPT = 10_000
"""First events of runs started in this process and not yet claimed, kept for the claim."""


_worker_numbers = itertools.count(1)


def default_identity() -> str:
    """``host:pid`` for a process's first worker, ``host:pid:2`` … for the next ones.

    The identity owns leases, and a starting worker releases every lease its identity holds
    (its previous incarnation's), so two workers in one process must never share one.
    """
    number = next(_worker_numbers)
    base = f"{socket.gethostname()}:{os.getpid()}"
    return base if number == 1 else f"{base}:{number}"


class Worker:
    """Runs the workflows and activities registered on it for one task queue.

    Use as ``async with Worker(...)`` (runs in the background of the block) or ``await
    worker.run()`` (runs until cancelled).

    Failure policy: an exception raised out of workflow code fails the run only if it is an
    ``ApplicationError``, ``ActivityError`` or ``ChildWorkflowError``, or one of
    ``workflow_failure_exception_types``; anything else is treated as a bug — the run stays
    open, a ``WorkflowTaskFailed`` event shows the error, and the task is retried every
    ``workflow_task_retry`` seconds so a fixed deploy continues it. A workflow step that holds
    the event loop longer than ``workflow_step_deadline`` seconds is interrupted the same way.

    Operating it (docs/operating.md): ``config`` carries the defaults (retry policy, failure
    policy, automatic recovery; default: ``PerduraConfig.from_env()``); ``listeners`` get
    typed events of what the worker recorded; ``metrics_registry`` is where its Prometheus
    metrics go (default: the global registry) and ``metrics_port`` serves them on
    ``http://127.0.0.1:PORT/metrics`` (0: any free port, see ``metrics_server.port``);
    ``tracing`` (``True`` or a tracer provider) emits OpenTelemetry spans;
    ``failure_classifier`` classifies activity exceptions before the built-in rules.
    """

    def __init__(
        self,
        store: Store,
        *,
        task_queue: str,
        workflows: Iterable[object] = (),
        activities: Iterable[object] = (),
        identity: str | None = None,
        max_concurrent_runs: int = 1000,
        max_concurrent_activities: int = 100,
        lease_seconds: float = 10.0,
        keep_alive: float = 5.0,
        poll_interval: float = 1.0,
        workflow_task_retry: float = 10.0,
        cache_size: int = 1000,
        activity_defaults: ActivityOptions | None = None,
        workflow_failure_exception_types: Iterable[type[BaseException]] = (),
        workflow_step_deadline: float | None = 2.0,
        converter: PayloadConverter | None = None,
        clock: Clock | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        config: PerduraConfig | None = None,
        listeners: Iterable[Listener] = (),
        metrics_registry: Any = None,
        metrics_port: int | None = None,
        tracing: Any = False,
        failure_classifier: Classifier | None = None,
    ) -> None:
        for name, value in (
            ("max_concurrent_runs", max_concurrent_runs),
            ("max_concurrent_activities", max_concurrent_activities),
            ("lease_seconds", lease_seconds),
            ("poll_interval", poll_interval),
            ("cache_size", cache_size),
        ):
            if value <= 0:
                raise ValueError(f"Worker {name} must be > 0, got {value}")
        if not task_queue:
            raise ValueError("Worker task_queue must be a non-empty string")
        self.config = config if config is not None else PerduraConfig.from_env()
        if activity_defaults is None and self.config.retry != RetryDefaults():
            activity_defaults = ActivityOptions(retry_policy=self.config.retry.policy())
        failure_policy = FailurePolicy(
            classifier=failure_classifier,
            resource_exhaustion_backoff=self.config.failures.resource_exhaustion_backoff,
            timeout_growth=self.config.failures.timeout_growth,
            timeout_limit=self.config.failures.timeout_limit,
        )
        self.store = store
        self.task_queue = task_queue
        self.registry = Registry(workflows, activities)
        self.identity = identity or default_identity()
        self.max_concurrent_runs = max_concurrent_runs
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.clock: Clock = clock or SystemClock()
        slots = asyncio.Semaphore(max_concurrent_activities)
        self.listeners = ListenerSet(listeners)
        """Execution event listeners (``worker.listeners.add(fn)``): see engine/_listeners."""
        self.metrics = WorkerMetrics(metrics_registry, task_queue=task_queue, worker=self.identity)
        self._metrics_port = metrics_port
        self.metrics_server: MetricsServer | None = None
        """The worker's own ``/metrics`` endpoint while it runs (``metrics_port``)."""
        self.observer = Observer(
            metrics=self.metrics,
            listeners=self.listeners,
            clock=self.clock,
            tracing=(
                None
                if tracing is False or tracing is None
                else Tracing(None if tracing is True else tracing)
            ),
        )
        self.env = DriverEnv(
            store=store,
            registry=self.registry,
            converter=converter or PayloadConverter(),
            clock=self.clock,
            identity=self.identity,
            task_queue=task_queue,
            keep_alive=keep_alive,
            workflow_task_retry=workflow_task_retry,
            activity_slots=slots,
            activity_defaults=activity_defaults or ActivityOptions(),
            failure_types=tuple(workflow_failure_exception_types),
            step_deadline=workflow_step_deadline,
            cache_size=cache_size,
            faults=faults,
            rng=random.Random(seed),
            notify=self.notify,
            failure_policy=failure_policy,
            observer=self.observer,
        )
        self.activity_runner = ActivityTaskRunner(
            store=store,
            registry=self.registry,
            converter=self.env.converter,
            clock=self.clock,
            identity=self.identity,
            task_queue=task_queue,
            lease_seconds=lease_seconds,
            slots=slots,
            on_recorded=self.notify,
            failure_policy=failure_policy,
            observer=self.observer,
        )
        self.recovery = (
            AutoRecovery(self, self.config.recovery) if self.config.recovery.enabled else None
        )
        """The automatic recovery service (``config.recovery.enabled``), or ``None``."""
        self.max_concurrent_activities = max_concurrent_activities
        self.drivers: dict[str, RunDriver] = {}
        self._driver_tasks: dict[str, asyncio.Task[None]] = {}
        # (scale-out) Runs whose driver ended, with its fence: one still leased to this
        # identity at the next renewal was never handed back (the store failed under its
        # driver) and is released then, or nothing would ever reclaim it.
        self._ended: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._background: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._polling_idle = False
        self.stopped = asyncio.Event()
        """Set once :meth:`run` has returned (stopped, or crashed in a fault-injection test)."""
        self.crashed: InjectedCrash | None = None
        """The injected crash that killed this worker (fault-injection tests only)."""
        self.log = log.bind(task_queue=task_queue, worker=self.identity)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._background is not None:
            raise RuntimeError("worker already started")
        install_sandbox()
        released = await self.store.release_owner(self.identity)
        if released:
            self.log.info("recovered runs held by this identity before a restart", runs=released)
        self._background = asyncio.create_task(self.run())
        # Let the poll loop make its first claim before start() returns.
        await asyncio.sleep(0)

    async def stop(self) -> None:
        task, self._background = self._background, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, InjectedCrash):
            pass

    async def run(self) -> None:
        """Poll, drive and renew until cancelled; then hand every run back.

        After an injected crash (tests only) it raises :class:`InjectedCrash` instead, having
        released nothing: the store is left as a killed process would leave it.
        """
        install_sandbox()
        self.metrics.watch(
            cache_size=lambda: len(self.env.cache),
            runs_in_use=lambda: len(self.drivers),
            runs_capacity=self.max_concurrent_runs,
            activities_capacity=self.max_concurrent_activities,
        )
        if self._metrics_port is not None and self.metrics_server is None:
            self.metrics_server = start_metrics_server(
                self._metrics_port, registry=self.metrics.registry
            )
            self.log.info("serving metrics", url=self.metrics_server.url)
        self.log.info("worker started")
        self._run_task = asyncio.current_task()
        renew = asyncio.create_task(self._renew_loop())
        recovering = None if self.recovery is None else asyncio.create_task(self.recovery.run())
        stop_listening: Callable[[], None] = _nothing
        try:
            stop_listening = await self._listen_for_work()
            while True:
                try:
                    await self._poll_loop()
                except StoreError as exc:
                    # A store locked past its busy timeout (or a full disk) is usually
                    # transient; a worker that stopped polling for good would strand runs.
                    self.log.warning("polling the store failed; will retry", error=str(exc))
                    # Like an idle poll: a notice of new work (the store is back, a run was
                    # started here) cuts the wait short.
                    await self.clock.wait(self._wakeup, self.clock.now() + self.poll_interval)
        except InjectedCrash as crash:
            self.crashed = crash
        finally:
            stop_listening()
            renew.cancel()
            tasks = list(self._driver_tasks.values()) + list(self.activity_runner.running.values())
            if recovering is not None:
                tasks.append(recovering)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, renew, return_exceptions=True)
            # A dead process delivers nothing more; a stopping one delivers what it recorded.
            await asyncio.shield(self.listeners.close(deliver=self.crashed is None))
            self.metrics.unwatch()
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
            if self.crashed is None:
                # A claim that committed while the poll loop was being cancelled holds a
                # lease no driver will ever use: hand back whatever this identity still holds.
                try:
                    await asyncio.shield(self.store.release_owner(self.identity))
                except Exception as exc:
                    self.log.warning("could not release leases on stop", error=str(exc))
            self.log.info("worker stopped", crashed=self.crashed is not None)
            self.stopped.set()
        if self.crashed is not None:
            raise self.crashed

    async def _listen_for_work(self) -> Callable[[], None]:
        """Poll at once, not at the next poll interval, when the store says work may be ready
        (a store that can tell: ``history.WorkNotifier``; PostgreSQL's comes from any process);
        and catch a held run up at once when another process appends to it
        (``history.HeldRunNotifier``)."""
        removers: list[Callable[[], None]] = []
        try:
            if isinstance(self.store, WorkNotifier):
                removers.append(await self.store.add_work_listener(self.task_queue, self.notify))
            if isinstance(self.store, HeldRunNotifier):
                removers.append(await self.store.add_held_run_listener(self._notify_held))
        except StoreError as exc:
            self.log.warning("cannot listen for new work; polling only", error=str(exc))

        def remove_all() -> None:
            for remove in removers:
                remove()

        return remove_all

    def _notify_held(self, run_id: str) -> None:
        """Another process appended to a run some worker holds: wake its driver if it is
        this worker's. No poll: every worker hears this, only the holder has work."""
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.notify()

    def _on_crash(self, crash: InjectedCrash) -> None:
        if self.crashed is None:
            self.crashed = crash
            if self._run_task is not None:
                self._run_task.cancel()

    def is_idle(self) -> bool:
        """Nothing runs and nothing is due now: every driver waits on a timer, a retry or
        an outcome from elsewhere. Time skipping advances the clock only then."""
        return (
            self._polling_idle
            and not self.activity_runner.running
            and all(d.waiting and not d.local for d in self.drivers.values())
        )

    def run_created(self, run_id: str, started: WorkflowStarted) -> None:
        """A client in this process created a run: keep its first event for the driver that
        claims it (``DriverEnv.fresh``), sparing it a read of what was just written."""
        if (
            started.task_queue != self.task_queue
            or started.workflow_type not in self.registry.workflows
        ):
            return
        fresh = self.env.fresh
        fresh[run_id] = started
        while len(fresh) > FRESH_RUNS_KEPT:
            fresh.pop(next(iter(fresh)))

    def notify(self, run_id: str | None = None) -> None:
        """New work may be ready (a run was started or woken in this process)."""
        if run_id is not None:
            self._notify_held(run_id)
        self._wakeup.set()

    # -- loops -----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        store = self.store
        while True:
            self._wakeup.clear()
            # Only what this worker can take now: a worker without workflows leaves runs to
            # those that have them (it could only fail them), and waking for work it cannot
            # take would make this loop spin.
            take_runs = bool(self.registry.workflows) and (
                self.max_concurrent_runs > len(self.drivers)
            )
            take_tasks = bool(self.registry.activities) and (
                self.max_concurrent_activities > len(self.activity_runner.running)
            )
            # Both claims at once: each is a write, and a write waits for the commit in
            # flight, so one after the other cost two commits per poll while runs pile up.
            polls: list[Awaitable[int]] = []
            if take_runs:
                self.env.fault(FaultPoint.BEFORE_CLAIM)
                polls.append(self._claim_runs())
            if take_tasks:
                free_slots = self.max_concurrent_activities - len(self.activity_runner.running)
                polls.append(self.activity_runner.poll_once(min(free_slots, 100)))
            claimed = 0
            for outcome in await asyncio.gather(*polls, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome  # both polls have ended: nothing is left running
                claimed += outcome
            if claimed:
                await asyncio.sleep(0)
                continue
            next_wake = await store.next_wake_at(
                self.task_queue, runs=take_runs, activity_tasks=take_tasks, owner=self.identity
            )
            deadline = self.clock.now() + self.poll_interval
            if next_wake is not None:
                deadline = min(deadline, next_wake)
            self._polling_idle = True
            try:
                await self.clock.wait(self._wakeup, deadline)
            finally:
                self._polling_idle = False

    async def _claim_runs(self) -> int:
        claims = await self.store.claim_runs(
            self.task_queue,
            owner=self.identity,
            now=self.clock.now(),
            lease_seconds=self.lease_seconds,
            limit=min(self.max_concurrent_runs - len(self.drivers), 100),
        )
        if claims:
            self.env.fault(FaultPoint.AFTER_CLAIM)
        for claim in claims:
            self._start_driver(claim)
        return len(claims)

    def _start_driver(self, claim: Any) -> None:
        driver = RunDriver(self.env, claim)
        self.drivers[claim.run_id] = driver
        task = asyncio.create_task(self._drive(driver))
        self._driver_tasks[claim.run_id] = task

    async def _drive(self, driver: RunDriver) -> None:
        try:
            with self.observer.session(driver.run_id, driver.workflow_type, self.task_queue):
                await driver.run()
        except asyncio.CancelledError:
            raise
        except InjectedCrash as crash:
            self._on_crash(crash)
        except Exception:
            self.log.exception("run driver crashed; the run will be retried", run_id=driver.run_id)
        finally:
            self.drivers.pop(driver.run_id, None)
            self._driver_tasks.pop(driver.run_id, None)
            self._ended[driver.run_id] = driver.fence
            self._wakeup.set()

    async def _renew_loop(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await self.clock.sleep_until(self.clock.now() + interval)
            until = self.clock.now() + self.lease_seconds
            try:
                self.env.fault(FaultPoint.LEASE_RENEW)
                # Only drivers that existed before the renewal can have lost their lease: a
                # run claimed while it was under way is not in ``owned``, yet it is ours.
                held = dict(self.drivers)
                owned = await self.store.renew_leases(self.identity, until=until)
                for run_id, driver in held.items():
                    if run_id in owned or driver.lost or self.drivers.get(run_id) is not driver:
                        continue
                    self.log.warning("lease lost; another worker owns the run", run_id=run_id)
                    driver.mark_lost()
                await self._release_abandoned(owned)
                await self.activity_runner.renew()
            except InjectedCrash as crash:
                self._on_crash(crash)
                return
            except Exception:
                self.log.exception("lease renewal failed; will retry")

    async def _release_abandoned(self, owned: set[str]) -> None:
        """Hand back runs this identity still holds that no driver drives: their driver
        ended without releasing them (the store failed under it). Fenced, so a run claimed
        again meanwhile (a new fence) is left alone; a renewal is the first moment the store
        answers again, and this worker never reclaims its own leases, so without this such a
        run would be renewed forever and never driven."""
        for run_id, fence in list(self._ended.items()):
            if run_id in owned and run_id not in self.drivers:
                [result] = await self.store.append(
                    [
                        AppendRequest(
                            run_id=run_id,
                            events=[],
                            now=self.clock.now(),
                            fence=fence,
                            release=True,
                            wake_at=self.clock.now(),
                        )
                    ]
                )
                if result.error is None:
                    self.log.warning("released a run its ended driver still held", run_id=run_id)
                    self._wakeup.set()
            if self._ended.get(run_id) == fence:
                del self._ended[run_id]
