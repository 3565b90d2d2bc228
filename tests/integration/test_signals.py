"""Signals: recorded in history, delivered in order, never lost, never delivered twice — also
when they are sent while no worker runs, across a worker restart and with signal-with-start.

A "restart" stops the worker and closes its store, then opens a new store and worker on the
same file, as a restarted process would. The workflow turns every signal into one activity
execution, so the activity's own ledger (``DELIVERED``) shows what was delivered how often.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Client, Worker
from engine._faults import FaultPoint, Faults
from history import (
    ActivityCompleted,
    ActivityScheduled,
    PayloadConverter,
    RunClosedError,
    RunNotFoundError,
    RunQuery,
    RunStatus,
    SignalReceived,
    WorkflowStarted,
)
from sdk import activity, open_client, open_worker, workflow

QUEUE = "signals"
WAIT = 10.0

DELIVERED: list[str] = []
"""Every execution of ``deliver``, in order: the ledger the tests count."""


@pytest.fixture(autouse=True)
def _fresh_ledger() -> Iterator[None]:
    DELIVERED.clear()
    yield
    DELIVERED.clear()


@activity.defn
async def deliver(message: str) -> str:
    DELIVERED.append(message)
    return message


@workflow.defn
class Mailbox:
    """Delivers each posted message with one activity, in arrival order, until closed."""

    def __init__(self) -> None:
        self.inbox: list[str] = []
        self.delivered: list[str] = []
        self.closed = False

    @workflow.signal
    def post(self, message: str) -> None:
        self.inbox.append(message)

    @workflow.signal
    def close(self) -> None:
        self.closed = True

    @workflow.run
    async def run(self, owner: str) -> list[str]:
        while True:
            await workflow.wait_condition(lambda: bool(self.inbox) or self.closed)
            if self.inbox:
                self.delivered.append(await deliver(self.inbox.pop(0)))
            else:
                return self.delivered


@workflow.defn
class Approvals:
    """An ``async`` signal handler runs as a task of the workflow and may await activities."""

    def __init__(self) -> None:
        self.approvals: list[str] = []

    @workflow.signal
    async def approve(self, who: str) -> None:
        self.approvals.append(await deliver(f"approved by {who}"))

    @workflow.run
    async def run(self, needed: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.approvals) >= needed)
        return self.approvals


def _signals(history: list[Any]) -> list[tuple[str, list[Any]]]:
    converter = PayloadConverter()
    return [
        (e.name, [converter.decode(p) for p in e.args])
        for e in history
        if isinstance(e, SignalReceived)
    ]


async def _until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _until_async(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_signals_are_delivered_in_the_order_sent_exactly_once(client: Client) -> None:
    messages = [f"m{i}" for i in range(25)]
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        handle = await client.start_workflow(Mailbox, "ann", id="mail-order", task_queue=QUEUE)
        for message in messages:
            await handle.signal("post", message)
        await handle.signal("close")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == messages
        history = await handle.history()

    assert DELIVERED == messages
    assert _signals(history) == [("post", [m]) for m in messages] + [("close", [])]
    assert sum(isinstance(e, ActivityCompleted) for e in history) == len(messages)


async def test_concurrent_signals_are_all_delivered_once_in_history_order(
    client: Client,
) -> None:
    messages = [f"c{i}" for i in range(40)]
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        handle = await client.start_workflow(Mailbox, "ann", id="mail-burst", task_queue=QUEUE)
        await asyncio.gather(*(handle.signal("post", m) for m in messages))
        await handle.signal("close")
        async with asyncio.timeout(WAIT):
            result = await handle.result()
        history = await handle.history()

    recorded = [args[0] for name, args in _signals(history) if name == "post"]
    assert sorted(recorded) == sorted(messages)  # none lost, none recorded twice
    assert result == recorded  # delivered in the order history recorded them
    assert DELIVERED == recorded


async def test_signals_sent_while_no_worker_runs_wait_in_history(client: Client) -> None:
    handle = await client.start_workflow(Mailbox, "ann", id="mail-offline", task_queue=QUEUE)
    for message in ("a", "b", "c"):
        await handle.signal("post", message)
    await handle.signal("close")
    assert DELIVERED == []
    assert (await handle.run_info()).status is RunStatus.RUNNING

    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["a", "b", "c"]
    assert DELIVERED == ["a", "b", "c"]


async def test_signals_across_a_worker_restart_are_neither_lost_nor_delivered_twice(
    db_path: Path,
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
            handle = await client.start_workflow(
                Mailbox, "ann", id="mail-restart", task_queue=QUEUE
            )
            await handle.signal("post", "before-1")
            await handle.signal("post", "before-2")
            await _until(lambda: DELIVERED == ["before-1", "before-2"], "first deliveries")
        # The worker is gone: these wait in history.
        await handle.signal("post", "while-down-1")
        await handle.signal("post", "while-down-2")

    async with open_client(db_path) as client:
        handle = client.get_handle("mail-restart")
        async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
            await handle.signal("post", "after")
            await handle.signal("close")
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        history = await handle.history()

    expected = ["before-1", "before-2", "while-down-1", "while-down-2", "after"]
    assert result == expected
    assert DELIVERED == expected  # the two delivered before the restart were not redone
    assert [name for name, _ in _signals(history)] == ["post"] * 5 + ["close"]


async def test_signal_without_a_handler_is_recorded_and_ignored(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        handle = await client.start_workflow(Mailbox, "ann", id="mail-unknown", task_queue=QUEUE)
        await handle.signal("shred", "everything")
        await handle.signal("post", "still here")
        await handle.signal("close")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["still here"]
        history = await handle.history()
    assert [name for name, _ in _signals(history)] == ["shred", "post", "close"]


async def test_async_signal_handler_runs_activities(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Approvals], activities=[deliver]):
        handle = await client.start_workflow(Approvals, 2, id="approvals", task_queue=QUEUE)
        await handle.signal("approve", "ann")
        await handle.signal("approve", "bob")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["approved by ann", "approved by bob"]
    assert DELIVERED == ["approved by ann", "approved by bob"]


# -- signal-with-start ------------------------------------------------------------------------


async def test_signal_with_start_starts_the_run_when_none_exists(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        handle = await client.signal_with_start(
            Mailbox, "ann", id="mail-sws", task_queue=QUEUE, signal="post", signal_args=["hi"]
        )
        await handle.signal("close")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["hi"]
        history = await handle.history()

    assert await client.count_runs(RunQuery(workflow_id="mail-sws")) == 1
    # The signal is the run's second event: no code ran before it was recorded.
    assert isinstance(history[0], WorkflowStarted)
    assert isinstance(history[1], SignalReceived)
    assert (history[1].name, history[1].event_id) == ("post", 2)


async def test_signal_with_start_signals_the_open_run_when_it_exists(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        first = await client.start_workflow(Mailbox, "ann", id="mail-open", task_queue=QUEUE)
        await first.signal("post", "one")
        again = await client.signal_with_start(
            Mailbox, "bob", id="mail-open", task_queue=QUEUE, signal="post", signal_args=["two"]
        )
        assert again.run_id == first.run_id
        await again.signal("close")
        async with asyncio.timeout(WAIT):
            assert await first.result() == ["one", "two"]
        history = await first.history()

    assert await client.count_runs(RunQuery(workflow_id="mail-open")) == 1
    assert _signals(history) == [("post", ["one"]), ("post", ["two"]), ("close", [])]
    assert DELIVERED == ["one", "two"]
    # The existing run keeps the arguments it was started with.
    assert isinstance(history[0], WorkflowStarted)
    assert len(history[0].args) == 1


async def test_signal_with_start_starts_a_new_run_once_the_previous_one_closed(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        old = await client.signal_with_start(
            Mailbox, "ann", id="mail-again", task_queue=QUEUE, signal="close"
        )
        async with asyncio.timeout(WAIT):
            assert await old.result() == []
        new = await client.signal_with_start(
            Mailbox, "ann", id="mail-again", task_queue=QUEUE, signal="post", signal_args=["x"]
        )
        assert new.run_id != old.run_id
        await new.signal("close")
        async with asyncio.timeout(WAIT):
            assert await new.result() == ["x"]

    runs = await client.list_runs(RunQuery(workflow_id="mail-again"))
    assert [r.status for r in runs] == [RunStatus.COMPLETED, RunStatus.COMPLETED]


# -- errors -----------------------------------------------------------------------------------


async def test_signal_to_a_closed_run_raises_run_closed_error_and_writes_nothing(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]):
        handle = await client.start_workflow(Mailbox, "ann", id="mail-closed", task_queue=QUEUE)
        await handle.signal("close")
        async with asyncio.timeout(WAIT):
            await handle.result()
    before = await handle.history()

    with pytest.raises(RunClosedError) as raised:
        await handle.signal("post", "too late")

    assert raised.value.run_id == handle.run_id
    assert "already closed (completed)" in str(raised.value)
    assert await handle.history() == before


async def test_signal_to_an_unknown_workflow_id_raises_run_not_found(client: Client) -> None:
    with pytest.raises(RunNotFoundError):
        await client.get_handle("nobody").signal("post", "hello?")


# -- crashes ------------------------------------------------------------------------------------

CRASH_POINTS = [
    (FaultPoint.AFTER_CLAIM, 1),  # before the code first ran
    (FaultPoint.RELEASE, 1),  # waiting for the first signal
    (FaultPoint.AFTER_CLAIM, 3),  # woken by the second signal
    (FaultPoint.ACTIVITY_START, 1),
    (FaultPoint.ACTIVITY_START, 3),
    (FaultPoint.ACTIVITY_COMPLETE, 2),  # delivered, not yet recorded: delivered again
    (FaultPoint.BEFORE_APPEND, 2),
    (FaultPoint.BEFORE_APPEND, 5),
    (FaultPoint.AFTER_APPEND, 2),
    (FaultPoint.AFTER_APPEND, 6),
    (FaultPoint.RELEASE, 4),
]


@pytest.mark.parametrize(
    ("point", "hit"), CRASH_POINTS, ids=[f"{p.value}-{n}" for p, n in CRASH_POINTS]
)
async def test_signals_survive_a_worker_crash_at_any_point(
    db_path: Path, point: FaultPoint, hit: int
) -> None:
    """The worker dies (as a killed process does) somewhere while signals keep arriving;
    a restarted worker delivers every signal once, in order. A delivery whose completion was
    recorded before the crash never runs again; one in flight at the crash runs again."""
    messages = [f"s{i}" for i in range(4)]
    async with open_client(db_path) as client:
        faults = Faults.crash_at(point, hit)
        doomed = Worker(
            client.store,
            task_queue=QUEUE,
            workflows=[Mailbox],
            activities=[deliver],
            identity="signals-worker",
            faults=faults,
            converter=client.converter,
        )
        client.add_listener(doomed)
        await doomed.start()
        handle = await client.start_workflow(Mailbox, "ann", id="mail-crash", task_queue=QUEUE)

        async def at_rest(delivered: int) -> bool:
            """Dead, or ``delivered`` deliveries recorded and the run handed back: every
            message then costs the same fault points (claim, attempt, append, release)."""
            if doomed.stopped.is_set():
                return True
            history = await handle.history()
            recorded = sum(isinstance(e, ActivityCompleted) for e in history)
            return recorded >= delivered and (await handle.run_info()).owner is None

        await _until_async(lambda: at_rest(0), "the run to be released")
        for number, message in enumerate(messages, start=1):
            await handle.signal("post", message)
            await _until_async(
                functools.partial(at_rest, number), f"delivery of {message} or the crash"
            )
        assert faults.crashed is not None, f"no crash at {point.value} #{hit}"
        await doomed.stop()
        client.remove_listener(doomed)

        history = await handle.history()
        names = {e.seq: e.args for e in history if isinstance(e, ActivityScheduled)}
        recorded = [
            client.converter.decode(names[e.seq][0])
            for e in history
            if isinstance(e, ActivityCompleted)
        ]
        await handle.signal("post", "while-down")
        async with open_worker(
            client,
            task_queue=QUEUE,
            workflows=[Mailbox],
            activities=[deliver],
            identity="signals-worker",  # the restarted process: takes its runs back at once
        ):
            await handle.signal("close")
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        final = await handle.history()

    expected = [*messages, "while-down"]
    assert result == expected
    assert [args[0] for name, args in _signals(final) if name == "post"] == expected
    executions = Counter(DELIVERED)
    for message in expected:
        if message in recorded:
            assert executions[message] == 1, f"{message} was recorded, yet delivered again"
        else:  # in flight at the crash (at-least-once) or sent after it
            assert 1 <= executions[message] <= 2, (message, executions)


async def test_a_run_started_in_this_process_sees_signals_sent_before_its_worker_claims_it(
    client: Client,
) -> None:
    # The worker is told about the new run (and keeps its first event, so as not to read it
    # back) but does not poll until the signals are recorded: its claim must see them.
    worker = Worker(
        client.store,
        task_queue=QUEUE,
        workflows=[Mailbox],
        activities=[deliver],
        converter=client.converter,
        clock=client.clock,
    )
    client.add_listener(worker)
    try:
        handle = await client.start_workflow(Mailbox, "ann", id="mail-early", task_queue=QUEUE)
        assert handle.run_id in worker.env.fresh
        await handle.signal("post", "early")
        await handle.signal("close")
        async with worker, asyncio.timeout(WAIT):
            assert await handle.result() == ["early"]
    finally:
        client.remove_listener(worker)
    assert DELIVERED == ["early"]


async def test_a_run_started_for_another_queue_is_not_kept_for_this_worker(client: Client) -> None:
    async with open_worker(
        client, task_queue=QUEUE, workflows=[Mailbox], activities=[deliver]
    ) as worker:
        handle = await client.start_workflow(Mailbox, "ann", id="mail-else", task_queue="other")
        assert handle.run_id not in worker.env.fresh
