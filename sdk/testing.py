"""Testing helpers for users' own workflows.

:class:`Replayer` replays recorded histories against the current workflow code — an exported
JSON file from production, a run in a store, or every run of a type — and raises
``NondeterminismError`` (recorded event and produced command side by side) when a code change
would break runs that are already in flight. Put it in CI next to a folder of exported
histories and a deploy can never strand a running workflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import Registry, WorkflowInstance, replay_history
from history import (
    AnyEvent,
    PayloadConverter,
    RunQuery,
    Store,
    read_history_file,
)

__all__ = ["ReplayResult", "Replayer"]


@dataclass(frozen=True)
class ReplayResult:
    run_id: str
    workflow_type: str
    events: int
    instance: WorkflowInstance
    """Where the code stands at the end of the history (completion, pending commands)."""


class Replayer:
    """Replays histories against the given workflow code; runs no activity, writes nothing."""

    def __init__(
        self, *, workflows: Iterable[object], converter: PayloadConverter | None = None
    ) -> None:
        self.registry = Registry(workflows)
        self.converter = converter or PayloadConverter()

    def replay(self, history: Sequence[AnyEvent], *, run_id: str = "replay") -> ReplayResult:
        instance = replay_history(self.registry, history, run_id=run_id, converter=self.converter)
        return ReplayResult(run_id, instance.workflow_type, len(history), instance)

    def replay_file(self, path: str | Path) -> ReplayResult:
        exported = read_history_file(path)
        return self.replay(exported.events, run_id=exported.run_id)

    async def replay_run(self, store: Store, run_id: str) -> ReplayResult:
        return self.replay(await store.read_history(run_id), run_id=run_id)

    async def replay_all(
        self, store: Store, *, workflow_type: str | None = None, page_size: int = 500
    ) -> list[ReplayResult]:
        """Replay every stored run (of ``workflow_type``, if given); stops at the first
        ``NondeterminismError``, which names the run."""
        results: list[ReplayResult] = []
        offset = 0
        while True:
            runs = await store.list_runs(
                RunQuery(workflow_type=workflow_type, limit=page_size, offset=offset)
            )
            for run in runs:
                results.append(await self.replay_run(store, run.run_id))
            if len(runs) < page_size:
                return results
            offset += page_size
