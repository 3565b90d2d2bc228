"""The ``perdura`` command: run a worker, start runs and look inside them from a shell.

::

    perdura worker --app MODULE:ATTR [--task-queue Q] [--identity ID] [--lease-seconds S]
    perdura start TYPE --id ID [--task-queue Q] [--arg JSON ...]
    perdura list [--status S] [--type T] [--limit N] [--json]
    perdura describe ID [--json]
    perdura history ID [--json]
    perdura timeline ID [--json]
    perdura result ID [--no-wait]

Every command takes ``--store URL``; without it the store is ``$PERDURA_STORE``, then
``sqlite:///perdura.db``. ``ID`` is a workflow id (meaning its newest run) or a run id.
Commands that only read refuse a store file that does not exist instead of creating an empty
one, so a mistyped path is an error rather than an empty listing.

Output is for people on a terminal (tables and colour through rich), plain aligned text when
piped, and JSON with ``--json`` for scripts. Errors are one line on stderr, never a traceback
(set ``PERDURA_DEBUG=1`` to get one for an unexpected error).

Exit codes:

* ``0``: success; for ``result``, the run completed (its result is printed as JSON).
* ``1``: an error: unknown workflow or run id, a store that is missing, unreadable or not a
  perdura store, a bad ``--app`` spec, a workflow id that already has an open run, a worker
  whose polling died.
* ``2``: a usage error: unknown command or option, an ``--arg`` that is not JSON, an empty id.
* ``3``: ``result``: the run failed or closed without a result; the reason is on stderr.
* ``4``: ``result --no-wait``: the run is still running.
* ``130``: interrupted (Ctrl-C) while waiting.

``perdura worker`` runs until SIGTERM or SIGINT, then stops gracefully: it claims nothing
new, cancels what it is running and hands each run back for immediate pickup; it exits 0.
A sync activity cut short keeps its thread until the function returns (threads cannot be
killed), and the process waits for it. A second signal, during the stop or that wait, exits
at once with 128 + the signal number; leases not yet handed back then expire.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import msgspec
import structlog

from history import (
    DEFAULT_STORE_URL,
    STORE_URL_ENV,
    AnyEvent,
    PayloadConverter,
    PerduraError,
    RunInfo,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    Store,
    WorkflowCompleted,
    WorkflowFailed,
    open_store,
)

from ._apps import App as App
from ._apps import AppLoadError as AppLoadError
from ._apps import load_app as load_app
from ._client import Client, describe_history
from ._timeline import (
    Segment,
    build_timeline,
    event_to_json,
    format_duration,
    format_failure,
    format_offset,
    format_payload,
    history_rows,
    timeline_lines,
)
from ._worker import Worker

if TYPE_CHECKING:  # rich is imported only to print to a terminal: workers and pipes skip it
    from rich.console import Console
    from rich.text import Text

__all__ = ["App", "AppLoadError", "load_app", "main"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_RUN_FAILED: Final = 3
EXIT_STILL_RUNNING: Final = 4
EXIT_INTERRUPTED: Final = 130
DEBUG_ENV: Final = "PERDURA_DEBUG"

_RICH_STYLES: Final[dict[str, str]] = {
    "": "",
    "ok": "green",
    "fail": "bold red",
    "warn": "yellow",
    "run": "cyan",
    "timer": "blue",
    "dim": "dim",
    "head": "bold",
}
_STATUS_STYLE: Final[dict[RunStatus, str]] = {
    RunStatus.RUNNING: "run",
    RunStatus.COMPLETED: "ok",
    RunStatus.FAILED: "fail",
}

log = structlog.get_logger("perdura.cli")


class CliError(PerduraError):
    """A condition the command reports as one line on stderr, with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- output --------------------------------------------------------------------------------

Cell = str | tuple[str, str]
"""Table cell: text, or ``(text, style)`` with a style name from ``_RICH_STYLES``."""


