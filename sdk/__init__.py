"""perdura: durable execution for Python. What user code imports.

from sdk import workflow, activity, RetryPolicy, open_client, open_worker
"""

from engine import ActivityError as ActivityError
from engine import ActivityTimeoutError as ActivityTimeoutError
from engine import App as App
from engine import ApplicationError as ApplicationError
from engine import ChildWorkflowError as ChildWorkflowError
from engine import Client as Client
from engine import ConfigError as ConfigError
from engine import FailureClass as FailureClass
from engine import NondeterminismError as NondeterminismError
from engine import PerduraConfig as PerduraConfig
from engine import QueryError as QueryError
from engine import SandboxViolationError as SandboxViolationError
from engine import TimeTravelError as TimeTravelError
from engine import Worker as Worker
from engine import WorkflowCancelledError as WorkflowCancelledError
from engine import WorkflowDescription as WorkflowDescription
from engine import WorkflowFailureError as WorkflowFailureError
from engine import WorkflowHandle as WorkflowHandle
from engine import WorkflowTerminatedError as WorkflowTerminatedError
from engine import WorkflowTimedOutError as WorkflowTimedOutError
from engine import configure_logging as configure_logging
from history import Durability as Durability
from history import PayloadConverter as PayloadConverter
from history import PerduraError as PerduraError
from history import RetryPolicy as RetryPolicy
from history import RunClosedError as RunClosedError
from history import RunQuery as RunQuery
from history import RunStatus as RunStatus
from history import WorkflowAlreadyRunningError as WorkflowAlreadyRunningError

from . import activity as activity
from . import listeners as listeners
from . import workflow as workflow
from ._connect import open_client as open_client
from ._connect import open_worker as open_worker

__all__ = [
    "ActivityError",
    "ActivityTimeoutError",
    "App",
    "ApplicationError",
    "ChildWorkflowError",
    "Client",
    "Durability",
    "NondeterminismError",
    "PayloadConverter",
    "PerduraError",
    "QueryError",
    "TimeTravelError",
    "RetryPolicy",
    "RunClosedError",
    "RunQuery",
    "RunStatus",
    "SandboxViolationError",
    "Worker",
    "WorkflowAlreadyRunningError",
    "WorkflowCancelledError",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowTerminatedError",
    "WorkflowTimedOutError",
    "activity",
    "open_client",
    "open_worker",
    "workflow",
    "ConfigError",
    "FailureClass",
    "PerduraConfig",
    "configure_logging",
    "listeners",
]
