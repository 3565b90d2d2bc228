"""A compiled graph: a workflow type, its node activities, and the helpers to run it.

``compile()`` turns a :class:`~sdk.graph.StateGraph` into a :class:`CompiledGraph`, which is
at the same time

* a workflow (``workflow_definition(graph)`` works): ``client.start_workflow(graph, input,
  id=...)`` starts a run, queries and signals go through the ordinary handle;
* an app (``graph.workflows`` and ``graph.activities``): ``perdura worker --app
  mymodule:graph`` serves it, and ``open_worker(client, workflows=graph.workflows,
  activities=graph.activities)`` too. Sub-graphs' workflows and activities are included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from engine import WORKFLOW_ATTRIBUTE, Client, WorkflowDefinition, WorkflowHandle, signature_types
from engine._graph_records import (
    RESUME_SIGNAL,
    STATE_QUERY,
    EdgeShape,
    ForkOrigin,
    GraphShape,
    NodeShape,
    StartFrom,
    TaskRef,
)
from engine._graph_render import draw_ascii, to_mermaid
from engine._graph_view import StateSnapshot

from ._builder import END, START, Branch, Join, NodeSpec
from ._errors import GraphValidationError
from ._runner import GraphRun, node_activity
from ._state import StateSpec
from ._travel import graph_states

if TYPE_CHECKING:
    from sdk.activity import Activity

    from ._builder import StateGraph

__all__ = ["CompiledGraph"]


class CompiledGraph:
    """A validated graph, registered as the workflow type ``name`` (see module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        builder: StateGraph,
        interrupt_before: frozenset[str],
        interrupt_after: frozenset[str],
        recursion_limit: int,
        max_concurrency: int | None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.name = name
        self.spec: StateSpec = builder.spec
        self.nodes: dict[str, NodeSpec] = dict(builder.nodes)
        self.edges: dict[str, list[str]] = {}
        for source, target in builder.edges:
            targets = self.edges.setdefault(source, [])
            if target not in targets:
                targets.append(target)
        self.branches: dict[str, list[Branch]] = {}
        for branch in builder.branches:
            self.branches.setdefault(branch.source, []).append(branch)
        self.joins: list[Join] = list(builder.joins)
        self.joins_from: dict[str, list[Join]] = {}
        for join in self.joins:
            for source in dict.fromkeys(join.sources):
                self.joins_from.setdefault(source, []).append(join)
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.recursion_limit = recursion_limit
        self.max_concurrency = max_concurrency
        self.checkpoint_every = checkpoint_every
        self.shape = _shape(builder)
        self.node_activities: dict[str, Activity[Any, Any]] = {
            node.name: node_activity(name, node, self.spec)
            for node in self.nodes.values()
            if node.fn is not None
        }
        runner = type(f"GraphRun[{name}]", (GraphRun,), {"graph": self})
        param_names, param_types, _ = signature_types(GraphRun.run, skip_self=True)
        self.definition = WorkflowDefinition(
            name=name,
            run_fn=GraphRun.run,
            cls=runner,
            param_names=param_names,
            param_types=param_types,
            return_type=self.spec.result_type(),
            signals={RESUME_SIGNAL: GraphRun.on_resume},
            queries={STATE_QUERY: GraphRun.graph_state},
        )
        setattr(self, WORKFLOW_ATTRIBUTE, self.definition)
        workflows: dict[str, object] = {name: self}
        activities: dict[str, Activity[Any, Any]] = {
            a.name: a for a in self.node_activities.values()
        }
        for node in self.nodes.values():
            if node.subgraph is None:
                continue
            for item in node.subgraph.workflows:
                workflows.setdefault(_workflow_name(item), item)
            for act in node.subgraph.activities:
                activities.setdefault(act.name, act)
        if len({_workflow_name(w) for w in workflows.values()}) != len(workflows):
            raise GraphValidationError(f"graph {name!r} contains two different graphs named alike")
        self.workflows: tuple[object, ...] = tuple(workflows.values())
        """This graph's workflow and those of its sub-graphs: pass to a worker."""
        self.activities: tuple[Activity[Any, Any], ...] = tuple(activities.values())
        """Every node activity, sub-graphs' included: pass to a worker."""

    def __repr__(self) -> str:
        return f"<CompiledGraph {self.name!r}: {len(self.nodes)} nodes>"

    # -- running ------------------------------------------------------------------------------

    async def start(
        self,
        client: Client,
        input: Any = None,
        *,
        id: str,
        task_queue: str = "default",
        execution_timeout: float | timedelta | None = None,
        run_timeout: float | timedelta | None = None,
    ) -> WorkflowHandle:
        """Start a run of this graph from START with ``input`` (a partial state).

        Input keys the state does not have are refused here, before anything is written.
        """
        if input is not None:
            from ._runner import _as_update

            self.spec.check_keys(_as_update(input, "the input"), "the input")
        return await client.start_workflow(
            self,
            input,
            None,
            self._checkpoint_every(client),
            id=id,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
        )

    async def invoke(
        self, client: Client, input: Any = None, *, id: str, task_queue: str = "default"
    ) -> Any:
        """Start a run and wait for its final state."""
        handle = await self.start(client, input, id=id, task_queue=task_queue)
        return await handle.result()

    async def fork(
        self,
        client: Client,
        source: str | WorkflowHandle,
        at: StateSnapshot | int,
        *,
        id: str,
        update: Mapping[str, Any] | None = None,
        next: Sequence[str] | None = None,
        task_queue: str | None = None,
    ) -> WorkflowHandle:
        """Time travel: start a new run from a state recorded by another run of this graph.

        ``at`` is a :class:`StateSnapshot` from :func:`graph_states` or a step number (its
        newest snapshot). ``update`` edits the state through the merge strategies before the
        first super-step; ``next`` replaces the nodes to run first. The source run is not
        touched: forking only reads its history.
        """
        from ._runner import _as_update

        handle = source if isinstance(source, WorkflowHandle) else client.get_handle(source)
        if isinstance(at, StateSnapshot):
            snapshot = at
        else:
            snapshots = [s for s in await graph_states(handle) if s.step == at]
            if not snapshots:
                raise ValueError(f"run {handle.workflow_id!r} recorded no state at step {at!r}")
            snapshot = snapshots[-1]
        if snapshot.graph != self.name:
            raise ValueError(f"the snapshot is of graph {snapshot.graph!r}, not {self.name!r}")
        if next is None:
            tasks = list(snapshot.tasks)
        else:
            for node in next:
                if node not in self.nodes:
                    raise GraphValidationError(
                        f"fork: unknown node {node!r} in next; nodes: {', '.join(self.nodes)}"
                    )
            tasks = [TaskRef(id=f"{snapshot.step}:{node}", node=node) for node in next]
        edit = None
        if update is not None:
            edit = _as_update(update, "the fork's update")
            self.spec.check_keys(edit, "the fork's update")
        start = StartFrom(
            state=snapshot.state,
            next=tasks,
            step=snapshot.step,
            joins=snapshot.joins,
            update=edit,
            source="fork",
            forked_from=ForkOrigin(
                workflow_id=snapshot.workflow_id,
                run_id=snapshot.run_id,
                step=snapshot.step,
                event_id=snapshot.event_id,
            ),
        )
        info = await handle.run_info()
        return await client.start_workflow(
            self,
            None,
            start,
            self._checkpoint_every(client),
            id=id,
            task_queue=task_queue or info.task_queue,
        )

    def _checkpoint_every(self, client: Client) -> int:
        """The graph's own setting, else the client's configured default."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return client.config.checkpoint_every

    # -- drawing ------------------------------------------------------------------------------

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (conditional edges dashed, with their labels)."""
        return to_mermaid(self.shape)

    def draw_ascii(self) -> str:
        """The graph as plain text, one layer of nodes per row, edges listed under each."""
        return draw_ascii(self.shape)


def _workflow_name(item: object) -> str:
    definition = getattr(item, WORKFLOW_ATTRIBUTE)
    assert isinstance(definition, WorkflowDefinition)
    return definition.name


def _shape(builder: StateGraph) -> GraphShape:
    nodes = [NodeShape(name=START, kind="start")]
    for node in builder.nodes.values():
        if node.subgraph is not None:
            nodes.append(NodeShape(name=node.name, kind="subgraph", subgraph=node.subgraph.name))
        else:
            nodes.append(NodeShape(name=node.name))
    nodes.append(NodeShape(name=END, kind="end"))
    edges: list[EdgeShape] = []
    seen: set[tuple[str, str, bool, str | None]] = set()

    def add(edge: EdgeShape) -> None:
        key = (edge.source, edge.target, edge.conditional, edge.label)
        if key not in seen:
            seen.add(key)
            edges.append(edge)

    for source, target in builder.edges:
        add(EdgeShape(source=source, target=target))
    for join in builder.joins:
        for source in join.sources:
            add(EdgeShape(source=source, target=join.target, join=True))
    for branch in builder.branches:
        if branch.mapping is not None:
            for key, target in branch.mapping.items():
                label = None if key == target else str(key)
                add(EdgeShape(source=branch.source, target=target, conditional=True, label=label))
        elif branch.targets is not None:
            for target in branch.targets:
                add(EdgeShape(source=branch.source, target=target, conditional=True))
        else:
            for target in [*builder.nodes, END]:
                add(EdgeShape(source=branch.source, target=target, conditional=True, label="*"))
    for node in builder.nodes.values():
        for target in node.destinations:
            add(EdgeShape(source=node.name, target=target, conditional=True, label="goto"))
    return GraphShape(nodes=nodes, edges=edges)
