"""``perdura start``, ``list``, ``describe``, ``history``, ``timeline`` and ``result``: starting
runs and looking inside them. Only ``start`` writes (the run's first event). ``describe``
adds a graph section for a graph run (``_cli_graph``)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import msgspec

from history import (
    AnyEvent,
    PayloadConverter,
    RunInfo,
    RunQuery,
    RunStatus,
    WorkflowCompleted,
    WorkflowFailed,
)

from ._cli_base import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_STILL_RUNNING,
    EXIT_USAGE,
    CliError,
    open_cli_store,
    resolve_run,
    store_url,
)
from ._cli_graph import graph_json, print_graph_section
from ._cli_output import Cell, Output, run_json, status_cell, utc_time
from ._client import Client, describe_history
from ._graph_view import describe_graph_run
from ._timeline import (
    build_timeline,
    event_to_json,
    format_duration,
    format_failure,
    format_offset,
    format_payload,
    history_rows,
    timeline_lines,
)

__all__ = [
    "cmd_describe",
    "cmd_history",
    "cmd_list",
    "cmd_result",
    "cmd_start",
    "cmd_timeline",
]


async def cmd_start(args: argparse.Namespace, out: Output) -> int:
    if not args.id or not args.task_queue:
        raise CliError("--id and --task-queue must not be empty", EXIT_USAGE)
    async with open_cli_store(args, create=True) as store:
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


async def cmd_list(args: argparse.Namespace, out: Output) -> int:
    query = RunQuery(
        status=None if args.status is None else RunStatus(args.status),
        workflow_type=args.type,
        limit=args.limit,
    )
    async with open_cli_store(args, create=False) as store:
        runs = await store.list_runs(query)
    if args.json:
        out.json([run_json(info) for info in runs])
        return EXIT_OK
    if not runs:
        sys.stderr.write(f"no matching runs in {store_url(args)}\n")
        return EXIT_OK
    now = time.time()
    rows: list[list[Cell]] = []
    for info in runs:
        closed = info.closed_at.timestamp() if info.closed_at is not None else now
        rows.append(
            [
                info.workflow_id,
                info.workflow_type,
                status_cell(info.status),
                utc_time(info.started_at),
                format_duration(closed - info.started_at.timestamp()),
                str(info.history_length),
                info.run_id,
            ]
        )
    out.table(
        ["WORKFLOW ID", "TYPE", "STATUS", "STARTED (UTC)", "DURATION", "EVENTS", "RUN ID"], rows
    )
    return EXIT_OK


async def cmd_describe(args: argparse.Namespace, out: Output) -> int:
    converter = PayloadConverter()
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, args.id)
        history = await store.read_history(info.run_id)
        timers = await store.pending_timers(info.run_id)
    description = describe_history(info, history, timers, converter)
    graph = graph_json(describe_graph_run(history))
    last = history[-1] if history else None
    if args.json:
        data = run_json(info)
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
                "last_failure_class": (
                    None if p.last_failure is None else p.last_failure.classification
                ),
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
        data["failure_class"] = description.failure_class
        data["result"] = (
            event_to_json(last)["result"] if isinstance(last, WorkflowCompleted) else None
        )
        data["graph"] = graph
        out.json(data)
        return EXIT_OK

    now = time.time()
    pairs: list[tuple[str, Cell]] = [
        ("workflow id", info.workflow_id),
        ("run id", info.run_id),
        ("type", info.workflow_type),
        ("task queue", info.task_queue),
        ("status", status_cell(info.status)),
        ("started", f"{utc_time(info.started_at)} UTC"),
    ]
    if info.closed_at is not None:
        took = format_duration((info.closed_at - info.started_at).total_seconds())
        pairs.append(("closed", f"{utc_time(info.closed_at)} UTC (after {took})"))
    pairs.append(("events", str(info.history_length)))
    if info.status.is_open:
        pairs.append(("owner", _owner_text(info, now)))
        if info.wake_at is not None:
            wake = "now" if info.wake_at <= now else f"in {format_duration(info.wake_at - now)}"
            pairs.append(("next wake-up", wake))
    for timer in description.pending_timers:
        due = timer.fire_at.timestamp() - now
        when = f"in {format_duration(due)}" if due > 0 else "due now"
        pairs.append((f"timer T{timer.seq}", f"fires {utc_time(timer.fire_at)} UTC ({when})"))
    for pending in description.pending_activities:
        text = f"{pending.activity_type}, attempt {pending.attempt}"
        if pending.retry_at is not None:
            text += f", retry at {utc_time(pending.retry_at)} UTC"
        if pending.last_failure is not None:
            text += f", last failure {format_failure(pending.last_failure)}"
            if pending.last_failure.classification:
                text += f" [{pending.last_failure.classification}]"
        if pending.last_heartbeat_details:
            details = msgspec.json.encode(msgspec.to_builtins(pending.last_heartbeat_details))
            text += f", last heartbeat {details.decode()[:60]}"
        pairs.append((f"activity #{pending.seq}", ("pending: " + text, "warn")))
    if description.last_task_failure is not None and info.status.is_open:
        pairs.append(("task failure", (format_failure(description.last_task_failure), "fail")))
    if description.failure is not None:
        pairs.append(("failure", (format_failure(description.failure), "fail")))
        if description.failure_class is not None:
            pairs.append(("failure class", (description.failure_class, "fail")))
    if isinstance(last, WorkflowCompleted):
        pairs.append(("result", (format_payload(last.result, 200), "ok")))
    out.fields(pairs)
    if graph is not None:
        print_graph_section(out, graph)
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
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, args.id)
        return info, await store.read_history(info.run_id)


async def cmd_history(args: argparse.Namespace, out: Output) -> int:
    _, events = await _read_run(args)
    if args.json:
        out.json([event_to_json(event) for event in events])
        return EXIT_OK
    out.table(["ID", "TIME (UTC)", "OFFSET", "TYPE", "DETAILS"], history_table(events))
    return EXIT_OK


def history_table(events: list[AnyEvent]) -> list[list[Cell]]:
    """The rows of ``perdura history``: id, time, offset, type (coloured by outcome), details."""
    rows: list[list[Cell]] = []
    for row in history_rows(events):
        rows.append(
            [
                str(row.event_id),
                f"{row.time:%H:%M:%S}.{row.time.microsecond // 1000:03d}",
                format_offset(row.offset),
                (row.type, event_style(row.type)),
                row.details,
            ]
        )
    return rows


def event_style(event_type: str) -> str:
    if event_type in ("ActivityFailed", "WorkflowFailed", "WorkflowTaskFailed"):
        return "fail"
    if event_type in ("ActivityTimedOut",):
        return "warn"
    return ""


async def cmd_timeline(args: argparse.Namespace, out: Output) -> int:
    info, events = await _read_run(args)
    timeline = build_timeline(events, now=datetime.now(UTC) if info.status.is_open else None)
    if args.json:
        out.json(msgspec.to_builtins(timeline))
        return EXIT_OK
    bar_width = max(20, min(60, out.width - 75)) if out.rich else 40
    out.segments(timeline_lines(timeline, bar_width=bar_width, unicode=out.rich))
    return EXIT_OK


async def cmd_result(args: argparse.Namespace, out: Output) -> int:
    async with open_cli_store(args, create=False) as store:
        info = await resolve_run(store, args.id)
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
        print_json_value(out, value)
        return EXIT_OK
    if isinstance(last, WorkflowFailed):
        raise CliError(f"{where} failed: {format_failure(last.failure)}", EXIT_RUN_FAILED)
    raise CliError(f"{where} closed as {info.status.value}", EXIT_RUN_FAILED)


def print_json_value(out: Output, value: object) -> None:
    """A value for copying: compact JSON on a pipe, indented on a terminal, never coloured."""
    text = msgspec.json.encode(value)
    out.line((msgspec.json.format(text, indent=2) if out.rich else text).decode())
