"""PostgreSQL for tests: the server every session and CI run has (``$PERDURA_TEST_POSTGRES_URL``,
default the local one), and a schema of its own for each test, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

POSTGRES_URL_ENV = "PERDURA_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_URL_ENV) or "postgresql://postgres@127.0.0.1:5432/test"


def schema_url(schema: str) -> str:
    """The store URL of ``schema`` on the test server."""
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}schema={schema}"


@asynccontextmanager
async def postgres_schema(prefix: str = "test") -> AsyncIterator[tuple[str, str]]:
    """``(url, schema)``: a schema name no other test uses, dropped (with everything in it)
    on exit. The store creates the schema itself when first opened."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield POSTGRES_URL, schema
    finally:
        await drop_schema(schema)


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