class _Output:
    """Where a command prints: rich on a terminal, plain text otherwise."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.rich = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"

    def _console(self) -> Console:
        from rich.console import Console

        return Console(file=self.stream, highlight=False, soft_wrap=False)

    @property
    def width(self) -> int:
        return int(self._console().width) if self.rich else 100

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def json(self, value: Any) -> None:
        self.stream.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def segments(self, lines: list[list[Segment]]) -> None:
        if not self.rich:
            for line in lines:
                self.line("".join(text for text, _ in line).rstrip())
            return
        from rich.text import Text

        console = self._console()
        for line in lines:
            console.print(
                Text.assemble(*[(text, _RICH_STYLES[style]) for text, style in line]),
                overflow="ellipsis",
                no_wrap=True,
            )

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        if self.rich:
            from rich.table import Table

            table = Table(box=None, header_style="bold", pad_edge=False)
            for index, header in enumerate(headers):
                last = index == len(headers) - 1
                table.add_column(header, no_wrap=not last, overflow="fold" if last else "ellipsis")
            for row in rows:
                table.add_row(*[_rich_cell(cell) for cell in row])
            self._console().print(table)
            return
        texts = [[_text(cell) for cell in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
        for row in [list(headers), *texts]:
            cells = [text.ljust(width) for text, width in zip(row, widths, strict=True)]
            self.line("  ".join(cells).rstrip())

    def fields(self, pairs: Sequence[tuple[str, Cell]]) -> None:
        """``key  value`` lines, keys aligned."""
        width = max(len(key) for key, _ in pairs)
        if self.rich:
            from rich.text import Text

            console = self._console()
            for key, value in pairs:
                console.print(Text.assemble((key.ljust(width), "bold"), "  ", _rich_cell(value)))
            return
        for key, value in pairs:
            self.line(f"{key.ljust(width)}  {_text(value)}".rstrip())


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def _rich_cell(cell: Cell) -> Text:
    from rich.text import Text

    if isinstance(cell, str):
        return Text(cell)
    return Text(cell[0], style=_RICH_STYLES[cell[1]])


def _error(message: str) -> None:
    sys.stderr.write(f"perdura: error: {message}\n")


def _status_cell(status: RunStatus) -> Cell:
    return (status.value, _STATUS_STYLE.get(status, "warn"))


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _epoch_iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _run_json(info: RunInfo) -> dict[str, Any]:
    return {
        "workflow_id": info.workflow_id,
        "run_id": info.run_id,
        "workflow_type": info.workflow_type,
        "task_queue": info.task_queue,
        "status": info.status.value,
        "started_at": info.started_at.isoformat(),
        "closed_at": None if info.closed_at is None else info.closed_at.isoformat(),
        "history_length": info.history_length,
        "owner": info.owner,
        "lease_expires_at": _epoch_iso(info.lease_expires_at),
        "wake_at": _epoch_iso(info.wake_at),
    }


# -- stores and ids ------------------------------------------------------------------------


def _store_url(args: argparse.Namespace) -> str:
    url: str = args.store or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    return url


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite store URL names, as ``history.open_store`` reads it (``None`` for a
    malformed URL or another scheme: ``open_store`` reports those itself)."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        return Path(path[1:]) if path.startswith("/") and path != "/" else None
    return None if "://" in url else Path(url)


@asynccontextmanager
async def _open(args: argparse.Namespace, *, create: bool) -> AsyncIterator[Store]:
    url = _store_url(args)
    path = _sqlite_file(url)
    if not create and path is not None and not path.exists():
        raise CliError(
            f"store {url} does not exist (no file {str(path)!r}); "
            f"pass --store or set ${STORE_URL_ENV}"
        )
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()


async def _resolve(store: Store, ident: str) -> RunInfo:
    """A workflow id's newest run, or the run with that run id."""
    try:
        return await store.find_run(ident)
    except RunNotFoundError:
        pass
    try:
        return await store.get_run(ident)
    except RunNotFoundError:
        raise CliError(f"no workflow or run with id {ident!r} in {store.url}") from None


# -- commands ------------------------------------------------------------------------------


async def _cmd_start(args: argparse.Namespace, out: _Output) -> int:
    if not args.id or not args.task_queue:
        raise CliError("--id and --task-queue must not be empty", EXIT_USAGE)
    async with _open(args, create=True) as store:
        handle = await Client(store).start_workflow(
            args.workflow_type, *args.arg, id=args.id, task_queue=args.task_queue
        )
    if args.json:
        out.json(
            {
                "workflow_id": handle.workflow_id,
                "run_id": handle.run_id,
                "workflow_type": args.workflow_type,
                "task_queue": args.task_queue,
            }
        )
    else:
        out.line(
            f"started {args.workflow_type} {handle.workflow_id} (run {handle.run_id}) "
            f"on queue {args.task_queue!r}"
        )
    return EXIT_OK


