"""Prometheus metrics of workers: what ran, what failed, how long it took, how busy it is.

Names follow the Prometheus conventions: a ``perdura_`` prefix, ``_total`` on counters,
``_seconds`` on durations, labels for the dimensions an operator slices by (task queue,
workflow or activity type, status, failure class). Every metric is documented in
docs/operating.md.

Collectors live in a ``CollectorRegistry``: the global one by default (what
``prometheus_client`` users expect, and what a ``/metrics`` endpoint serves), or one passed to
the worker (``Worker(metrics_registry=...)``), which keeps tests and multi-tenant processes
apart. The collectors of one registry are created once and shared by every worker using it
(a registry refuses a name twice); per-worker gauges carry a ``worker`` label and are removed
when their worker stops.

Counters and histograms are fed from the events a worker appended (so they count each fact
once, whatever replays happen), and from the attempts it ran.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    make_asgi_app,
    start_http_server,
)

from ._histogram import Histogram, Series

__all__ = [
    "METRIC_NAMES",
    "MetricsServer",
    "WorkerMetrics",
    "metrics_asgi_app",
    "start_metrics_server",
]

#: Seconds: from a fast activity (5 ms) to a day-long workflow.
_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0, 21600.0, 86400.0, float("inf"),
)  # fmt: skip
_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, float("inf"),
)  # fmt: skip


@dataclass(frozen=True)
class _Collectors:
    executions_started: Counter
    executions_completed: Counter
    executions_failed: Counter
    execution_duration: Histogram
    activity_retries: Counter
    activity_failures: Counter
    activity_duration: Histogram
    schedule_to_start: Histogram
    replay_latency: Histogram
    task_failures: Counter
    cache_hits: Counter
    cache_misses: Counter
    cache_size: Gauge
    slots_in_use: Gauge
    slots_capacity: Gauge
    recoveries: Counter


def _create(registry: CollectorRegistry) -> _Collectors:
    def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        return Counter(name, doc, labels, registry=registry)

    def histogram(
        name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(name, doc, labels, buckets, registry)

    def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    wf = ("task_queue", "workflow_type")
    act = ("task_queue", "activity_type")
    return _Collectors(
        executions_started=counter(
            "perdura_workflow_executions_started_total",
            "Runs whose first step a worker recorded.",
            wf,
        ),
        executions_completed=counter(
            "perdura_workflow_executions_completed_total",
            "Runs closed by a worker, by status (completed, failed, cancelled, timed_out, "
            "continued_as_new).",
            (*wf, "status"),
        ),
        executions_failed=counter(
            "perdura_workflow_executions_failed_total",
            "Runs that failed, by the failure's type and class.",
            (*wf, "error_type", "failure_class"),
        ),
        execution_duration=histogram(
            "perdura_workflow_execution_duration_seconds",
            "From a run's start to its close (history timestamps), by status.",
            (*wf, "status"),
            _DURATION_BUCKETS,
        ),
        activity_retries=counter(
            "perdura_activity_retries_total",
            "Activity attempts that failed or timed out and are retried, by failure class.",
            (*act, "failure_class"),
        ),
        activity_failures=counter(
            "perdura_activity_failures_total",
            "Activities that failed for good (no more retries), by failure class.",
            (*act, "failure_class"),
        ),
        activity_duration=histogram(
            "perdura_activity_duration_seconds",
            "Wall time of one activity attempt, by outcome (completed, failed, timed_out).",
            (*act, "outcome"),
            _DURATION_BUCKETS,
        ),
        schedule_to_start=histogram(
            "perdura_activity_schedule_to_start_seconds",
            "From when an attempt was due (scheduled, or its retry time) to when it started.",
            act,
            _LATENCY_BUCKETS,
        ),
        replay_latency=histogram(
            "perdura_workflow_replay_seconds",
            "Loading and replaying a run's history when it is not in the worker's cache.",
            wf,
            _LATENCY_BUCKETS,
        ),
        task_failures=counter(
            "perdura_workflow_task_failures_total",
            "Workflow tasks that could not progress (a bug, nondeterminism): the run stays "
            "open and is retried.",
            wf,
        ),
        cache_hits=counter(
            "perdura_workflow_cache_hits_total",
            "Runs picked up from the worker's cache of live instances (no replay).",
            ("task_queue",),
        ),
        cache_misses=counter(
            "perdura_workflow_cache_misses_total",
            "Runs that had to be replayed from history because they were not cached.",
            ("task_queue",),
        ),
        cache_size=gauge(
            "perdura_workflow_cache_size",
            "Live workflow instances in the worker's cache.",
            ("task_queue", "worker"),
        ),
        slots_in_use=gauge(
            "perdura_worker_task_slots_in_use",
            "Task slots taken: runs being driven (kind=workflow), attempts running "
            "(kind=activity).",
            ("task_queue", "worker", "kind"),
        ),
        slots_capacity=gauge(
            "perdura_worker_task_slots_capacity",
            "Task slots a worker has (max_concurrent_runs, max_concurrent_activities).",
            ("task_queue", "worker", "kind"),
        ),
        recoveries=counter(
            "perdura_executions_recovered_total",
            "Failed runs recovered by the automatic recovery service, by failure class.",
            (*wf, "failure_class"),
        ),
    )


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Collectors] = (
    weakref.WeakKeyDictionary()
)


def _collectors(registry: CollectorRegistry) -> _Collectors:
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = _create(registry)
        return found


#: Every metric a worker exports, as scraped (counters with their ``_total``).
METRIC_NAMES: Final = (
    "perdura_workflow_executions_started_total",
    "perdura_workflow_executions_completed_total",
    "perdura_workflow_executions_failed_total",
    "perdura_workflow_execution_duration_seconds",
    "perdura_activity_retries_total",
    "perdura_activity_failures_total",
    "perdura_activity_duration_seconds",
    "perdura_activity_schedule_to_start_seconds",
    "perdura_workflow_replay_seconds",
    "perdura_workflow_task_failures_total",
    "perdura_workflow_cache_hits_total",
    "perdura_workflow_cache_misses_total",
    "perdura_workflow_cache_size",
    "perdura_worker_task_slots_in_use",
    "perdura_worker_task_slots_capacity",
    "perdura_executions_recovered_total",
)


class WorkerMetrics:
    """One worker's view of the collectors of a registry, with its labels filled in."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        *,
        task_queue: str,
        worker: str,
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._c = _collectors(self.registry)
        self.task_queue = task_queue
        self.worker = worker
        self._gauges: list[tuple[Gauge, tuple[str, ...]]] = []
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._durations: dict[tuple[str, str], Series] = {}
        self._schedule_to_start: dict[str, Series] = {}
        self.activity_slots_in_use = 0

    # -- gauges read when scraped ----------------------------------------------------------

    def watch(
        self,
        *,
        cache_size: Callable[[], float],
        runs_in_use: Callable[[], float],
        runs_capacity: int,
        activities_capacity: int,
    ) -> None:
        """Point the worker's gauges at the live numbers (read at scrape time)."""
        c, queue, worker = self._c, self.task_queue, self.worker
        self._bind(c.cache_size, (queue, worker), cache_size)
        self._bind(c.slots_in_use, (queue, worker, "workflow"), runs_in_use)
        self._bind(c.slots_in_use, (queue, worker, "activity"), lambda: self.activity_slots_in_use)
        c.slots_capacity.labels(queue, worker, "workflow").set(runs_capacity)
        c.slots_capacity.labels(queue, worker, "activity").set(activities_capacity)
        self._gauges.append((c.slots_capacity, (queue, worker, "workflow")))
        self._gauges.append((c.slots_capacity, (queue, worker, "activity")))

    def _bind(self, gauge: Gauge, labels: tuple[str, ...], fn: Callable[[], float]) -> None:
        gauge.labels(*labels).set_function(fn)
        self._gauges.append((gauge, labels))

    def unwatch(self) -> None:
        """Drop this worker's gauges (a stopped worker reports nothing, holds nothing)."""
        for gauge, labels in self._gauges:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass
        self._gauges.clear()

    # -- what the observer reports ---------------------------------------------------------

    def _labelled(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(task_queue, *labels)``, looked up once per label set: a look-up
        takes a lock and builds a key, and these are counted per run or per step."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.task_queue, *labels)
        return child

    def execution_started(self, workflow_type: str) -> None:
        self._labelled(self._c.executions_started, workflow_type).inc()

    def execution_closed(
        self,
        workflow_type: str,
        status: str,
        duration: float,
        *,
        error_type: str | None = None,
        failure_class: str | None = None,
    ) -> None:
        c = self._c
        self._labelled(c.executions_completed, workflow_type, status).inc()
        self._labelled(c.execution_duration, workflow_type, status).observe(max(duration, 0.0))
        if error_type is not None:
            self._labelled(
                c.executions_failed, workflow_type, error_type, failure_class or "unknown"
            ).inc()

    def activity_retry(self, activity_type: str, failure_class: str) -> None:
        self._labelled(self._c.activity_retries, activity_type, failure_class).inc()

    def activity_failed(self, activity_type: str, failure_class: str) -> None:
        self._labelled(self._c.activity_failures, activity_type, failure_class).inc()

    def attempt(self, activity_type: str, outcome: str, seconds: float) -> None:
        # Once per step: looked up by a plain key rather than through ``_labelled``.
        key = (activity_type, outcome)
        series = self._durations.get(key)
        if series is None:
            series = self._durations[key] = self._c.activity_duration.labels(
                self.task_queue, activity_type, outcome
            )
        series.observe(max(seconds, 0.0))

    def schedule_to_start(self, activity_type: str, seconds: float) -> None:
        series = self._schedule_to_start.get(activity_type)
        if series is None:
            series = self._schedule_to_start[activity_type] = self._c.schedule_to_start.labels(
                self.task_queue, activity_type
            )
        series.observe(max(seconds, 0.0))

    def replayed(self, workflow_type: str, seconds: float) -> None:
        self._labelled(self._c.replay_latency, workflow_type).observe(max(seconds, 0.0))

    def task_failed(self, workflow_type: str) -> None:
        self._labelled(self._c.task_failures, workflow_type).inc()

    def cache_hit(self) -> None:
        self._labelled(self._c.cache_hits).inc()

    def cache_miss(self) -> None:
        self._labelled(self._c.cache_misses).inc()

    def recovered(self, workflow_type: str, failure_class: str) -> None:
        self._labelled(self._c.recoveries, workflow_type, failure_class).inc()


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving ``registry`` (default: the global one) in the Prometheus text
    format: mount it at ``/metrics`` of an ASGI server (Starlette's ``Mount``)."""
    return make_asgi_app(registry if registry is not None else REGISTRY)


class MetricsServer:
    """A ``/metrics`` HTTP endpoint on its own port, served from a thread."""

    def __init__(self, port: int, host: str, registry: CollectorRegistry) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        address = self._server.server_address
        self.host = str(address[0])
        self.port = int(address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int = 0, *, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (``port=0``: any free port, read it
    back from ``.port``). Bound to loopback unless told otherwise: metrics name workflow
    types and error types, which are not for the whole network to read."""
    return MetricsServer(port, host, registry if registry is not None else REGISTRY)
