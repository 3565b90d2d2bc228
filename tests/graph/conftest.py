"""Fixtures for graph tests: real SQLite files in ``tmp_path``, real workers in-process or as
processes (helpers in ``graph_support``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from graph_support import ROOT, WorkerProcess


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "graph.db"


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn_worker(app, store_url, queue, identity, env={...})``: a worker process."""
    started: list[WorkerProcess] = []

    def spawn(
        app: str, store_url: str, queue: str, identity: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{identity}-{len(started)}.log"
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        command = [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "--app",
            app,
            "--store",
            store_url,
            "--task-queue",
            queue,
            "--identity",
            identity,
            "--lease-seconds",
            "1",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(proc, log)
        started.append(worker)
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.kill()
