"""The worker's observer: one place that turns what a worker did into logs, metrics, listener
events and spans.

The driver and the activity-task runner call it at a few points only: after an append
commits (``appended``: the events as recorded, with their ids), around an activity attempt
(``attempt``), when a run is loaded (``loaded``) and when a workflow task fails. Everything
counted from appended events is counted once per fact — an event is appended exactly once, by
one worker — and nothing is derived from replay, so a recovery repeats no metric, no log
line and no listener event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    AnyEvent,
    Failure,
    RunOrigin,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowTimedOut,
)

from . import _listeners as ev
from ._activity import AttemptOutcome
from ._classify import FailureClass, FailurePolicy
from ._clock import Clock, to_datetime
from ._listeners import ListenerSet
from ._metrics import WorkerMetrics
from ._tracing import Tracing

__all__ = ["AttemptScope", "Observer", "RunView", "outcome_name"]

log = structlog.get_logger("perdura.observe")


@dataclass(eq=False, kw_only=True)
class RunView:
    """What the observer needs to know about a run to label what happened in it."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    started_at: datetime
    activity_type: Callable[[int], str] = field(default=lambda seq: "")
    """The activity type of activity ``seq`` of the run."""
    origin: RunOrigin | None = None
    """Where the run's copied history came from (recover, reset, fork, import), if it has
    one."""

    @property
    def first_new_event_id(self) -> int:
        """The run's first event after its ``WorkflowStarted`` and any copied history: the
        append that writes it happens exactly once, whichever worker makes it."""
        return 2 + (self.origin.copied if self.origin is not None else 0)

    def fields(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "workflow_type": self.workflow_type,
            "task_queue": self.task_queue,
        }


@dataclass(eq=False)
class AttemptScope:
    """Filled in by the caller of :meth:`Observer.attempt` with how the attempt ended:
    ``outcome`` is ``completed``, ``failed`` or ``timed_out``."""

    outcome: str | None = None
    failure: str = ""


def outcome_name(outcome: AttemptOutcome, policy: FailurePolicy) -> tuple[str, str]:
    """How an attempt ended, for metrics and spans: (``completed`` | ``failed`` |
    ``timed_out``, its failure class or ``""``)."""
    if outcome.result is not None:
        return "completed", ""
    if outcome.timeout is not None:
        return "timed_out", FailureClass.TIMEOUT.value
    assert outcome.error is not None
    return "failed", policy.classify(outcome.error).value


def _failure_class(failure: Failure | None) -> str:
    depth = 0
    while failure is not None and depth < 6:
        if failure.classification:
            return failure.classification
        failure = failure.cause
        depth += 1
    return FailureClass.UNKNOWN.value


