"""Workflow and activity definitions: what the SDK decorators produce and workers register.

They live in the engine (not the SDK) because workers and the replayer must read them, and
imports only point downwards. A definition captures the name under which the code is recorded
in history plus the parameter and return annotations the payload converter decodes with.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from history import RetryPolicy

from ._errors import ActivityNotRegisteredError, WorkflowNotRegisteredError

__all__ = [
    "ActivityDefinition",
    "ActivityOptions",
    "Registry",
    "WorkflowDefinition",
    "activity_definition",
    "signature_types",
    "workflow_definition",
]

WORKFLOW_ATTRIBUTE = "__perdura_workflow__"
"""``@workflow.defn`` returns the decorated function or class itself, carrying this."""

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class ActivityOptions:
    """Per-call options; any left ``None`` falls back to the definition's, then the worker's."""

    task_queue: str | None = None
    retry_policy: RetryPolicy | None = None
    start_to_close_timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None

    def merged_over(self, base: ActivityOptions) -> ActivityOptions:
        """These options, with every unset field taken from ``base``."""
        return ActivityOptions(
            task_queue=self.task_queue or base.task_queue,
            retry_policy=self.retry_policy or base.retry_policy,
            start_to_close_timeout=_first(self.start_to_close_timeout, base.start_to_close_timeout),
            schedule_to_close_timeout=_first(
                self.schedule_to_close_timeout, base.schedule_to_close_timeout
            ),
            heartbeat_timeout=_first(self.heartbeat_timeout, base.heartbeat_timeout),
        )


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


def signature_types(
    fn: Callable[..., Any], *, skip_self: bool = False
) -> tuple[list[str], list[Any], Any]:
    """Parameter names, parameter annotations (``Any`` where missing) and return annotation.

    Annotations are resolved with ``typing.get_type_hints`` so string annotations
    (``from __future__ import annotations``) decode to real types.
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: fall back to untyped decoding
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    if skip_self and params:
        params = params[1:]
    names = [p.name for p in params]
    types = [hints.get(p.name, Any) for p in params]
    return names, types, hints.get("return", Any)


@dataclass(frozen=True, eq=False)
class ActivityDefinition(Generic[P, R]):
    """A function registered as an activity; calling it inside a workflow schedules it."""

    name: str
    fn: Callable[P, R] | Callable[P, Awaitable[R]]
    is_async: bool
    param_names: list[str]
    param_types: list[Any]
    return_type: Any
    options: ActivityOptions = field(default_factory=ActivityOptions)


@dataclass(frozen=True, eq=False)
class WorkflowDefinition:
    """A workflow: an ``async def`` function, or a class with one ``run`` coroutine method.

    For a class, each run gets a fresh instance (``cls()``), then ``run_fn(instance, *args)``.
    """

    name: str
    run_fn: Callable[..., Awaitable[Any]]
    cls: type | None
    param_names: list[str]
    param_types: list[Any]
    return_type: Any
    signals: dict[str, Callable[..., Any]] = field(default_factory=dict)
    """``@workflow.signal`` methods by signal name (class-based workflows)."""
    queries: dict[str, Callable[..., Any]] = field(default_factory=dict)
    """``@workflow.query`` methods by query name (class-based workflows)."""


def workflow_definition(obj: object) -> WorkflowDefinition:
    """The definition behind a decorated workflow function or class (or a definition)."""
    if isinstance(obj, WorkflowDefinition):
        return obj
    definition = getattr(obj, WORKFLOW_ATTRIBUTE, None)
    if isinstance(definition, WorkflowDefinition):
        return definition
    raise TypeError(f"{obj!r} is not a workflow: decorate it with @workflow.defn")


def activity_definition(obj: object) -> ActivityDefinition[Any, Any]:
    if isinstance(obj, ActivityDefinition):
        return obj
    raise TypeError(f"{obj!r} is not an activity: decorate it with @activity.defn")


class Registry:
    """Workflows and activities known to one worker (or replayer), by recorded name."""

    def __init__(
        self,
        workflows: Iterable[object] = (),
        activities: Iterable[object] = (),
    ) -> None:
        self.workflows: dict[str, WorkflowDefinition] = {}
        self.activities: dict[str, ActivityDefinition[Any, Any]] = {}
        for item in workflows:
            workflow = workflow_definition(item)
            self._add(self.workflows, workflow.name, workflow, "workflow")
        for item in activities:
            activity = activity_definition(item)
            self._add(self.activities, activity.name, activity, "activity")

    @staticmethod
    def _add(table: dict[str, Any], name: str, item: Any, kind: str) -> None:
        existing = table.get(name)
        if existing is not None and existing is not item:
            raise ValueError(f"two different {kind} definitions are registered as {name!r}")
        table[name] = item

    def workflow(self, name: str) -> WorkflowDefinition:
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowNotRegisteredError(name, list(self.workflows)) from None

    def activity(self, name: str) -> ActivityDefinition[Any, Any]:
        try:
            return self.activities[name]
        except KeyError:
            raise ActivityNotRegisteredError(name, list(self.activities)) from None
