"""Exported histories: one run's events in a JSON file, to replay elsewhere.

The file is what an operator attaches to a bug report and a developer replays under a
debugger: a small header naming the format and the run, then the events exactly as stored
(the same tagged Structs, JSON-encoded). Payloads stay as recorded, ``(encoding, bytes)``,
so the replay decodes them exactly as the worker did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from ._errors import HistoryFileError
from ._events import AnyEvent, WorkflowStarted

__all__ = ["EXPORT_FORMAT", "ExportedHistory", "dump_history", "load_history", "read_history_file"]

EXPORT_FORMAT: Final = "perdura-history"
EXPORT_VERSION: Final = 1


class ExportedHistory(msgspec.Struct, frozen=True, kw_only=True):
    format: str = EXPORT_FORMAT
    version: int = EXPORT_VERSION
    run_id: str
    workflow_id: str
    workflow_type: str
    events: list[AnyEvent]


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(ExportedHistory)


def dump_history(run_id: str, events: Sequence[AnyEvent]) -> bytes:
    """Serialize a run's history (it must start with its ``WorkflowStarted``)."""
    if not events or not isinstance(events[0], WorkflowStarted):
        raise ValueError("a history to export must start with its WorkflowStarted event")
    started = events[0]
    exported = ExportedHistory(
        run_id=run_id,
        workflow_id=started.workflow_id,
        workflow_type=started.workflow_type,
        events=list(events),
    )
    return msgspec.json.format(_encoder.encode(exported), indent=1)


def load_history(data: bytes, *, source: str = "history file") -> ExportedHistory:
    """Parse and check an exported history: format, version, gap-free event ids."""
    try:
        exported = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HistoryFileError(f"{source} is not a perdura history export: {exc}") from exc
    if exported.format != EXPORT_FORMAT:
        raise HistoryFileError(f"{source}: unknown format {exported.format!r}")
    if exported.version > EXPORT_VERSION:
        raise HistoryFileError(
            f"{source}: export version {exported.version} is newer than this perdura reads"
        )
    for expected, event in enumerate(exported.events, start=1):
        if event.event_id != expected:
            raise HistoryFileError(
                f"{source}: event ids are not gap-free (expected {expected}, "
                f"found {event.event_id})"
            )
    if not exported.events or not isinstance(exported.events[0], WorkflowStarted):
        raise HistoryFileError(f"{source}: the history does not start with WorkflowStarted")
    return exported


def read_history_file(path: str | Path) -> ExportedHistory:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HistoryFileError(f"cannot read history file {str(path)!r}: {exc}") from exc
    return load_history(data, source=str(path))
