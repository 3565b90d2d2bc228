"""perdura's side of every benchmark (runs in a child process; see ``benchmarks.child``).

All stores are fresh SQLite files at the default durability (WAL, ``synchronous=FULL``), with
an in-process worker at its default settings unless a benchmark says otherwise. The workload
is the runtime alone: every activity is ``async def noop(i): return i``, so what is timed is
the driver, the replay instance, the sandbox, the payload codec and the store's commits.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks import _raw
from benchmarks._harness import (
    CRASH_EXIT_CODE,
    Metrics,
    Params,
    checkpointed_size,
    median,
    rss_mb,
)
from engine import Registry, replay_history
from history import SqliteStore, decode_event
from sdk import Client, Durability, Worker, activity, open_worker, workflow

TASK_QUEUE = "bench"
RECOVERY_IDENTITY = "bench-recovery-worker"
"""Both incarnations of the recovery worker use this identity, as a service restarted under a
fixed name would: a starting worker releases its own identity's leases at once. (With the
default ``host:pid`` identity the new process would wait for the dead one's lease to expire.)"""


# -- the workloads -------------------------------------------------------------------------


@activity.defn
async def noop(i: int) -> int:
    return i


@workflow.defn(name="bench.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@workflow.defn(name="bench.fanout")
async def fanout(n: int) -> int:
    results = await asyncio.gather(*(noop(i) for i in range(n)))
    return sum(results)


@workflow.defn(name="bench.sleeper")
async def sleeper(i: int) -> int:
    await workflow.sleep(3600)
    return i


class _Recovery:
    """State of the recovery step in this process (activities run outside the sandbox)."""

    crash_at: int | None = None
    first_new_step_at: float | None = None
    first_index: int | None = None
    done_before: int = 0
    reexecuted: int = 0
    executed: int = 0


@activity.defn
async def recovery_step(i: int) -> int:
    state = _Recovery
    if state.crash_at is not None and i == state.crash_at:
        os._exit(CRASH_EXIT_CODE)  # the worker dies: steps 0..crash_at-1 are recorded
    if state.first_new_step_at is None:
        state.first_new_step_at = time.perf_counter()
        state.first_index = i
    if i < state.done_before:
        state.reexecuted += 1
    state.executed += 1
    return i


@workflow.defn(name="bench.recovery")
async def recovery_workflow(n: int) -> int:
    total = 0
    for i in range(n):
        total += await recovery_step(i)
    return total


def triangle(n: int) -> int:
    return n * (n - 1) // 2


# -- helpers -------------------------------------------------------------------------------


async def _with_worker(
    path: Path,
    body: Callable[[Client, SqliteStore, Worker], Awaitable[Metrics]],
    *,
    durability: Durability = Durability.FULL,
    **worker_options: Any,
) -> Metrics:
    store = await SqliteStore.open(path, durability=durability)
    try:
        client = Client(store, seed=1)
        async with open_worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[sequential, fanout, sleeper, recovery_workflow, parent],
            activities=[noop, recovery_step],
            **worker_options,
        ) as worker:
            return await body(client, store, worker)
    finally:
        await store.close()


async def _timed_sequential(client: Client, store: SqliteStore, steps: int, wid: str) -> Metrics:
    commits = store.commits
    started = time.perf_counter()
    result = await client.execute_workflow(sequential, steps, id=wid, task_queue=TASK_QUEUE)
    elapsed = time.perf_counter() - started
    if result != triangle(steps):
        raise RuntimeError(f"sequential workflow returned {result!r}")
    return {"seconds": elapsed, "commits": store.commits - commits}


# -- 1. step latency -----------------------------------------------------------------------


