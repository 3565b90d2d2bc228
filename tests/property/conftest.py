"""Property tests: the crash/resume harness. At the end of the session, what it explored is
printed in the terminal summary and written to ``artifacts/property-summary.json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from stats import STATS

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "artifacts" / "property-summary.json"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STATS.crash_points and not STATS.runs:
        return
    terminalreporter.write_sep("-", "crash/resume exploration")
    terminalreporter.write_line(STATS.summary())
    STATS.write(SUMMARY)
    terminalreporter.write_line(f"written to {SUMMARY.relative_to(ROOT)}")