async def _cmd_list(args: argparse.Namespace, out: _Output) -> int:
    query = RunQuery(
        status=None if args.status is None else RunStatus(args.status),
        workflow_type=args.type,
        limit=args.limit,
    )
    async with _open(args, create=False) as store:
        runs = await store.list_runs(query)
    if args.json:
        out.json([_run_json(info) for info in runs])
        return EXIT_OK
    if not runs:
        sys.stderr.write(f"no matching runs in {_store_url(args)}\n")
        return EXIT_OK
    now = time.time()
    rows: list[list[Cell]] = []
    for info in runs:
        closed = info.closed_at.timestamp() if info.closed_at is not None else now
        rows.append(
            [
                info.workflow_id,
                info.workflow_type,
                _status_cell(info.status),
                _time(info.started_at),
                format_duration(closed - info.started_at.timestamp()),
                str(info.history_length),
                info.run_id,
            ]
        )
    out.table(
        ["WORKFLOW ID", "TYPE", "STATUS", "STARTED (UTC)", "DURATION", "EVENTS", "RUN ID"], rows
    )
    return EXIT_OK


async def _cmd_describe(args: argparse.Namespace, out: _Output) -> int:
    converter = PayloadConverter()
    async with _open(args, create=False) as store:
        info = await _resolve(store, args.id)
        history = await store.read_history(info.run_id)
        timers = await store.pending_timers(info.run_id)
    description = describe_history(info, history, timers, converter)
    last = history[-1] if history else None
    if args.json:
        data = _run_json(info)
        data["pending_activities"] = [
            {
                "seq": p.seq,
                "activity_type": p.activity_type,
                "attempt": p.attempt,
                "retry_at": None if p.retry_at is None else p.retry_at.isoformat(),
                "last_heartbeat_at": (
                    None if p.last_heartbeat_at is None else p.last_heartbeat_at.isoformat()
                ),
                "last_heartbeat_details": msgspec.to_builtins(p.last_heartbeat_details),
                "last_failure": None if p.last_failure is None else format_failure(p.last_failure),
            }
            for p in description.pending_activities
        ]
        data["pending_timers"] = [
            {"seq": t.seq, "fire_at": t.fire_at.isoformat()} for t in description.pending_timers
        ]
        data["last_task_failure"] = (
            None
            if description.last_task_failure is None
            else format_failure(description.last_task_failure)
        )
        data["failure"] = (
            None if description.failure is None else format_failure(description.failure)
        )
        data["result"] = (
            event_to_json(last)["result"] if isinstance(last, WorkflowCompleted) else None
        )
        out.json(data)
        return EXIT_OK

    now = time.time()
    pairs: list[tuple[str, Cell]] = [
        ("workflow id", info.workflow_id),
        ("run id", info.run_id),
        ("type", info.workflow_type),
        ("task queue", info.task_queue),
        ("status", _status_cell(info.status)),
        ("started", f"{_time(info.started_at)} UTC"),
    ]
    if info.closed_at is not None:
        took = format_duration((info.closed_at - info.started_at).total_seconds())
        pairs.append(("closed", f"{_time(info.closed_at)} UTC (after {took})"))
    pairs.append(("events", str(info.history_length)))
    if info.status.is_open:
        pairs.append(("owner", _owner_text(info, now)))
        if info.wake_at is not None:
            wake = "now" if info.wake_at <= now else f"in {format_duration(info.wake_at - now)}"
            pairs.append(("next wake-up", wake))
    for timer in description.pending_timers:
        due = timer.fire_at.timestamp() - now
        when = f"in {format_duration(due)}" if due > 0 else "due now"
        pairs.append((f"timer T{timer.seq}", f"fires {_time(timer.fire_at)} UTC ({when})"))
    for pending in description.pending_activities:
        text = f"{pending.activity_type}, attempt {pending.attempt}"
        if pending.retry_at is not None:
            text += f", retry at {_time(pending.retry_at)} UTC"
        if pending.last_failure is not None:
            text += f", last failure {format_failure(pending.last_failure)}"
        if pending.last_heartbeat_details:
            details = msgspec.json.encode(msgspec.to_builtins(pending.last_heartbeat_details))
            text += f", last heartbeat {details.decode()[:60]}"
        pairs.append((f"activity #{pending.seq}", ("pending: " + text, "warn")))
    if description.last_task_failure is not None and info.status.is_open:
        pairs.append(("task failure", (format_failure(description.last_task_failure), "fail")))
    if description.failure is not None:
        pairs.append(("failure", (format_failure(description.failure), "fail")))
    if isinstance(last, WorkflowCompleted):
        pairs.append(("result", (format_payload(last.result, 200), "ok")))
    out.fields(pairs)
    return EXIT_OK


