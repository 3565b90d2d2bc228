"""Where ``perdura`` commands print: rich on a terminal, plain text on a pipe, JSON on request.

rich is imported only when a terminal is there to see it: a worker's logs and a script's
pipe never pay for it. Commands describe what to print (a table, aligned fields, styled
segments, a progress bar) and :class:`Output` decides how.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from history import RunInfo, RunStatus

from ._timeline import Segment

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "Cell",
    "Output",
    "Progress",
    "epoch_iso",
    "error_line",
    "run_json",
    "status_cell",
    "utc_time",
]

RICH_STYLES: Final[dict[str, str]] = {
    "": "",
    "ok": "green",
    "fail": "bold red",
    "warn": "yellow",
    "run": "cyan",
    "timer": "blue",
    "dim": "dim",
    "head": "bold",
}
_STATUS_STYLE: Final[dict[RunStatus, str]] = {
    RunStatus.RUNNING: "run",
    RunStatus.COMPLETED: "ok",
    RunStatus.FAILED: "fail",
}

Cell = str | tuple[str, str]
"""Table cell: text, or ``(text, style)`` with a style name from ``RICH_STYLES``."""


class Progress(Protocol):
    """A progress bar's handle: ``advance()`` once per finished item, or ``update(done,
    total)`` when the work reports its own counts."""

    def advance(self) -> None: ...

    def update(self, done: int, total: int) -> None: ...


class _NoProgress:
    def advance(self) -> None:
        pass

    def update(self, done: int, total: int) -> None:
        pass


class Output:
    """Where a command prints: rich on a terminal, plain text otherwise."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.rich = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"

    def _console(self) -> Console:
        from rich.console import Console

        return Console(file=self.stream, highlight=False, soft_wrap=False)

    @property
    def width(self) -> int:
        return int(self._console().width) if self.rich else 100

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def json(self, value: Any) -> None:
        self.stream.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def segments(self, lines: list[list[Segment]]) -> None:
        if not self.rich:
            for line in lines:
                self.line("".join(text for text, _ in line).rstrip())
            return
        from rich.text import Text

        console = self._console()
        for line in lines:
            console.print(
                Text.assemble(*[(text, RICH_STYLES[style]) for text, style in line]),
                overflow="ellipsis",
                no_wrap=True,
            )

    def styled(self, text: str, style: str) -> None:
        """One line in one style (plain text on a pipe); long lines wrap, never cut."""
        if not self.rich:
            self.line(text)
            return
        from rich.text import Text

        self._console().print(Text(text, style=RICH_STYLES[style]))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        if self.rich:
            from rich.table import Table

            table = Table(box=None, header_style="bold", pad_edge=False)
            for index, header in enumerate(headers):
                last = index == len(headers) - 1
                table.add_column(header, no_wrap=not last, overflow="fold" if last else "ellipsis")
            for row in rows:
                table.add_row(*[_rich_cell(cell) for cell in row])
            self._console().print(table)
            return
        texts = [[_text(cell) for cell in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
        for row in [list(headers), *texts]:
            cells = [text.ljust(width) for text, width in zip(row, widths, strict=True)]
            self.line("  ".join(cells).rstrip())

    def fields(self, pairs: Sequence[tuple[str, Cell]]) -> None:
        """``key  value`` lines, keys aligned."""
        width = max(len(key) for key, _ in pairs)
        if self.rich:
            from rich.text import Text

            console = self._console()
            for key, value in pairs:
                console.print(Text.assemble((key.ljust(width), "bold"), "  ", _rich_cell(value)))
            return
        for key, value in pairs:
            self.line(f"{key.ljust(width)}  {_text(value)}".rstrip())

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Progress]:
        """A progress bar on a terminal (cleared when done); nothing on a pipe, where the
        command's own lines tell the story."""
        if not self.rich:
            yield _NoProgress()
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with RichProgress(*columns, console=self._console(), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield _RichProgress(bar, task)


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self) -> None:
        self._bar.advance(self._task)

    def update(self, done: int, total: int) -> None:
        self._bar.update(self._task, completed=done, total=total)


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def _rich_cell(cell: Cell) -> Text:
    from rich.text import Text

    if isinstance(cell, str):
        return Text(cell)
    return Text(cell[0], style=RICH_STYLES[cell[1]])


def error_line(message: str) -> None:
    """An error as the one line on stderr every command prints for one."""
    sys.stderr.write(f"perdura: error: {message}\n")


def status_cell(status: RunStatus) -> Cell:
    return (status.value, _STATUS_STYLE.get(status, "warn"))


def utc_time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def epoch_iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def run_json(info: RunInfo) -> dict[str, Any]:
    """A run's row as JSON, the same shape in every command that prints runs."""
    return {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "workflow_type": info.workflow_type,
        "task_queue": info.task_queue,
        "status": info.status.value,
        "started_at": info.started_at.isoformat(),
        "closed_at": None if info.closed_at is None else info.closed_at.isoformat(),
        "history_length": info.history_length,
        "owner": info.owner,
        "lease_expires_at": epoch_iso(info.lease_expires_at),
        "wake_at": epoch_iso(info.wake_at),
    }
