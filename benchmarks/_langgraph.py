"""LangGraph with its SQLite checkpointer: the same workloads (child process).

A step is one super-step of a graph: a loop node ``step`` that adds its counter to a total and
routes back to itself until the counter reaches ``n`` (one node per step, a checkpoint after
each). Runs use ``durability="sync"``, so each checkpoint is committed before the next step
starts — the same promise as a durable workflow step. The checkpointer is the synchronous
``SqliteSaver`` (measured faster here than ``AsyncSqliteSaver``) on a connection left at
LangGraph's settings: WAL, which it enables, and SQLite's default ``synchronous=FULL``.
Fan-out uses the ``Send`` API: one node sends ``n`` tasks to a worker node, all in one
super-step; child workflows are subgraphs run by ``Send`` tasks. LangGraph has no durable
timer, so it has no memory benchmark.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from benchmarks._harness import CRASH_EXIT_CODE, Metrics, Params, checkpointed_size

DB_NAME = "langgraph.db"
THREADS = 16
"""Worker threads for the throughput benchmark (the saver serialises on its own lock)."""


class LoopState(TypedDict):
    i: int
    n: int
    total: int


class _Recovery:
    crash_at: int | None = None
    first_new_step_at: float | None = None
    first_index: int | None = None
    done_before: int = 0
    reexecuted: int = 0


def step(state: LoopState) -> dict[str, int]:
    return {"i": state["i"] + 1, "total": state["total"] + state["i"]}


def recovery_step(state: LoopState) -> dict[str, int]:
    i = state["i"]
    recovery = _Recovery
    if recovery.crash_at is not None and i == recovery.crash_at:
        os._exit(CRASH_EXIT_CODE)
    if recovery.first_new_step_at is None:
        recovery.first_new_step_at = time.perf_counter()
        recovery.first_index = i
    if i < recovery.done_before:
        recovery.reexecuted += 1
    return {"i": i + 1, "total": state["total"] + i}


def _route(state: LoopState) -> str:
    return "step" if state["i"] < state["n"] else END


def loop_graph(saver: SqliteSaver, node: Callable[..., dict[str, int]] = step) -> Any:
    graph = StateGraph(LoopState)
    graph.add_node("step", node)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", _route, ["step", END])
    return graph.compile(checkpointer=saver)


class FanState(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]


class WorkState(TypedDict):
    i: int


def _scatter(state: FanState) -> list[Send]:
    return [Send("work", {"i": i}) for i in range(state["n"])]


def _work(state: WorkState) -> dict[str, list[int]]:
    return {"results": [state["i"]]}


def fan_graph(saver: SqliteSaver) -> Any:
    graph = StateGraph(FanState)
    graph.add_node("work", _work)
    graph.add_conditional_edges(START, _scatter, ["work"])
    graph.add_edge("work", END)
    return graph.compile(checkpointer=saver)


class ParentState(TypedDict):
    children: int
    steps: int
    results: Annotated[list[int], operator.add]


def _spawn(state: ParentState) -> list[Send]:
    start = {"i": 0, "n": state["steps"], "total": 0}
    return [Send("child", start) for _ in range(state["children"])]


def parent_graph(saver: SqliteSaver) -> Any:
    """Children are subgraphs: the ``child`` node runs the loop graph, which inherits the
    parent's checkpointer and checkpoints each of its super-steps in its own namespace."""
    sub = StateGraph(LoopState)
    sub.add_node("step", step)
    sub.add_edge(START, "step")
    sub.add_conditional_edges("step", _route, ["step", END])
    subgraph = sub.compile()

    def child(state: LoopState) -> dict[str, list[int]]:
        return {"results": [subgraph.invoke(state)["total"]]}

    graph = StateGraph(ParentState)
    graph.add_node("child", child)
    graph.add_conditional_edges(START, _spawn, ["child"])
    graph.add_edge("child", END)
    return graph.compile(checkpointer=saver)


def _open(folder: Path) -> tuple[sqlite3.Connection, SqliteSaver]:
    conn = sqlite3.connect(folder / DB_NAME, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return conn, saver


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}, "recursion_limit": 1_000_000}


def _run_loop(graph: Any, n: int, thread: str) -> int:
    out = graph.invoke({"i": 0, "n": n, "total": 0}, _config(thread), durability="sync")
    total: int = out["total"]
    return total


def triangle(n: int) -> int:
    return n * (n - 1) // 2


# -- benchmarks ----------------------------------------------------------------------------


def latency(params: Params) -> Metrics:
    """One thread of ``steps`` loop super-steps; wall time / steps."""
    steps: int = params["steps"]
    folder = Path(params["folder"])
    conn, saver = _open(folder)
    try:
        graph = loop_graph(saver)
        _run_loop(graph, 10, "warmup")
        samples: list[float] = []
        for k in range(params["inner"]):
            started = time.perf_counter()
            result = _run_loop(graph, steps, f"seq-{k}")
            samples.append(time.perf_counter() - started)
            if result != triangle(steps):
                raise RuntimeError(f"LangGraph loop returned {result!r}")
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        conn.close()
    return {
        "us_per_step": [s / steps * 1e6 for s in samples],
        "journal_mode": journal,
        "synchronous": synchronous,
    }