class Observer:
    def __init__(
        self,
        *,
        metrics: WorkerMetrics,
        listeners: ListenerSet,
        clock: Clock,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics
        self.listeners = listeners
        self.clock = clock
        self.tracing = tracing

    # -- runs ------------------------------------------------------------------------------

    @contextmanager
    def session(self, run_id: str, workflow_type: str, task_queue: str) -> Iterator[None]:
        """Around one worker's session with a run (claim to release): log context, span."""
        structlog.contextvars.bind_contextvars(
            run_id=run_id, workflow_type=workflow_type, task_queue=task_queue
        )
        if self.tracing is None:
            yield
            return
        with self.tracing.span(
            "perdura.workflow",
            {
                "perdura.run_id": run_id,
                "perdura.workflow_type": workflow_type,
                "perdura.task_queue": task_queue,
            },
        ):
            yield

    def loaded(self, view: RunView, *, cached: bool, replay_seconds: float = 0.0) -> None:
        """A run was picked up: from the cache, or replayed from history in
        ``replay_seconds``. (``session`` bound the run's other log fields.)"""
        structlog.contextvars.bind_contextvars(workflow_id=view.workflow_id)
        if self.tracing is not None:
            self.tracing.annotate(
                {"perdura.workflow_id": view.workflow_id, "perdura.replayed": not cached}
            )
        if cached:
            self.metrics.cache_hit()
        else:
            self.metrics.cache_miss()
            self.metrics.replayed(view.workflow_type, replay_seconds)

    def task_failed(self, workflow_type: str) -> None:
        self.metrics.task_failed(workflow_type)

    # -- appended events -------------------------------------------------------------------

    def appended(self, view: RunView, events: Sequence[AnyEvent]) -> None:
        """Events this worker appended to ``view``'s run, after the append committed."""
        out: list[ev.ExecutionEvent] = []
        listening = bool(self.listeners)
        base: dict[str, Any] | None = None
        first_new = view.first_new_event_id
        for event in events:
            kind = type(event)
            first = event.event_id == first_new  # appended once, by whoever appends it
            if not first and (
                kind not in _REPORTED or (kind is ActivityCompleted and not listening)
            ):
                continue  # nothing to count or to tell about it (most steps)
            if base is None:
                base = view.fields()
            common = {**base, "timestamp": event.timestamp, "event_id": event.event_id}
            if first:
                self.metrics.execution_started(view.workflow_type)
                out.append(ev.ExecutionStarted(**common, started_at=view.started_at))
                origin = view.origin
                if origin is not None and origin.kind == "recover":
                    out.append(self._recovered(view, origin, common))
            if kind is ActivityCompleted or kind is ActivityFailed or kind is ActivityTimedOut:
                out.append(self._activity_outcome(view, event, common))
            elif kind in _CLOSING:
                out.append(self._closed(view, event, common))
        if out and listening:
            self.listeners.emit(out)

    def _activity_outcome(
        self, view: RunView, event: AnyEvent, common: dict[str, Any]
    ) -> ev.ExecutionEvent:
        assert isinstance(event, ActivityCompleted | ActivityFailed | ActivityTimedOut)
        activity_type = view.activity_type(event.seq)
        act = {**common, "activity_type": activity_type, "activity_id": event.seq}
        if isinstance(event, ActivityCompleted):
            return ev.ActivityCompleted(**act, attempt=event.attempt)
        if isinstance(event, ActivityFailed):
            failure: Failure | None = event.failure
            failure_class = _failure_class(event.failure)
            timeout_type = None
            reason = f"{event.failure.type}: {event.failure.message}"
        else:
            failure = None
            failure_class = FailureClass.TIMEOUT.value
            timeout_type = event.timeout_type
            reason = f"{event.timeout_type.value} timeout"
        where = {"activity": activity_type, "activity_id": event.seq, "attempt": event.attempt}
        if event.retry_at is not None:
            self.metrics.activity_retry(activity_type, failure_class)
            log.info(
                "activity attempt failed; retrying",
                **where,
                failure_class=failure_class,
                error=reason,
                retry_at=event.retry_at.isoformat(),
            )
            return ev.RetryAttempt(
                **act,
                attempt=event.attempt,
                retry_at=event.retry_at,
                failure_class=failure_class,
                failure=failure,
                timeout_type=timeout_type,
            )
        self.metrics.activity_failed(activity_type, failure_class)
        log.warning("activity failed", **where, failure_class=failure_class, error=reason)
        return ev.ActivityFailed(
            **act,
            attempt=event.attempt,
            failure_class=failure_class,
            failure=failure,
            timeout_type=timeout_type,
        )

    def _closed(self, view: RunView, event: AnyEvent, common: dict[str, Any]) -> ev.ExecutionEvent:
        duration = (event.timestamp - view.started_at).total_seconds()
        status = _CLOSING[type(event)]
        if isinstance(event, WorkflowFailed):
            failure_class = _failure_class(event.failure)
            self.metrics.execution_closed(
                view.workflow_type,
                status,
                duration,
                error_type=event.failure.type,
                failure_class=failure_class,
            )
            log.warning(
                "workflow run failed",
                error=f"{event.failure.type}: {event.failure.message}",
                failure_class=failure_class,
            )
            return ev.ExecutionFailed(
                **common,
                duration=duration,
                error_type=event.failure.type,
                failure=event.failure,
                failure_class=failure_class,
            )
        self.metrics.execution_closed(view.workflow_type, status, duration)
        if isinstance(event, WorkflowTimedOut):
            log.warning("workflow run timed out", timeout=event.timeout_type)
            return ev.ExecutionFailed(
                **common,
                duration=duration,
                error_type="WorkflowTimedOut",
                failure_class=FailureClass.TIMEOUT.value,
                timeout=event.timeout_type,
            )
        if isinstance(event, WorkflowCancelled):
            return ev.ExecutionCancelled(**common, duration=duration, reason=event.reason)
        new_run_id = event.new_run_id if isinstance(event, WorkflowContinuedAsNew) else None
        return ev.ExecutionCompleted(
            **common, status=status, duration=duration, new_run_id=new_run_id
        )

    # -- activity attempts -----------------------------------------------------------------

    def attempt(
        self,
        view: RunView,
        activity_type: str,
        activity_id: int,
        attempt: int,
        due_at: datetime | None,
    ) -> _ObservedAttempt:
        """Around one attempt, inside its task slot: log context, slot gauge, the
        ``ActivityStarted`` event, schedule-to-start latency, duration and span.

        The log context adds the activity's fields only: the run's are already bound in the
        task the attempt runs in (``session``/``loaded``, or the activity-task runner)."""
        return _ObservedAttempt(self, view, activity_type, activity_id, attempt, due_at)

    # -- recovery --------------------------------------------------------------------------

    def _recovered(
        self, view: RunView, origin: RunOrigin, common: dict[str, Any]
    ) -> ev.ExecutionRecovered:
        """A run that carries on a failed one (``recover()``, by a person or the automatic
        recovery service) made its first step."""
        failure_class = origin.failure_class or "unknown"
        self.metrics.recovered(view.workflow_type, failure_class)
        log.info(
            "failed run recovered",
            **view.fields(),
            from_run_id=origin.run_id,
            failure_class=failure_class,
        )
        return ev.ExecutionRecovered(
            **common,
            from_run_id=origin.run_id,
            failure_class=failure_class,
            reason=origin.reason,
        )


_CLOSING: dict[type, str] = {
    WorkflowCompleted: "completed",
    WorkflowFailed: "failed",
    WorkflowCancelled: "cancelled",
    WorkflowTimedOut: "timed_out",
    WorkflowContinuedAsNew: "continued_as_new",
}
_REPORTED: frozenset[type] = frozenset(
    {ActivityCompleted, ActivityFailed, ActivityTimedOut, *_CLOSING}
)


class _ObservedAttempt:
    """What :meth:`Observer.attempt` does on entry and exit (a class rather than a generator
    context manager: this runs once per activity attempt, on the hot path)."""

    __slots__ = (
        "activity_id",
        "activity_type",
        "attempt",
        "due_at",
        "observer",
        "scope",
        "span",
        "span_cm",
        "started",
        "view",
    )

    def __init__(
        self,
        observer: Observer,
        view: RunView,
        activity_type: str,
        activity_id: int,
        attempt: int,
        due_at: datetime | None,
    ) -> None:
        self.observer = observer
        self.view = view
        self.activity_type = activity_type
        self.activity_id = activity_id
        self.attempt = attempt
        self.due_at = due_at
        self.scope = AttemptScope()
        self.span_cm: Any = None
        self.started = 0.0

    def __enter__(self) -> AttemptScope:
        observer, view, activity_type = self.observer, self.view, self.activity_type
        now = observer.clock.now()
        structlog.contextvars.bind_contextvars(
            activity=activity_type, activity_id=self.activity_id, attempt=self.attempt
        )
        metrics = observer.metrics
        if self.due_at is not None:
            metrics.schedule_to_start(activity_type, now - self.due_at.timestamp())
        if observer.listeners:
            observer.listeners.emit(
                [
                    ev.ActivityStarted(
                        **view.fields(),
                        timestamp=to_datetime(now),
                        activity_type=activity_type,
                        activity_id=self.activity_id,
                        attempt=self.attempt,
                    )
                ]
            )
        if observer.tracing is not None:
            self.span_cm = observer.tracing.span(
                "perdura.activity",
                {
                    "perdura.workflow_id": view.workflow_id,
                    "perdura.run_id": view.run_id,
                    "perdura.workflow_type": view.workflow_type,
                    "perdura.task_queue": view.task_queue,
                    "perdura.activity_type": activity_type,
                    "perdura.activity_id": self.activity_id,
                    "perdura.attempt": self.attempt,
                },
            )
            self.span = self.span_cm.__enter__()
        metrics.activity_slots_in_use += 1
        self.started = time.perf_counter()
        return self.scope

    def __exit__(self, *exc_info: Any) -> None:
        observer, scope = self.observer, self.scope
        try:
            if self.span_cm is not None:
                span, tracing = self.span, observer.tracing
                if exc_info[0] is None and tracing is not None and scope.outcome is not None:
                    span.set_attribute("perdura.outcome", scope.outcome)
                    if scope.outcome != "completed":
                        if scope.failure:
                            span.set_attribute("perdura.failure_class", scope.failure)
                        tracing.fail(span, scope.outcome)
                self.span_cm.__exit__(*exc_info)
        finally:
            metrics = observer.metrics
            metrics.activity_slots_in_use -= 1
            if scope.outcome is not None:
                metrics.attempt(
                    self.activity_type, scope.outcome, time.perf_counter() - self.started
                )
