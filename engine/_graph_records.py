"""What a graph run writes into history, and what its node activities exchange.

Everything here is a msgspec Struct in builtins-friendly form, because history must stay
readable without the graph's code. The records live in ``engine`` (``sdk.graph`` writes them,
imports point ``sdk -> engine``) so that the engine's readers, the CLI, the HTTP server and
the web UI, can recognise and draw a graph run from its stored events alone.

* :class:`NodeTask` is the argument of a node activity, :class:`NodeResult` its result.
* :class:`Checkpoint` is recorded (a side-effect marker) after every super-step and whenever
  the run suspends: the merged state, the tasks of the next super-step and what the run
  waits for. Its ``perdura_graph`` tag is how a reader recognises it among other markers.
* :class:`StartFrom` is the second argument of a graph run that does not start from
  ``START``: a fork (time travel) or the continuation of a run that continued as new.
* :class:`ResumeRequest` is the payload of the :data:`RESUME_SIGNAL` signal.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "CHECKPOINT_TAG",
    "RESUME_SIGNAL",
    "STATE_QUERY",
    "Checkpoint",
    "EdgeShape",
    "ForkOrigin",
    "Goto",
    "GraphShape",
    "InterruptRecord",
    "NodeResult",
    "NodeShape",
    "NodeTask",
    "ResumeRequest",
    "StartFrom",
    "TaskRef",
    "Waiting",
    "checkpoint_from",
]

CHECKPOINT_TAG = "checkpoint"
"""The ``perdura_graph`` tag of a :class:`Checkpoint` marker value."""
RESUME_SIGNAL = "__graph_resume"
"""The signal that answers what a suspended graph run waits for (``sdk.graph.resume``)."""
STATE_QUERY = "__graph_state"
"""The query that returns a graph run's step, state, next tasks and what it waits for."""


class TaskRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One task of a super-step. ``id`` is its stable identity, built from the step number,
    the node and (for a ``Send``) its position among the step's sends, never from a global
    counter: the same task gets the same id on every replay and in every fork."""

    id: str
    node: str
    send: bool = False
    arg: Any = None
    """The ``Send`` payload: the node's input instead of the state."""


class NodeTask(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The argument of a node activity."""

    graph: str
    step: int
    task: TaskRef
    state: dict[str, Any]
    resume: list[Any] = []
    """Answers to the node's ``interrupt()`` calls so far, in call order."""


class InterruptRecord(msgspec.Struct, frozen=True, kw_only=True):
    value: Any
    index: int


class Goto(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    node: str
    send: bool = False
    arg: Any = None


class NodeResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The result of a node activity: a partial update, where to go, or an interrupt."""

    update: dict[str, Any] | None = None
    goto: list[Goto] = []
    interrupt: InterruptRecord | None = None


class Waiting(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Something the run is suspended on until a resume signal answers it.

    ``kind`` is ``"before"`` / ``"after"`` (``interrupt_before`` / ``interrupt_after``) or
    ``"interrupt"`` (an ``interrupt(value)`` call inside the node). ``id`` is stable:
    ``<step>:<kind>:<task id>``.
    """

    id: str
    kind: str
    node: str
    task: str
    value: Any = None


class NodeShape(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    kind: str = "node"
    """``node``, ``subgraph``, ``start`` or ``end``."""
    subgraph: str | None = None


class EdgeShape(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    source: str
    target: str
    conditional: bool = False
    label: str | None = None
    join: bool = False
    """Part of a join (``add_edge([a, b], c)``): ``target`` waits for all its sources."""


class GraphShape(msgspec.Struct, frozen=True, kw_only=True):
    """Nodes and edges, recorded once per run so a reader can draw the graph without code."""

    nodes: list[NodeShape]
    edges: list[EdgeShape]


class ForkOrigin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    workflow_id: str
    run_id: str
    step: int
    event_id: int = 0


class Checkpoint(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="perdura_graph",
    tag=CHECKPOINT_TAG,
):
    """The state of a graph run at a super-step boundary (see the module docstring).

    ``source`` says why it was taken: ``input`` (the run's input merged), ``loop`` (a
    super-step completed), ``update`` (a resume carried a state edit), ``interrupt`` (a node
    interrupted mid-step: ``state`` is still the state *before* that step and ``next`` its
    tasks), ``fork`` (a run forked from another) or ``continue`` (continued as new).
    """

    graph: str
    step: int
    source: str
    state: dict[str, Any]
    next: list[TaskRef] = []
    waiting: list[Waiting] = []
    joins: dict[str, list[str]] = {}
    """Join edges part-way through: target -> sources finished so far."""
    shape: GraphShape | None = None
    forked_from: ForkOrigin | None = None


class StartFrom(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Start a graph run at a recorded state instead of at START (fork, continue-as-new)."""

    state: dict[str, Any]
    next: list[TaskRef]
    step: int = 0
    joins: dict[str, list[str]] = {}
    update: dict[str, Any] | None = None
    """An edit applied through the merge strategies before the first super-step."""
    source: str = "fork"
    forked_from: ForkOrigin | None = None


class ResumeRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The resume signal: ``value`` answers the interrupts waited on (all of them, or only
    ``interrupt_id``), ``update`` edits the state through the merge strategies."""

    value: Any = None
    update: dict[str, Any] | None = None
    interrupt_id: str | None = None


def checkpoint_from(value: Any) -> Checkpoint | None:
    """The checkpoint a decoded marker value holds, or ``None`` for any other marker."""
    if isinstance(value, dict) and value.get("perdura_graph") == CHECKPOINT_TAG:
        try:
            return msgspec.convert(value, Checkpoint, strict=False)
        except msgspec.ValidationError:
            return None
    return None