def latency(params: Params) -> Metrics:
    """One workflow of ``steps`` sequential no-op activities, timed from ``start_workflow`` to
    its result (creation, claim, every step and the completion; nothing subtracted).

    Each run is paired with the raw aiosqlite loop (same step count, its own file in the same
    folder) timed just before it in this process: on a noisy machine the ratio of the two
    halves of a pair is far steadier than the ratio of two medians taken minutes apart."""
    steps: int = params["steps"]
    inner: int = params["inner"]
    folder = Path(params["folder"])

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        rng = random.Random(1)
        raw_db = await _raw.connect(folder / "paired-raw.db")
        try:
            await _raw.commit_each(raw_db, _raw.make_rows("warmup", 1, 10, rng))
            await _timed_sequential(client, store, 10, "warmup")
            samples: list[Metrics] = []
            raw: list[float] = []
            for k in range(inner):
                raw.append(await _raw.commit_each(raw_db, _raw.make_rows(f"r{k}", 1, steps, rng)))
                samples.append(await _timed_sequential(client, store, steps, f"seq-{k}"))
        finally:
            await raw_db.close()
        return {
            "us_per_step": [s["seconds"] / steps * 1e6 for s in samples],
            "commits_per_step": [s["commits"] / steps for s in samples],
            "paired_raw_us_per_step": [r / steps * 1e6 for r in raw],
        }

    return asyncio.run(_with_worker(folder / "perdura.db", body))


# -- 2. throughput -------------------------------------------------------------------------


def throughput(params: Params) -> Metrics:
    """``runs`` workflows of ``steps`` no-op activities, all started at once (one ``gather``
    of ``start_workflow``), timed until the last result: group commit shares fsyncs."""
    runs: int = params["runs"]
    steps: int = params["steps"]

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        await _timed_sequential(client, store, 10, "warmup")
        commits = store.commits
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(
                client.start_workflow(sequential, steps, id=f"tp-{i}", task_queue=TASK_QUEUE)
                for i in range(runs)
            )
        )
        results = await asyncio.gather(*(h.result(result_type=int) for h in handles))
        elapsed = time.perf_counter() - started
        if any(r != triangle(steps) for r in results):
            raise RuntimeError("a throughput workflow returned a wrong result")
        return {
            "seconds": elapsed,
            "workflows_per_s": runs / elapsed,
            "steps_per_s": runs * steps / elapsed,
            "commits_per_step": (store.commits - commits) / (runs * steps),
        }

    return asyncio.run(_with_worker(Path(params["folder"]) / "perdura.db", body))


# -- 3. recovery ---------------------------------------------------------------------------


def recovery_crash(params: Params) -> Metrics:
    """Phase 1: run the ``steps``-step workflow until the worker process dies (``os._exit``)
    as step ``crash_at + 1`` starts, i.e. right after step ``crash_at`` was recorded."""
    _Recovery.crash_at = params["crash_at"]

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        await client.execute_workflow(
            recovery_workflow, params["steps"], id="recovery", task_queue=TASK_QUEUE
        )
        raise RuntimeError("the recovery workflow finished without its worker dying")

    return asyncio.run(
        _with_worker(Path(params["folder"]) / "perdura.db", body, identity=RECOVERY_IDENTITY)
    )


def recovery_resume(params: Params) -> Metrics:
    """Phase 2, a new process: open the store, start a worker, and time the first new step and
    the completion. ``store open`` is timed apart (the target excludes it)."""
    steps: int = params["steps"]
    _Recovery.done_before = params["crash_at"]

    async def main() -> Metrics:
        t_start = time.perf_counter()
        store = await SqliteStore.open(Path(params["folder"]) / "perdura.db")
        t_open = time.perf_counter()
        try:
            client = Client(store, seed=2)
            async with open_worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[recovery_workflow],
                activities=[recovery_step],
                identity=RECOVERY_IDENTITY,
            ):
                result = await client.get_handle("recovery").result(result_type=int)
                t_done = time.perf_counter()
            history = await client.get_handle("recovery").history()
        finally:
            await store.close()
        if result != triangle(steps):
            raise RuntimeError(f"recovered workflow returned {result!r}")
        first = _Recovery.first_new_step_at
        assert first is not None
        return {
            "open_ms": (t_open - t_start) * 1e3,
            "first_step_after_open_ms": (first - t_open) * 1e3,
            "first_step_from_start_ms": (first - t_start) * 1e3,
            "done_from_start_ms": (t_done - t_start) * 1e3,
            "reexecuted": _Recovery.reexecuted,
            "first_index": _Recovery.first_index,
            "executed": _Recovery.executed,
            "history_events": len(history),
        }

    return asyncio.run(main())


