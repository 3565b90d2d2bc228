"""``perdura graph`` and the graph section of ``perdura describe``: a graph run drawn and
explained from its history alone (no ``--app`` needed).

Both read what ``engine._graph_view.describe_graph_run`` reads: the checkpoint markers a
graph run records after every super-step. A run that recorded none is not a graph run:
``describe`` then shows no graph section and ``graph`` says so and exits 1.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from history import RunInfo

from ._cli_base import EXIT_OK, CliError, open_cli_store, resolve_run
from ._cli_output import Cell, Output, utc_time
from ._graph_view import StateSnapshot, describe_graph_run, read_graph_states, snapshot_json
from ._timeline import Segment

__all__ = ["cmd_graph", "graph_json", "print_graph_section"]

VALUE_WIDTH = 200
"""How much of a waited-for value or a state ``describe`` / ``graph --states`` print."""
_STATUS_STYLE = {"running": "run", "waiting": "warn", "completed": "ok", "failed": "fail"}


def graph_json(history_description: dict[str, Any]) -> dict[str, Any] | None:
    """``describe --json``'s ``graph`` member: the description, or ``None`` for a run that is
    not a graph run."""
    return history_description if history_description.get("graph") is not None else None


def print_graph_section(out: Output, description: dict[str, Any]) -> None:
    """The ``graph`` section of ``describe``: name, status, step, running nodes, what the run
    waits for, and the drawing with those nodes marked."""
    out.line()
    out.styled("graph", "head")
    out.fields(_graph_fields(description))
    drawing = description.get("ascii")
    if drawing:
        out.line()
        out.segments(_drawing(drawing))


def _graph_fields(description: dict[str, Any]) -> list[tuple[str, Cell]]:
    status: str = description["status"]
    states: list[dict[str, Any]] = description["states"]
    step = str(description["step"])
    upcoming = states[-1]["next"] if states else []
    if upcoming and status in ("running", "waiting"):
        step += f" (next: {', '.join(upcoming)})"
    pairs: list[tuple[str, Cell]] = [
        ("name", description["graph"]),
        ("status", (status, _STATUS_STYLE.get(status, "warn"))),
        ("step", step),
    ]
    if description["running"]:
        pairs.append(("running", (", ".join(description["running"]), "run")))
    for wait in description["waiting"]:
        text = f"{wait['node']} ({wait['kind']}, id {wait['id']})"
        if wait["value"] is not None:
            text += f": {compact_json(wait['value'])}"
        pairs.append(("waits for", (text, "warn")))
    return pairs


def _drawing(ascii: str) -> list[list[Segment]]:
    """The ASCII drawing, the rows of marked nodes coloured on a terminal."""
    lines: list[list[Segment]] = []
    for line in ascii.splitlines():
        style = "warn" if "<- waiting" in line else "run" if "<- running" in line else ""
        lines.append([(line, style)])
    return lines


def compact_json(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value as one line of JSON, cut to ``width`` characters."""
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= width else text[: width - 3] + "..."


async def cmd_graph(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, args.id)
        history = await store.read_history(info.run_id)
        description = describe_graph_run(history)
        if description["graph"] is None:
            raise CliError(
                f"workflow {info.workflow_id!r} (run {info.run_id}) is not a graph run: its "
                "history has no graph checkpoint"
            )
        if args.states:
            snapshots = await read_graph_states(store, info.run_id)
    if args.states:
        _print_states(out, args.json, snapshots)
    elif args.mermaid:
        if args.json:
            out.json({"graph": description["graph"], "mermaid": description["mermaid"]})
        else:
            out.stream.write(description["mermaid"] or "")
    elif args.json:
        out.json(description)
    else:
        _print_drawing(out, info, description)
    return EXIT_OK


def _print_drawing(out: Output, info: RunInfo, description: dict[str, Any]) -> None:
    out.fields(
        [("workflow id", info.workflow_id), ("run id", info.run_id), *_graph_fields(description)]
    )
    out.line()
    out.segments(_drawing(description["ascii"] or ""))


def _print_states(out: Output, as_json: bool, snapshots: list[StateSnapshot]) -> None:
    if as_json:
        out.json([{"run_id": s.run_id, **snapshot_json(s)} for s in snapshots])
        return
    several_runs = len({s.run_id for s in snapshots}) > 1
    headers = ["STEP", "SOURCE", "NEXT", "WAITING", "EVENT", "TIME (UTC)"]
    if several_runs:
        headers.append("RUN ID")
    headers.append("STATE")
    rows: list[list[Cell]] = []
    for snapshot in snapshots:
        waiting = ", ".join(w.node for w in snapshot.waiting)
        row: list[Cell] = [
            str(snapshot.step),
            snapshot.source,
            ", ".join(snapshot.next) or "-",
            (waiting, "warn") if waiting else "-",
            str(snapshot.event_id),
            utc_time(snapshot.timestamp),
        ]
        if several_runs:
            row.append(snapshot.run_id)
        row.append(compact_json(snapshot.state))
        rows.append(row)
    out.table(headers, rows)
