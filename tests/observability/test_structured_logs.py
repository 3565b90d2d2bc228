"""Structured logs: every line carries the run's identity, workflow logs stay silent while a
recovered run replays, JSON lines or console lines, and stdlib logging joins in."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog
from obs_support import WAIT

from engine import Client, Worker, configure_logging
from history import SqliteStore
from sdk import RetryPolicy, activity, open_client, open_worker, workflow
from sdk.testing import FaultPoint, Faults

QUEUE = "logs"

pytestmark = pytest.mark.usefixtures("restore_logging")


@activity.defn
async def create_account(user: str) -> str:
    activity.logger.info("account row inserted", user=user)
    return f"acct-{user}"


@activity.defn
def send_mail(user: str) -> str:  # sync: runs in a worker thread
    activity.logger.info("mail queued", user=user)
    logging.getLogger("mailer.sdk").warning("smtp relay slow")
    return f"mail-{user}"


@workflow.defn
async def onboarding(user: str) -> str:
    workflow.logger.info("creating account", user=user)
    account = await create_account(user)
    workflow.logger.info("sending welcome mail", account=account)
    await send_mail(user)
    workflow.logger.info("onboarded", account=account)
    return account


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _events(lines: list[dict[str, Any]], logger: str) -> list[str]:
    return [line["event"] for line in lines if line.get("logger") == logger]


async def test_workflow_and_activity_lines_carry_the_runs_identity(db_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)

    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[onboarding], activities=[create_account, send_mail]
        ):
            handle = await client.start_workflow(onboarding, "ada", id="onb-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await handle.result()

    lines = _lines(stream)
    identity = {
        "workflow_id": "onb-1",
        "run_id": handle.run_id,
        "workflow_type": "onboarding",
        "task_queue": QUEUE,
    }
    workflow_lines = [line for line in lines if line["logger"] == "perdura.workflow"]
    assert [line["event"] for line in workflow_lines] == [
        "creating account",
        "sending welcome mail",
        "onboarded",
    ]
    for line in workflow_lines:
        assert identity.items() <= line.items()
        assert line["level"] == "info"
        assert "timestamp" in line
    [inserted] = [line for line in lines if line["event"] == "account row inserted"]
    assert {**identity, "activity": "create_account", "activity_id": 1, "attempt": 1}.items() <= (
        inserted.items()
    )
    [queued] = [line for line in lines if line["event"] == "mail queued"]
    assert {"activity": "send_mail", "activity_id": 2, "attempt": 1}.items() <= queued.items()


async def test_stdlib_logging_inside_an_activity_is_rendered_with_the_runs_identity(
    db_path: Path,
) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)

    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[onboarding], activities=[create_account, send_mail]
        ):
            handle = await client.start_workflow(onboarding, "bo", id="onb-2", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await handle.result()

    [slow] = [line for line in _lines(stream) if line["logger"] == "mailer.sdk"]
    assert slow["event"] == "smtp relay slow"
    assert slow["level"] == "warning"
    assert slow["workflow_id"] == "onb-2"
    assert (slow["activity"], slow["attempt"]) == ("send_mail", 1)


async def test_perdura_lines_reach_stdlib_handlers_and_levels(db_path: Path) -> None:
    configure_logging(json=True, stream=io.StringIO(), level="warning")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("perdura").addHandler(Keep())
    try:
        structlog.get_logger("perdura.worker").warning("disk almost full", free_mb=12)
        structlog.get_logger("perdura.worker").info("filtered out by the level")
    finally:
        logging.getLogger("perdura").handlers.clear()

    assert [r.name for r in records] == ["perdura.worker"]
    assert records[0].levelno == logging.WARNING


async def test_a_recovered_run_does_not_log_its_past_again(db_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    store = await SqliteStore.open(db_path)
    try:
        client = Client(store)
        options: dict[str, Any] = {
            "task_queue": QUEUE,
            "workflows": [onboarding],
            "activities": [create_account, send_mail],
        }
        # Dies right after the first activity's outcome is committed, before the code saw it.
        doomed = Worker(
            store, identity="w1", faults=Faults.crash_at(FaultPoint.AFTER_APPEND, 1), **options
        )
        handle = await client.start_workflow(onboarding, "cy", id="onb-3", task_queue=QUEUE)
        await doomed.start()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        assert doomed.crashed is not None
        await doomed.stop()
        before = _events(_lines(stream), "perdura.workflow")

        async with Worker(store, identity="w1", **options):
            async with asyncio.timeout(WAIT):
                await handle.result()
    finally:
        await store.close()

    assert before == ["creating account"]
    # The replay went through "creating account" again, silently.
    assert _events(_lines(stream), "perdura.workflow") == [
        "creating account",
        "sending welcome mail",
        "onboarded",
    ]
    assert _events(_lines(stream), "perdura.activity").count("account row inserted") == 1


async def test_runtime_lines_about_a_run_carry_its_identity(db_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)

    @activity.defn(name="ping")
    async def ping(host: str) -> str:
        if activity.info().attempt == 1:
            raise ConnectionRefusedError(f"{host} refused")
        return "pong"

    @workflow.defn(name="probe")
    async def probe(host: str) -> str:
        return await workflow.execute_activity(
            ping, host, retry_policy=RetryPolicy(initial_interval=0.01)
        )

    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[probe], activities=[ping]):
            handle = await client.start_workflow(probe, "db-1", id="probe-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                await handle.result()

    [retry] = [line for line in _lines(stream) if line["event"].startswith("activity attempt")]
    assert retry["logger"] == "perdura.observe"
    assert {
        "workflow_id": "probe-1",
        "run_id": handle.run_id,
        "workflow_type": "probe",
        "task_queue": QUEUE,
        "activity": "ping",
        "attempt": 1,
        "failure_class": "transient",
    }.items() <= retry.items()


def test_the_console_renderer_writes_plain_lines_without_colours_off_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger("perdura.worker").info("worker started", task_queue="orders")

    line = stream.getvalue()
    assert "worker started" in line
    assert "task_queue=orders" in line
    assert "\x1b[" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_json_lines_are_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURA_LOG_FORMAT", "json")
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger("perdura.worker").info("worker started", task_queue="orders")

    [line] = _lines(stream)
    assert (line["event"], line["task_queue"], line["logger"]) == (
        "worker started",
        "orders",
        "perdura.worker",
    )


def test_an_unknown_log_level_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="log level must be one of debug, info"):
        configure_logging(level="loud", stream=io.StringIO())
