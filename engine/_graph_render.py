"""Drawing a graph: Mermaid for documents and the web UI, plain text for terminals.

Both work from a :class:`~engine._graph_records.GraphShape`, the nodes-and-edges record a run
keeps in its history, so a graph can be drawn from a stored run without its code (by the
CLI, the server and the web UI), with the nodes running or waiting highlighted.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from ._graph_records import EdgeShape, GraphShape

__all__ = ["draw_ascii", "to_mermaid"]

_START = "__start__"
_END = "__end__"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(
    shape: GraphShape,
    *,
    running: Collection[str] = (),
    waiting: Collection[str] = (),
) -> str:
    """A Mermaid flowchart: solid edges, dashed conditional ones with their labels; nodes in
    ``running`` / ``waiting`` get the classes ``running`` / ``waiting``."""
    lines = ["graph TD;"]
    ids = {node.name: _stable_id(node.name, i) for i, node in enumerate(shape.nodes)}
    for node in shape.nodes:
        ident, text = ids[node.name], _mermaid_text(node.name)
        if node.kind == "start":
            lines.append(f'\t{ident}(["{text}"]):::first')
        elif node.kind == "end":
            lines.append(f'\t{ident}(["{text}"]):::last')
        elif node.kind == "subgraph":
            lines.append(f'\t{ident}[["{text}"]]')
        else:
            lines.append(f'\t{ident}["{text}"]')
    for edge in shape.edges:
        source, target = ids[edge.source], ids[edge.target]
        if edge.conditional:
            label = f" {_mermaid_text(edge.label)} " if edge.label else ""
            arrow = f"-.{label}.->" if label else "-.->"
            lines.append(f"\t{source} {arrow} {target};")
        elif edge.join:
            lines.append(f"\t{source} ==> {target};")
        else:
            lines.append(f"\t{source} --> {target};")
    lines.append("\tclassDef default fill:#f2f0ff,line-height:1.2")
    lines.append("\tclassDef first fill-opacity:0")
    lines.append("\tclassDef last fill:#bfb6fc")
    lines.append("\tclassDef running fill:#ffe08a,stroke:#b8860b,stroke-width:2px")
    lines.append("\tclassDef waiting fill:#f8c4c4,stroke:#b22222,stroke-width:2px")
    for cls, names in (("running", running), ("waiting", waiting)):
        chosen = [ids[name] for name in names if name in ids]
        if chosen:
            lines.append(f"\tclass {','.join(chosen)} {cls};")
    return "\n".join(lines) + "\n"


def _stable_id(name: str, index: int) -> str:
    if name == _START:
        return "__start__"
    if name == _END:
        return "__end__"
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) and name not in ("end", "graph", "class"):
        return name
    return f"node{index}"


def _layers(shape: GraphShape) -> list[list[str]]:
    """Nodes by their distance from START (END last, unreached nodes after it)."""
    following: dict[str, list[str]] = {}
    for edge in shape.edges:
        following.setdefault(edge.source, []).append(edge.target)
    depth = {_START: 0}
    todo = [_START]
    while todo:
        current = todo.pop(0)
        for target in following.get(current, []):
            if target not in depth and target != _END:
                depth[target] = depth[current] + 1
                todo.append(target)
    order = [node.name for node in shape.nodes]
    rows: dict[int, list[str]] = {}
    for name in order:
        if name in depth:
            rows.setdefault(depth[name], []).append(name)
    layers = [rows[d] for d in sorted(rows)]
    stray = [n for n in order if n not in depth and n != _END]
    if stray:
        layers.append(stray)
    layers.append([_END])
    return layers


def _boxes(names: list[str], kinds: dict[str, str], marks: dict[str, str]) -> list[str]:
    """A row of boxes; a marked node's box has ``=`` borders, and the row says why."""

    def edge(name: str) -> tuple[str, str]:
        if kinds.get(name) in ("start", "end"):
            return "(", ")"
        if kinds.get(name) == "subgraph":
            return "[[", "]]"
        return "|", "|"

    tops, mids, bottoms = [], [], []
    for name in names:
        left, right = edge(name)
        inner = f"{left} {name} {right}"
        border = "+" + ("=" if name in marks else "-") * (len(inner) - 2) + "+"
        tops.append(border)
        mids.append(inner)
        bottoms.append(border)
    middle = "  ".join(mids)
    marked: dict[str, list[str]] = {}
    for name in names:
        if name in marks:
            marked.setdefault(marks[name], []).append(name)
    if marked:
        middle += "   <- " + "; ".join(f"{why}: {', '.join(who)}" for why, who in marked.items())
    return ["  ".join(tops), middle, "  ".join(bottoms)]


def _edge_text(edge: EdgeShape, back: bool) -> str:
    if edge.conditional:
        arrow = f"-.{edge.label}.->" if edge.label else "-.->"
    elif edge.join:
        arrow = "==>"
    else:
        arrow = "-->"
    return f"    {edge.source} {arrow} {edge.target}" + ("   (loops back)" if back else "")


def draw_ascii(
    shape: GraphShape,
    *,
    running: Collection[str] = (),
    waiting: Collection[str] = (),
) -> str:
    """The graph as plain ASCII text: one row of boxes per layer (distance from START), and
    under each row the edges leaving it (``-->`` edge, ``-.label.->`` conditional, ``==>``
    join; edges to an earlier row are marked as loops). Nodes in ``running`` / ``waiting``
    get ``=`` borders and their row ends with ``<- running: ...`` / ``<- waiting: ...``, so a
    terminal shows where a run is without colour."""
    kinds = {node.name: node.kind for node in shape.nodes}
    marks = {name: "running" for name in running if name in kinds}
    marks.update({name: "waiting" for name in waiting if name in kinds})
    layers = _layers(shape)
    row_of = {name: i for i, row in enumerate(layers) for name in row}
    out: list[str] = []
    for index, row in enumerate(layers):
        out.extend(_boxes(row, kinds, marks))
        leaving = [e for e in shape.edges if row_of.get(e.source) == index]
        for edge in leaving:
            out.append(_edge_text(edge, row_of.get(edge.target, 0) <= index))
    return "\n".join(out) + "\n"