def _owner_text(info: RunInfo, now: float) -> str:
    if info.owner is None:
        return "none (waiting for a worker or a timer)"
    expires = info.lease_expires_at
    if expires is None:
        return info.owner
    if expires >= now:
        return f"{info.owner} (lease expires in {format_duration(expires - now)})"
    return f"{info.owner} (lease expired {format_duration(now - expires)} ago)"


async def _read_run(args: argparse.Namespace) -> tuple[RunInfo, list[AnyEvent]]:
    async with _open(args, create=False) as store:
        info = await _resolve(store, args.id)
        return info, await store.read_history(info.run_id)


async def _cmd_history(args: argparse.Namespace, out: _Output) -> int:
    _, events = await _read_run(args)
    if args.json:
        out.json([event_to_json(event) for event in events])
        return EXIT_OK
    rows: list[list[Cell]] = []
    for row in history_rows(events):
        style = (
            "fail" if row.type in ("ActivityFailed", "WorkflowFailed", "WorkflowTaskFailed") else ""
        )
        if row.type in ("ActivityTimedOut",):
            style = "warn"
        rows.append(
            [
                str(row.event_id),
                f"{row.time:%H:%M:%S}.{row.time.microsecond // 1000:03d}",
                format_offset(row.offset),
                (row.type, style),
                row.details,
            ]
        )
    out.table(["ID", "TIME (UTC)", "OFFSET", "TYPE", "DETAILS"], rows)
    return EXIT_OK


async def _cmd_timeline(args: argparse.Namespace, out: _Output) -> int:
    info, events = await _read_run(args)
    timeline = build_timeline(events, now=datetime.now(UTC) if info.status.is_open else None)
    if args.json:
        out.json(msgspec.to_builtins(timeline))
        return EXIT_OK
    bar_width = max(20, min(60, out.width - 75)) if out.rich else 40
    out.segments(timeline_lines(timeline, bar_width=bar_width, unicode=out.rich))
    return EXIT_OK


async def _cmd_result(args: argparse.Namespace, out: _Output) -> int:
    async with _open(args, create=False) as store:
        info = await _resolve(store, args.id)
        poll = 0.01
        while info.status.is_open:
            if args.no_wait:
                raise CliError(
                    f"workflow {info.workflow_id!r} (run {info.run_id}) is still running",
                    EXIT_STILL_RUNNING,
                )
            # Another process appends: wait_for_run only wakes for this one, so poll.
            await store.wait_for_run(info.run_id, poll)
            poll = min(poll * 2, 0.5)
            info = await store.get_run(info.run_id)
        [last] = await store.read_history(info.run_id, after_event_id=info.history_length - 1)
    where = f"workflow {info.workflow_id!r} (run {info.run_id})"
    if isinstance(last, WorkflowCompleted):
        value = PayloadConverter().decode(last.result, name="workflow result")
        text = msgspec.json.encode(value)
        out.line((msgspec.json.format(text, indent=2) if out.rich else text).decode())
        return EXIT_OK
    if isinstance(last, WorkflowFailed):
        raise CliError(f"{where} failed: {format_failure(last.failure)}", EXIT_RUN_FAILED)
    raise CliError(f"{where} closed as {info.status.value}", EXIT_RUN_FAILED)


# -- the worker command --------------------------------------------------------------------


def _configure_logging() -> None:
    """Worker logs go to stderr (stdout stays free for output), unless the app configured
    structlog itself."""
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


