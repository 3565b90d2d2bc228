"""Replaying a recorded history against current code, outside any worker.

Used to debug a production run on a laptop and, in tests, to prove that code changes keep old
histories replayable. Replay feeds the recorded events exactly as a worker would and checks
every command the code issues against them; it runs no activity and writes nothing.

Two options exist for the ``perdura replay`` debugging session:

* ``on_event`` is called before each event is applied and ``on_step`` after it, with the
  commands the code issued in response (scheduled an activity, started a timer,
  completed…): the per-event trace.
* ``debug=True`` runs the code without the sandbox's guards and without the blocked-loop
  watchdog, so that ``breakpoint()`` works: the debugger reads ``.pdbrc`` and the terminal
  (the sandbox would refuse both) and may hold a step for minutes (the watchdog would
  interrupt it after two seconds). A debug replay therefore checks determinism against the
  history, not the sandbox's rules; workers always enforce those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from history import AnyEvent, Payload, PayloadConverter, PerduraError, WorkflowStarted

from ._definitions import Registry
from ._errors import NondeterminismError
from ._instance import WorkflowInstance
from ._timeline import format_failure, format_payload

__all__ = ["ReplayCodeError", "ReplayCommand", "ReplayStep", "replay_history"]


@dataclass(frozen=True, slots=True)
class ReplayCommand:
    """One thing the workflow code did in response to an event.

    ``kind`` is one of ``schedule_activity``, ``cancel_activity``, ``start_timer``,
    ``cancel_timer``, ``start_child_workflow``, ``side_effect``, ``patch``,
    ``complete_workflow``, ``fail_workflow``, ``cancel_workflow``, ``continue_as_new`` and
    ``raise`` (the code raised a bug-class error); ``text`` says it in words.
    """

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """An event as it was applied, and the commands the code issued in response."""

    event: AnyEvent
    commands: tuple[ReplayCommand, ...]


def replay_history(
    registry: Registry,
    history: Sequence[AnyEvent],
    *,
    run_id: str = "replay",
    converter: PayloadConverter | None = None,
    debug: bool = False,
    on_event: Callable[[AnyEvent], None] | None = None,
    on_step: Callable[[ReplayStep], None] | None = None,
) -> WorkflowInstance:
    """Feed ``history`` to a fresh instance; raise ``NondeterminismError`` on a mismatch.

    Returns the instance, whose state (``completion``, activities, timers) shows where the
    code stands at the end of the recorded history. ``debug`` and ``on_step``: see the module
    docstring; ``on_event`` is called before each event is applied (so that a debugger
    stopping in the code shows up under the event that woke it). A mismatch raises before
    ``on_step`` sees the event that revealed it.
    """
    if not history or not isinstance(history[0], WorkflowStarted):
        raise PerduraError("a history must start with a WorkflowStarted event")
    started = history[0]
    instance = WorkflowInstance(
        registry.workflow(started.workflow_type),
        run_id,
        started,
        converter or PayloadConverter(),
        step_deadline=None if debug else WorkflowInstance.step_deadline,
        sandboxed=not debug,
    )
    instance.replaying_until = len(history)
    instance.look_ahead(history)
    for event in history:
        before = None if on_step is None else _Marks.of(instance)
        if on_event is not None:
            on_event(event)
        instance.apply(event)
        if before is not None and on_step is not None:
            on_step(ReplayStep(event, tuple(before.commands_since(instance))))
        if instance.task_failure is not None:
            # Stop here: every later event would be a mismatch caused by this failure.
            error = instance.task_failure.error
            if isinstance(error, NondeterminismError):
                raise error
            raise ReplayCodeError(event.event_id, error) from error
    return instance


class ReplayCodeError(PerduraError):
    """Workflow code raised a bug-class error (not a failure of the run) during a replay."""

    def __init__(self, event_id: int, error: BaseException) -> None:
        self.event_id = event_id
        self.error = error
        super().__init__(
            f"workflow code failed during replay at event {event_id}: "
            f"{type(error).__name__}: {error}"
        )


@dataclass(frozen=True, slots=True)
class _Marks:
    """How far the instance's command records reached before an event.

    Activities, timers, children and markers are kept by ``seq`` (1, 2, 3 …) for the whole
    run, so what is new after the event is what lies past these counts; only the steps still
    open can be newly cancelled. Both keep the trace's cost per event independent of the
    length of the history.
    """

    activities: int
    timers: int
    children: int
    markers: int
    open_activities: frozenset[int]
    open_timers: frozenset[int]
    patches: frozenset[str]
    completed: bool
    failed: bool

    @classmethod
    def of(cls, instance: WorkflowInstance) -> _Marks:
        return cls(
            activities=len(instance.activities),
            timers=len(instance.timers),
            children=len(instance.children),
            markers=len(instance.markers),
            open_activities=frozenset(
                seq for seq, call in instance.open_activities.items() if not call.cancel_requested
            ),
            open_timers=frozenset(
                seq for seq, timer in instance.open_timers.items() if not timer.cancel_requested
            ),
            patches=frozenset(instance.patch_decisions),
            completed=instance.completion is not None,
            failed=instance.task_failure is not None,
        )

    def commands_since(self, instance: WorkflowInstance) -> list[ReplayCommand]:
        commands: list[ReplayCommand] = []
        new_activities = range(self.activities + 1, len(instance.activities) + 1)
        for seq in new_activities:
            call = instance.activities[seq]
            commands.append(
                ReplayCommand(
                    "schedule_activity",
                    f"schedule activity #{seq} {_call(call.activity_type, call.args)}",
                )
            )
        for seq in sorted({*self.open_activities, *new_activities}):
            call = instance.activities[seq]
            if call.cancel_requested:
                commands.append(
                    ReplayCommand("cancel_activity", f"cancel activity #{seq} {call.activity_type}")
                )
        new_timers = range(self.timers + 1, len(instance.timers) + 1)
        for seq in new_timers:
            timer = instance.timers[seq]
            commands.append(ReplayCommand("start_timer", f"start timer T{seq} {timer.duration:g}s"))
        for seq in sorted({*self.open_timers, *new_timers}):
            if instance.timers[seq].cancel_requested:
                commands.append(ReplayCommand("cancel_timer", f"cancel timer T{seq}"))
        for seq in range(self.children + 1, len(instance.children) + 1):
            child = instance.children[seq]
            commands.append(
                ReplayCommand(
                    "start_child_workflow",
                    f"start child #{seq} {_call(child.workflow_type, child.args)} "
                    f"as {child.workflow_id!r}",
                )
            )
        for seq in range(self.markers + 1, len(instance.markers) + 1):
            commands.append(ReplayCommand("side_effect", f"side effect #{seq}"))
        for patch_id, used in instance.patch_decisions.items():
            if patch_id not in self.patches:
                commands.append(ReplayCommand("patch", f"patched({patch_id!r}) -> {used}"))
        completion = instance.completion
        if completion is not None and not self.completed:
            if completion.result is not None:
                kind, text = "complete_workflow", f"complete -> {format_payload(completion.result)}"
            elif completion.continued is not None:
                kind, text = "continue_as_new", f"continue as new {_call('', completion.continued)}"
            elif completion.cancelled is not None:
                reason = f" ({completion.cancelled})" if completion.cancelled else ""
                kind, text = "cancel_workflow", f"end cancelled{reason}"
            else:
                assert completion.failure is not None
                kind, text = "fail_workflow", f"fail: {format_failure(completion.failure)}"
            commands.append(ReplayCommand(kind, text))
        failure = instance.task_failure
        if failure is not None and not self.failed:
            error = failure.error
            message = f": {error}" if str(error) else ""
            commands.append(ReplayCommand("raise", f"raised {type(error).__name__}{message}"))
        return commands


def _call(name: str, args: Sequence[Payload]) -> str:
    return f"{name}({', '.join(format_payload(arg, 40) for arg in args)})"
