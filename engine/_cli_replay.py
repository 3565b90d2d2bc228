"""``perdura replay``: run recorded histories against the current code.

One history (an export file, or a stored run by workflow or run id) is replayed as a
debugging session: ``--trace`` prints each event as it is applied and the commands the code
issued in response, ``breakpoint()`` in workflow code opens the debugger (the replay runs
without the sandbox's guards and the blocked-loop watchdog, see ``engine/_replay.py``), and a
mismatch stops the replay with the ``NondeterminismError`` diff and exit code 3.

``--all`` replays every stored run (of ``--type``) the way a worker would run it (sandboxed)
with a progress bar, as a check before deploying new code: which runs in flight would the
new code break?
"""

from __future__ import annotations

import argparse
import bdb
import sysconfig
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from history import AnyEvent, RunQuery, Store, read_history_file

from ._apps import load_app
from ._cli_base import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    open_cli_store,
    resolve_run,
)
from ._cli_output import Output
from ._cli_runs import event_style
from ._definitions import Registry
from ._errors import NondeterminismError
from ._instance import WorkflowInstance
from ._replay import ReplayCodeError, ReplayStep, replay_history
from ._timeline import HistoryRow, Segment, format_payload, history_rows

__all__ = ["cmd_replay"]

_PAGE = 500
#: Frames in these directories are the runtime's or Python's, not the workflow's own code.
_NOT_USER_CODE = (
    *(str(Path(__file__).resolve().parent.parent / name) for name in ("engine", "history", "sdk")),
    sysconfig.get_paths()["stdlib"],
)


@dataclass(frozen=True)
class _Recorded:
    """A history to replay and where it came from."""

    workflow_id: str
    run_id: str
    workflow_type: str
    events: Sequence[AnyEvent]
    source: str


async def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    if args.all == (args.target is not None):
        raise CliError("name one history (FILE_OR_ID) or pass --all, not both", EXIT_USAGE)
    if args.type is not None and not args.all:
        raise CliError("--type selects runs for --all; a single history has its own", EXIT_USAGE)
    # The app is loaded before the store is opened: a bad spec must not touch anything.
    app = load_app(args.app, app_dir=args.app_dir)
    registry = Registry(app.workflows)
    if args.all:
        return await _replay_all(args, out, registry)
    recorded = await _load(args, args.target)
    registry.workflow(recorded.workflow_type)  # unknown type: one line, before any output
    return _replay_one(args, out, registry, recorded)


async def _load(args: argparse.Namespace, target: str) -> _Recorded:
    recorded = _read_file(target)
    if recorded is not None:
        return recorded
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, target)
        events = await store.read_history(info.run_id)
        return _Recorded(
            info.workflow_id, info.run_id, info.workflow_type, events, f"store {store.url}"
        )


def _read_file(target: str) -> _Recorded | None:
    """The export file ``target`` names, or ``None`` if it names no file (but an id)."""
    path = Path(target)
    if not path.is_file():
        if target.endswith(".json") or "/" in target:
            raise CliError(f"history file {target!r} does not exist")
        return None
    exported = read_history_file(path)
    return _Recorded(
        exported.workflow_id,
        exported.run_id,
        exported.workflow_type,
        exported.events,
        f"file {target}",
    )


# -- one history: a debugging session ------------------------------------------------------


