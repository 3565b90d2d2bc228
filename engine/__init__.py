"""perdura.engine: the runtime (replay sandbox, workers, client).

Imports ``history`` only; user code imports ``sdk``, which builds on this package.
"""

from ._activity import ActivityCancelledError as ActivityCancelledError
from ._activity import ActivityInfo as ActivityInfo
from ._activity import current_activity as current_activity
from ._apps import App as App
from ._autorecover import AutoRecovery as AutoRecovery
from ._classify import FailureClass as FailureClass
from ._classify import FailurePolicy as FailurePolicy
from ._classify import classify_exception as classify_exception
from ._classify import run_failure_class as run_failure_class
from ._client import Client as Client
from ._client import PendingActivity as PendingActivity
from ._client import WorkflowDescription as WorkflowDescription
from ._client import WorkflowHandle as WorkflowHandle
from ._client import describe_history as describe_history
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import SystemClock as SystemClock
from ._config import ConfigError as ConfigError
from ._config import FailureDefaults as FailureDefaults
from ._config import PerduraConfig as PerduraConfig
from ._config import RecoveryConfig as RecoveryConfig
from ._config import RetryDefaults as RetryDefaults
from ._definitions import WORKFLOW_ATTRIBUTE as WORKFLOW_ATTRIBUTE
from ._definitions import ActivityDefinition as ActivityDefinition
from ._definitions import ActivityOptions as ActivityOptions
from ._definitions import Registry as Registry
from ._definitions import WorkflowDefinition as WorkflowDefinition
from ._definitions import signature_types as signature_types
from ._definitions import workflow_definition as workflow_definition
from ._errors import ActivityError as ActivityError
from ._errors import ActivityNotRegisteredError as ActivityNotRegisteredError
from ._errors import ActivityTimeoutError as ActivityTimeoutError
from ._errors import ApplicationError as ApplicationError
from ._errors import ChildWorkflowError as ChildWorkflowError
from ._errors import ContinueAsNew as ContinueAsNew
from ._errors import NondeterminismError as NondeterminismError
from ._errors import NotInWorkflowError as NotInWorkflowError
from ._errors import SandboxViolationError as SandboxViolationError
from ._errors import WorkflowCancelledError as WorkflowCancelledError
from ._errors import WorkflowFailureError as WorkflowFailureError
from ._errors import WorkflowNotRegisteredError as WorkflowNotRegisteredError
from ._errors import WorkflowTerminatedError as WorkflowTerminatedError
from ._errors import WorkflowTimedOutError as WorkflowTimedOutError
from ._graph_view import describe_graph_run as describe_graph_run
from ._instance import NO_ACTIVITY_OPTIONS as NO_ACTIVITY_OPTIONS
from ._instance import WorkflowInstance as WorkflowInstance
from ._instance import current_instance as current_instance
from ._instance import in_workflow as in_workflow
from ._instance import schedule_in_workflow as schedule_in_workflow
from ._listeners import ExecutionEvent as ExecutionEvent
from ._listeners import Listener as Listener
from ._logging import ActivityLogger as ActivityLogger
from ._logging import WorkflowLogger as WorkflowLogger
from ._logging import configure_logging as configure_logging
from ._metrics import METRIC_NAMES as METRIC_NAMES
from ._metrics import MetricsServer as MetricsServer
from ._metrics import metrics_asgi_app as metrics_asgi_app
from ._metrics import start_metrics_server as start_metrics_server
from ._query import QueryError as QueryError
from ._replay import ReplayCodeError as ReplayCodeError
from ._replay import ReplayCommand as ReplayCommand
from ._replay import ReplayStep as ReplayStep
from ._replay import replay_history as replay_history
from ._timetravel import TimeTravelError as TimeTravelError
from ._worker import Worker as Worker

__all__ = [
    "WORKFLOW_ATTRIBUTE",
    "ActivityCancelledError",
    "ActivityDefinition",
    "ActivityError",
    "ActivityInfo",
    "ActivityNotRegisteredError",
    "ActivityOptions",
    "ActivityTimeoutError",
    "App",
    "ApplicationError",
    "ChildWorkflowError",
    "Client",
    "Clock",
    "ContinueAsNew",
    "ManualClock",
    "NondeterminismError",
    "NotInWorkflowError",
    "PendingActivity",
    "QueryError",
    "TimeTravelError",
    "Registry",
    "SandboxViolationError",
    "SystemClock",
    "Worker",
    "WorkflowDefinition",
    "WorkflowCancelledError",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowInstance",
    "WorkflowNotRegisteredError",
    "WorkflowTerminatedError",
    "WorkflowTimedOutError",
    "current_activity",
    "current_instance",
    "NO_ACTIVITY_OPTIONS",
    "describe_history",
    "in_workflow",
    "schedule_in_workflow",
    "replay_history",
    "ReplayCodeError",
    "ReplayCommand",
    "ReplayStep",
    "signature_types",
    "workflow_definition",
    "ActivityLogger",
    "AutoRecovery",
    "ConfigError",
    "ExecutionEvent",
    "FailureClass",
    "FailureDefaults",
    "FailurePolicy",
    "Listener",
    "METRIC_NAMES",
    "MetricsServer",
    "PerduraConfig",
    "RecoveryConfig",
    "RetryDefaults",
    "WorkflowLogger",
    "classify_exception",
    "configure_logging",
    "describe_graph_run",
    "metrics_asgi_app",
    "run_failure_class",
    "start_metrics_server",
]
