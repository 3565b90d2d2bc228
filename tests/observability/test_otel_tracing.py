"""OpenTelemetry spans of workflow sessions and activity attempts (the ``otel`` extra)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from obs_support import WAIT

from sdk import RetryPolicy, activity, open_client, open_worker, workflow

trace_sdk = pytest.importorskip(
    "opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed: pip install '.[otel]'"
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

QUEUE = "tracing"


@activity.defn(name="geocode")
async def geocode(address: str) -> str:
    if activity.info().attempt == 1:
        raise ConnectionResetError("maps API reset the connection")
    return f"{address} -> 52.52,13.40"


@workflow.defn(name="locate")
async def locate(address: str) -> str:
    return await workflow.execute_activity(
        geocode, address, retry_policy=RetryPolicy(initial_interval=0.01)
    )


async def test_activity_attempts_are_spans_inside_the_workflow_session_span(
    db_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider: Any = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async with open_client(db_path) as client:
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[locate],
            activities=[geocode],
            tracing=provider,
        ):
            handle = await client.start_workflow(locate, "Linden 1", id="loc-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await handle.result()

    spans = exporter.get_finished_spans()
    sessions = [s for s in spans if s.name == "perdura.workflow"]
    attempts = sorted(
        (s for s in spans if s.name == "perdura.activity"),
        key=lambda s: s.attributes["perdura.attempt"],
    )
    assert sessions
    assert sessions[0].attributes["perdura.workflow_id"] == "loc-1"
    assert sessions[0].attributes["perdura.run_id"] == handle.run_id
    assert [s.attributes["perdura.attempt"] for s in attempts] == [1, 2]
    first, second = attempts
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["perdura.failure_class"] == "transient"
    assert second.attributes["perdura.outcome"] == "completed"
    assert second.status.status_code is StatusCode.UNSET
    session_ids = {s.context.span_id for s in sessions}
    assert all(s.parent is not None and s.parent.span_id in session_ids for s in attempts)
