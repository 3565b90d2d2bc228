"""OpenTelemetry tracing of workflow sessions and activity attempts (the ``otel`` extra).

Off unless a worker asks for it (``Worker(tracing=True)`` for the global tracer provider, or
``Worker(tracing=provider)``). Spans:

* ``perdura.workflow`` — one per session of a worker with a run: from the claim to the
  release or close (a run that sleeps for a month is many short sessions, not one span a
  month long). Attributes: ``perdura.workflow_type``, ``perdura.run_id``,
  ``perdura.task_queue``, and ``perdura.workflow_id`` once the history is loaded.
* ``perdura.activity`` — one per attempt, a child of the session's span when the attempt runs
  eagerly on the run's worker. Attributes: the run's, plus ``perdura.activity_type``,
  ``perdura.activity_id``, ``perdura.attempt``, ``perdura.outcome`` and, for a failure,
  ``perdura.failure_class``; the span's status is ERROR for a failed or timed-out attempt.

A span is not a record: a worker that dies mid-session never ends its span. History is the
record; spans show where time went.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Tracing", "TracingUnavailableError"]


class TracingUnavailableError(ImportError):
    def __init__(self) -> None:
        super().__init__(
            "tracing needs OpenTelemetry: pip install 'perdura[otel]' "
            "(opentelemetry-api and opentelemetry-sdk)"
        )


class Tracing:
    """Starts perdura's spans on a tracer from ``provider`` (``None``: the global one)."""

    def __init__(self, provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise TracingUnavailableError() from exc
        self._trace = trace
        self.tracer = trace.get_tracer("perdura", tracer_provider=provider)

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            yield span

    def annotate(self, attributes: dict[str, Any]) -> None:
        """Add attributes to the current span (the session's, in a driver)."""
        span = self._trace.get_current_span()
        for key, value in attributes.items():
            span.set_attribute(key, value)

    def fail(self, span: Any, description: str) -> None:
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))
