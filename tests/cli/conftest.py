"""Fixtures for the ``perdura`` command's tests: a fresh SQLite store per test (helpers in
``cli_support``)."""

from __future__ import annotations

from pathlib import Path

import cli_app
import pytest
from cli_support import Cli


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(capsys, f"sqlite:///{tmp_path / 'runs.db'}")


@pytest.fixture(autouse=True)
def _clean_slate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their store explicitly; the app's step counters start at zero."""
    monkeypatch.delenv("PERDURA_STORE", raising=False)
    cli_app.steps.clear()
    cli_app.broken.clear()
