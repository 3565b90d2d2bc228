"""Prometheus metrics, scraped over HTTP from a real server on 127.0.0.1: the worker's own
``/metrics`` port, and the ASGI app the HTTP server mounts."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from obs_support import WAIT, sample
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from engine import METRIC_NAMES, Client, Worker, metrics_asgi_app
from history import SqliteStore
from sdk import RetryPolicy, WorkflowFailureError, activity, open_client, open_worker, workflow
from sdk.testing import FaultPoint, Faults

QUEUE = "metrics"
ROOT = Path(__file__).resolve().parents[2]


@activity.defn
async def flaky_fetch(url: str) -> str:
    if activity.info().attempt < 3:
        raise ConnectionResetError("connection reset")
    return f"fetched {url}"


@activity.defn
async def validate(value: int) -> int:
    if value < 0:
        raise ValueError("negative")
    return value


@workflow.defn
async def crawl(url: str) -> str:
    return await workflow.execute_activity(
        flaky_fetch, url, retry_policy=RetryPolicy(initial_interval=0.01)
    )


@workflow.defn
async def check(value: int) -> int:
    return await validate(value)


def _scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_a_scrape_of_the_workers_port_counts_runs_retries_and_failures(
    db_path: Path, registry: CollectorRegistry
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[crawl, check],
            activities=[flaky_fetch, validate],
            metrics_registry=registry,
            metrics_port=0,
        ) as worker:
            server = worker.metrics_server
            assert server is not None
            assert server.host == "127.0.0.1"
            ok = await client.start_workflow(crawl, "https://a.example", id="c-1", task_queue=QUEUE)
            bad = await client.start_workflow(check, -1, id="v-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await ok.result()
                with pytest.raises(WorkflowFailureError):
                    await bad.result()
            async with httpx.AsyncClient() as http:
                response = await http.get(server.url)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _scrape(response.text)
    wf = {"task_queue": QUEUE}
    assert _value(samples, "perdura_workflow_executions_started_total", **wf) == 2
    assert (
        _value(
            samples,
            "perdura_workflow_executions_completed_total",
            **wf,
            workflow_type="crawl",
            status="completed",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "perdura_workflow_executions_failed_total",
            **wf,
            workflow_type="check",
            failure_class="permanent",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "perdura_activity_retries_total",
            activity_type="flaky_fetch",
            failure_class="transient",
        )
        == 2
    )
    assert _value(samples, "perdura_activity_failures_total", activity_type="validate") == 1
    assert (
        _value(
            samples,
            "perdura_activity_duration_seconds_count",
            activity_type="flaky_fetch",
            outcome="failed",
        )
        == 2
    )
    assert (
        _value(
            samples,
            "perdura_activity_duration_seconds_count",
            activity_type="flaky_fetch",
            outcome="completed",
        )
        == 1
    )
    assert _value(samples, "perdura_activity_schedule_to_start_seconds_count") == 4
    assert _value(samples, "perdura_workflow_execution_duration_seconds_count", **wf) == 2
    assert _value(samples, "perdura_worker_task_slots_capacity", kind="activity") == 100
    assert _value(samples, "perdura_worker_task_slots_in_use", kind="activity") == 0


async def test_the_worker_port_is_closed_when_the_worker_stops(
    db_path: Path, registry: CollectorRegistry
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[check], metrics_registry=registry, metrics_port=0
        ) as worker:
            assert worker.metrics_server is not None
            port = worker.metrics_server.port
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_a_stopped_worker_leaves_no_gauges_behind(
    db_path: Path, registry: CollectorRegistry
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[check], metrics_registry=registry, identity="w-g"
        ):
            assert (
                sample(registry, "perdura_workflow_cache_size", task_queue=QUEUE, worker="w-g") == 0
            )
    assert (
        registry.get_sample_value(
            "perdura_workflow_cache_size", {"task_queue": QUEUE, "worker": "w-g"}
        )
        is None
    )


async def test_a_recovery_is_a_cache_miss_with_a_replay_and_repeats_no_count(
    db_path: Path, registry: CollectorRegistry
) -> None:
    store = await SqliteStore.open(db_path)
    try:
        client = Client(store)
        options: dict[str, Any] = {
            "task_queue": QUEUE,
            "workflows": [crawl],
            "activities": [flaky_fetch],
            "metrics_registry": registry,
        }
        handle = await client.start_workflow(crawl, "https://b.example", id="c-2", task_queue=QUEUE)
        # Dies as the third attempt starts: two failed attempts are recorded.
        doomed = Worker(
            store, identity="w1", faults=Faults.crash_at(FaultPoint.ACTIVITY_START, 3), **options
        )
        await doomed.start()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        await doomed.stop()
        misses_before = sample(registry, "perdura_workflow_cache_misses_total", task_queue=QUEUE)
        async with Worker(store, identity="w1", **options):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "fetched https://b.example"
    finally:
        await store.close()

    assert sample(registry, "perdura_workflow_cache_misses_total", task_queue=QUEUE) == (
        misses_before + 1
    )
    assert sample(
        registry, "perdura_workflow_replay_seconds_count", task_queue=QUEUE, workflow_type="crawl"
    ) == (misses_before + 1)
    # Retries recorded before the crash are not counted again by the replay.
    assert (
        sample(
            registry,
            "perdura_activity_retries_total",
            task_queue=QUEUE,
            activity_type="flaky_fetch",
            failure_class="transient",
        )
        == 2
    )
    assert (
        sample(
            registry,
            "perdura_workflow_executions_started_total",
            task_queue=QUEUE,
            workflow_type="crawl",
        )
        == 1
    )


async def test_a_run_kept_in_the_cache_is_a_hit(db_path: Path, registry: CollectorRegistry) -> None:
    @workflow.defn
    async def nap(seconds: float) -> str:
        await workflow.sleep(seconds)
        return "rested"

    async with open_client(db_path) as client:
        # keep_alive 0: the run is released while it sleeps and picked up again from the cache.
        async with open_worker(
            client, task_queue=QUEUE, workflows=[nap], metrics_registry=registry, keep_alive=0
        ):
            handle = await client.start_workflow(nap, 0.05, id="nap-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "rested"

    assert sample(registry, "perdura_workflow_cache_hits_total", task_queue=QUEUE) >= 1
    assert sample(registry, "perdura_workflow_cache_misses_total", task_queue=QUEUE) == 1


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on 127.0.0.1, any free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:  # noqa: ASYNC110 -- uvicorn offers a flag, no event
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def test_the_asgi_app_serves_the_same_registry_over_http(
    db_path: Path, registry: CollectorRegistry
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[check],
            activities=[validate],
            metrics_registry=registry,
        ):
            handle = await client.start_workflow(check, 5, id="v-2", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == 5
            async with _serve(metrics_asgi_app(registry)) as base, httpx.AsyncClient() as http:
                response = await http.get(f"{base}/")

    assert response.status_code == 200
    samples = _scrape(response.text)
    assert (
        _value(
            samples,
            "perdura_workflow_executions_completed_total",
            workflow_type="check",
            status="completed",
        )
        == 1
    )


def test_metric_names_follow_the_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    from engine._metrics import WorkerMetrics

    WorkerMetrics(registry, task_queue="q", worker="w")
    kinds = {}
    for family in registry.collect():
        kinds[family.name] = family.type
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    for name in METRIC_NAMES:
        assert re.fullmatch(r"perdura_[a-z_]+", name), name
        base = name.removesuffix("_total")
        kind = kinds[base]
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
    assert set(kinds) == {n.removesuffix("_total") for n in METRIC_NAMES}


def test_every_metric_is_documented_in_the_operating_guide() -> None:
    guide = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    missing = [name for name in METRIC_NAMES if f"`{name}`" not in guide]
    assert missing == []
