"""Execution event listeners: typed events of what a worker recorded, for your own code.

Register a function (plain or ``async``) with ``Worker(listeners=[fn])`` or
``open_worker(..., listeners=[fn])``::

    from sdk import listeners

    async def page_on_failure(event: listeners.ExecutionEvent) -> None:
        if isinstance(event, listeners.ExecutionFailed):
            await pager.send(f"{event.workflow_id} failed: {event.error_type}")

Each event is delivered once, after what it reports is durable in history; replay after a
recovery delivers nothing again. A listener that raises is logged and the run goes on. See
docs/operating.md.
"""

from engine._listeners import ActivityCompleted as ActivityCompleted
from engine._listeners import ActivityFailed as ActivityFailed
from engine._listeners import ActivityStarted as ActivityStarted
from engine._listeners import ExecutionCancelled as ExecutionCancelled
from engine._listeners import ExecutionCompleted as ExecutionCompleted
from engine._listeners import ExecutionEvent as ExecutionEvent
from engine._listeners import ExecutionFailed as ExecutionFailed
from engine._listeners import ExecutionRecovered as ExecutionRecovered
from engine._listeners import ExecutionStarted as ExecutionStarted
from engine._listeners import Listener as Listener
from engine._listeners import RetryAttempt as RetryAttempt

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityStarted",
    "ExecutionCancelled",
    "ExecutionCompleted",
    "ExecutionEvent",
    "ExecutionFailed",
    "ExecutionRecovered",
    "ExecutionStarted",
    "Listener",
    "RetryAttempt",
]
