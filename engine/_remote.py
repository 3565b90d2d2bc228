"""Activities that run on another worker: through the activity task table.

An activity whose task queue differs from its workflow's, or which the owning worker does not
have registered, is recorded as scheduled together with an activity task. Any worker polling
that queue claims the task under a lease it renews while the attempt runs, and records the
outcome as an external append to the run's history — the task's deletion is the fence, so an
attempt whose lease was lost (and re-run elsewhere) cannot record a second outcome. A retry is
a new task, visible at the retry time, carrying the last heartbeat details.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
import structlog

from history import (
    ActivityCompleted,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTask,
    ActivityTaskSpec,
    ActivityTimedOut,
    AppendRequest,
    Payload,
    PayloadConverter,
    Store,
)

from ._activity import attempt_info, outcome_event, run_attempt
from ._classify import DEFAULT_FAILURE_POLICY, FailurePolicy
from ._clock import Clock, to_datetime
from ._definitions import Registry
from ._instance import ActivityCall, WorkflowInstance
from ._observe import AttemptScope, Observer, RunView, outcome_name

__all__ = ["ActivityTaskRunner", "RemoteActivity", "remote_task"]

log = structlog.get_logger("perdura.activities")


class RemoteActivity(msgspec.Struct, frozen=True, kw_only=True):
    """What an activity task carries: enough to run the attempt without reading history."""

    workflow_id: str
    workflow_type: str
    scheduled: ActivityScheduled
    heartbeat_details: tuple[Payload, ...] = ()
    due_at: datetime | None = None
    """When a retried attempt was due (its retry time): for schedule-to-start latency."""
    workflow_task_queue: str = ""
    """The run's own task queue (the activity's may differ): for labels and listeners."""
    started_at: datetime | None = None
    """When the run started: for listeners."""


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(RemoteActivity)


def _spec(remote: RemoteActivity, attempt: int, visible_at: float) -> ActivityTaskSpec:
    return ActivityTaskSpec(
        seq=remote.scheduled.seq,
        task_queue=remote.scheduled.task_queue,
        attempt=attempt,
        visible_at=visible_at,
        payload=Payload("msgpack", _encoder.encode(remote)),
    )


def remote_task(
    instance: WorkflowInstance, scheduled: ActivityScheduled, attempt: int, now: float
) -> ActivityTaskSpec:
    remote = RemoteActivity(
        workflow_id=instance.workflow_id,
        workflow_type=instance.workflow_type,
        scheduled=scheduled,
        workflow_task_queue=instance.started.task_queue,
        started_at=instance.started.timestamp,
    )
    return _spec(remote, attempt, now)


def _call(scheduled: ActivityScheduled, attempt: int, details: tuple[Payload, ...]) -> ActivityCall:
    assert scheduled.scheduled_at is not None
    return ActivityCall(
        seq=scheduled.seq,
        activity_type=scheduled.activity_type,
        args=scheduled.args,
        task_queue=scheduled.task_queue,
        retry_policy=scheduled.retry_policy,
        start_to_close_timeout=scheduled.start_to_close_timeout,
        schedule_to_close_timeout=scheduled.schedule_to_close_timeout,
        heartbeat_timeout=scheduled.heartbeat_timeout,
        scheduled_at=scheduled.scheduled_at,
        result_type=Any,
        future=None,
        recorded=True,
        attempt=attempt,
        heartbeat_details=details,
    )


@dataclass(eq=False, kw_only=True)
class ActivityTaskRunner:
    """Polls one task queue's activity tasks and runs them (part of a worker)."""

    store: Store
    registry: Registry
    converter: PayloadConverter
    clock: Clock
    identity: str
    task_queue: str
    lease_seconds: float
    slots: asyncio.Semaphore
    on_recorded: Callable[[str], None] = lambda run_id: None
    """Told the run id after an outcome is recorded: a worker in this process claims the
    woken run at once instead of at its next poll."""
    failure_policy: FailurePolicy = DEFAULT_FAILURE_POLICY
    observer: Observer | None = None

    def __post_init__(self) -> None:
        self.running: dict[int, asyncio.Task[None]] = {}

    async def poll_once(self, limit: int) -> int:
        if limit <= 0:
            return 0
        tasks = await self.store.claim_activity_tasks(
            self.task_queue,
            owner=self.identity,
            now=self.clock.now(),
            lease_seconds=self.lease_seconds,
            limit=limit,
        )
        for task in tasks:
            self.running[task.task_id] = asyncio.create_task(self._run(task))
        return len(tasks)

    async def renew(self) -> None:
        held = await self.store.renew_activity_tasks(
            self.identity, list(self.running), until=self.clock.now() + self.lease_seconds
        )
        for task_id, task in list(self.running.items()):
            if task_id not in held:
                log.warning("activity task lease lost; abandoning attempt", task_id=task_id)
                task.cancel()

    async def _run(self, task: ActivityTask) -> None:
        try:
            await self._attempt(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("activity task failed unexpectedly", task_id=task.task_id)
        finally:
            self.running.pop(task.task_id, None)

    async def _attempt(self, task: ActivityTask) -> None:
        remote = _decoder.decode(task.payload.data)
        scheduled = remote.scheduled
        call = _call(scheduled, task.attempt, remote.heartbeat_details)
        definition = self.registry.activity(scheduled.activity_type)
        converter = self.converter
        describe = functools.partial(
            attempt_info,
            call,
            task.attempt,
            self.clock.now(),
            remote.heartbeat_details,
            remote.workflow_id,
            remote.workflow_type,
            task.run_id,
            converter,
        )
        latest: list[tuple[Payload, ...]] = [remote.heartbeat_details]
        flushing: list[asyncio.Task[None]] = []

        def on_heartbeat(details: tuple[Any, ...]) -> None:
            payloads = converter.encode_all(
                details, [f"heartbeat detail {i + 1}" for i in range(len(details))]
            )
            latest[0] = payloads
            if not flushing or flushing[-1].done():
                flushing.append(asyncio.create_task(self._record_heartbeat(task, latest)))

        view = RunView(
            workflow_id=remote.workflow_id,
            run_id=task.run_id,
            workflow_type=remote.workflow_type,
            task_queue=remote.workflow_task_queue or scheduled.task_queue,
            started_at=remote.started_at or call.scheduled_at,
            activity_type=lambda seq: scheduled.activity_type,
        )
        observer = self.observer
        if observer is not None:
            # No run session around this task (unlike a run's own attempts): the run's log
            # fields are bound here, the attempt's by the observer.
            structlog.contextvars.bind_contextvars(**view.fields())
        async with self.slots:
            observed = (
                nullcontext(AttemptScope())
                if observer is None
                else observer.attempt(
                    view,
                    scheduled.activity_type,
                    scheduled.seq,
                    task.attempt,
                    call.scheduled_at if task.attempt == 1 else remote.due_at,
                )
            )
            with observed as scope:
                outcome = await run_attempt(
                    definition, call, describe, converter, on_heartbeat, self.clock.now()
                )
                scope.outcome, scope.failure = outcome_name(outcome, self.failure_policy)
        for pending in flushing:
            await pending
        now = self.clock.now()
        event = outcome_event(
            call, task.attempt, outcome, converter, to_datetime(now), self.failure_policy
        )
        retry_at = None if isinstance(event, ActivityCompleted) else event.retry_at
        retried = scheduled
        if isinstance(event, ActivityTimedOut) and event.next_start_to_close_timeout:
            # The next attempt runs with the raised timeout the event records.
            retried = msgspec.structs.replace(
                scheduled, start_to_close_timeout=event.next_start_to_close_timeout
            )
        retry = (
            [
                _spec(
                    msgspec.structs.replace(
                        remote, scheduled=retried, heartbeat_details=latest[0], due_at=retry_at
                    ),
                    task.attempt + 1,
                    retry_at.timestamp(),
                )
            ]
            if retry_at is not None
            else []
        )
        [result] = await self.store.append(
            [
                AppendRequest(
                    run_id=task.run_id,
                    events=[event],
                    now=now,
                    wake=retry_at is None,
                    activity_tasks=retry,
                    finish_activity_task=(task.task_id, self.identity),
                )
            ]
        )
        if result.error is not None:
            log.warning(
                "activity outcome not recorded", task_id=task.task_id, reason=str(result.error)
            )
        else:
            if observer is not None:
                observer.appended(view, result.events)
            self.on_recorded(task.run_id)

    async def _record_heartbeat(
        self, task: ActivityTask, latest: list[tuple[Payload, ...]]
    ) -> None:
        details = latest[0]
        [result] = await self.store.append(
            [
                AppendRequest(
                    run_id=task.run_id,
                    events=[
                        ActivityHeartbeat(
                            timestamp=to_datetime(self.clock.now()),
                            seq=task.seq,
                            attempt=task.attempt,
                            details=details,
                        )
                    ],
                    now=self.clock.now(),
                )
            ]
        )
        if result.error is not None:
            log.info("heartbeat not recorded", task_id=task.task_id, reason=str(result.error))
