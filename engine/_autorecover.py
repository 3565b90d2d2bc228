"""Automatic recovery: a worker service that brings back runs failed by passing trouble.

Every ``interval`` seconds the service looks at the FAILED runs of its worker's task queue
and recovers each one that

* failed of a recoverable class (``transient`` or ``resource_exhaustion``, read from its
  history: see ``run_failure_class``) — a permanent failure, a timeout or a bug in workflow
  code is left for a person;
* failed at least ``delay`` seconds ago (the trouble may need a moment to pass) and at most
  ``window`` seconds ago (older failures are somebody's decision by now);
* is still the newest run of its workflow id (nobody recovered, reset or restarted it);
* has been recovered fewer than ``max_attempts`` times in a row (its chain of
  ``origin.kind == "recover"`` runs).

Recovering is ``WorkflowHandle.recover()``: a new run of the same workflow id whose history
copies the failed one up to just before the failing step, its ``WorkflowStarted.origin``
naming the failed run — so each recovery is in history. It is also counted
(``perdura_executions_recovered_total``), logged and delivered to listeners
(``ExecutionRecovered``).

Safe with several workers: the store refuses a second open run of one workflow id
(``WorkflowAlreadyRunningError``), so of two services racing for one failure only one
recovers it; the other sees the refusal and moves on. One service never works on two
failures at once: a pass handles runs one after the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import structlog

from history import (
    RunInfo,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    StoreError,
    WorkflowAlreadyRunningError,
    WorkflowStarted,
)

from ._classify import FailureClass, run_failure_class
from ._client import Client
from ._config import RecoveryConfig

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["AutoRecovery"]

log = structlog.get_logger("perdura.recovery")

_PAGE: Final = 100


class AutoRecovery:
    """The recovery service of one worker (``Worker.recovery`` when enabled)."""

    def __init__(self, worker: Worker, config: RecoveryConfig) -> None:
        self.worker = worker
        self.config = config
        self.client = Client(worker.store, converter=worker.env.converter, clock=worker.clock)
        # A recovered run is a new run of this worker's queue: wake its poll loop at once.
        self.client.add_listener(worker)
        self._reported: set[str] = set()
        self.recoveries = 0
        """Runs this service has recovered."""

    async def run(self) -> None:
        """Look every ``interval`` seconds until cancelled; a failed pass is logged and the
        next one tries again."""
        clock = self.worker.clock
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("recovery pass failed; will retry", error=str(exc))
            await clock.sleep_until(clock.now() + self.config.interval)

    async def run_once(self) -> list[str]:
        """One pass: recover what qualifies now; returns the new runs' ids."""
        store = self.worker.store
        now = self.worker.clock.now()
        recovered: list[str] = []
        offset = 0
        while True:
            page = await store.list_runs(
                RunQuery(
                    status=RunStatus.FAILED,
                    task_queue=self.worker.task_queue,
                    limit=_PAGE,
                    offset=offset,
                )
            )
            for info in page:
                run_id = await self._consider(info, now)
                if run_id is not None:
                    recovered.append(run_id)
            if len(page) < _PAGE:
                return recovered
            offset += _PAGE

    async def _consider(self, info: RunInfo, now: float) -> str | None:
        config = self.config
        if info.closed_at is None:
            return None
        age = now - info.closed_at.timestamp()
        if age < config.delay or age > config.window:
            return None
        store = self.worker.store
        if (await store.find_run(info.workflow_id)).run_id != info.run_id:
            return None  # recovered, reset or started again since
        history = await store.read_history(info.run_id)
        failure_class = run_failure_class(history) or FailureClass.UNKNOWN
        if not failure_class.recoverable:
            return None
        started = history[0]
        assert isinstance(started, WorkflowStarted)
        done = await self._recoveries_before(started)
        if done >= config.max_attempts:
            if info.run_id not in self._reported:
                self._reported.add(info.run_id)
                log.warning(
                    "failed run not recovered: recovery attempts exhausted",
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    recoveries=done,
                    failure_class=failure_class.value,
                )
            return None
        reason = (
            f"automatic recovery {done + 1}/{config.max_attempts} of a "
            f"{failure_class.value} failure"
        )
        try:
            handle = await self.client.get_handle(info.workflow_id, info.run_id).recover(
                reason=reason
            )
        except WorkflowAlreadyRunningError:
            return None  # another worker's service (or a person) was first
        self.recoveries += 1
        # Metrics, the log line and the listener event come with the new run's first step
        # (engine/_observe.py), once, whichever worker makes it.
        log.info(
            "recovering failed run",
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            new_run_id=handle.run_id,
            failure_class=failure_class.value,
        )
        assert handle.run_id is not None
        return handle.run_id

    async def _recoveries_before(self, started: WorkflowStarted) -> int:
        """How many recoveries in a row led to the run that ``started`` starts."""
        count = 0
        origin = started.origin
        store = self.worker.store
        while origin is not None and origin.kind == "recover" and count < self.config.max_attempts:
            count += 1
            try:
                previous = await store.read_history(origin.run_id)
            except RunNotFoundError:
                break
            first = previous[0] if previous else None
            origin = first.origin if isinstance(first, WorkflowStarted) else None
        return count