# -- 4. replay -----------------------------------------------------------------------------


def replay(params: Params) -> Metrics:
    """Build histories by running sequential workflows of each size in ``steps`` (two events
    per step), then time ``engine.replay_history`` on each (median of ``inner``), and, as the
    floor, reading and decoding the same events from SQLite with no replay."""
    sizes: list[int] = params["steps"]
    inner: int = params["inner"]
    path = Path(params["folder"]) / "perdura.db"

    async def build(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client.execute_workflow(sequential, n, id=f"replay-{n}", task_queue=TASK_QUEUE)
                for n in sizes
            )
        )
        return {"build_seconds": time.perf_counter() - started}

    # Building is not what is measured: NORMAL skips the fsyncs.
    built = asyncio.run(_with_worker(path, build, durability=Durability.NORMAL))

    async def read_all() -> dict[int, list[Any]]:
        store = await SqliteStore.open(path)
        try:
            client = Client(store)
            return {n: await client.get_handle(f"replay-{n}").history() for n in sizes}
        finally:
            await store.close()

    histories = asyncio.run(read_all())
    registry = Registry([sequential])
    replay_history(registry, histories[sizes[0]])  # warm-up: first-call caches, imports
    events: list[int] = []
    replay_eps: list[float] = []
    decode_eps: list[float] = []
    conn = sqlite3.connect(path)
    try:
        for n in sizes:
            history = histories[n]
            run_id: str = conn.execute(
                "SELECT run_id FROM runs WHERE workflow_id = ?", (f"replay-{n}",)
            ).fetchone()[0]
            timings: list[float] = []
            for _ in range(inner):
                gc.collect()
                started = time.perf_counter()
                instance = replay_history(registry, history)
                timings.append(time.perf_counter() - started)
                completion = instance.completion
                if completion is None or completion.result is None:
                    raise RuntimeError(f"replay of the {n}-step history did not complete")
            decode_timings: list[float] = []
            for _ in range(inner):
                started = time.perf_counter()
                rows = conn.execute(
                    "SELECT data FROM events WHERE run_id = ? ORDER BY event_id", (run_id,)
                ).fetchall()
                decoded = [decode_event(row[0]) for row in rows]
                decode_timings.append(time.perf_counter() - started)
            assert len(decoded) == len(history)
            events.append(len(history))
            replay_eps.append(len(history) / median(timings))
            decode_eps.append(len(history) / median(decode_timings))
            del history, decoded, rows
    finally:
        conn.close()
    return {
        "events": events,
        "replay_events_per_s": replay_eps,
        "read_decode_events_per_s": decode_eps,
        **built,
    }


# -- 5. memory -----------------------------------------------------------------------------


def memory(params: Params) -> Metrics:
    """Start ``runs`` workflows that each wait on a one-hour durable timer, let a worker with
    default settings (or ``cache_size``) drive them all to the timer, then read this process's
    RSS. ``baseline_mb`` is the RSS with the store open and the worker started, before any run.
    Runs are started in chunks of 500 so that the client's own transient objects stay small."""
    runs: int = params["runs"]
    options: dict[str, Any] = {}
    if params.get("cache_size") is not None:
        options["cache_size"] = params["cache_size"]
    path = Path(params["folder"]) / "perdura.db"

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        gc.collect()
        baseline = rss_mb()
        started = time.perf_counter()
        for first in range(0, runs, 500):
            await asyncio.gather(
                *(
                    client.start_workflow(sleeper, i, id=f"sleep-{i}", task_queue=TASK_QUEUE)
                    for i in range(first, min(runs, first + 500))
                )
            )
        counter = sqlite3.connect(path)
        try:
            while True:
                timers = counter.execute("SELECT COUNT(*) FROM timers").fetchone()[0]
                if timers >= runs and not worker.drivers:
                    break
                await asyncio.sleep(0.1)
        finally:
            counter.close()
        waited = time.perf_counter() - started
        gc.collect()
        await asyncio.sleep(0.2)
        rss = rss_mb()
        return {
            "runs": runs,
            "rss_mb": rss,
            "baseline_mb": baseline,
            "kb_per_run": (rss - baseline) * 1024 / runs,
            "cached_instances": len(worker.env.cache),
            "seconds_to_all_waiting": waited,
        }

    return asyncio.run(_with_worker(path, body, **options))


