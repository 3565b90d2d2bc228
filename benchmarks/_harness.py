"""What the parent and its child processes share: the child protocol and small helpers.

Every measurement runs in a fresh child process (``python -m benchmarks.child SYSTEM BENCH
PARAMS``). That keeps the systems apart — perdura's sandbox patches process-wide functions,
DBOS is a process-wide singleton with its own threads, and a memory figure is only meaningful
in a process that did nothing else — and it makes a crash (the recovery benchmark kills its
worker with ``os._exit``) an ordinary event for the parent. A child prints one line starting
with :data:`RESULT_PREFIX` followed by a JSON object of metrics; anything else it prints
(warnings, peers' logs) is kept only to explain a failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "
CRASH_EXIT_CODE = 86
"""Exit status of a worker that the recovery benchmark killed on purpose (``os._exit``)."""

Metrics = dict[str, Any]
Params = dict[str, Any]


@dataclass(frozen=True)
class ChildResult:
    """What one child process reported: its metrics, or why it has none."""

    system: str
    bench: str
    metrics: Metrics | None
    error: str | None
    returncode: int
    seconds: float


def run_child(
    system: str, bench: str, params: Params, *, timeout: float, expect_exit: int = 0
) -> ChildResult:
    """Run one measurement in a fresh interpreter and parse its result line.

    ``expect_exit`` is the exit status that counts as success (the crash phase of the
    recovery benchmark exits with :data:`CRASH_EXIT_CODE` and prints no result).
    """
    command = [sys.executable, "-m", "benchmarks.child", system, bench, json.dumps(params)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONHASHSEED", "0")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ChildResult(
            system,
            bench,
            None,
            f"timed out after {timeout:.0f} s",
            -1,
            time.perf_counter() - started,
        )
    elapsed = time.perf_counter() - started
    metrics: Metrics | None = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            metrics = json.loads(line[len(RESULT_PREFIX) :])
    if proc.returncode != expect_exit:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
        return ChildResult(
            system,
            bench,
            None,
            f"exit status {proc.returncode} (expected {expect_exit}): {tail[:300]}",
            proc.returncode,
            elapsed,
        )
    if metrics is None and expect_exit == 0:
        return ChildResult(system, bench, None, "printed no result", proc.returncode, elapsed)
    return ChildResult(system, bench, metrics, None, proc.returncode, elapsed)


def emit(metrics: Metrics) -> None:
    """Child side: hand ``metrics`` to the parent."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(metrics) + "\n")
    sys.stdout.flush()


def rss_mb() -> float:
    """This process's resident set size in MiB (``VmRSS``; psutil where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil  # type: ignore[import-untyped,unused-ignore]

    return float(psutil.Process().memory_info().rss) / 2**20


def file_bytes(*paths: Path) -> int:
    """Total size of the files that exist among ``paths``."""
    return sum(p.stat().st_size for p in paths if p.exists())


def checkpointed_size(db: Path) -> int:
    """Bytes on disk of a SQLite database once its WAL is checkpointed into the main file.

    Opened after the system under test has closed its connections; ``TRUNCATE`` empties the
    ``-wal`` file, so what is left is the database file (plus a rollback journal if a peer
    left one, which is counted too).
    """
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return file_bytes(db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal"))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quiet_logging() -> None:
    """Child side: keep peers' and perdura's info logs off the output."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except ImportError:  # pragma: no cover - structlog is a perdura dependency
        pass


def package_version(package: str) -> str:
    """The installed version of ``package``, for report headers."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """``git describe`` of the checkout being measured (``-dirty`` with local changes)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() or "?"
