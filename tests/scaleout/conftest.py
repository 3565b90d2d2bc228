"""Fixtures for moving data between stores: a fresh SQLite file and a fresh PostgreSQL schema
per test, both real, both dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_support import postgres_schema, schema_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'perdura.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with postgres_schema("scaleout") as (_, schema):
        yield schema_url(schema)
