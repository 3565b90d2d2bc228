"""perdura.engine: the runtime (replay sandbox, workers, client).

Imports ``history`` only; user code imports ``sdk``, which builds on this package.
"""

from ._activity import ActivityCancelledError as ActivityCancelledError
from ._activity import ActivityInfo as ActivityInfo
from ._activity import current_activity as current_activity
from ._apps import App as App
from ._client import Client as Client
from ._client import PendingActivity as PendingActivity
from ._client import WorkflowDescription as WorkflowDescription
from ._client import WorkflowHandle as WorkflowHandle
from ._client import describe_history as describe_history
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import SystemClock as SystemClock
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
from ._instance import WorkflowInstance as WorkflowInstance
from ._instance import current_instance as current_instance
from ._instance import in_workflow as in_workflow
from ._query import QueryError as QueryError
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
    "describe_history",
    "in_workflow",
    "replay_history",
    "signature_types",
    "workflow_definition",
]
