"""The error tree shared by every layer.

All errors perdura raises on purpose derive from ``PerduraError``; the ones that come from the
log itself live here because ``history`` is the bottom layer and may import nothing above it::

    PerduraError
    ├── HistoryFileError            an exported history file that cannot be read
    ├── PayloadError                a user value that cannot be encoded or decoded
    │   ├── PayloadEncodeError
    │   └── PayloadDecodeError
    └── StoreError                  anything the store refuses or cannot do
        ├── AppendConflictError     a fenced append lost a race (expected next event id moved)
        ├── LeaseLostError          the fencing token (or task lease) is no longer the writer's
        ├── RunClosedError          the run has already closed; nothing more can be appended
        ├── RunNotFoundError        no run with that id
        ├── WorkflowAlreadyRunningError  the workflow id already has an open run
        ├── CorruptStoreError       the file is not a perdura store, or its contents are damaged
        └── SchemaVersionError      the store was written by a newer perdura

Engine and SDK errors (nondeterminism, activity and workflow failures, sandbox violations) hang
off the same root in ``engine``. Store errors are raised by type at the place the condition is
detected, never recognised afterwards by their message text.
"""

from __future__ import annotations

__all__ = [
    "AppendConflictError",
    "CorruptStoreError",
    "HistoryFileError",
    "LeaseLostError",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PerduraError",
    "RunClosedError",
    "RunNotFoundError",
    "SchemaVersionError",
    "StoreError",
    "WorkflowAlreadyRunningError",
]


class PerduraError(Exception):
    """Root of every error perdura raises on purpose."""


class HistoryFileError(PerduraError):
    """An exported history file is unreadable, of another format, or not gap-free."""


class PayloadError(PerduraError):
    """A user value could not cross the payload converter."""


class PayloadEncodeError(PayloadError):
    """A value cannot be encoded; the message names the argument and its type."""


class PayloadDecodeError(PayloadError):
    """Stored bytes do not decode to the expected type."""


class StoreError(PerduraError):
    """The store refused an operation or could not carry it out."""


class AppendConflictError(StoreError):
    """Another writer extended the history first: re-read it and try again."""

    def __init__(self, run_id: str, expected_next_event_id: int, actual_next_event_id: int):
        self.run_id = run_id
        self.expected_next_event_id = expected_next_event_id
        self.actual_next_event_id = actual_next_event_id
        super().__init__(
            f"append to run {run_id!r} expected next event id {expected_next_event_id}, "
            f"but the history is at {actual_next_event_id}"
        )


class LeaseLostError(StoreError):
    """The writer's lease is stale: another worker owns the run (or the task) now."""

    def __init__(self, run_id: str, detail: str):
        self.run_id = run_id
        super().__init__(f"run {run_id!r}: {detail}")


class RunClosedError(StoreError):
    """The run is closed; its history takes no more events."""

    def __init__(self, run_id: str, status: str):
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id!r} is already closed ({status})")


class RunNotFoundError(StoreError):
    """No run, or no workflow, with the given id."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"no such run: {what}")


class RunAlreadyExistsError(StoreError):
    """A run id is unique in a store (an import or a migration met one already there)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"run {run_id!r} already exists in this store")


class WorkflowAlreadyRunningError(StoreError):
    """A workflow id may have at most one open run."""

    def __init__(self, workflow_id: str, run_id: str):
        self.workflow_id = workflow_id
        self.run_id = run_id
        super().__init__(f"workflow {workflow_id!r} is already running (run {run_id})")


class CorruptStoreError(StoreError):
    """The store file is unreadable, not a perdura store, or holds damaged records."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this version of perdura understands."""