async def _cmd_worker(args: argparse.Namespace, out: _Output) -> int:
    # The app is loaded before the store is opened: a bad spec must not create a file.
    app = load_app(args.app, app_dir=args.app_dir)
    _configure_logging()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            sys.stderr.write("perdura: second signal, exiting without a graceful stop\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        log.info("stopping worker gracefully", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with _open(args, create=True) as store:
            try:
                worker = Worker(
                    store,
                    task_queue=args.task_queue,
                    workflows=app.workflows,
                    activities=app.activities,
                    identity=args.identity,
                    lease_seconds=args.lease_seconds,
                    max_concurrent_runs=args.max_concurrent_runs,
                )
            except (TypeError, ValueError) as exc:
                raise CliError(f"cannot serve app {args.app!r}: {exc}") from None
            async with worker:
                log.info(
                    "worker ready",
                    identity=worker.identity,
                    task_queue=worker.task_queue,
                    store=store.url,
                    workflows=sorted(worker.registry.workflows),
                    activities=sorted(worker.registry.activities),
                )
                # The poll loop runs in the worker's background task (this module is part
                # of the engine, so it may look): if it dies, the process must not linger.
                background = worker._background
                assert background is not None
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({stopping, background}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if background.done() and not background.cancelled():
                    error = background.exception()
                    raise CliError(f"worker {worker.identity} stopped unexpectedly: {error!r}")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            # A sync activity cut short by the stop keeps running in its thread (threads
            # cannot be killed) and the interpreter waits for it before exiting; its run is
            # already handed back, so another signal must end the process at once.
            signal.signal(signum, _exit_now)
    return EXIT_OK


def _exit_now(signum: int, frame: object) -> None:
    sys.stderr.write("perdura: exiting without waiting for abandoned activity threads\n")
    sys.stderr.flush()
    os._exit(128 + signum)


# -- argument parsing ----------------------------------------------------------------------


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


Handler = Callable[[argparse.Namespace, _Output], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perdura",
        description="Durable execution for Python: run workers, start and inspect runs.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 run failed, 4 still running",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        metavar="URL",
        help=f"store URL or path (default: ${STORE_URL_ENV} or {DEFAULT_STORE_URL})",
    )

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    worker = command("worker", _cmd_worker, "run a worker until SIGTERM or SIGINT")
    worker.add_argument(
        "--app", required=True, metavar="MODULE:ATTR", help="e.g. examples.orders:app"
    )
    worker.add_argument(
        "--app-dir",
        metavar="DIR",
        help="directory to import the app from (default: the current directory)",
    )
    worker.add_argument("--task-queue", default="default", metavar="Q")
    worker.add_argument(
        "--identity",
        metavar="ID",
        help="stable worker name; restarting with the same one recovers its runs at once "
        "(default: host:pid)",
    )
    worker.add_argument("--lease-seconds", type=_positive_float, default=10.0, metavar="S")
    worker.add_argument("--max-concurrent-runs", type=_positive_int, default=1000, metavar="N")

    start = command("start", _cmd_start, "start a workflow run")
    start.add_argument("workflow_type", metavar="TYPE", help="the workflow's registered name")
    start.add_argument("--id", required=True, help="workflow id (unique among open runs)")
    start.add_argument("--task-queue", default="default", metavar="Q")
    start.add_argument(
        "--arg",
        type=_json_arg,
        action="append",
        default=[],
        metavar="JSON",
        help="a workflow argument as JSON; repeat in order",
    )
    start.add_argument("--json", action="store_true", help="print JSON")

    listing = command("list", _cmd_list, "list runs, newest first")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--type", metavar="T", help="only runs of this workflow type")
    listing.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    listing.add_argument("--json", action="store_true", help="print JSON")

    for name, handler, help in (
        ("describe", _cmd_describe, "show a run's status and what it is waiting on"),
        ("history", _cmd_history, "show a run's events"),
        ("timeline", _cmd_timeline, "chart a run's activities and timers"),
    ):
        sub = command(name, handler, help)
        sub.add_argument("id", metavar="ID", help="workflow id or run id")
        sub.add_argument("--json", action="store_true", help="print JSON")

    result = command("result", _cmd_result, "wait for a run and print its result as JSON")
    result.add_argument("id", metavar="ID", help="workflow id or run id")
    result.add_argument(
        "--no-wait", action="store_true", help="exit 4 at once if the run is still running"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perdura`` command; returns the exit code (see the module docstring)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = _Output()
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args, out))
    except CliError as exc:
        _error(str(exc))
        return exc.code
    except PerduraError as exc:
        _error(str(exc))
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
        _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if os.environ.get(DEBUG_ENV):
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)")
        return EXIT_ERROR


if __name__ == "__main__":
    # ``python -m engine.cli`` runs this file as ``__main__``; re-enter through the canonical
    # module so that module-level state is not duplicated in a second copy of this file.
    from engine.cli import main as _main

    sys.exit(_main())