# -- 6. storage ----------------------------------------------------------------------------


def storage(params: Params) -> Metrics:
    """Bytes on disk per completed activity: one workflow of ``steps`` no-op activities (an
    int argument and an int result) in a fresh store; the store is closed and its WAL
    checkpointed, and the size of an empty store (same treatment) is subtracted."""
    steps: int = params["steps"]
    folder = Path(params["folder"])

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        return await _timed_sequential(client, store, steps, "storage")

    async def empty() -> None:
        store = await SqliteStore.open(folder / "empty.db")
        await store.close()

    asyncio.run(empty())
    asyncio.run(_with_worker(folder / "perdura.db", body))
    empty_bytes = checkpointed_size(folder / "empty.db")
    total = checkpointed_size(folder / "perdura.db")
    conn = sqlite3.connect(folder / "perdura.db")
    try:
        events, event_bytes = conn.execute(
            "SELECT COUNT(*), SUM(LENGTH(data)) FROM events"
        ).fetchone()
    finally:
        conn.close()
    return {
        "steps": steps,
        "bytes": total,
        "empty_bytes": empty_bytes,
        "bytes_per_step": (total - empty_bytes) / steps,
        "events": events,
        "event_payload_bytes_per_step": event_bytes / steps,
    }


# -- 7. fan-out ----------------------------------------------------------------------------


def fanout_bench(params: Params) -> Metrics:
    """One workflow that gathers ``activities`` no-op activities at once, timed from start to
    result (median of ``inner`` runs after a small warm-up)."""
    n: int = params["activities"]
    inner: int = params["inner"]

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        await client.execute_workflow(fanout, 10, id="warmup", task_queue=TASK_QUEUE)
        seconds: list[float] = []
        commits: list[int] = []
        for k in range(inner):
            before = store.commits
            started = time.perf_counter()
            result = await client.execute_workflow(fanout, n, id=f"fan-{k}", task_queue=TASK_QUEUE)
            seconds.append(time.perf_counter() - started)
            commits.append(store.commits - before)
            if result != triangle(n):
                raise RuntimeError(f"fan-out workflow returned {result!r}")
        return {"seconds": seconds, "commits": commits}

    return asyncio.run(_with_worker(Path(params["folder"]) / "perdura.db", body))


# -- 7b. children ---------------------------------------------------------------------------


@workflow.defn(name="bench.parent")
async def parent(children: int, steps: int) -> int:
    execute_child = workflow.execute_child_workflow
    results = await asyncio.gather(
        *(
            execute_child(sequential, steps, id=f"{workflow.info().workflow_id}/c{i}")
            for i in range(children)
        )
    )
    return sum(results)


def children(params: Params) -> Metrics:
    """One workflow starting ``children`` child workflows of ``steps`` no-op activities each
    and gathering their results, timed from start to result."""
    n: int = params["children"]
    steps: int = params["steps"]
    inner: int = params["inner"]

    async def body(client: Client, store: SqliteStore, worker: Worker) -> Metrics:
        await client.execute_workflow(parent, 2, 2, id="warmup", task_queue=TASK_QUEUE)
        seconds: list[float] = []
        commits: list[int] = []
        for k in range(inner):
            before = store.commits
            started = time.perf_counter()
            result = await client.execute_workflow(
                parent, n, steps, id=f"parent-{k}", task_queue=TASK_QUEUE
            )
            seconds.append(time.perf_counter() - started)
            commits.append(store.commits - before)
            if result != n * triangle(steps):
                raise RuntimeError(f"parent workflow returned {result!r}")
        return {"seconds": seconds, "commits": commits}

    return asyncio.run(_with_worker(Path(params["folder"]) / "perdura.db", body))


BENCHES: dict[str, Callable[[Params], Metrics]] = {
    "latency": latency,
    "throughput": throughput,
    "recovery_crash": recovery_crash,
    "recovery_resume": recovery_resume,
    "replay": replay,
    "memory": memory,
    "storage": storage,
    "fanout": fanout_bench,
    "children": children,
}
