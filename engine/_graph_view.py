"""Reading graph runs from history: the states they went through and what they are doing now.

Nothing here needs the graph's code. The runner (``sdk.graph``) records a checkpoint marker
after every super-step and at every suspension, and its first checkpoint carries the graph's
shape, so a history alone tells which graph it is, how it is drawn, which states it went
through, which node is running and what it is waiting for. That is why this lives in
``engine``: ``perdura describe`` / ``perdura graph``, the HTTP server and the web UI read
graph runs here, and ``sdk.graph`` builds its time travel on the same functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from history import (
    CLOSING_EVENTS,
    ActivityCompleted,
    ActivityScheduled,
    AnyEvent,
    ChildWorkflowCompleted,
    ChildWorkflowStarted,
    MarkerRecorded,
    PayloadConverter,
    SignalReceived,
    Store,
    WorkflowStarted,
)

from ._graph_records import (
    RESUME_SIGNAL,
    Checkpoint,
    GraphShape,
    ResumeRequest,
    TaskRef,
    Waiting,
    checkpoint_from,
)
from ._graph_render import draw_ascii, to_mermaid

__all__ = [
    "StateSnapshot",
    "describe_graph_run",
    "read_graph_states",
    "snapshot_json",
    "states_in",
    "waiting_json",
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


async def read_graph_states(store: Store, run_id: str) -> list[StateSnapshot]:
    """Every state a graph run recorded, oldest first, following its continue-as-new chain
    back to the first run, so a long-running graph lists all its steps."""
    chain: list[list[StateSnapshot]] = []
    current: str | None = run_id
    while current is not None:
        history = await store.read_history(current)
        chain.append(states_in(history, run_id=current))
        started = history[0] if history else None
        current = started.continued_from if isinstance(started, WorkflowStarted) else None
    return [snapshot for run in reversed(chain) for snapshot in run]


def waiting_json(wait: Waiting) -> dict[str, Any]:
    """What a run waits for, as JSON: ``id``, ``kind``, ``node``, ``task``, ``value``."""
    return {
        "id": wait.id,
        "kind": wait.kind,
        "node": wait.node,
        "task": wait.task,
        "value": wait.value,
    }


def snapshot_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A recorded state as JSON, the shape of ``describe_graph_run(...)["states"]`` items."""
    return {
        "step": snapshot.step,
        "source": snapshot.source,
        "state": snapshot.state,
        "next": snapshot.next,
        "waiting": [waiting_json(w) for w in snapshot.waiting],
        "event_id": snapshot.event_id,
        "timestamp": snapshot.timestamp.isoformat(),
    }


_CLOSED = {kind: status.value for kind, status in CLOSING_EVENTS.items()}
"""How a graph run closed, by its closing event (``reset`` included)."""


def describe_graph_run(history: Sequence[AnyEvent]) -> dict[str, Any]:
    """What the CLI and the web UI show for a graph run, from its history alone.

    Returns ``{"graph", "workflow_id", "status", "step", "nodes", "edges", "mermaid",
    "ascii", "running", "waiting", "states"}``: ``status`` is ``running``, ``waiting`` or how
    the run closed; ``running`` the nodes whose tasks are in flight; ``waiting`` what a
    suspended run waits for (``id``, ``kind``, ``node``, ``task``, ``value``); ``mermaid``
    and ``ascii`` highlight both; ``states`` lists every recorded state (``step``,
    ``source``, ``state``, ``next``, ``waiting``, ``event_id``, ``timestamp``). A history
    that is not a graph run's gives ``{"graph": None}``.
    """
    found = _checkpoints(history)
    if not found:
        return {"graph": None}
    started = history[0]
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
    waiting_nodes = [w.node for w in waiting]
    description: dict[str, Any] = {
        "graph": last.graph,
        "workflow_id": started.workflow_id if isinstance(started, WorkflowStarted) else None,
        "status": status,
        "step": last.step,
        "running": running,
        "waiting": [waiting_json(w) for w in waiting],
        "states": [snapshot_json(s) for s in states_in(history, run_id="")],
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
        description["ascii"] = draw_ascii(shape, running=running, waiting=waiting_nodes)
    return description


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
