"""Running a graph: the generic runner workflow and the activity behind every node.

The runner is ordinary perdura workflow code (replayed from history like any other), so a
graph run is an ordinary run. It works in super-steps, as Pregel and LangGraph do: the tasks
of one step run concurrently against the state as it was when the step began; their partial
updates are merged in task order (a fixed order, so replay merges identically) through the
keys' strategies; then the edges out of the finished nodes pick the next step's tasks.

What makes it durable:

* every node is an activity (its own retry policy, timeouts, heartbeat) whose argument
  carries the task's stable id, so the result recorded for a branch is returned to that same
  branch on replay and never recomputed: in a parallel step only the branches without a
  recorded result run again after a crash;
* after every step the merged state, the next tasks and what the run waits for are recorded
  as a :class:`~engine._graph_records.Checkpoint` marker: time travel and the UI read states
  from history without the code, and a fork starts from one;
* an interrupt records a checkpoint listing what it waits for and then waits on
  ``workflow.wait_condition`` for the resume signal: no worker holds a suspended run.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from engine._graph_records import (
    RESUME_SIGNAL,
    STATE_QUERY,
    Checkpoint,
    Goto,
    InterruptRecord,
    NodeResult,
    NodeTask,
    ResumeRequest,
    StartFrom,
    TaskRef,
    Waiting,
)

from .. import activity, workflow
from ._builder import END, START, Command, NodeSpec, Send
from ._errors import GraphInterrupt, GraphRecursionError, InvalidUpdateError
from ._state import StateSpec

if TYPE_CHECKING:
    from ._compiled import CompiledGraph

__all__ = [
    "RESUME_SIGNAL",
    "STATE_QUERY",
    "GraphRun",
    "NodeContext",
    "current_node",
    "interrupt",
    "node_activity",
]

# -- inside a node ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeContext:
    """Where a node runs: ``current_node()`` inside a node function."""

    graph: str
    node: str
    task_id: str
    """Stable across retries, recoveries and replays: ``<step>:<node>[:<send index>]``."""
    step: int


@dataclasses.dataclass
class _Scope:
    context: NodeContext
    resume: list[Any]
    calls: int = 0


_scope: contextvars.ContextVar[_Scope] = contextvars.ContextVar("perdura_graph_node")


def current_node() -> NodeContext:
    """The graph, node, task id and step of the node running now."""
    scope = _scope.get(None)
    if scope is None:
        raise RuntimeError("current_node() can only be called inside a graph node")
    return scope.context


def interrupt(value: Any = None) -> Any:
    """Suspend the graph run until a human answers, and return the answer.

    The first time a node reaches ``interrupt(value)`` the run records ``value`` as what it
    waits for and suspends durably; :func:`resume` answers it and the node runs again from
    its beginning, this time getting the answer from this call. A node may call it several
    times (each answered in turn), so the code before an ``interrupt`` must be safe to repeat.
    """
    scope = _scope.get(None)
    if scope is None:
        raise RuntimeError("interrupt() can only be called inside a graph node")
    index = scope.calls
    scope.calls += 1
    if index < len(scope.resume):
        return scope.resume[index]
    raise GraphInterrupt(value, index)


def node_activity(graph_name: str, node: NodeSpec, spec: StateSpec) -> activity.Activity[Any, Any]:
    """The activity that runs ``node``'s function on one task (``<graph>.<node>``)."""
    fn = node.fn
    assert fn is not None
    input_type = node.input_type

    def enter(task: NodeTask) -> tuple[_Scope, Any]:
        context = NodeContext(
            graph=task.graph, node=task.task.node, task_id=task.task.id, step=task.step
        )
        if task.task.send:
            value = task.task.arg
            if input_type is not Any and input_type is not None:
                value = msgspec.convert(value, input_type, strict=False)
        else:
            value = spec.typed(task.state)
        return _Scope(context, list(task.resume)), value

    def finish(output: Any) -> NodeResult:
        return _node_result(output, node.name, spec)

    if inspect.iscoroutinefunction(fn):
        async_fn: Callable[[Any], Awaitable[Any]] = fn

        async def run_async_node(task: NodeTask) -> NodeResult:
            scope, value = enter(task)
            token = _scope.set(scope)
            try:
                output = await async_fn(value)
            except GraphInterrupt as exc:
                return _interrupted(exc)
            finally:
                _scope.reset(token)
            return finish(output)

        runner: Callable[[NodeTask], Any] = run_async_node
    else:

        def run_node(task: NodeTask) -> NodeResult:
            scope, value = enter(task)
            token = _scope.set(scope)
            try:
                output = fn(value)
            except GraphInterrupt as exc:
                return _interrupted(exc)
            finally:
                _scope.reset(token)
            return finish(output)

        runner = run_node
    runner.__qualname__ = runner.__name__ = f"{graph_name}.{node.name}"
    decorated: activity.Activity[Any, Any] = activity.defn(
        name=f"{graph_name}.{node.name}",
        task_queue=node.task_queue,
        retry_policy=node.retry_policy,
        start_to_close_timeout=node.start_to_close_timeout,
        schedule_to_close_timeout=node.schedule_to_close_timeout,
        heartbeat_timeout=node.heartbeat_timeout,
    )(runner)
    return decorated


