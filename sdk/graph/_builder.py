"""Building a graph: :class:`StateGraph`, its nodes and edges, and compile-time validation.

A graph is checked as a whole when it is compiled, never while it runs: unknown nodes in
edges, nodes no path from START reaches, nodes with no path to END and cycles that no
conditional edge can leave are reported with the node or edge at fault, before any run
exists. What can only be known at run time (a router returning a key its mapping lacks, an
update naming a key the state does not have) fails the run with an error naming the node.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from history import RetryPolicy

from .._durations import seconds
from ._errors import GraphValidationError
from ._state import KeyStrategy, StateSpec

if TYPE_CHECKING:
    from ._compiled import CompiledGraph

__all__ = ["END", "START", "Branch", "Command", "Join", "NodeSpec", "Send", "StateGraph"]

START: Final = "__start__"
"""The virtual node a run starts from: ``add_edge(START, "first")``."""
END: Final = "__end__"
"""The virtual node a branch finishes at: ``add_edge("last", END)``."""

_FORBIDDEN_IN_NAMES = (":", "/")


@dataclasses.dataclass(frozen=True)
class Send:
    """Run ``node`` once more in the next super-step with ``arg`` as its input (instead of
    the state): what a router returns, one per item, for a dynamic fan-out."""

    node: str
    arg: Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Command:
    """What a node may return instead of a plain update: an ``update`` and where to go
    next (``goto``: node names and/or :class:`Send`\\ s, on top of the node's edges)."""

    update: Mapping[str, Any] | None = None
    goto: str | Send | Sequence[str | Send] = ()

    def targets(self) -> list[str | Send]:
        if isinstance(self.goto, str | Send):
            return [self.goto]
        return list(self.goto)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """A node as added: a function run as an activity, or a compiled graph run as a child."""

    name: str
    fn: Callable[..., Any] | None
    subgraph: CompiledGraph | None
    retry_policy: RetryPolicy | None
    start_to_close_timeout: float | None
    schedule_to_close_timeout: float | None
    heartbeat_timeout: float | None
    task_queue: str | None
    destinations: tuple[str, ...]
    input: Callable[[Any], Any] | None
    output: Callable[[Any], Any] | None
    input_type: Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Branch:
    """A conditional edge: ``router(state)`` picks the next node(s) of ``source``."""

    source: str
    router: Callable[[Any], Any]
    mapping: dict[Hashable, str] | None
    targets: tuple[str, ...] | None
    """Every node the router may lead to, or ``None`` if that cannot be known."""

    @property
    def name(self) -> str:
        return getattr(self.router, "__name__", "router")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Join:
    """``add_edge([a, b], c)``: ``c`` runs once every source has finished."""

    sources: tuple[str, ...]
    target: str


class StateGraph:
    """A graph of nodes sharing one state, compiled into a durable perdura workflow.

    ``state_schema`` is a msgspec Struct, a TypedDict, or ``None`` for a plain dict state;
    ``strategies`` maps keys to merge strategies (:data:`~sdk.graph.append`, ...), on top
    of those declared with ``Annotated`` in the schema.
    """

    def __init__(
        self,
        state_schema: Any = None,
        *,
        strategies: Mapping[str, KeyStrategy] | None = None,
    ) -> None:
        self.spec = StateSpec.build(state_schema, strategies)
        self.nodes: dict[str, NodeSpec] = {}
        self.edges: list[tuple[str, str]] = []
        self.branches: list[Branch] = []
        self.joins: list[Join] = []

    # -- nodes --------------------------------------------------------------------------------

    def add_node(
        self,
        node: str | Callable[..., Any],
        action: Callable[..., Any] | CompiledGraph | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        schedule_to_close_timeout: float | timedelta | None = None,
        heartbeat_timeout: float | timedelta | None = None,
        task_queue: str | None = None,
        destinations: Iterable[str] = (),
        input: Callable[[Any], Any] | None = None,
        output: Callable[[Any], Any] | None = None,
    ) -> StateGraph:
        """Add a node: ``add_node("name", fn)`` or ``add_node(fn)`` (named after ``fn``).

        ``fn(state)`` (sync or ``async``) returns a partial update (a dict), ``None``, or a
        :class:`Command`; it runs as an activity with ``retry_policy``, ``timeout``
        (start-to-close), ``schedule_to_close_timeout`` and ``heartbeat_timeout``, on
        ``task_queue`` (default: the run's). A compiled graph as ``action`` runs as a child
        workflow (on ``task_queue``); ``input(state)`` shapes its input and
        ``output(child_state)`` the update it makes (default: the keys both states share).
        ``destinations`` declares where a ``Command(goto=...)`` may lead, for validation
        and drawing.
        """
        from ._compiled import CompiledGraph

        if callable(node) and not isinstance(node, str):
            if action is not None:
                raise TypeError("add_node(fn) takes no second action; use add_node(name, fn)")
            action, node = node, getattr(node, "__name__", "")
        name = node
        if not isinstance(name, str) or not name:
            raise GraphValidationError(f"node names must be non-empty strings, got {name!r}")
        if name in (START, END):
            raise GraphValidationError(f"{name!r} is reserved; choose another node name")
        bad = [c for c in _FORBIDDEN_IN_NAMES if c in name]
        if bad:
            raise GraphValidationError(
                f"node name {name!r} contains {bad[0]!r}; node names may not contain "
                "':' or '/' (they are part of task ids and child workflow ids)"
            )
        if name in self.nodes:
            raise GraphValidationError(f"node {name!r} is already in the graph")
        subgraph: CompiledGraph | None = None
        fn: Callable[..., Any] | None = None
        input_type: Any = Any
        if isinstance(action, CompiledGraph):
            subgraph = action
        elif callable(action):
            fn = action
            input_type = _check_node_function(name, fn)
        else:
            raise TypeError(
                f"node {name!r} needs a function of the state or a compiled graph, got {action!r}"
            )
        if subgraph is None and (input is not None or output is not None):
            raise TypeError(f"node {name!r}: input= and output= apply to sub-graph nodes only")
        self.nodes[name] = NodeSpec(
            name=name,
            fn=fn,
            subgraph=subgraph,
            retry_policy=retry_policy,
            start_to_close_timeout=seconds(timeout, "timeout"),
            schedule_to_close_timeout=seconds(
                schedule_to_close_timeout, "schedule_to_close_timeout"
            ),
            heartbeat_timeout=seconds(heartbeat_timeout, "heartbeat_timeout"),
            task_queue=task_queue,
            destinations=tuple(destinations),
            input=input,
            output=output,
            input_type=input_type,
        )
        return self

    # -- edges --------------------------------------------------------------------------------

    def add_edge(self, source: str | Sequence[str], target: str) -> StateGraph:
        """``add_edge(a, b)``: ``b`` runs in the super-step after ``a``. Several edges out of
        one node fan out; branches meeting at a node in the same super-step run it once.
        ``add_edge([a, b], c)`` is a join: ``c`` runs once both ``a`` and ``b`` finished,
        whichever super-steps they finished in."""
        if isinstance(source, str):
            if source == END:
                raise GraphValidationError("END has no outgoing edges")
            if target == START:
                raise GraphValidationError("no edge may lead to START")
            self.edges.append((source, target))
            return self
        sources = tuple(source)
        if not sources:
            raise GraphValidationError(f"a join into {target!r} needs at least one source")
        if START in sources or END in sources or target in (START, END):
            raise GraphValidationError(
                f"a join ({', '.join(sources)} -> {target}) cannot involve START or END"
            )
        self.joins.append(Join(sources=sources, target=target))
        return self

    def add_conditional_edges(
        self,
        source: str,
        router: Callable[[Any], Any],
        mapping: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> StateGraph:
        """After ``source``, ``router(state)`` picks what runs next.

        The router returns a key of ``mapping`` (or, without one, a node name or END), a
        :class:`Send`, or a list of these (a fan-out). It runs inside workflow code on every
        replay: it must be a quick, pure function of the state. ``mapping`` may be a dict of
        router results to node names, or a list of node names; without it the possible
        targets are read from a ``Literal[...]`` return annotation, if any.
        """
        if source == END:
            raise GraphValidationError("END has no outgoing edges")
        if not callable(router):
            raise TypeError(f"router of {source!r} must be a function of the state")
        table: dict[Hashable, str] | None
        if mapping is None:
            table = None
            targets = _literal_targets(router)
        elif isinstance(mapping, Mapping):
            table = dict(mapping)
            targets = tuple(dict.fromkeys(table.values()))
        elif isinstance(mapping, Sequence) and not isinstance(mapping, str):
            table = {name: name for name in mapping}
            targets = tuple(mapping)
        else:
            raise TypeError(f"mapping of {source!r} must be a dict or a list, got {mapping!r}")
        self.branches.append(Branch(source=source, router=router, mapping=table, targets=targets))
        return self

    def set_entry_point(self, node: str) -> StateGraph:
        return self.add_edge(START, node)

    def set_finish_point(self, node: str) -> StateGraph:
        return self.add_edge(node, END)

    # -- compiling ----------------------------------------------------------------------------

    def compile(
        self,
        *,
        name: str,
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
        recursion_limit: int = 25,
        max_concurrency: int | None = None,
        checkpoint_every: int | None = None,
    ) -> CompiledGraph:
        """Validate the graph and make it a workflow type called ``name``.

        ``name`` is what history records (the workflow type; node activities are
        ``<name>.<node>``): keep it stable once runs exist. ``interrupt_before`` /
        ``interrupt_after`` suspend the run before / after those nodes until it is resumed.
        ``recursion_limit`` bounds the super-steps of one run; ``max_concurrency`` the
        branches running at once. ``checkpoint_every`` records the state every N super-steps
        (default: the client's ``PerduraConfig.checkpoint_every``, 1 unless configured); the
        state at an interrupt and at the end is always recorded. The value a run uses is
        recorded with its input, so every worker replays it the same way.
        """
        from ._compiled import CompiledGraph

        if not isinstance(name, str) or not name or any(c in name for c in "/: "):
            raise GraphValidationError(
                f"graph name must be a non-empty string without '/', ':' or spaces, got {name!r}"
            )
        if not isinstance(recursion_limit, int) or recursion_limit < 1:
            raise GraphValidationError(
                f"recursion_limit must be a positive integer, got {recursion_limit!r}"
            )
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise GraphValidationError(
                f"max_concurrency must be a positive integer or None, got {max_concurrency!r}"
            )
        if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or checkpoint_every < 1
        ):
            raise GraphValidationError(
                f"checkpoint_every must be a positive integer or None, got {checkpoint_every!r}"
            )
        before = tuple(interrupt_before)
        after = tuple(interrupt_after)
        for option, names in (("interrupt_before", before), ("interrupt_after", after)):
            for node in names:
                if node not in self.nodes:
                    raise GraphValidationError(
                        f"{option} names unknown node {node!r}; nodes: {self._known()}"
                    )
        self._validate()
        return CompiledGraph(
            name=name,
            builder=self,
            interrupt_before=frozenset(before),
            interrupt_after=frozenset(after),
            recursion_limit=recursion_limit,
            max_concurrency=max_concurrency,
            checkpoint_every=checkpoint_every,
        )

    def _known(self) -> str:
        return ", ".join(self.nodes) or "(none)"

    def _check_node(self, node: str, where: str) -> None:
        if node not in self.nodes and node not in (START, END):
            raise GraphValidationError(f"{where}: unknown node {node!r}; nodes: {self._known()}")

    def successors(self) -> dict[str, set[str]]:
        """Every node each node may lead to (``"*"`` where a router may lead anywhere)."""
        out: dict[str, set[str]] = {name: set() for name in (START, *self.nodes)}
        for source, target in self.edges:
            out[source].add(target)
        for join in self.joins:
            for source in join.sources:
                out[source].add(join.target)
        for branch in self.branches:
            out[branch.source].update(branch.targets if branch.targets is not None else {"*"})
        for node in self.nodes.values():
            out[node.name].update(node.destinations)
        return out

    def _validate(self) -> None:
        if not self.nodes:
            raise GraphValidationError("the graph has no nodes; add_node() at least one")
        for source, target in self.edges:
            self._check_node(source, f"edge {source!r} -> {target!r}")
            self._check_node(target, f"edge {source!r} -> {target!r}")
        for join in self.joins:
            where = f"join {list(join.sources)} -> {join.target!r}"
            for node in (*join.sources, join.target):
                self._check_node(node, where)
        for branch in self.branches:
            where = f"conditional edge out of {branch.source!r} (router {branch.name})"
            self._check_node(branch.source, where)
            for target in branch.targets or ():
                self._check_node(target, where)
        for spec in self.nodes.values():
            for target in spec.destinations:
                self._check_node(target, f"destinations of node {spec.name!r}")

        successors = self.successors()
        if not successors[START]:
            raise GraphValidationError(
                "the graph has no entry point: add an edge from START (add_edge(START, node))"
            )
        reached = _reach(START, successors, self.nodes)
        unreachable = [name for name in self.nodes if name not in reached]
        if unreachable:
            raise GraphValidationError(
                f"node(s) {', '.join(map(repr, unreachable))} cannot be reached from START; "
                "add an edge into them or remove them"
            )
        reaches_end = _reaching_end(successors, self.nodes)
        stuck = [name for name in self.nodes if name not in reaches_end]
        if stuck:
            raise GraphValidationError(
                f"node(s) {', '.join(map(repr, stuck))} have no path to END: "
                f"{_stuck_hint(stuck[0], successors)}"
            )
        dynamic = {b.source for b in self.branches} | {
            n.name for n in self.nodes.values() if n.destinations
        }
        for component in _cycles(successors, self.nodes):
            if not component & dynamic:
                path = _cycle_path(component, successors)
                raise GraphValidationError(
                    f"the cycle {' -> '.join(path)} has no conditional exit: it would run "
                    "until the recursion limit; make one of its edges conditional "
                    "(add_conditional_edges) so the loop can end"
                )


def _check_node_function(name: str, fn: Callable[..., Any]) -> Any:
    """The node function's input annotation, after checking it takes the state."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return Any
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not positional or len(required) > 1:
        raise TypeError(
            f"node {name!r}: {getattr(fn, '__qualname__', fn)!r} must take exactly one "
            "argument, the state (or a Send's payload)"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return Any
    return hints.get(positional[0].name, Any)


def _literal_targets(router: Callable[..., Any]) -> tuple[str, ...] | None:
    try:
        hint = typing.get_type_hints(router).get("return")
    except Exception:
        return None
    if hint is None:
        return None
    found: list[str] = []

    def visit(tp: Any) -> bool:
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            found.extend(str(a) for a in typing.get_args(tp))
            return True
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            return all(visit(a) for a in typing.get_args(tp))
        if origin in (list, tuple, Sequence):
            return all(visit(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return False

    return tuple(dict.fromkeys(found)) if visit(hint) and found else None


def _expand(targets: set[str], nodes: Mapping[str, NodeSpec]) -> set[str]:
    if "*" in targets:
        return (targets - {"*"}) | set(nodes) | {END}
    return targets


def _reach(
    origin: str, successors: Mapping[str, set[str]], nodes: Mapping[str, NodeSpec]
) -> set[str]:
    seen = {origin}
    todo = [origin]
    while todo:
        for target in _expand(successors.get(todo.pop(), set()), nodes):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _reaching_end(successors: Mapping[str, set[str]], nodes: Mapping[str, NodeSpec]) -> set[str]:
    reverse: dict[str, set[str]] = {}
    for source, targets in successors.items():
        for target in _expand(targets, nodes):
            reverse.setdefault(target, set()).add(source)
    seen = {END}
    todo = [END]
    while todo:
        for source in reverse.get(todo.pop(), set()):
            if source not in seen:
                seen.add(source)
                todo.append(source)
    return seen


def _stuck_hint(node: str, successors: Mapping[str, set[str]]) -> str:
    if not successors.get(node):
        return f"{node!r} has no outgoing edge (add_edge({node!r}, END) if it is the last step)"
    return (
        f"every path out of {node!r} loops back without reaching END; add a conditional edge "
        "that can lead to END"
    )


def _cycles(successors: Mapping[str, set[str]], nodes: Mapping[str, NodeSpec]) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan's algorithm)."""
    graph = {n: [t for t in _expand(successors.get(n, set()), nodes) if t in nodes] for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(component)

    for v in graph:
        if v not in index:
            connect(v)
    return found


def _cycle_path(component: set[str], successors: Mapping[str, set[str]]) -> list[str]:
    start = min(component)
    path = [start]
    current = start
    while True:
        following = sorted(t for t in successors.get(current, set()) if t in component)
        nxt = next((t for t in following if t not in path), None)
        if nxt is None:
            back = next((t for t in following if t in path), start)
            path.append(back)
            return path
        path.append(nxt)
        current = nxt
