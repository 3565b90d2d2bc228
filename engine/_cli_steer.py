"""Steering runs from a shell: ``perdura signal``, ``query``, ``cancel``, ``terminate``,
``recover``, ``reset`` and ``fork``.

Each is one call of :class:`~engine.WorkflowHandle` (the same API a program uses), so the CLI
adds no behaviour of its own: it resolves the ``ID``, makes the call, and says which run it
acted on and what came of it. ``query`` replays the run, so it needs the workflow's code
(``--app``), exactly like ``handle.query`` needs ``workflows=``.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from history import (
    RunInfo,
    Store,
    WorkflowStarted,
)

from ._apps import load_app
from ._cli_base import EXIT_OK, EXIT_USAGE, CliError, open_cli_store, resolve_handle
from ._cli_output import Output
from ._cli_runs import print_json_value
from ._client import Client

__all__ = [
    "cmd_cancel",
    "cmd_fork",
    "cmd_query",
    "cmd_recover",
    "cmd_reset",
    "cmd_signal",
    "cmd_terminate",
]


async def cmd_signal(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        handle, _ = await resolve_handle(Client(store), args.id)
        await handle.signal(args.name, *args.arg)
        info = await handle.current_run()
    _report(
        out,
        args,
        {"action": "signal", "signal": args.name, "args": args.arg},
        info,
        f"signal {args.name!r} recorded in workflow {info.workflow_id!r} (run {info.run_id})",
    )
    return EXIT_OK


async def cmd_query(args: argparse.Namespace, out: Output) -> int:
    app = load_app(args.app, app_dir=args.app_dir)
    async with open_cli_store(args, create=False) as store:
        client = Client(store, workflows=app.workflows)
        handle, info = await resolve_handle(client, args.id)
        answer = await handle.query(args.name, *args.arg)
    try:
        value = msgspec.to_builtins(answer)
    except TypeError as exc:
        raise CliError(
            f"the answer of query {args.name!r} ({type(answer).__name__}) cannot be shown as "
            f"JSON: {exc}"
        ) from None
    if args.json:
        out.json(
            {
                "workflow_id": info.workflow_id,
                "run_id": info.run_id,
                "query": args.name,
                "result": value,
            }
        )
    else:
        print_json_value(out, value)
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        handle, _ = await resolve_handle(Client(store), args.id)
        await handle.cancel(args.reason)
        info = await handle.current_run()
    _report(
        out,
        args,
        {"action": "cancel", "reason": args.reason},
        info,
        f"cancellation requested for workflow {info.workflow_id!r} (run {info.run_id}); "
        "its code sees it at its current await",
    )
    return EXIT_OK


async def cmd_terminate(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        handle, _ = await resolve_handle(Client(store), args.id)
        before = await handle.current_run()
        await handle.terminate(args.reason)
        info = await store.get_run(before.run_id)
    _report(
        out,
        args,
        {"action": "terminate", "reason": args.reason},
        info,
        f"terminated workflow {info.workflow_id!r} (run {info.run_id})",
    )
    return EXIT_OK


async def cmd_recover(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        handle, old = await resolve_handle(Client(store), args.id)
        moved = await handle.recover(args.reason)
        info = await moved.run_info()
        started = await _started(store, info)
    if info.run_id == old.run_id:
        text = (
            f"run {info.run_id} of workflow {info.workflow_id!r} rescheduled: the next worker "
            "polling its task queue takes it over"
        )
        extra: dict[str, Any] = {"action": "recover", "rescheduled": True}
    else:
        cut = started.origin.event_id if started.origin is not None else None
        text = (
            f"workflow {info.workflow_id!r} recovered: new run {info.run_id} continues run "
            f"{old.run_id} from event {cut} (the failing step runs again)"
        )
        extra = {"action": "recover", "rescheduled": False, "from_run_id": old.run_id}
        extra["from_event_id"] = cut
    extra["reason"] = args.reason
    _report(out, args, extra, info, text)
    return EXIT_OK


async def cmd_reset(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        handle, old = await resolve_handle(Client(store), args.id)
        was_open = old.status.is_open
        moved = await handle.reset(args.to, args.reason)
        info = await moved.run_info()
    closed = f"; run {old.run_id} closed as reset" if was_open else ""
    _report(
        out,
        args,
        {
            "action": "reset",
            "from_run_id": old.run_id,
            "to_event_id": args.to,
            "reason": args.reason,
        },
        info,
        f"workflow {info.workflow_id!r} reset to event {args.to}: new run {info.run_id}{closed}",
    )
    return EXIT_OK


async def cmd_fork(args: argparse.Namespace, out: Output) -> int:
    if not args.new_id:
        raise CliError("--new-id must not be empty", EXIT_USAGE)
    async with open_cli_store(args, create=False) as store:
        handle, old = await resolve_handle(Client(store), args.id)
        forked = await handle.fork(args.at, args.new_id, args.reason)
        info = await forked.run_info()
    _report(
        out,
        args,
        {
            "action": "fork",
            "from_workflow_id": old.workflow_id,
            "from_run_id": old.run_id,
            "at_event_id": args.at,
            "reason": args.reason,
        },
        info,
        f"forked run {old.run_id} of workflow {old.workflow_id!r} at event {args.at}: "
        f"new workflow {info.workflow_id!r} (run {info.run_id})",
    )
    return EXIT_OK


def _report(
    out: Output, args: argparse.Namespace, extra: dict[str, Any], info: RunInfo, text: str
) -> None:
    if args.json:
        out.json(
            {
                "workflow_id": info.workflow_id,
                "run_id": info.run_id,
                "status": info.status.value,
                **extra,
            }
        )
    else:
        out.styled(text, "ok")


async def _started(store: Store, info: RunInfo) -> WorkflowStarted:
    first = (await store.read_history(info.run_id))[0]
    assert isinstance(first, WorkflowStarted)
    return first
