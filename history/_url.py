"""Store URLs: how the CLI, the environment and user code name a store.

``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or a plain file path open the
embedded SQLite store (the default); ``postgresql://user:password@host:port/database`` (or
``postgres://``) opens the PostgreSQL store, with ``?schema=NAME`` to choose the schema that
holds its tables and ``?pool_size=N`` to bound its connections.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import StoreError
from ._sqlite import SqliteStore
from ._store import Durability, Store

__all__ = ["DEFAULT_STORE_URL", "STORE_URL_ENV", "open_store", "store_kind"]

STORE_URL_ENV = "PERDURA_STORE"
DEFAULT_STORE_URL = "sqlite:///perdura.db"

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def store_kind(url: str | Path) -> str:
    """``"sqlite"`` or ``"postgresql"``: which store a URL opens (``StoreError`` if none)."""
    if isinstance(url, Path):
        return "sqlite"
    if url.startswith(_POSTGRES_SCHEMES):
        return "postgresql"
    if url.startswith("sqlite://") or "://" not in url:
        return "sqlite"
    from ._postgres import redact_url

    scheme = url.split("://", 1)[0]
    raise StoreError(
        f"unsupported store URL scheme {scheme!r} in {redact_url(url)}; "
        "use sqlite:///path.db or postgresql://user@host/database"
    )


async def open_store(
    url: str | Path | None = None, *, durability: Durability = Durability.FULL
) -> Store:
    """Open the store named by ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    a plain file path, or ``postgresql://…``. ``None`` reads ``$PERDURA_STORE`` and falls back
    to ``perdura.db``. ``durability`` applies to SQLite (PostgreSQL follows the server's
    ``synchronous_commit``).
    """
    if url is None:
        url = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    if isinstance(url, Path):
        return await SqliteStore.open(url, durability=durability)
    if store_kind(url) == "postgresql":
        # Imported here: a SQLite-only program never loads the PostgreSQL driver.
        from ._postgres import PostgresStore

        return await PostgresStore.open(url)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise StoreError(
                f"bad store URL {url!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        return await SqliteStore.open(path[1:], durability=durability)
    return await SqliteStore.open(url, durability=durability)
