"""Reading graph runs from history: their states (time travel), what they wait for, and a
description for the web UI; and resuming a suspended run.

Nothing here needs the graph's code. The runner records a checkpoint marker after every
super-step and at every suspension, and its first checkpoint carries the graph's shape, so
a history alone tells which graph it is, how it is drawn, which states it went through,
which node is running and what it is waiting for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine import WorkflowHandle
from history import (
    ActivityCompleted,
    ActivityScheduled,
    AnyEvent,
    ChildWorkflowCompleted,
    ChildWorkflowStarted,
    MarkerRecorded,
    PayloadConverter,
    SignalReceived,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowTimedOut,
)

from ._records import Checkpoint, GraphShape, ResumeRequest, TaskRef, Waiting, checkpoint_from
from ._render import draw_ascii, to_mermaid
from ._runner import RESUME_SIGNAL, STATE_QUERY

__all__ = [
    "StateSnapshot",
    "describe_graph_run",
    "get_graph_state",
    "graph_states",
    "resume",
]

_converter = PayloadConverter()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateSnapshot:
    """One recorded state of a graph run: after ``step`` super-steps, before ``next``.

    ``source`` says why it was recorded (``input``, ``loop``, ``wait``, ``interrupt``,
    ``update``, ``fork``, ``continue``); ``waiting`` is what the run was suspended on then.
    ``state`` is in builtins form (as recorded).
    """

    graph: str
    workflow_id: str
    run_id: str
    event_id: int
    timestamp: datetime
    step: int
    source: str
    state: dict[str, Any]
    tasks: tuple[TaskRef, ...]
    waiting: tuple[Waiting, ...]
    joins: dict[str, list[str]]

    @property
    def next(self) -> list[str]:
        """The nodes of the next super-step."""
        return [task.node for task in self.tasks]


def _checkpoints(history: Sequence[AnyEvent]) -> list[tuple[MarkerRecorded, Checkpoint]]:
    found = []
    for event in history:
        if isinstance(event, MarkerRecorded) and event.kind == "side_effect" and event.value:
            try:
                value = _converter.decode(event.value)
            except Exception:
                continue
            checkpoint = checkpoint_from(value)
            if checkpoint is not None:
                found.append((event, checkpoint))
    return found


def states_in(history: Sequence[AnyEvent], *, run_id: str) -> list[StateSnapshot]:
    """The states one run's history recorded, oldest first."""
    started = history[0] if history else None
    workflow_id = started.workflow_id if isinstance(started, WorkflowStarted) else ""
    return [
        StateSnapshot(
            graph=checkpoint.graph,
            workflow_id=workflow_id,
            run_id=run_id,
            event_id=event.event_id,
            timestamp=event.timestamp,
            step=checkpoint.step,
            source=checkpoint.source,
            state=checkpoint.state,
            tasks=tuple(checkpoint.next),
            waiting=tuple(checkpoint.waiting),
            joins=checkpoint.joins,
        )
        for event, checkpoint in _checkpoints(history)
    ]


async def graph_states(handle: WorkflowHandle) -> list[StateSnapshot]:
    """Every state a graph run recorded, one (or more) per super-step, oldest first.

    Follows the run's continue-as-new chain back to its first run, so a long-running graph
    lists all its steps. Reads history only; works with or without the graph's code.
    """
    store = handle.client.store
    info = await handle.run_info()
    chain: list[list[StateSnapshot]] = []
    run_id: str | None = info.run_id
    while run_id is not None:
        history = await store.read_history(run_id)
        chain.append(states_in(history, run_id=run_id))
        started = history[0] if history else None
        run_id = started.continued_from if isinstance(started, WorkflowStarted) else None
    return [snapshot for run in reversed(chain) for snapshot in run]


async def resume(
    handle: WorkflowHandle,
    value: Any = None,
    *,
    update: dict[str, Any] | None = None,
    interrupt_id: str | None = None,
) -> None:
    """Answer what a suspended graph run waits for; the run continues (on any worker).

    ``value`` becomes the return value of the node's ``interrupt()`` call (for
    ``interrupt_before`` / ``interrupt_after`` it is only recorded). ``update`` edits the
    state through the merge strategies before the run goes on. Without ``interrupt_id`` the
    answer goes to everything the run waits for. Recorded as the ``__graph_resume`` signal:
    it is durable when this returns, also while no worker runs; a resume sent before the
    run suspends answers its next suspension.
    """
    request = ResumeRequest(value=value, update=update, interrupt_id=interrupt_id)
    await handle.signal(RESUME_SIGNAL, request)


async def get_graph_state(handle: WorkflowHandle) -> dict[str, Any]:
    """The run's current step, state, next nodes, running tasks and what it waits for.

    Answered by the ``__graph_state`` query (the client needs the graph's code:
    ``open_client(..., workflows=graph.workflows)``).
    """
    answer: dict[str, Any] = await handle.query(STATE_QUERY)
    return answer


_CLOSED = {
    WorkflowCompleted: "completed",
    WorkflowFailed: "failed",
    WorkflowCancelled: "cancelled",
    WorkflowTerminated: "terminated",
    WorkflowTimedOut: "timed_out",
    WorkflowContinuedAsNew: "continued_as_new",
}


