"""Store URLs: how the CLI, the environment and user code name a store."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import StoreError
from ._sqlite import SqliteStore
from ._store import Durability, Store

__all__ = ["DEFAULT_STORE_URL", "STORE_URL_ENV", "open_store"]

STORE_URL_ENV = "PERDURA_STORE"
DEFAULT_STORE_URL = "sqlite:///perdura.db"


async def open_store(
    url: str | Path | None = None, *, durability: Durability = Durability.FULL
) -> Store:
    """Open the store named by ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    or a plain file path. ``None`` reads ``$PERDURA_STORE`` and falls back to ``perdura.db``.
    """
    if url is None:
        url = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    if isinstance(url, Path):
        return await SqliteStore.open(url, durability=durability)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise StoreError(
                f"bad store URL {url!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        return await SqliteStore.open(path[1:], durability=durability)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported store URL scheme {scheme!r} in {url!r}; use sqlite://")
    return await SqliteStore.open(url, durability=durability)
