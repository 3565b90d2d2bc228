"""Helpers for the ``perdura`` command's tests: run the command in-process (``main([...])``)
against a store, or as a real process; the tests' app and its ``--app`` options."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cli_app
import pytest

from engine import App, Client
from engine.cli import main
from sdk import open_client, open_worker

APP_DIR = Path(__file__).parent
APP = ["--app", "cli_app:app", "--app-dir", str(APP_DIR)]
"""``--app`` options naming the tests' app (``cli_app.py`` beside this file)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Done:
    """What one ``perdura`` invocation produced."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        """The single ``perdura: error: ...`` line on stderr (asserting there is exactly one)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("perdura: error: "), self.err
        assert "Traceback" not in self.err
        return lines[0]


class Cli:
    """Runs ``perdura ... --store URL`` in this process against one store."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self._capsys = capsys
        self.url = url

    def __call__(self, *argv: str, store: bool = True) -> Done:
        self._capsys.readouterr()
        code = main([*argv, *(["--store", self.url] if store else [])])
        captured = self._capsys.readouterr()
        return Done(code, captured.out, captured.err)

    def run(self, work: Callable[[Client], Awaitable[T]], app: App = cli_app.app) -> T:
        """Run ``work(client)`` with a worker for ``app`` (default: ``cli_app``'s) on this
        store, then stop it."""

        async def go() -> T:
            async with self.worker(app) as client:
                return await work(client)

        return asyncio.run(go())

    @asynccontextmanager
    async def worker(self, app: App = cli_app.app) -> AsyncIterator[Client]:
        async with open_client(self.url) as client:
            async with open_worker(
                client, task_queue="default", workflows=app.workflows, activities=app.activities
            ):
                yield client


ROOT = Path(__file__).resolve().parents[2]


def perdura_process(
    *argv: str, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -m engine.cli ARGV`` as a real process, from the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONBREAKPOINT", "PERDURA_STORE")}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
