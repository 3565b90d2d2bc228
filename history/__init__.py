"""perdura.history: the append-only event log (events, payloads, stores).

The bottom layer: it imports nothing from ``engine`` or ``sdk``.
"""

from ._errors import AppendConflictError as AppendConflictError
from ._errors import CorruptStoreError as CorruptStoreError
from ._errors import HistoryFileError as HistoryFileError
from ._errors import LeaseLostError as LeaseLostError
from ._errors import PayloadDecodeError as PayloadDecodeError
from ._errors import PayloadEncodeError as PayloadEncodeError
from ._errors import PayloadError as PayloadError
from ._errors import PerduraError as PerduraError
from ._errors import RunAlreadyExistsError as RunAlreadyExistsError
from ._errors import RunClosedError as RunClosedError
from ._errors import RunNotFoundError as RunNotFoundError
from ._errors import SchemaVersionError as SchemaVersionError
from ._errors import StoreError as StoreError
from ._errors import WorkflowAlreadyRunningError as WorkflowAlreadyRunningError
from ._events import ActivityCancelled as ActivityCancelled
from ._events import ActivityCompleted as ActivityCompleted
from ._events import ActivityFailed as ActivityFailed
from ._events import ActivityHeartbeat as ActivityHeartbeat
from ._events import ActivityScheduled as ActivityScheduled
from ._events import ActivityTimedOut as ActivityTimedOut
from ._events import AnyEvent as AnyEvent
from ._events import CancelRequested as CancelRequested
from ._events import ChildWorkflowCompleted as ChildWorkflowCompleted
from ._events import ChildWorkflowFailed as ChildWorkflowFailed
from ._events import ChildWorkflowStarted as ChildWorkflowStarted
from ._events import Event as Event
from ._events import Failure as Failure
from ._events import MarkerRecorded as MarkerRecorded
from ._events import Payload as Payload
from ._events import RunOrigin as RunOrigin
from ._events import SignalReceived as SignalReceived
from ._events import TimeoutType as TimeoutType
from ._events import TimerCancelled as TimerCancelled
from ._events import TimerFired as TimerFired
from ._events import TimerStarted as TimerStarted
from ._events import WorkflowCancelled as WorkflowCancelled
from ._events import WorkflowCompleted as WorkflowCompleted
from ._events import WorkflowContinuedAsNew as WorkflowContinuedAsNew
from ._events import WorkflowFailed as WorkflowFailed
from ._events import WorkflowReset as WorkflowReset
from ._events import WorkflowStarted as WorkflowStarted
from ._events import WorkflowTaskFailed as WorkflowTaskFailed
from ._events import WorkflowTerminated as WorkflowTerminated
from ._events import WorkflowTimedOut as WorkflowTimedOut
from ._events import decode_event as decode_event
from ._events import decode_events_json as decode_events_json
from ._events import encode_event as encode_event
from ._events import encode_events_json as encode_events_json
from ._export import ExportedHistory as ExportedHistory
from ._export import dump_history as dump_history
from ._export import load_history as load_history
from ._export import read_history_file as read_history_file
from ._migrate import MigrationReport as MigrationReport
from ._migrate import backup_store as backup_store
from ._migrate import migrate as migrate
from ._migrate import restore_store as restore_store
from ._payload import Encoding as Encoding
from ._payload import PayloadConverter as PayloadConverter
from ._policy import RetryPolicy as RetryPolicy
from ._sqlite import SqliteStore as SqliteStore
from ._store import CLOSING_EVENTS as CLOSING_EVENTS
from ._store import ActivityTask as ActivityTask
from ._store import ActivityTaskSpec as ActivityTaskSpec
from ._store import AppendRequest as AppendRequest
from ._store import AppendResult as AppendResult
from ._store import Durability as Durability
from ._store import NewRun as NewRun
from ._store import RunClaim as RunClaim
from ._store import RunInfo as RunInfo
from ._store import RunQuery as RunQuery
from ._store import RunStatus as RunStatus
from ._store import Store as Store
from ._store import TimerInfo as TimerInfo
from ._url import DEFAULT_STORE_URL as DEFAULT_STORE_URL
from ._url import STORE_URL_ENV as STORE_URL_ENV
from ._url import open_store as open_store
from ._url import store_kind as store_kind
from ._wake import HeldRunNotifier as HeldRunNotifier
from ._wake import WorkNotifier as WorkNotifier

__all__ = [
    "CLOSING_EVENTS",
    "DEFAULT_STORE_URL",
    "STORE_URL_ENV",
    "ActivityCancelled",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityHeartbeat",
    "ActivityScheduled",
    "ActivityTask",
    "ActivityTaskSpec",
    "ActivityTimedOut",
    "AnyEvent",
    "AppendConflictError",
    "AppendRequest",
    "AppendResult",
    "CancelRequested",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowStarted",
    "CorruptStoreError",
    "Durability",
    "Encoding",
    "Event",
    "ExportedHistory",
    "Failure",
    "HeldRunNotifier",
    "HistoryFileError",
    "LeaseLostError",
    "MarkerRecorded",
    "MigrationReport",
    "Payload",
    "PayloadConverter",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PerduraError",
    "RetryPolicy",
    "NewRun",
    "RunAlreadyExistsError",
    "RunClaim",
    "RunClosedError",
    "RunOrigin",
    "RunInfo",
    "RunNotFoundError",
    "RunQuery",
    "RunStatus",
    "SchemaVersionError",
    "SignalReceived",
    "SqliteStore",
    "Store",
    "StoreError",
    "TimeoutType",
    "TimerCancelled",
    "TimerFired",
    "TimerInfo",
    "TimerStarted",
    "WorkflowAlreadyRunningError",
    "WorkflowCancelled",
    "WorkflowCompleted",
    "WorkflowContinuedAsNew",
    "WorkflowFailed",
    "WorkflowStarted",
    "WorkflowTaskFailed",
    "WorkflowReset",
    "WorkflowTerminated",
    "WorkflowTimedOut",
    "WorkNotifier",
    "backup_store",
    "decode_event",
    "decode_events_json",
    "dump_history",
    "encode_event",
    "encode_events_json",
    "load_history",
    "migrate",
    "open_store",
    "store_kind",
    "read_history_file",
    "restore_store",
]