def _replay_one(
    args: argparse.Namespace, out: Output, registry: Registry, recorded: _Recorded
) -> int:
    rows = {row.event_id: row for row in history_rows(recorded.events)}
    id_width = len(str(len(recorded.events)))
    steps: list[dict[str, Any]] = []

    def on_event(event: AnyEvent) -> None:
        out.segments([_event_line(rows[event.event_id], id_width)])
        out.flush()  # a debugger opened by this event prints to the same terminal, after it

    def on_step(step: ReplayStep) -> None:
        if args.json:
            steps.append(_step_json(rows[step.event.event_id], step))
        else:
            out.segments(_command_lines(step, id_width))
            out.flush()

    if not args.json:
        out.styled(
            f"replaying {recorded.workflow_type} {recorded.workflow_id!r} (run "
            f"{recorded.run_id}, {len(recorded.events)} events) from {recorded.source} "
            f"against {args.app}",
            "head",
        )
        out.flush()
    report: dict[str, Any] = {
        "workflow_id": recorded.workflow_id,
        "run_id": recorded.run_id,
        "workflow_type": recorded.workflow_type,
        "events": len(recorded.events),
        "source": recorded.source,
    }
    try:
        instance = replay_history(
            registry,
            recorded.events,
            run_id=recorded.run_id,
            debug=True,
            on_event=on_event if args.trace and not args.json else None,
            on_step=on_step if args.trace else None,
        )
    except NondeterminismError as exc:
        report.update(outcome="mismatch", mismatch=_mismatch_json(exc))
        if args.json:
            out.json({**report, **({"trace": steps} if args.trace else {})})
            return EXIT_MISMATCH
        out.segments(_mismatch_lines(exc))
        return EXIT_MISMATCH
    except ReplayCodeError as exc:
        if isinstance(exc.error, bdb.BdbQuit):
            raise CliError(
                f"replay stopped at event {exc.event_id}: quit from the debugger",
                EXIT_INTERRUPTED,
            ) from None
        where = _user_frame(exc.error)
        report.update(outcome="error", error=_error_text(exc, where))
        if args.json:
            out.json({**report, **({"trace": steps} if args.trace else {})})
        else:
            out.styled(f"FAILED {_error_text(exc, where)}", "fail")
        return EXIT_ERROR
    state = _end_state(instance)
    report.update(outcome="ok", state=state)
    if args.json:
        out.json({**report, **({"trace": steps} if args.trace else {})})
    else:
        out.styled(
            f"ok: {len(recorded.events)} events replayed, the code matches the history; {state}",
            "ok",
        )
    return EXIT_OK


def _event_line(row: HistoryRow, id_width: int) -> list[Segment]:
    return [
        (f"{row.event_id:>{id_width + 2}}  ", "dim"),
        (f"{row.type:<20}", event_style(row.type) or "head"),
        (f"  {row.details}", ""),
    ]


def _command_lines(step: ReplayStep, id_width: int) -> list[list[Segment]]:
    lines = []
    indent = " " * (id_width + 4)
    for command in step.commands:
        style = "fail" if command.kind == "raise" else "run"
        lines.append([(f"{indent}-> {command.text}", style)])
    return lines


def _step_json(row: HistoryRow, step: ReplayStep) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "type": row.type,
        "details": row.details,
        "commands": [{"kind": c.kind, "text": c.text} for c in step.commands],
    }


def _mismatch_json(exc: NondeterminismError) -> dict[str, Any]:
    return {"event_id": exc.event_id, "recorded": exc.recorded, "produced": exc.produced}


def _mismatch_lines(exc: NondeterminismError) -> list[list[Segment]]:
    where = f"event {exc.event_id}" if exc.event_id is not None else "the end of the history"
    return [
        [(f"MISMATCH at {where}: the code no longer matches the history", "fail")],
        [("  history says: ", "head"), (exc.recorded, "")],
        [("  code did:     ", "head"), (exc.produced, "fail")],
        [
            (
                "Guard the change with workflow.patched() so that runs in flight keep the old "
                "path, or let them finish on the old code.",
                "dim",
            )
        ],
    ]


def _error_text(exc: ReplayCodeError, where: str | None) -> str:
    error = exc.error
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"at event {exc.event_id}: workflow code raised {type(error).__name__}"
    text += f": {message}" if message else ""
    return f"{text} ({where})" if where else text


