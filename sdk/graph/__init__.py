"""Durable graphs: a StateGraph whose every run is an ordinary perdura workflow run.

Build a graph of nodes that share one state, compile it, and run it on any worker::

    from typing import Annotated, TypedDict
    from sdk.graph import END, START, StateGraph, append

    class State(TypedDict):
        text: str
        log: Annotated[list[str], append]

    def shout(state: State) -> dict:
        return {"text": state["text"].upper(), "log": ["shouted"]}

    builder = StateGraph(State)
    builder.add_node("shout", shout)
    builder.add_edge(START, "shout")
    builder.add_edge("shout", END)
    graph = builder.compile(name="shouter")

    async with open_worker(client, task_queue="q", workflows=graph.workflows,
                           activities=graph.activities):
        handle = await graph.start(client, {"text": "hi"}, id="s-1", task_queue="q")
        print(await handle.result())

Every node runs as an activity (retries, timeouts, heartbeats); the state after every
super-step is recorded in the run's history; interrupts suspend the run durably until
:func:`resume`; :func:`graph_states` and :meth:`CompiledGraph.fork` travel in time. See
docs/graphs.md.
"""

from engine import describe_graph_run as describe_graph_run
from engine._graph_records import RESUME_SIGNAL as RESUME_SIGNAL
from engine._graph_records import STATE_QUERY as STATE_QUERY
from engine._graph_records import GraphShape as GraphShape
from engine._graph_render import draw_ascii as draw_ascii
from engine._graph_render import to_mermaid as to_mermaid
from engine._graph_view import StateSnapshot as StateSnapshot

from ._builder import END as END
from ._builder import START as START
from ._builder import Command as Command
from ._builder import Send as Send
from ._builder import StateGraph as StateGraph
from ._compiled import CompiledGraph as CompiledGraph
from ._errors import GraphInterrupt as GraphInterrupt
from ._errors import GraphRecursionError as GraphRecursionError
from ._errors import GraphValidationError as GraphValidationError
from ._errors import InvalidUpdateError as InvalidUpdateError
from ._runner import NodeContext as NodeContext
from ._runner import current_node as current_node
from ._runner import interrupt as interrupt
from ._state import KeyStrategy as KeyStrategy
from ._state import Reducer as Reducer
from ._state import append as append
from ._state import merge as merge
from ._state import reducer as reducer
from ._state import replace as replace
from ._travel import get_graph_state as get_graph_state
from ._travel import graph_states as graph_states
from ._travel import resume as resume

__all__ = [
    "END",
    "RESUME_SIGNAL",
    "START",
    "STATE_QUERY",
    "Command",
    "CompiledGraph",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphShape",
    "GraphValidationError",
    "InvalidUpdateError",
    "KeyStrategy",
    "NodeContext",
    "Reducer",
    "Send",
    "StateGraph",
    "StateSnapshot",
    "append",
    "current_node",
    "describe_graph_run",
    "draw_ascii",
    "get_graph_state",
    "graph_states",
    "interrupt",
    "merge",
    "reducer",
    "replace",
    "resume",
    "to_mermaid",
]
