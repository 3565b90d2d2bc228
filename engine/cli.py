"""The ``perdura`` command: run workers and the server, start, inspect, steer, move and replay
runs from a shell.

::

    perdura worker    --app MODULE:ATTR [--task-queue Q] [--identity ID] [--lease-seconds S]
    perdura server    [--app MODULE:ATTR ...] [--host H] [--port P] [--token T] [--no-worker]
                      [--task-queue Q ...] [--json]
    perdura start     TYPE --id ID [--task-queue Q] [--arg JSON ...] [--json]
    perdura list      [--status S] [--type T] [--limit N] [--json]
    perdura describe  ID [--json]
    perdura history   ID [--json]
    perdura timeline  ID [--json]
    perdura graph     ID [--mermaid | --states] [--json]
    perdura result    ID [--no-wait]
    perdura signal    ID NAME [--arg JSON ...] [--json]
    perdura query     ID NAME --app MODULE:ATTR [--arg JSON ...] [--json]
    perdura cancel    ID [--reason TEXT] [--json]
    perdura terminate ID [--reason TEXT] [--json]
    perdura recover   ID [--reason TEXT] [--json]
    perdura reset     ID --to EVENT_ID [--reason TEXT] [--json]
    perdura fork      ID --at EVENT_ID --new-id NEW [--reason TEXT] [--json]
    perdura export    ID [-o FILE] [--json]
    perdura import    FILE [--workflow-id ID] [--json]
    perdura replay    FILE_OR_ID --app MODULE:ATTR [--trace] [--json]
    perdura replay    --all [--type TYPE] --app MODULE:ATTR [--json]
    perdura store backup  DEST [--overwrite] [--json]
    perdura store restore SRC [--resume] [--json]
    perdura store migrate FROM TO [--resume] [--json]

Every command but ``store migrate`` (which names both stores) takes ``--store URL``; without
it the store is ``$PERDURA_STORE``, then ``sqlite:///perdura.db``: a SQLite path or URL, or
``postgresql://user@host/db``. ``ID`` is a workflow id (meaning its newest run) or a run id.
Commands that read or act on existing runs refuse a store file that does not exist instead
of creating an empty one, so a mistyped path is an error rather than an empty listing.

Output is for people on a terminal (tables, colour and progress bars through rich), plain
aligned text when piped, and JSON with ``--json`` for scripts. Errors are one line on stderr,
never a traceback (set ``PERDURA_DEBUG=1`` to get one for an unexpected error).

Exit codes:

* ``0``: success; for ``result``, the run completed (its result is printed as JSON); for
  ``replay``, every history replayed matches the code.
* ``1``: an error: unknown workflow or run id, a store that is missing, unreachable,
  unreadable or not a perdura store, a bad ``--app`` spec, a workflow id that already has an
  open run, a closed run asked to take a signal or a cancellation, an event id outside the
  run's history, a history file that is not an export, a worker whose polling died; for
  ``replay``, the workflow code raised an error (a bug, not a mismatch).
* ``2``: a usage error: unknown command or option, an ``--arg`` that is not JSON, an empty id,
  an event id that is not a positive integer.
* ``3``: ``result``: the run failed or closed without a result (the reason is on stderr);
  ``replay``: the code no longer matches a recorded history (the diff is printed).
* ``4``: ``result --no-wait``: the run is still running.
* ``130``: interrupted (Ctrl-C) while waiting.

``perdura worker`` and ``perdura server`` run until SIGTERM or SIGINT, then stop gracefully:
they claim nothing new, cancel what they are running and hand each run back for immediate
pickup; they exit 0. A sync activity cut short keeps its thread until the function returns
(threads cannot be killed), and the process waits for it. A second signal, during the stop
or that wait, exits at once with 128 + the signal number; leases not yet handed back then
expire.

``perdura replay`` runs without the workflow sandbox and without the blocked-loop watchdog,
so ``breakpoint()`` in workflow code opens the debugger on the terminal (see docs/cli.md).

The commands live in ``engine/_cli_*.py``, one concept per module: output
(``_cli_output``), store and id handling (``_cli_base``), inspecting runs (``_cli_runs``;
graph runs in ``_cli_graph``),
steering them (``_cli_steer``), moving histories and stores (``_cli_transfer``), replay
(``_cli_replay``) and the long-running processes (``_cli_worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from history import DEFAULT_STORE_URL, STORE_URL_ENV, PerduraError, RunStatus

from . import _cli_graph, _cli_replay, _cli_runs, _cli_steer, _cli_transfer, _cli_worker
from ._apps import App as App
from ._apps import AppLoadError as AppLoadError
from ._apps import load_app as load_app
from ._cli_base import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    Handler,
)
from ._cli_output import Output, error_line

__all__ = ["App", "AppLoadError", "load_app", "main"]

DEBUG_ENV = "PERDURA_DEBUG"


# -- argument types ------------------------------------------------------------------------


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not JSON; quote strings, e.g. --arg '\"{text}\"'"
        ) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), got {text}")
    return value


# -- the parser ----------------------------------------------------------------------------


class _Commands:
    """Adds subcommands that all take ``--store`` (and, if asked, ``--json``)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        self._common = argparse.ArgumentParser(add_help=False)
        self._common.add_argument(
            "--store",
            metavar="URL",
            help=f"store URL or path (default: ${STORE_URL_ENV} or {DEFAULT_STORE_URL})",
        )

    def add(
        self,
        name: str,
        handler: Handler,
        help: str,
        *,
        json: bool = True,
        within: Any = None,
        store_option: bool = True,
    ) -> argparse.ArgumentParser:
        target = self._sub if within is None else within
        sub: argparse.ArgumentParser = target.add_parser(
            name,
            parents=[self._common] if store_option else [],
            help=help,
            description=help,
        )
        sub.set_defaults(handler=handler)
        if json:
            sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    def group(self, name: str, help: str) -> Any:
        parser = self._sub.add_parser(name, help=help, description=help)
        return parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)


