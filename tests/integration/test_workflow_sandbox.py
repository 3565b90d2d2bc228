"""The sandbox inside real workflows: a call whose result would differ on replay fails the
workflow task (not the run) with an error naming the call and what to use instead."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import random
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from time import time as captured_clock  # a reference taken before the sandbox is installed
from typing import Any

import pytest

from engine import Client
from history import RunStatus, WorkflowTaskFailed
from sdk import activity, open_worker, workflow

QUEUE = "sandbox"
FILES = "an activity (workflow code must not touch files)"
NETWORK = "an activity (workflow code must not use the network)"
PROCESSES = "an activity (workflow code must not start processes)"


def _connect() -> None:
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))


def _start_thread() -> None:
    threading.Thread(target=lambda: None).start()


#: What each misbehaving workflow does, by name (workflow arguments must be plain data). Each
#: call is written as workflow code writes it, looked up through its module at call time.
MISTAKES: dict[str, Callable[[], Any]] = {
    "time.time": lambda: time.time(),
    "datetime.now": lambda: datetime.datetime.now(),
    "random.random": lambda: random.random(),
    "uuid.uuid4": lambda: uuid.uuid4(),
    "open": lambda: open(os.devnull),  # refused before a file is opened
    "socket": _connect,
    "subprocess": lambda: subprocess.run(["true"], check=False),
    "threading.Thread": _start_thread,
    "asyncio.to_thread": lambda: asyncio.to_thread(print, "hi"),
}


@workflow.defn
async def misbehave(mistake: str) -> str:
    outcome = MISTAKES[mistake]()
    if inspect.isawaitable(outcome):
        await outcome
    return "the sandbox let it through"


@pytest.mark.parametrize(
    ("mistake", "call", "replacement"),
    [
        pytest.param("time.time", "time.time()", "workflow.now()", id="time.time"),
        pytest.param(
            "datetime.now", "datetime.datetime.now()", "workflow.now()", id="datetime.now"
        ),
        pytest.param("random.random", "random.random()", "workflow.random()", id="random"),
        pytest.param("uuid.uuid4", "uuid.uuid4()", "workflow.uuid4()", id="uuid4"),
        pytest.param("open", f"open({os.devnull!r})", FILES, id="open"),
        pytest.param("socket", "socket.connect(('127.0.0.1', 9))", NETWORK, id="socket"),
        pytest.param("subprocess", "subprocess.Popen(", PROCESSES, id="subprocess"),
        pytest.param(
            "threading.Thread",
            "threading.Thread.start()",
            "asyncio.create_task() / workflow.execute_activity()",
            id="thread",
        ),
        pytest.param("asyncio.to_thread", "loop.run_in_executor()", "an activity", id="to_thread"),
    ],
)
async def test_sandbox_violation_fails_the_workflow_task_naming_the_call_and_its_replacement(
    client: Client, wait_for_event: Any, mistake: str, call: str, replacement: str
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[misbehave]):
        handle = await client.start_workflow(misbehave, mistake, id=mistake, task_queue=QUEUE)
        task_failed = await wait_for_event(handle, WorkflowTaskFailed)
        description = await handle.describe()

    failure = task_failed.failure
    assert failure.type.endswith(".SandboxViolationError")
    assert call in failure.message
    assert f"use {replacement}" in failure.message
    # A bug in the code, not an outcome: the run stays open for a fixed deploy to finish.
    assert description.status is RunStatus.RUNNING
    assert description.failure is None
    assert description.last_task_failure == failure


@activity.defn
async def ping(value: int) -> int:
    return value


@workflow.defn
async def reads_a_clock_after_calling_an_activity() -> float:
    # The runtime pauses the C-call watch while it schedules the activity (in this call).
    pending = asyncio.ensure_future(ping(1))
    value = captured_clock()
    await pending
    return value


async def test_a_captured_clock_read_right_after_an_activity_call_is_caught(
    client: Client, wait_for_event: Any
) -> None:
    async with open_worker(
        client,
        task_queue=QUEUE,
        workflows=[reads_a_clock_after_calling_an_activity],
        activities=[ping],
    ):
        handle = await client.start_workflow(
            reads_a_clock_after_calling_an_activity, id="clock-after-activity", task_queue=QUEUE
        )
        task_failed = await wait_for_event(handle, WorkflowTaskFailed)

    assert task_failed.failure.type.endswith(".SandboxViolationError")
    assert "time.time()" in task_failed.failure.message
