"""Time travel and human input for graph runs, through a workflow handle.

Reading a run's states needs no code: :func:`graph_states` reads the checkpoints the runner
recorded (``engine._graph_view`` does the reading, shared with the CLI, the server and the
web UI). :func:`resume` answers what a suspended run waits for; :func:`get_graph_state` asks
the live run.
"""

from __future__ import annotations

from typing import Any

from engine import WorkflowHandle
from engine._graph_records import RESUME_SIGNAL, STATE_QUERY, ResumeRequest
from engine._graph_view import StateSnapshot, read_graph_states

__all__ = ["get_graph_state", "graph_states", "resume"]


async def graph_states(handle: WorkflowHandle) -> list[StateSnapshot]:
    """Every state a graph run recorded, one (or more) per super-step, oldest first.

    Follows the run's continue-as-new chain back to its first run, so a long-running graph
    lists all its steps. Reads history only; works with or without the graph's code.
    """
    info = await handle.run_info()
    return await read_graph_states(handle.client.store, info.run_id)


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