def throughput(params: Params) -> Metrics:
    """``runs`` threads (graph runs) of ``steps`` super-steps, submitted at once to a pool of
    :data:`THREADS` threads sharing one saver; timed until the last result."""
    runs: int = params["runs"]
    steps: int = params["steps"]
    conn, saver = _open(Path(params["folder"]))
    try:
        graph = loop_graph(saver)
        _run_loop(graph, 10, "warmup")
        started = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(lambda k: _run_loop(graph, steps, f"tp-{k}"), range(runs)))
        elapsed = time.perf_counter() - started
        if any(r != triangle(steps) for r in results):
            raise RuntimeError("a LangGraph run returned a wrong result")
    finally:
        conn.close()
    return {
        "seconds": elapsed,
        "workflows_per_s": runs / elapsed,
        "steps_per_s": runs * steps / elapsed,
    }


def recovery_crash(params: Params) -> Metrics:
    """Phase 1: the process dies as super-step ``crash_at + 1`` starts."""
    _Recovery.crash_at = params["crash_at"]
    _conn, saver = _open(Path(params["folder"]))
    _run_loop(loop_graph(saver, recovery_step), params["steps"], "recovery")
    raise RuntimeError("the recovery graph finished without its process dying")


def recovery_resume(params: Params) -> Metrics:
    """Phase 2: open the checkpointer (store open), then ``invoke(None)`` on the thread
    resumes from its last checkpoint."""
    steps: int = params["steps"]
    _Recovery.done_before = params["crash_at"]
    t_start = time.perf_counter()
    conn, saver = _open(Path(params["folder"]))
    t_open = time.perf_counter()
    try:
        graph = loop_graph(saver, recovery_step)
        out = graph.invoke(None, _config("recovery"), durability="sync")
        t_done = time.perf_counter()
    finally:
        conn.close()
    if out["total"] != triangle(steps):
        raise RuntimeError(f"recovered LangGraph run returned {out['total']!r}")
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


def storage(params: Params) -> Metrics:
    """One thread of ``steps`` super-steps; database size after a checkpoint, less an empty
    checkpointer's."""
    steps: int = params["steps"]
    folder = Path(params["folder"])
    empty_folder = folder / "empty"
    empty_folder.mkdir()
    conn, _ = _open(empty_folder)
    conn.close()
    conn, saver = _open(folder)
    try:
        _run_loop(loop_graph(saver), steps, "storage")
    finally:
        conn.close()
    empty = checkpointed_size(empty_folder / DB_NAME)
    total = checkpointed_size(folder / DB_NAME)
    return {"steps": steps, "bytes": total, "bytes_per_step": (total - empty) / steps}


def fanout(params: Params) -> Metrics:
    """One run whose first node sends ``activities`` tasks (``Send``) to a worker node."""
    n: int = params["activities"]
    conn, saver = _open(Path(params["folder"]))
    try:
        graph = fan_graph(saver)
        graph.invoke({"n": 10, "results": []}, _config("warmup"), durability="sync")
        seconds: list[float] = []
        for k in range(params["inner"]):
            started = time.perf_counter()
            out = graph.invoke({"n": n, "results": []}, _config(f"fan-{k}"), durability="sync")
            seconds.append(time.perf_counter() - started)
            if sum(out["results"]) != triangle(n):
                raise RuntimeError("LangGraph fan-out returned a wrong result")
    finally:
        conn.close()
    return {"seconds": seconds}


def children(params: Params) -> Metrics:
    """One run sending ``children`` tasks to a node that runs a ``steps``-step subgraph."""
    n: int = params["children"]
    steps: int = params["steps"]
    conn, saver = _open(Path(params["folder"]))
    try:
        graph = parent_graph(saver)
        start = {"children": 2, "steps": 2, "results": []}
        graph.invoke(start, _config("warmup"), durability="sync")
        seconds: list[float] = []
        for k in range(params["inner"]):
            start = {"children": n, "steps": steps, "results": []}
            started = time.perf_counter()
            out = graph.invoke(start, _config(f"parent-{k}"), durability="sync")
            seconds.append(time.perf_counter() - started)
            if sum(out["results"]) != n * triangle(steps):
                raise RuntimeError("LangGraph children returned a wrong result")
    finally:
        conn.close()
    return {"seconds": seconds}


BENCHES: dict[str, Callable[[Params], Metrics]] = {
    "latency": latency,
    "throughput": throughput,
    "recovery_crash": recovery_crash,
    "recovery_resume": recovery_resume,
    "storage": storage,
    "fanout": fanout,
    "children": children,
}