def _interrupted(exc: GraphInterrupt) -> NodeResult:
    return NodeResult(
        interrupt=InterruptRecord(value=msgspec.to_builtins(exc.value), index=exc.index)
    )


def _node_result(output: Any, node: str, spec: StateSpec) -> NodeResult:
    goto: list[Goto] = []
    if isinstance(output, Command):
        for target in output.targets():
            if isinstance(target, Send):
                goto.append(Goto(node=target.node, send=True, arg=msgspec.to_builtins(target.arg)))
            elif isinstance(target, str):
                goto.append(Goto(node=target))
            else:
                raise InvalidUpdateError(
                    f"node {node!r} returned Command(goto=...) with {target!r}; "
                    "use node names or Send objects"
                )
        output = output.update
    if output is None:
        return NodeResult(goto=goto)
    if not isinstance(output, Mapping):
        raise InvalidUpdateError(
            f"node {node!r} returned {type(output).__name__}; a node returns a dict of the state "
            "keys it updates, None, or a Command"
        )
    update = {str(k) if not isinstance(k, str) else k: v for k, v in output.items()}
    spec.check_keys(update, f"node {node!r}")
    return NodeResult(update=msgspec.to_builtins(update), goto=goto)


# -- the runner workflow ---------------------------------------------------------------------


