"""Errors of the graph API.

::

    PerduraError
    ├── GraphValidationError       compile() found the graph unsound; nothing ran
    └── ApplicationError           fails the graph run (recorded as the failure's type)
        ├── GraphRecursionError    more super-steps than the recursion limit
        └── InvalidUpdateError     a node, router or input wrote something the state refuses
    BaseException
    └── GraphInterrupt             raised by interrupt() inside a node to suspend the run

``GraphRecursionError`` and ``InvalidUpdateError`` are ``ApplicationError``\\ s so that raising
them in the runner ends the run FAILED (a bug-class exception would retry the workflow task
for ever). A client sees them as ``WorkflowFailureError`` whose ``failure.type`` is the class
name. ``GraphInterrupt`` derives from ``BaseException`` so that a node's ``except Exception``
cannot swallow the suspension.
"""

from __future__ import annotations

from typing import Any

from engine import ApplicationError
from history import PerduraError

__all__ = [
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphValidationError",
    "InvalidUpdateError",
]


class GraphValidationError(PerduraError):
    """The graph cannot be compiled; the message names the node or edge at fault."""


class GraphRecursionError(ApplicationError):
    """The run took more super-steps than its recursion limit without reaching END."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="GraphRecursionError", non_retryable=True)


class InvalidUpdateError(ApplicationError):
    """An update names a key the state lacks, has the wrong type, or conflicts with another."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="InvalidUpdateError", non_retryable=True)


class GraphInterrupt(BaseException):
    """Raised by :func:`~sdk.graph.interrupt` to suspend the run until it is resumed."""

    def __init__(self, value: Any, index: int) -> None:
        super().__init__(value)
        self.value = value
        self.index = index
