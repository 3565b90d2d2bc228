"""One store protocol, two implementations: every test here runs against both.

``store`` is a fresh SQLite store on a file in ``tmp_path`` and a fresh PostgreSQL store in a
schema of its own, created for the test and dropped after it, on the server named by
``$PERDURA_TEST_POSTGRES_URL`` (default: the local server every session and CI run has).
``other_store`` is a second store object on the same file or schema, as another worker
process would hold. Nothing is mocked; time is virtual (the store takes ``now`` from its
caller, so leases expire by passing a later ``now``, never by sleeping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conformance_support import Backend
from pg_support import postgres_schema

from history import SqliteStore, Store
from history.postgres import PostgresStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "perdura.db"
        yield Backend("sqlite", lambda: SqliteStore.open(path))
        return
    async with postgres_schema() as (url, schema):
        yield Backend("postgresql", lambda: PostgresStore.open(url, schema=schema))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()


@pytest.fixture
async def other_store(backend: Backend, store: Store) -> AsyncIterator[Store]:
    """A second store object on the same file or schema, as another worker would hold."""
    opened = await backend.open()
    yield opened
    await opened.close()