def describe_graph_run(history: Sequence[AnyEvent]) -> dict[str, Any]:
    """What the web UI shows for a graph run, from its history alone.

    Returns ``{"graph", "status", "step", "nodes", "edges", "mermaid", "ascii", "running",
    "waiting", "states"}``: ``status`` is ``running``, ``waiting`` or how the run closed;
    ``running`` the nodes whose tasks are in flight; ``waiting`` what a suspended run waits
    for (``id``, ``kind``, ``node``, ``task``, ``value``); ``mermaid`` highlights both;
    ``states`` lists every recorded state (``step``, ``source``, ``state``, ``next``,
    ``waiting``, ``event_id``, ``timestamp``). A history that is not a graph run's gives
    ``{"graph": None}``.
    """
    found = _checkpoints(history)
    if not found:
        return {"graph": None}
    started = history[0]
    run_id = ""
    shape: GraphShape | None = next((c.shape for _, c in found if c.shape is not None), None)
    last_event, last = found[-1]
    status = "running"
    closing = history[-1]
    for kind, name in _CLOSED.items():
        if isinstance(closing, kind):
            status = name
    waiting: list[Waiting] = list(last.waiting)
    if waiting:
        answered = _answered(history, after=last_event.event_id, waiting=waiting)
        waiting = [w for w in waiting if w.id not in answered]
    running: list[str] = []
    if status == "running":
        if waiting:
            status = "waiting"
        else:
            running = _running_nodes(history, last)
    states = [
        {
            "step": snapshot.step,
            "source": snapshot.source,
            "state": snapshot.state,
            "next": snapshot.next,
            "waiting": [_waiting_dict(w) for w in snapshot.waiting],
            "event_id": snapshot.event_id,
            "timestamp": snapshot.timestamp.isoformat(),
        }
        for snapshot in states_in(history, run_id=run_id)
    ]
    waiting_nodes = [w.node for w in waiting]
    description: dict[str, Any] = {
        "graph": last.graph,
        "workflow_id": started.workflow_id if isinstance(started, WorkflowStarted) else None,
        "status": status,
        "step": last.step,
        "running": running,
        "waiting": [_waiting_dict(w) for w in waiting],
        "states": states,
        "nodes": [],
        "edges": [],
        "mermaid": None,
        "ascii": None,
    }
    if shape is not None:
        description["nodes"] = [{"name": n.name, "kind": n.kind} for n in shape.nodes]
        description["edges"] = [
            {
                "source": e.source,
                "target": e.target,
                "conditional": e.conditional,
                "label": e.label,
                "join": e.join,
            }
            for e in shape.edges
        ]
        description["mermaid"] = to_mermaid(shape, running=running, waiting=waiting_nodes)
        description["ascii"] = draw_ascii(shape)
    return description


def _waiting_dict(wait: Waiting) -> dict[str, Any]:
    return {
        "id": wait.id,
        "kind": wait.kind,
        "node": wait.node,
        "task": wait.task,
        "value": wait.value,
    }


def _answered(history: Sequence[AnyEvent], *, after: int, waiting: list[Waiting]) -> set[str]:
    answered: set[str] = set()
    ids = [w.id for w in waiting]
    for event in history:
        if event.event_id <= after or not isinstance(event, SignalReceived):
            continue
        if event.name != RESUME_SIGNAL or not event.args:
            continue
        try:
            request = _converter.decode(event.args[0], ResumeRequest, name="resume request")
        except Exception:
            continue
        if request.interrupt_id is None:
            answered.update(ids)
        elif request.interrupt_id in ids:
            answered.add(request.interrupt_id)
    return answered


def _running_nodes(history: Sequence[AnyEvent], last: Checkpoint) -> list[str]:
    """Nodes of the last checkpoint's next tasks that have no recorded result yet."""
    task_of_seq: dict[int, str] = {}
    done: set[str] = set()
    for event in history:
        if isinstance(event, ActivityScheduled) and event.args:
            try:
                argument = _converter.decode(event.args[0])
            except Exception:
                continue
            if isinstance(argument, dict) and isinstance(argument.get("task"), dict):
                task_of_seq[event.seq] = str(argument["task"].get("id"))
        elif isinstance(event, ActivityCompleted) and event.seq in task_of_seq:
            try:
                result = _converter.decode(event.result)
            except Exception:
                result = None
            if isinstance(result, dict) and result.get("interrupt") is not None:
                done.discard(task_of_seq[event.seq])  # it runs again once resumed
            else:
                done.add(task_of_seq[event.seq])
        elif isinstance(event, ChildWorkflowStarted):
            task_of_seq[-event.seq] = event.workflow_id.rsplit("/", 1)[-1]
        elif isinstance(event, ChildWorkflowCompleted) and -event.seq in task_of_seq:
            done.add(task_of_seq[-event.seq])
    running: list[str] = []
    for task in last.next:
        if task.id not in done and task.node not in running:
            running.append(task.node)
    return running
