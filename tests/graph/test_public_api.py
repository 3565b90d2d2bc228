"""The graph API is one facade: ``sdk.graph.__all__`` is sorted and names real objects; its
read side (records, drawings, describe_graph_run) lives in the engine."""

from __future__ import annotations

import subprocess
import sys

from graph_support import ROOT

import engine
import engine._graph_render
import sdk.graph


def test_all_is_sorted_and_every_name_resolves() -> None:
    names = sdk.graph.__all__
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))
    for name in names:
        assert getattr(sdk.graph, name) is not None


def test_every_public_module_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(sdk.graph).items()
        if not name.startswith("_") and not type(value).__name__ == "module"
    }
    assert public == set(sdk.graph.__all__)


def test_the_engine_reads_graph_runs_without_importing_sdk() -> None:
    """Imports point ``sdk -> engine``: the CLI and the server describe graph runs with the
    engine alone, and ``sdk.graph`` re-exports the engine's reader rather than a copy."""
    code = (
        "import sys, engine, engine.cli, engine._graph_view; "
        "print(sorted(m for m in sys.modules if m == 'sdk' or m.startswith('sdk.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"
    assert sdk.graph.describe_graph_run is engine.describe_graph_run
    assert sdk.graph.to_mermaid is engine._graph_render.to_mermaid
