"""Fixtures for the observability tests: real SQLite files, real workers, each test with its
own Prometheus registry so counts never leak from one test into another."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from obs_support import CLOCK_START
from prometheus_client import CollectorRegistry

from engine import ManualClock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "perdura.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=CLOCK_START)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog's and the root logger's configuration back after the test."""
    saved = structlog.get_config()
    configured = structlog.is_configured()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    if configured:
        structlog.configure(**saved)
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
