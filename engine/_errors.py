"""Errors of the runtime; they extend the tree rooted in ``history``::

PerduraError
├── (history) PayloadError, StoreError and their children
├── ApplicationError            raised by user code to fail an activity or workflow on purpose
├── ActivityError               what workflow code sees when an activity fails for good
├── WorkflowFailureError        what a client sees when the run failed
├── WorkflowCancelledError      what a client sees when the run was cancelled
├── WorkflowTimedOutError       … when the run timed out
├── WorkflowTerminatedError     … when the run was terminated
├── ChildWorkflowError          what parent code sees when a child ended without a result
├── QueryError                  (engine._query) an unknown query, or one that changed state
├── ActivityTimeoutError        the cause inside an ActivityError for a timeout
├── NondeterminismError         workflow code no longer matches its recorded history
├── SandboxViolationError       workflow code touched the clock, randomness, files, network …
├── WorkflowNotRegisteredError  a run's workflow type is unknown to this worker
├── ActivityNotRegisteredError  an activity type is unknown to the worker asked to run it
└── NotInWorkflowError          a ``workflow.*`` call made outside workflow code

BaseException
└── ContinueAsNew               control flow of ``workflow.continue_as_new``, not an error
"""

from __future__ import annotations

from typing import Any

from history import Failure, PerduraError, TimeoutType

from ._classify import FailureClass

__all__ = [
    "ActivityError",
    "ActivityNotRegisteredError",
    "ActivityTimeoutError",
    "ApplicationError",
    "NondeterminismError",
    "NotInWorkflowError",
    "SandboxViolationError",
    "ChildWorkflowError",
    "ContinueAsNew",
    "WorkflowCancelledError",
    "WorkflowFailureError",
    "WorkflowNotRegisteredError",
    "WorkflowTerminatedError",
    "WorkflowTimedOutError",
]


class ApplicationError(PerduraError):
    """Raise from an activity or workflow to fail it with a chosen type and retry behaviour.

    ``non_retryable=True`` fails the activity at once whatever its retry policy says.
    ``type`` replaces the exception class name in the recorded failure (and in
    ``RetryPolicy.non_retryable_error_types`` matching). ``classification`` (a
    ``FailureClass`` or its name: ``transient``, ``permanent``, ``resource_exhaustion``,
    ``timeout``, ``unknown``) chooses how an activity failing with it is retried.
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        classification: FailureClass | str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.type = type
        self.non_retryable = non_retryable
        self.classification = (
            None
            if classification is None
            else FailureClass.parse(classification, what="ApplicationError classification")
        )
        self.failure: Failure | None = None
        """Set when the error was rebuilt from a recorded failure (its original record)."""


class ActivityTimeoutError(PerduraError):
    """An activity attempt (or the whole activity) ran out of time."""

    def __init__(self, timeout_type: TimeoutType, message: str = "") -> None:
        self.timeout_type = timeout_type
        super().__init__(message or f"activity timed out ({timeout_type.value})")


class ActivityError(PerduraError):
    """An activity failed for good (retries exhausted, non-retryable, or timed out).

    ``failure`` is the recorded failure; ``__cause__`` is rebuilt from it: an
    :class:`ApplicationError` carrying the original type name and message, or an
    :class:`ActivityTimeoutError`.
    """

    def __init__(self, activity_type: str, seq: int, attempt: int, failure: Failure | None) -> None:
        self.activity_type = activity_type
        self.seq = seq
        self.attempt = attempt
        self.failure = failure
        reason = f"{failure.type}: {failure.message}" if failure else "timed out"
        super().__init__(
            f"activity {activity_type!r} (seq {seq}) failed after {attempt} attempt(s): {reason}"
        )


class WorkflowFailureError(PerduraError):
    """The run ended FAILED; ``failure`` is what its history recorded."""

    def __init__(self, workflow_id: str, run_id: str, failure: Failure) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.failure = failure
        super().__init__(
            f"workflow {workflow_id!r} (run {run_id}) failed: {failure.type}: {failure.message}"
        )


class WorkflowCancelledError(PerduraError):
    """The run ended CANCELLED; ``reason`` is what the cancel request said."""

    def __init__(self, workflow_id: str, run_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.reason = reason
        super().__init__(
            f"workflow {workflow_id!r} (run {run_id}) was cancelled: {reason or '(no reason)'}"
        )


class WorkflowTimedOutError(PerduraError):
    """The run ended TIMED_OUT (its run timeout or its execution's deadline passed)."""

    def __init__(self, workflow_id: str, run_id: str, timeout_type: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.timeout_type = timeout_type
        super().__init__(f"workflow {workflow_id!r} (run {run_id}) timed out ({timeout_type})")


class WorkflowTerminatedError(PerduraError):
    """The run was terminated from outside."""

    def __init__(self, workflow_id: str, run_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.reason = reason
        super().__init__(
            f"workflow {workflow_id!r} (run {run_id}) was terminated: {reason or '(no reason)'}"
        )


class ChildWorkflowError(PerduraError):
    """What parent code sees when a child run ended without a result (or never started)."""

    def __init__(self, workflow_id: str, status: str, failure: Failure) -> None:
        self.workflow_id = workflow_id
        self.status = status
        self.failure = failure
        super().__init__(
            f"child workflow {workflow_id!r} {status}: {failure.type}: {failure.message}"
        )


class ContinueAsNew(BaseException):
    """Raised by ``workflow.continue_as_new``: ends the run and starts a fresh one.

    A ``BaseException`` so that ``except Exception`` in workflow code cannot swallow it.
    """

    def __init__(self, args: tuple[Any, ...]) -> None:
        super().__init__("continue as new")
        self.args_for_next_run = args


class NondeterminismError(PerduraError):
    """Workflow code did something other than what its history recorded at the same point."""

    def __init__(
        self,
        *,
        workflow_type: str,
        run_id: str,
        event_id: int | None,
        recorded: str,
        produced: str,
    ) -> None:
        self.workflow_type = workflow_type
        self.run_id = run_id
        self.event_id = event_id
        self.recorded = recorded
        self.produced = produced
        where = f"event {event_id}" if event_id is not None else "end of history"
        super().__init__(
            f"workflow {workflow_type!r} (run {run_id}) is not deterministic at {where}:\n"
            f"  history says: {recorded}\n"
            f"  code did:     {produced}\n"
            "Workflow code must issue the same commands on every replay; guard changes with "
            "workflow.patched() or start new runs for the new code."
        )


class SandboxViolationError(PerduraError):
    """Workflow code called something whose result would differ on replay."""

    def __init__(self, call: str, replacement: str) -> None:
        self.call = call
        self.replacement = replacement
        super().__init__(
            f"{call} is not allowed inside workflow code (it would differ on replay); "
            f"use {replacement}"
        )


class WorkflowNotRegisteredError(PerduraError):
    def __init__(self, workflow_type: str, known: list[str]) -> None:
        self.workflow_type = workflow_type
        super().__init__(
            f"unknown workflow type {workflow_type!r}; registered: "
            f"{', '.join(sorted(known)) or '(none)'}"
        )


class ActivityNotRegisteredError(PerduraError):
    def __init__(self, activity_type: str, known: list[str]) -> None:
        self.activity_type = activity_type
        super().__init__(
            f"unknown activity type {activity_type!r}; registered: "
            f"{', '.join(sorted(known)) or '(none)'}"
        )


class NotInWorkflowError(PerduraError):
    def __init__(self, call: str) -> None:
        super().__init__(f"{call} can only be called from workflow code run by a worker")