class GraphRun:
    """The workflow every compiled graph registers (as a subclass naming its graph)."""

    graph: ClassVar[CompiledGraph]

    def __init__(self) -> None:
        self.step = 0
        self.state: dict[str, Any] = {}
        self.next: list[TaskRef] = []
        self.joins: dict[str, list[str]] = {}
        self.waiting: list[Waiting] = []
        self.running: list[str] = []
        self.resumes: list[ResumeRequest] = []
        self.status = "running"

    # -- signal and query ----------------------------------------------------------------------

    def on_resume(self, request: ResumeRequest) -> None:
        self.resumes.append(request)

    def graph_state(self) -> dict[str, Any]:
        return {
            "graph": self.graph.name,
            "status": self.status,
            "step": self.step,
            "state": self.state,
            "next": [task.node for task in self.next],
            "tasks": [task.id for task in self.next],
            "running": list(self.running),
            "waiting": [msgspec.to_builtins(w) for w in self.waiting],
        }

    # -- the run -------------------------------------------------------------------------------

    async def run(
        self, input: Any = None, start: StartFrom | None = None, checkpoint_every: int = 1
    ) -> Any:
        graph = self.graph
        self._every = max(1, checkpoint_every)
        spec = graph.spec
        self._pending_checkpoints: list[asyncio.Future[Any]] = []
        self._semaphore = (
            asyncio.Semaphore(graph.max_concurrency) if graph.max_concurrency else None
        )
        if start is None:
            state = spec.initial()
            if input is not None:
                state = spec.apply(state, [("the input", _as_update(input, "the input"))])
            spec.check_complete(state, "the input")
            self.state = state
            self.next, self.joins = self._successors([START], [NodeResult()], {})
            self._checkpoint("input", shape=True)
        else:
            self.state = dict(start.state)
            self.step = start.step
            self.next = list(start.next)
            self.joins = {k: list(v) for k, v in start.joins.items()}
            for task in self.next:
                if task.node not in graph.nodes:
                    raise InvalidUpdateError(
                        f"cannot start at task {task.id!r}: graph {graph.name!r} has no node "
                        f"{task.node!r}"
                    )
            if start.update:
                update = _as_update(start.update, f"the {start.source}'s update")
                self.state = spec.apply(self.state, [(f"the {start.source}'s update", update)])
            self._checkpoint(start.source, shape=True, forked_from=start.forked_from)

        while self.next:
            if self.step >= graph.recursion_limit:
                await self._flush()
                raise GraphRecursionError(
                    f"graph {graph.name!r} reached its recursion limit of "
                    f"{graph.recursion_limit} super-steps without reaching END (next: "
                    f"{', '.join(t.node for t in self.next)}); raise it with "
                    "compile(recursion_limit=...) or check the loop's exit condition"
                )
            if workflow.info().continue_as_new_suggested:
                await self._flush()
                workflow.continue_as_new(
                    None,
                    StartFrom(
                        state=self.state,
                        next=self.next,
                        step=self.step,
                        joins=self.joins,
                        source="continue",
                    ),
                    checkpoint_every,
                )
            tasks = self.next
            before = [t for t in tasks if t.node in graph.interrupt_before]
            if before:
                _, updated = await self._suspend(
                    [
                        Waiting(
                            id=f"{self.step}:before:{t.id}", kind="before", node=t.node, task=t.id
                        )
                        for t in before
                    ]
                )
                if updated:
                    self._checkpoint("update")
            results = await self._run_step(tasks)
            previous_joins = self.joins
            updates = [
                (f"node {task.node!r} (task {task.id})", result.update)
                for task, result in zip(tasks, results, strict=True)
                if result.update
            ]
            self.state = spec.apply(self.state, updates)
            self.step += 1
            finished = [task.node for task in tasks]
            self.next, self.joins = self._successors(finished, results, previous_joins)
            if self.step % self._every == 0 or not self.next:
                self._checkpoint("loop")
            after = [t for t in tasks if t.node in graph.interrupt_after]
            if after:
                _, updated = await self._suspend(
                    [
                        Waiting(
                            id=f"{self.step}:after:{t.id}", kind="after", node=t.node, task=t.id
                        )
                        for t in after
                    ]
                )
                if updated:
                    self.next, self.joins = self._successors(finished, results, previous_joins)
                    self._checkpoint("update")
        self.status = "completed"
        await self._flush()
        return self.state

    async def _run_step(self, tasks: list[TaskRef]) -> list[NodeResult]:
        """Run one super-step's tasks; suspend while any of them is interrupted."""
        results: dict[str, NodeResult] = {}
        answers: dict[str, list[Any]] = {}
        todo = tasks
        while todo:
            outcomes = await asyncio.gather(
                *(self._run_task(task, answers.get(task.id, [])) for task in todo)
            )
            for task, outcome in zip(todo, outcomes, strict=True):
                results[task.id] = outcome
            interrupted = [t for t in todo if results[t.id].interrupt is not None]
            if not interrupted:
                break
            waits: list[Waiting] = []
            for task in interrupted:
                record = results[task.id].interrupt
                assert record is not None
                waits.append(
                    Waiting(
                        id=f"{self.step}:interrupt:{task.id}:{record.index}",
                        kind="interrupt",
                        node=task.node,
                        task=task.id,
                        value=record.value,
                    )
                )
            given, _ = await self._suspend(waits, source="interrupt")
            for task, wait in zip(interrupted, waits, strict=True):
                answers[task.id] = [*answers.get(task.id, []), given[wait.id]]
            todo = interrupted
        return [results[task.id] for task in tasks]

    async def _run_task(self, task: TaskRef, resume: list[Any]) -> NodeResult:
        if self._semaphore is None:
            return await self._execute(task, resume)
        async with self._semaphore:
            return await self._execute(task, resume)

    async def _execute(self, task: TaskRef, resume: list[Any]) -> NodeResult:
        graph = self.graph
        node = graph.nodes[task.node]
        self.running.append(task.id)
        try:
            if node.subgraph is not None:
                return await self._run_subgraph(node, task)
            argument = NodeTask(
                graph=graph.name,
                step=self.step,
                task=task,
                state={} if task.send else self.state,
                resume=resume,
            )
            result: NodeResult = await workflow.execute_activity(
                graph.node_activities[task.node], argument
            )
            return result
        finally:
            self.running.remove(task.id)

    async def _run_subgraph(self, node: NodeSpec, task: TaskRef) -> NodeResult:
        sub = node.subgraph
        assert sub is not None
        spec = self.graph.spec
        if task.send:
            child_input = task.arg
        elif node.input is not None:
            child_input = msgspec.to_builtins(node.input(spec.typed(self.state)))
        else:
            keys = sub.spec.keys
            child_input = {k: v for k, v in self.state.items() if keys is None or k in keys}
        result = await workflow.execute_child_workflow(
            sub.definition.name,
            child_input,
            None,
            sub.checkpoint_every or self._every,
            id=f"{workflow.info().workflow_id}/{task.id}",
            task_queue=node.task_queue,
        )
        child_state = msgspec.to_builtins(result)
        if node.output is not None:
            update = _as_update(
                node.output(sub.spec.typed(child_state)), f"output of sub-graph node {node.name!r}"
            )
        else:
            keys = spec.keys
            update = {k: v for k, v in child_state.items() if keys is None or k in keys}
        return NodeResult(update=update)

    def _successors(
        self, finished: list[str], results: list[NodeResult], joins: dict[str, list[str]]
    ) -> tuple[list[TaskRef], dict[str, list[str]]]:
        """The next super-step's tasks after ``finished`` nodes (in task order) ran."""
        graph = self.graph
        pulled: set[str] = set()
        sends: list[tuple[str, Any]] = []
        progress = {target: list(sources) for target, sources in joins.items()}
        view: list[Any] = []

        def typed_state() -> Any:
            if not view:
                view.append(graph.spec.typed(self.state))
            return view[0]

        def add(target: str | Send, where: str) -> None:
            if isinstance(target, Send):
                if target.node not in graph.nodes:
                    raise InvalidUpdateError(f"{where} sent to unknown node {target.node!r}")
                sends.append((target.node, msgspec.to_builtins(target.arg)))
            elif target == END:
                return
            elif target in graph.nodes:
                pulled.add(target)
            else:
                raise InvalidUpdateError(
                    f"{where} leads to unknown node {target!r}; nodes: {', '.join(graph.nodes)}"
                )

        for name, result in zip(finished, results, strict=True):
            for target in graph.edges.get(name, ()):
                add(target, f"edge out of {name!r}")
            for branch in graph.branches.get(name, ()):
                where = f"router {branch.name} of {name!r}"
                chosen = branch.router(typed_state())
                for item in chosen if isinstance(chosen, list | tuple) else [chosen]:
                    if isinstance(item, Send) or branch.mapping is None:
                        add(item, where)
                    elif item in branch.mapping:
                        add(branch.mapping[item], where)
                    else:
                        raise InvalidUpdateError(
                            f"{where} returned {item!r}, which its mapping does not have "
                            f"(keys: {', '.join(map(repr, branch.mapping))})"
                        )
            for goto in result.goto:
                add(
                    Send(goto.node, goto.arg) if goto.send else goto.node,
                    f"Command(goto=...) of {name!r}",
                )
            for join in graph.joins_from.get(name, ()):
                seen = progress.setdefault(join.target, [])
                if name not in seen:
                    seen.append(name)
                if set(join.sources) <= set(seen):
                    del progress[join.target]
                    pulled.add(join.target)
        order = [n for n in graph.nodes if n in pulled]
        tasks = [TaskRef(id=f"{self.step}:{n}", node=n) for n in order]
        tasks += [
            TaskRef(id=f"{self.step}:{n}:{i}", node=n, send=True, arg=arg)
            for i, (n, arg) in enumerate(sends)
        ]
        return tasks, progress

    async def _suspend(
        self, waits: list[Waiting], *, source: str = "loop"
    ) -> tuple[dict[str, Any], bool]:
        """Record what the run waits for, then wait for resume signals answering all of it.

        Returns the answers by waiting id, and whether a resume edited the state.
        """
        self.waiting = waits
        self.status = "waiting"
        self._checkpoint(source if source == "interrupt" else "wait")
        await self._flush()
        pending = [w.id for w in waits]
        given: dict[str, Any] = {}
        updated = False
        while pending:
            await workflow.wait_condition(lambda: bool(self.resumes))
            request = self.resumes.pop(0)
            if request.interrupt_id is not None and request.interrupt_id not in pending:
                workflow.logger.warning(
                    "resume for an interrupt the run does not wait for was ignored",
                    interrupt_id=request.interrupt_id,
                    waiting=pending,
                )
                continue
            answered = [request.interrupt_id] if request.interrupt_id else list(pending)
            for wait_id in answered:
                given[wait_id] = request.value
                pending.remove(wait_id)
            if request.update:
                update = _as_update(request.update, "the resume's update")
                self.state = self.graph.spec.apply(self.state, [("the resume's update", update)])
                updated = True
        self.waiting = []
        self.status = "running"
        return given, updated

    def _checkpoint(self, source: str, *, shape: bool = False, forked_from: Any = None) -> None:
        """Record the state now; not awaited, so it is written with the step's next events
        instead of costing a write of its own (awaited before the run suspends or ends)."""
        record = Checkpoint(
            graph=self.graph.name,
            step=self.step,
            source=source,
            state=self.state,
            next=self.next,
            waiting=self.waiting,
            joins=self.joins,
            shape=self.graph.shape if shape else None,
            forked_from=forked_from,
        )
        value = msgspec.to_builtins(record)
        self._pending_checkpoints.append(asyncio.ensure_future(workflow.side_effect(lambda: value)))

    async def _flush(self) -> None:
        pending, self._pending_checkpoints = self._pending_checkpoints, []
        if pending:
            await asyncio.gather(*pending)


def _as_update(value: Any, source: str) -> dict[str, Any]:
    if isinstance(value, msgspec.Struct) or dataclasses.is_dataclass(value):
        value = msgspec.to_builtins(value)
    if not isinstance(value, Mapping):
        raise InvalidUpdateError(
            f"{source} must be a dict of state keys (or a Struct), got {type(value).__name__}"
        )
    builtins: dict[str, Any] = msgspec.to_builtins(dict(value))
    return builtins
