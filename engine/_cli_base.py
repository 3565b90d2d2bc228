"""What every ``perdura`` command shares: exit codes, the error it reports, the store it
opens and how an ``ID`` on the command line becomes a run.

The exit codes and their meaning are documented in ``engine/cli.py``'s module docstring and
``docs/cli.md``; they are constants here so that each command says which one it means.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from history import (
    DEFAULT_STORE_URL,
    STORE_URL_ENV,
    Durability,
    PerduraError,
    RunInfo,
    RunNotFoundError,
    Store,
    open_store,
)

from ._cli_output import Output
from ._client import Client, WorkflowHandle

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_STILL_RUNNING",
    "EXIT_USAGE",
    "CliError",
    "Handler",
    "open_cli_store",
    "resolve_handle",
    "resolve_run",
    "sqlite_file",
    "store_url",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_RUN_FAILED: Final = 3
EXIT_MISMATCH: Final = 3
"""``replay``: the code no longer matches the recorded history (shares 3 with a failed run:
both mean "the thing you asked about is bad", not "the command went wrong")."""
EXIT_STILL_RUNNING: Final = 4
EXIT_INTERRUPTED: Final = 130

Handler = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, int]]
"""A command: parsed arguments and where to print in, exit code out."""


class CliError(PerduraError):
    """A condition the command reports as one line on stderr, with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def store_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "store", None) or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite store URL names, as ``history.open_store`` reads it (``None`` for a
    malformed URL or another scheme: ``open_store`` reports those itself)."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        return Path(path[1:]) if path.startswith("/") and path != "/" else None
    return None if "://" in url else Path(url)


@asynccontextmanager
async def open_cli_store(
    args: argparse.Namespace,
    *,
    create: bool,
    url: str | None = None,
    durability: Durability = Durability.FULL,
) -> AsyncIterator[Store]:
    """The store of ``--store`` (or ``url``), closed on exit.

    ``create=False`` is for commands that only read or act on existing runs: they refuse a
    SQLite file that does not exist instead of creating an empty one, so a mistyped path is
    an error rather than an empty listing.
    """
    url = url if url is not None else store_url(args)
    path = sqlite_file(url)
    if not create and path is not None and not path.exists():
        raise CliError(
            f"store {url} does not exist (no file {str(path)!r}); "
            f"pass --store or set ${STORE_URL_ENV}"
        )
    store = await open_store(url, durability=durability)
    try:
        yield store
    finally:
        await store.close()


async def resolve_run(store: Store, ident: str) -> RunInfo:
    """A workflow id's newest run, or the run with that run id."""
    try:
        return await store.find_run(ident)
    except RunNotFoundError:
        pass
    try:
        return await store.get_run(ident)
    except RunNotFoundError:
        raise CliError(f"no workflow or run with id {ident!r} in {store.url}") from None


async def resolve_handle(client: Client, ident: str) -> tuple[WorkflowHandle, RunInfo]:
    """A handle for ``ident`` and the run it names now.

    A workflow id gives a handle on the workflow (its newest run, following continue-as-new
    and resets, as the client does); a run id gives a handle pinned to that run.
    """
    info = await resolve_run(client.store, ident)
    run_id = None if ident == info.workflow_id else info.run_id
    return client.get_handle(info.workflow_id, run_id), info
