"""Replaying a recorded history against current code, outside any worker.

Used to debug a production run on a laptop and, in tests, to prove that code changes keep old
histories replayable. Replay feeds the recorded events exactly as a worker would and checks
every command the code issues against them; it runs no activity and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from history import AnyEvent, PayloadConverter, PerduraError, WorkflowStarted

from ._definitions import Registry
from ._errors import NondeterminismError
from ._instance import WorkflowInstance

__all__ = ["replay_history"]


def replay_history(
    registry: Registry,
    history: Sequence[AnyEvent],
    *,
    run_id: str = "replay",
    converter: PayloadConverter | None = None,
) -> WorkflowInstance:
    """Feed ``history`` to a fresh instance; raise ``NondeterminismError`` on a mismatch.

    Returns the instance, whose state (``completion``, activities, timers) shows where the
    code stands at the end of the recorded history.
    """
    if not history or not isinstance(history[0], WorkflowStarted):
        raise PerduraError("a history must start with a WorkflowStarted event")
    started = history[0]
    instance = WorkflowInstance(
        registry.workflow(started.workflow_type),
        run_id,
        started,
        converter or PayloadConverter(),
    )
    instance.replaying_until = len(history)
    instance.look_ahead(history)
    for event in history:
        instance.apply(event)
    if instance.task_failure is not None:
        error = instance.task_failure.error
        if isinstance(error, NondeterminismError):
            raise error
        raise PerduraError(f"workflow code failed during replay: {error!r}") from error
    return instance
