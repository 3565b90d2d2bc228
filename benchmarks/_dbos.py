"""DBOS Transact with its SQLite system database: the same workloads (child process).

DBOS is configured as its documentation shows for SQLite (``system_database_url =
sqlite:///…``), nothing tuned: its SQLite engine keeps SQLite's defaults, a rollback journal
(``journal_mode=DELETE``) with ``synchronous=FULL``, so every step's checkpoint is durable
before the next step starts. Workflows and steps are the plain synchronous functions of
DBOS's documentation (measured faster than the ``async`` API here), except where only the
async API fits: a workflow that gathers steps (fan-out) and workflows that sleep (memory),
which would otherwise each hold a thread.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID

from benchmarks._harness import (
    CRASH_EXIT_CODE,
    Metrics,
    Params,
    checkpointed_size,
    emit,
    rss_mb,
)

DB_NAME = "dbos.sqlite"


# -- the workloads -------------------------------------------------------------------------


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    return total


@DBOS.step()
async def noop_async(i: int) -> int:
    return i


@DBOS.workflow()
async def fanout(n: int) -> int:
    results = await asyncio.gather(*(noop_async(i) for i in range(n)))
    return sum(results)


@DBOS.workflow()
async def sequential_async(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop_async(i)
    return total


@DBOS.workflow()
async def parent(children: int, steps: int) -> int:
    handles = [await DBOS.start_workflow_async(sequential_async, steps) for _ in range(children)]
    results = await asyncio.gather(*(h.get_result() for h in handles))
    return sum(results)


@DBOS.workflow()
async def sleeper(i: int) -> int:
    await DBOS.sleep_async(3600)
    return i


class _Recovery:
    crash_at: int | None = None
    first_new_step_at: float | None = None
    first_index: int | None = None
    done_before: int = 0
    reexecuted: int = 0


@DBOS.step()
def recovery_step(i: int) -> int:
    state = _Recovery
    if state.crash_at is not None and i == state.crash_at:
        os._exit(CRASH_EXIT_CODE)
    if state.first_new_step_at is None:
        state.first_new_step_at = time.perf_counter()
        state.first_index = i
    if i < state.done_before:
        state.reexecuted += 1
    return i


@DBOS.workflow()
def recovery_workflow(n: int) -> int:
    total = 0
    for i in range(n):
        total += recovery_step(i)
    return total


def triangle(n: int) -> int:
    return n * (n - 1) // 2


def _launch(folder: Path) -> None:
    config: DBOSConfig = {
        "name": "perdura-bench",
        "system_database_url": f"sqlite:///{folder / DB_NAME}",
        "log_level": "WARNING",
        "application_version": "bench",
    }
    DBOS(config=config)
    DBOS.launch()


def _pragmas(folder: Path) -> dict[str, Any]:
    conn = sqlite3.connect(folder / DB_NAME)
    try:
        return {"journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0]}
    finally:
        conn.close()


# -- benchmarks ----------------------------------------------------------------------------


def latency(params: Params) -> Metrics:
    """One workflow of ``steps`` sequential no-op steps, called directly; wall time / steps."""
    steps: int = params["steps"]
    folder = Path(params["folder"])
    _launch(folder)
    try:
        sequential(10)
        samples: list[float] = []
        for _ in range(params["inner"]):
            started = time.perf_counter()
            result = sequential(steps)
            samples.append(time.perf_counter() - started)
            if result != triangle(steps):
                raise RuntimeError(f"DBOS workflow returned {result!r}")
    finally:
        DBOS.destroy()
    return {"us_per_step": [s / steps * 1e6 for s in samples], **_pragmas(folder)}


def throughput(params: Params) -> Metrics:
    """``runs`` workflows started at once with ``DBOS.start_workflow`` (DBOS runs each on its
    thread pool), timed until the last result."""
    runs: int = params["runs"]
    steps: int = params["steps"]
    _launch(Path(params["folder"]))
    try:
        sequential(10)
        started = time.perf_counter()
        handles = [DBOS.start_workflow(sequential, steps) for _ in range(runs)]
        results = [h.get_result() for h in handles]
        elapsed = time.perf_counter() - started
        if any(r != triangle(steps) for r in results):
            raise RuntimeError("a DBOS workflow returned a wrong result")
    finally:
        DBOS.destroy()
    return {
        "seconds": elapsed,
        "workflows_per_s": runs / elapsed,
        "steps_per_s": runs * steps / elapsed,
    }


def recovery_crash(params: Params) -> Metrics:
    """Phase 1: the process dies as step ``crash_at + 1`` starts."""
    _Recovery.crash_at = params["crash_at"]
    _launch(Path(params["folder"]))
    with SetWorkflowID("recovery"):
        recovery_workflow(params["steps"])
    raise RuntimeError("the recovery workflow finished without its process dying")


def recovery_resume(params: Params) -> Metrics:
    """Phase 2: ``DBOS.launch()`` opens the database and recovers pending workflows in the
    background; its return is taken as "store open" (recovery may already be under way)."""
    steps: int = params["steps"]
    _Recovery.done_before = params["crash_at"]
    t_start = time.perf_counter()
    _launch(Path(params["folder"]))
    t_open = time.perf_counter()
    try:
        result: int = DBOS.retrieve_workflow("recovery").get_result()
        t_done = time.perf_counter()
    finally:
        DBOS.destroy()
    if result != triangle(steps):
        raise RuntimeError(f"recovered DBOS workflow returned {result!r}")
    first = _Recovery.first_new_step_at
    assert first is not None
    return {
        "open_ms": (t_open - t_start) * 1e3,
        "first_step_after_open_ms": (first - t_open) * 1e3,
        "first_step_from_start_ms": (first - t_start) * 1e3,
        "done_from_start_ms": (t_done - t_start) * 1e3,
        "reexecuted": _Recovery.reexecuted,
        "first_index": _Recovery.first_index,
    }


def memory(params: Params) -> Metrics:
    """``runs`` async workflows each in a one-hour ``DBOS.sleep_async``, started in chunks of
    500; RSS once every sleep is recorded in the database."""
    runs: int = params["runs"]
    folder = Path(params["folder"])

    async def main() -> Metrics:
        _launch(folder)
        gc.collect()
        baseline = rss_mb()
        started = time.perf_counter()
        for first in range(0, runs, 500):
            await asyncio.gather(
                *(
                    DBOS.start_workflow_async(sleeper, i)
                    for i in range(first, min(runs, first + 500))
                )
            )
        counter = sqlite3.connect(folder / DB_NAME)
        try:
            while True:
                sleeping = counter.execute(
                    "SELECT COUNT(*) FROM operation_outputs WHERE function_name LIKE '%sleep%'"
                ).fetchone()[0]
                if sleeping >= runs:
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
            "seconds_to_all_waiting": waited,
        }

    # DBOS.destroy() would wait for every sleeping workflow: report, then leave at once.
    emit(asyncio.run(main()))
    os._exit(0)


def storage(params: Params) -> Metrics:
    """One workflow of ``steps`` no-op steps; database size (after destroy) less an empty one."""
    steps: int = params["steps"]
    folder = Path(params["folder"])
    empty_folder = folder / "empty"
    empty_folder.mkdir()
    _launch(empty_folder)
    DBOS.destroy()
    _launch(folder)
    try:
        sequential(steps)
    finally:
        DBOS.destroy()
    empty = checkpointed_size(empty_folder / DB_NAME)
    total = checkpointed_size(folder / DB_NAME)
    return {"steps": steps, "bytes": total, "bytes_per_step": (total - empty) / steps}


def fanout_bench(params: Params) -> Metrics:
    """One async workflow gathering ``activities`` async no-op steps."""
    n: int = params["activities"]

    async def main() -> list[float]:
        _launch(Path(params["folder"]))
        try:
            await (await DBOS.start_workflow_async(fanout, 10)).get_result()
            seconds: list[float] = []
            for _ in range(params["inner"]):
                started = time.perf_counter()
                handle = await DBOS.start_workflow_async(fanout, n)
                result = await handle.get_result()
                seconds.append(time.perf_counter() - started)
                if result != triangle(n):
                    raise RuntimeError(f"DBOS fan-out returned {result!r}")
            return seconds
        finally:
            DBOS.destroy()

    return {"seconds": asyncio.run(main())}


def children(params: Params) -> Metrics:
    """One async workflow starting ``children`` child workflows (``start_workflow_async``
    from inside a workflow) of ``steps`` async no-op steps each, gathering their results."""
    n: int = params["children"]
    steps: int = params["steps"]

    async def main() -> list[float]:
        _launch(Path(params["folder"]))
        try:
            await (await DBOS.start_workflow_async(parent, 2, 2)).get_result()
            seconds: list[float] = []
            for _ in range(params["inner"]):
                started = time.perf_counter()
                result = await (await DBOS.start_workflow_async(parent, n, steps)).get_result()
                seconds.append(time.perf_counter() - started)
                if result != n * triangle(steps):
                    raise RuntimeError(f"DBOS children returned {result!r}")
            return seconds
        finally:
            DBOS.destroy()

    return {"seconds": asyncio.run(main())}


BENCHES: dict[str, Callable[[Params], Metrics]] = {
    "latency": latency,
    "throughput": throughput,
    "recovery_crash": recovery_crash,
    "recovery_resume": recovery_resume,
    "memory": memory,
    "storage": storage,
    "fanout": fanout_bench,
    "children": children,
}