def _add_app(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--app", required=required, metavar="MODULE:ATTR", help="e.g. examples.orders:app"
    )
    parser.add_argument(
        "--app-dir",
        metavar="DIR",
        help="directory to import the app from (default: the current directory)",
    )


def _add_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--arg",
        type=_json_arg,
        action="append",
        default=[],
        metavar="JSON",
        help=f"{what} argument as JSON; repeat in order",
    )


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="workflow id (its newest run) or run id")


def _add_reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", metavar="TEXT", help="recorded in history")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perdura",
        description="Durable execution for Python: run workers and the server; start, "
        "inspect, steer, export and replay runs.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 run failed / replay mismatch, "
        "4 still running, 130 interrupted",
    )
    commands = _Commands(parser)

    # -- processes
    worker = commands.add(
        "worker", _cli_worker.cmd_worker, "run a worker until SIGTERM or SIGINT", json=False
    )
    _add_app(worker)
    worker.add_argument("--task-queue", default="default", metavar="Q")
    worker.add_argument(
        "--identity",
        metavar="ID",
        help="stable worker name; restarting with the same one recovers its runs at once "
        "(default: host:pid)",
    )
    worker.add_argument("--lease-seconds", type=_positive_float, default=10.0, metavar="S")
    worker.add_argument("--max-concurrent-runs", type=_positive_int, default=1000, metavar="N")
    worker.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration (default: $PERDURA_CONFIG); see docs/operating.md",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0: any free port)",
    )

    server = commands.add(
        "server",
        _cli_worker.cmd_server,
        "serve the HTTP API and web UI, with a worker for --app, until SIGTERM or SIGINT",
    )
    server.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="an app whose workflows and activities the built-in worker runs; repeatable",
    )
    server.add_argument("--app-dir", metavar="DIR", help="directory to import apps from")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=_port, default=8080, help="0 picks a free port")
    server.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token (default: $PERDURA_SERVER_TOKEN); required off loopback",
    )
    server.add_argument("--no-worker", action="store_true", help="API and UI only")
    server.add_argument(
        "--task-queue",
        action="append",
        default=[],
        metavar="Q",
        help="a queue the worker polls; repeatable (default: default)",
    )
    server.add_argument("--identity", metavar="ID", help="the worker's stable name")
    server.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration for the built-in worker (default: $PERDURA_CONFIG)",
    )
    server.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level",
    )

    # -- starting and inspecting runs
    start = commands.add("start", _cli_runs.cmd_start, "start a workflow run")
    start.add_argument("workflow_type", metavar="TYPE", help="the workflow's registered name")
    start.add_argument("--id", required=True, help="workflow id (unique among open runs)")
    start.add_argument("--task-queue", default="default", metavar="Q")
    _add_args(start, "a workflow")

    listing = commands.add("list", _cli_runs.cmd_list, "list runs, newest first")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--type", metavar="T", help="only runs of this workflow type")
    listing.add_argument("--limit", type=_positive_int, default=50, metavar="N")

    for name, handler, help in (
        ("describe", _cli_runs.cmd_describe, "show a run's status and what it is waiting on"),
        ("history", _cli_runs.cmd_history, "show a run's events"),
        ("timeline", _cli_runs.cmd_timeline, "chart a run's activities and timers"),
    ):
        _add_id(commands.add(name, handler, help))

    graph = commands.add(
        "graph",
        _cli_graph.cmd_graph,
        "draw a graph run with its running or waiting nodes marked, or list its states",
    )
    _add_id(graph)
    shown = graph.add_mutually_exclusive_group()
    shown.add_argument("--mermaid", action="store_true", help="print the Mermaid flowchart")
    shown.add_argument(
        "--states", action="store_true", help="list the state recorded after each super-step"
    )

    result = commands.add(
        "result", _cli_runs.cmd_result, "wait for a run and print its result as JSON", json=False
    )
    _add_id(result)
    result.add_argument(
        "--no-wait", action="store_true", help="exit 4 at once if the run is still running"
    )

    # -- steering runs
    signal = commands.add("signal", _cli_steer.cmd_signal, "send a signal to a run")
    _add_id(signal)
    signal.add_argument("name", metavar="NAME", help="the signal's name")
    _add_args(signal, "a signal")

    query = commands.add(
        "query", _cli_steer.cmd_query, "answer a query from a run's replayed state"
    )
    _add_id(query)
    query.add_argument("name", metavar="NAME", help="the query's name")
    _add_args(query, "a query")
    _add_app(query)

    for name, handler, help in (
        ("cancel", _cli_steer.cmd_cancel, "ask a run to stop (its code may clean up)"),
        ("terminate", _cli_steer.cmd_terminate, "end a run now, running no more of its code"),
        (
            "recover",
            _cli_steer.cmd_recover,
            "move a stuck run to another worker now, or resume a failed run before its "
            "failing step",
        ),
    ):
        sub = commands.add(name, handler, help)
        _add_id(sub)
        _add_reason(sub)

    reset = commands.add(
        "reset", _cli_steer.cmd_reset, "start the workflow again from an event of a run"
    )
    _add_id(reset)
    reset.add_argument(
        "--to", required=True, type=_positive_int, metavar="EVENT_ID", help="keep events 1..N"
    )
    _add_reason(reset)

    fork = commands.add(
        "fork", _cli_steer.cmd_fork, "start a new workflow from a copy of a run's history"
    )
    _add_id(fork)
    fork.add_argument(
        "--at", required=True, type=_positive_int, metavar="EVENT_ID", help="keep events 1..N"
    )
    fork.add_argument("--new-id", required=True, metavar="NEW", help="the new workflow's id")
    _add_reason(fork)

    # -- moving histories and stores
    export = commands.add("export", _cli_transfer.cmd_export, "write a run's history to a file")
    _add_id(export)
    export.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default: standard output)"
    )

    imported = commands.add(
        "import", _cli_transfer.cmd_import, "store a history exported from a run"
    )
    imported.add_argument("file", metavar="FILE", help="an export file, or - for stdin")
    imported.add_argument(
        "--workflow-id", metavar="ID", help="store it under this workflow id instead"
    )

    store = commands.group("store", "back up, restore or migrate a whole store")
    backup = commands.add(
        "backup",
        _cli_transfer.cmd_store_backup,
        "copy a SQLite store to a file (consistent while workers run)",
        within=store,
    )
    backup.add_argument("destination", metavar="DEST", help="the backup file to write")
    backup.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    restore = commands.add(
        "restore",
        _cli_transfer.cmd_store_restore,
        "load a backup into an empty store of either kind, verified (stop its workers first)",
        within=store,
    )
    restore.add_argument("source", metavar="SRC", help="a file written by store backup")
    restore.add_argument("--resume", action="store_true", help="carry on an interrupted restore")
    migrate = commands.add(
        "migrate",
        _cli_transfer.cmd_store_migrate,
        "copy every run of one store into another, verified (stop the workers of both first)",
        within=store,
        store_option=False,
    )
    migrate.add_argument("source", metavar="FROM", help="store URL or path to copy from")
    migrate.add_argument("target", metavar="TO", help="store URL or path to copy into (empty)")
    migrate.add_argument("--resume", action="store_true", help="carry on an interrupted migration")

    # -- replay
    replay = commands.add(
        "replay",
        _cli_replay.cmd_replay,
        "replay recorded histories against the current code",
    )
    replay.add_argument(
        "target",
        nargs="?",
        metavar="FILE_OR_ID",
        help="an export file, or a workflow or run id in the store",
    )
    _add_app(replay)
    replay.add_argument(
        "--trace", action="store_true", help="print each event and the commands the code issued"
    )
    replay.add_argument(
        "--all", action="store_true", help="replay every stored run (of --type) instead"
    )
    replay.add_argument("--type", metavar="TYPE", help="with --all: only runs of this type")
    return parser


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perdura`` command; returns the exit code (see the module docstring)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output()
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args, out))
    except CliError as exc:
        error_line(str(exc))
        return exc.code
    except PerduraError as exc:
        error_line(_one_line(str(exc)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("perdura: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``perdura history x | head``): not an error worth a word.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        error_line(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if os.environ.get(DEBUG_ENV):
            raise
        error_line(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)")
        return EXIT_ERROR


def _one_line(message: str) -> str:
    """An error message on one line: the lines of a multi-line message joined."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    # ``python -m engine.cli`` runs this file as ``__main__``; re-enter through the canonical
    # module so that module-level state is not duplicated in a second copy of this file.
    from engine.cli import main as _main

    sys.exit(_main())
