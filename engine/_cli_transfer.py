"""Moving histories and stores: ``perdura export``, ``import`` and ``store
backup|restore|migrate``.

An export file is what an operator attaches to a bug report and a developer replays on a
laptop (``perdura replay FILE``); ``import`` stores one elsewhere. ``store backup`` copies a
SQLite store through SQLite's online backup API (consistent while workers run); ``store
restore`` loads such a backup into an empty store of either kind and ``store migrate`` copies
every run from one store into another (SQLite to PostgreSQL and back), both verified run by
run (``history._migrate``). Stop the workers of both stores for a restore or a migration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import msgspec

from history import (
    CLOSING_EVENTS,
    ExportedHistory,
    MigrationReport,
    RunQuery,
    backup_store,
    load_history,
    migrate,
)

from ._cli_base import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    open_cli_store,
    resolve_run,
    store_url,
)
from ._cli_output import Output, run_json
from ._client import Client

__all__ = [
    "cmd_export",
    "cmd_import",
    "cmd_store_backup",
    "cmd_store_migrate",
    "cmd_store_restore",
]


async def cmd_export(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, args.id)
        data = await Client(store).get_handle(info.workflow_id, info.run_id).export()
    if args.output is None or args.output == "-":
        out.stream.write(data.decode() + "\n")
        return EXIT_OK
    path = Path(args.output)
    _write_atomically(path, data + b"\n")
    summary = {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "status": info.status.value,
        "events": info.history_length,
        "path": str(path),
        "bytes": len(data) + 1,
    }
    if args.json:
        out.json(summary)
    else:
        out.styled(
            f"exported {info.history_length} events of workflow {info.workflow_id!r} "
            f"(run {info.run_id}, {info.status.value}) to {path}",
            "ok",
        )
    return EXIT_OK


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: an interrupted
    export never leaves half a file under the name a colleague will replay."""
    if path.is_dir():
        raise CliError(f"output {str(path)!r} is a directory; name a file")
    if not path.parent.is_dir():
        raise CliError(f"output {str(path)!r}: folder {str(path.parent)!r} does not exist")
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


async def cmd_import(args: argparse.Namespace, out: Output) -> int:
    if args.workflow_id is not None and not args.workflow_id:
        raise CliError("--workflow-id must not be empty", EXIT_USAGE)
    data, exported = _read_export(args.file)
    async with open_cli_store(args, create=True) as store:
        handle = await Client(store).import_history(data, workflow_id=args.workflow_id)
        assert handle.run_id is not None
        info = await store.get_run(handle.run_id)
    closed = type(exported.events[-1]) in CLOSING_EVENTS
    if args.json:
        out.json({**run_json(info), "imported_from_run_id": exported.run_id})
    elif closed:
        out.styled(
            f"imported workflow {info.workflow_id!r} (run {info.run_id}, {info.status.value}, "
            f"{info.history_length} events) into {store.url}",
            "ok",
        )
    else:
        out.styled(
            f"imported workflow {info.workflow_id!r} as new run {info.run_id} "
            f"({info.history_length} events copied from run {exported.run_id}); it continues "
            f"on the next worker polling queue {info.task_queue!r}",
            "ok",
        )
    return EXIT_OK


def _read_export(name: str) -> tuple[bytes, ExportedHistory]:
    """The bytes of an export file (``-``: standard input), checked before the store is
    opened, so that a bad file names itself and creates no store."""
    if name == "-":
        data, source = sys.stdin.buffer.read(), "standard input"
    else:
        try:
            data, source = Path(name).read_bytes(), name
        except OSError as exc:
            raise CliError(f"cannot read history file {name!r}: {exc.strerror}") from None
    return data, load_history(data, source=source)


# -- store backup / restore / migrate ------------------------------------------------------


async def cmd_store_backup(args: argparse.Namespace, out: Output) -> int:
    url = store_url(args)
    if url.startswith(("postgres://", "postgresql://")):  # said before connecting to it
        raise CliError(
            "perdura store backup copies SQLite stores; back PostgreSQL up with pg_dump, or "
            "copy it into a SQLite file with perdura store migrate"
        )
    async with open_cli_store(args, create=False) as store:
        runs = await store.count_runs(RunQuery())
        written = await backup_store(store, args.destination, overwrite=args.overwrite)
    size = await asyncio.to_thread(lambda: written.stat().st_size)
    if args.json:
        out.json({"store": url, "path": str(written), "runs": runs, "bytes": size})
    else:
        out.styled(f"backed up {url} ({runs} runs) to {written} ({_size(size)})", "ok")
    return EXIT_OK


async def cmd_store_restore(args: argparse.Namespace, out: Output) -> int:
    """``history.restore_store``, with the backup opened (and so checked) before the target:
    a file that is not a backup must not leave an empty store behind."""
    if not await asyncio.to_thread(Path(args.source).is_file):
        raise CliError(f"backup {args.source!r} does not exist or is not a file")
    async with (
        open_cli_store(args, create=False, url=args.source) as backup,
        open_cli_store(args, create=True) as target,
    ):
        with out.progress("restoring runs") as bar:
            report = await migrate(backup, target, progress=bar.update, resume=args.resume)
    _print_report(out, args, report)
    return EXIT_OK


async def cmd_store_migrate(args: argparse.Namespace, out: Output) -> int:
    async with (
        open_cli_store(args, create=False, url=args.source) as source,
        open_cli_store(args, create=True, url=args.target) as target,
    ):
        with out.progress("copying runs") as bar:
            report = await migrate(source, target, progress=bar.update, resume=args.resume)
    _print_report(out, args, report)
    return EXIT_OK


def _print_report(out: Output, args: argparse.Namespace, report: MigrationReport) -> None:
    if args.json:
        out.json(msgspec.to_builtins(report))
    else:
        out.styled(report.summary(), "ok")


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
