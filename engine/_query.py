"""Queries: reading a run's state by replaying its history, writing nothing.

A query is answered from the replayed state, so it works for any run, also one that no
worker holds in memory, and it never appends to the history. The handler runs in the
sandbox like workflow code; if it schedules an activity, starts a timer or changes the
workflow object's attributes, the query is refused with :class:`QueryError`, because on the
real run such a change would never happen.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import msgspec

from history import AnyEvent, PayloadConverter, PerduraError

from . import _sandbox
from ._definitions import Registry, signature_types
from ._instance import _state
from ._replay import replay_history

__all__ = ["QueryError", "answer_query"]


class QueryError(PerduraError):
    """The query is unknown, or its handler tried to change the run."""


def answer_query(
    registry: Registry,
    history: Sequence[AnyEvent],
    name: str,
    args: Sequence[Any],
    *,
    run_id: str,
    converter: PayloadConverter,
) -> Any:
    instance = replay_history(registry, history, run_id=run_id, converter=converter)
    definition = instance.definition
    handler = definition.queries.get(name)
    if handler is None:
        known = ", ".join(sorted(definition.queries)) or "(none)"
        raise QueryError(
            f"workflow {definition.name!r} has no query {name!r}; its queries: {known}"
        )
    obj = instance.workflow_object
    if obj is None:
        raise QueryError(f"run {run_id} has not started its workflow object yet")
    names, types, _ = signature_types(handler, skip_self=True)
    decoded = [
        _convert(value, t, f"argument {n!r} of query {name!r}")
        for value, t, n in zip(args, types, names, strict=False)
    ]
    before = (len(instance.activities), len(instance.timers), len(instance.markers))
    state = _snapshot(obj)
    _state.instance = instance
    try:
        with _sandbox.restricted():
            answer = handler(obj, *decoded)
    finally:
        _state.instance = None
    after = (len(instance.activities), len(instance.timers), len(instance.markers))
    if after != before or instance.loop.has_ready():
        raise QueryError(
            f"query {name!r} of workflow {definition.name!r} tried to schedule work; "
            "a query may only read the workflow's state"
        )
    if state is not None and _snapshot(obj) != state:
        raise QueryError(
            f"query {name!r} of workflow {definition.name!r} changed the workflow's state; "
            "a query may only read it"
        )
    return answer


def _convert(value: Any, type_: Any, what: str) -> Any:
    """Arguments arrive as plain values (JSON from the CLI or HTTP): shape them by the
    handler's annotations, as the payload converter would."""
    if type_ is Any:
        return value
    try:
        return msgspec.convert(value, type=type_, strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise QueryError(f"{what}: {exc}") from exc


def _snapshot(obj: Any) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = copy.deepcopy(vars(obj))
        return state
    except Exception:  # state that cannot be copied cannot be compared either
        return None