def _user_frame(error: BaseException) -> str | None:
    """``file:line in function`` of the innermost frame of the workflow's own code."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith(_NOT_USER_CODE):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return None


def _end_state(instance: WorkflowInstance) -> str:
    """Where the code stands after the last recorded event, in words."""
    completion = instance.completion
    if instance.completion_recorded:
        if completion is None:
            return "the run was closed from outside (timed out, terminated or reset)"
        return f"the workflow {completion.kind}"
    if completion is not None:
        if completion.result is not None:
            return f"the workflow would now complete -> {format_payload(completion.result)}"
        return f"the workflow would now end {completion.kind}"
    waiting = [
        f"activity #{seq} {call.activity_type}"
        for seq, call in instance.activities.items()
        if not call.done and not call.recorded
    ]
    waiting += [f"timer T{seq}" for seq, t in instance.timers.items() if not t.recorded]
    pending = [
        f"activity #{seq} {call.activity_type}"
        for seq, call in instance.open_activities.items()
        if call.recorded
    ]
    pending += [f"timer T{seq}" for seq, t in instance.open_timers.items() if t.pending]
    parts = []
    if waiting:
        parts.append("next it would issue " + ", ".join(waiting))
    if pending:
        parts.append("it waits on " + ", ".join(pending))
    return "; ".join(parts) if parts else "the run is open and waiting (signal or condition)"


# -- every stored run of a type: a check before deploying -----------------------------------


@dataclass
class _Summary:
    total: int = 0
    ok: int = 0
    skipped: int = 0
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


async def _replay_all(args: argparse.Namespace, out: Output, registry: Registry) -> int:
    if args.type is not None:
        registry.workflow(args.type)  # unknown type: one line naming the registered ones
    async with open_cli_store(args, create=False) as store:
        run_ids = await _run_ids(store, args.type)
        summary = _Summary(total=len(run_ids))
        what = f"runs of {args.type}" if args.type else "runs"
        with out.progress(f"replaying {what}", len(run_ids)) as bar:
            for run_id in run_ids:
                await _check_run(store, registry, run_id, summary)
                bar.advance()
    if args.json:
        out.json(
            {
                "workflow_type": args.type,
                "total": summary.total,
                "ok": summary.ok,
                "skipped": summary.skipped,
                "mismatched": summary.mismatched,
                "failed": summary.failed,
            }
        )
    else:
        _print_summary(out, args.type, summary)
    if summary.mismatched:
        return EXIT_MISMATCH
    return EXIT_ERROR if summary.failed else EXIT_OK


async def _run_ids(store: Store, workflow_type: str | None) -> list[str]:
    """Every run id to replay, read before replaying: paging while replaying would skip or
    repeat runs started meanwhile (the listing is newest first)."""
    ids: list[str] = []
    while True:
        page = await store.list_runs(
            RunQuery(workflow_type=workflow_type, limit=_PAGE, offset=len(ids))
        )
        ids.extend(info.run_id for info in page)
        if len(page) < _PAGE:
            return ids


async def _check_run(store: Store, registry: Registry, run_id: str, summary: _Summary) -> None:
    info = await store.get_run(run_id)
    if info.workflow_type not in registry.workflows:
        summary.skipped += 1
        return
    events = await store.read_history(run_id)
    ids = {"workflow_id": info.workflow_id, "run_id": run_id, "workflow_type": info.workflow_type}
    try:
        # Sandboxed, as a worker would run it: a check, not a debugging session.
        replay_history(registry, events, run_id=run_id)
    except NondeterminismError as exc:
        summary.mismatched.append({**ids, **_mismatch_json(exc)})
    except ReplayCodeError as exc:
        summary.failed.append({**ids, "error": _error_text(exc, _user_frame(exc.error))})
    else:
        summary.ok += 1


def _print_summary(out: Output, workflow_type: str | None, summary: _Summary) -> None:
    what = "run" if summary.total == 1 else "runs"
    if workflow_type:
        what += f" of {workflow_type}"
    counts = f"{summary.ok} ok, {len(summary.mismatched)} mismatched, {len(summary.failed)} failed"
    if summary.skipped:
        counts += f", {summary.skipped} skipped (types the app does not register)"
    style = "fail" if summary.mismatched or summary.failed else "ok"
    out.styled(f"replayed {summary.total} {what}: {counts}", style)
    for item in summary.mismatched:
        out.line(
            f"  mismatch  {item['workflow_id']} (run {item['run_id']}) at event "
            f"{item['event_id']}: history says {item['recorded']}; code did {item['produced']}"
        )
    for item in summary.failed:
        out.line(f"  failed    {item['workflow_id']} (run {item['run_id']}) {item['error']}")
