"""The perdura pytest plugin: fixtures for testing workflows (loaded through the ``pytest11``
entry point as soon as perdura is installed; nothing to add to ``conftest.py``).

Fixtures:

``workflow_environment``
    A factory of :class:`sdk.testing.WorkflowEnvironment` instances: a worker and a client
    on a store in the test's ``tmp_path`` (kept after a failure, to inspect with
    ``perdura history --store ...``), with time skipping::

        async def test_renewal(workflow_environment):
            async with workflow_environment(workflows=[renewal], activities=[charge]) as env:
                assert await env.execute_workflow(renewal, "acme") == "renewed"

Options:

``--perdura-export-histories=DIR``
    After each test that passed, write the history of every run its environments ran to
    ``DIR`` (one JSON file per run). Check the files in and replay them in CI with
    ``Replayer(workflows=[...]).replay_files(...)``: a change that would break runs already
    in flight then fails a test instead of a deploy.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from .testing import WorkflowEnvironment

__all__ = ["EnvironmentFactory", "pytest_addoption", "workflow_environment"]


class EnvironmentFactory(Protocol):
    def __call__(
        self,
        *,
        workflows: Iterable[object] = (),
        activities: Iterable[object] = (),
        **options: Any,
    ) -> AbstractAsyncContextManager[WorkflowEnvironment]:
        """``options``: those of :meth:`WorkflowEnvironment.start` (task_queue, start_time)
        and of :class:`engine.Worker` (activity_defaults, keep_alive …)."""
        ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perdura", "perdura workflow testing")
    group.addoption(
        "--perdura-export-histories",
        metavar="DIR",
        default=None,
        help="write the history of every run a workflow_environment ran to DIR (JSON files)",
    )


@pytest.fixture
def workflow_environment(request: pytest.FixtureRequest, tmp_path: Path) -> EnvironmentFactory:
    """``async with workflow_environment(workflows=[...], activities=[...]) as env:``."""
    export: str | None = request.config.getoption("perdura_export_histories")
    numbers = itertools.count(1)

    def open_environment(
        *,
        workflows: Iterable[object] = (),
        activities: Iterable[object] = (),
        **options: Any,
    ) -> AbstractAsyncContextManager[WorkflowEnvironment]:
        path = tmp_path / f"perdura-{next(numbers)}.db"
        return _environment(path, export, workflows, activities, options)

    return open_environment


@asynccontextmanager
async def _environment(
    path: Path,
    export: str | None,
    workflows: Iterable[object],
    activities: Iterable[object],
    options: dict[str, Any],
) -> AsyncIterator[WorkflowEnvironment]:
    from .testing import WorkflowEnvironment

    async with WorkflowEnvironment.start(
        workflows=workflows, activities=activities, path=path, **options
    ) as env:
        yield env
        # Only after a block that did not raise: a failing test's runs are not references.
        if export is not None:
            await env.export_histories(export)
