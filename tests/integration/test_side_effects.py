"""``workflow.side_effect(fn)``: ``fn`` runs once, its value is recorded, and every replay —
``replay_history``, a query, a worker restart — returns the recorded value without calling
``fn`` again. A side effect that raises raises into the workflow, on every replay alike.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine import Client, Registry, replay_history
from history import MarkerRecorded, SignalReceived, TimerStarted
from sdk import WorkflowFailureError, activity, open_client, open_worker, workflow
from sdk.testing import FaultPoint, crash_resume

QUEUE = "side-effects"
WAIT = 10.0
CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    CALLS.clear()


@dataclass(frozen=True)
class Ticket:
    number: int
    code: str


def fresh_code() -> str:
    """Really non-deterministic: a real uuid4 (allowed here, the function runs once)."""
    CALLS.append("fresh_code")
    return uuid.uuid4().hex[:8]


def draw_ticket() -> Ticket:
    CALLS.append("draw_ticket")
    return Ticket(number=len(CALLS) * 7, code=uuid.uuid4().hex[:6])


def broken() -> str:
    CALLS.append("broken")
    raise ValueError("the lottery machine jammed")


@workflow.defn
class Raffle:
    def __init__(self) -> None:
        self.code = ""
        self.drawn = False

    @workflow.signal
    def draw(self) -> None:
        self.drawn = True

    @workflow.query
    def entry_code(self) -> str:
        return self.code

    @workflow.run
    async def run(self) -> tuple[str, Ticket]:
        self.code = await workflow.side_effect(fresh_code)
        await workflow.wait_condition(lambda: self.drawn)
        ticket = await workflow.side_effect(draw_ticket)
        return self.code, ticket


@workflow.defn
class Jammed:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.side_effect(broken)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"


@workflow.defn
class Uncaught:
    @workflow.run
    async def run(self) -> str:
        return await workflow.side_effect(broken)


def _markers(history: list[Any]) -> list[MarkerRecorded]:
    return [e for e in history if isinstance(e, MarkerRecorded) and e.kind == "side_effect"]


async def test_side_effect_runs_once_and_survives_a_worker_restart(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[Raffle]):
            handle = await client.start_workflow(Raffle, id="raffle-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                while True:
                    if _markers(await handle.history()):
                        break
                    await asyncio.sleep(0.01)
    assert CALLS == ["fresh_code"]

    async with open_client(db_path, workflows=[Raffle]) as client:
        handle = client.get_handle("raffle-1")
        # A query replays the run: the recorded value, without calling the function.
        code = await handle.query("entry_code")
        async with open_worker(client, task_queue=QUEUE, workflows=[Raffle]):
            await handle.signal("draw")
            async with asyncio.timeout(WAIT):
                result = await handle.result(result_type=tuple[str, Ticket])
        history = await handle.history()

    assert CALLS == ["fresh_code", "draw_ticket"]  # once each, restart and query included
    assert result[0] == code
    assert result[1] == Ticket(number=14, code=result[1].code)
    assert [m.seq for m in _markers(history)] == [1, 2]


async def test_replay_returns_the_recorded_values_without_calling_the_functions(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Raffle]):
        handle = await client.start_workflow(Raffle, id="raffle-2", task_queue=QUEUE)
        await handle.signal("draw")
        async with asyncio.timeout(WAIT):
            original = await handle.result()
        history = await handle.history()
    assert CALLS == ["fresh_code", "draw_ticket"]

    for _ in range(3):
        instance = replay_history(Registry([Raffle]), history)
        assert instance.completion is not None
        assert instance.completion.result is not None
        replayed = client.converter.decode(instance.completion.result, tuple[str, Ticket])
        assert replayed == original
    assert CALLS == ["fresh_code", "draw_ticket"]


async def test_failing_side_effect_raises_into_the_workflow_once(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Jammed]):
        handle = await client.start_workflow(Jammed, id="jammed", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            result = await handle.result()
        history = await handle.history()

    assert result == "ApplicationError: the lottery machine jammed"
    [marker] = _markers(history)
    assert marker.value is None
    assert marker.failure is not None
    assert (marker.failure.type, marker.failure.message) == (
        "ValueError",
        "the lottery machine jammed",
    )
    # Replayed, the recorded failure is raised again; the function is not called.
    instance = replay_history(Registry([Jammed]), history)
    assert instance.completion is not None
    assert instance.completion.result is not None
    assert client.converter.decode(instance.completion.result) == result
    assert CALLS == ["broken"]


async def test_uncaught_side_effect_failure_fails_the_run_with_its_type(client: Client) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Uncaught]):
        handle = await client.start_workflow(Uncaught, id="uncaught", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowFailureError) as raised:
                await handle.result()
    assert raised.value.failure.type == "ValueError"
    assert raised.value.failure.message == "the lottery machine jammed"
    assert CALLS == ["broken"]


async def test_side_effects_in_concurrent_tasks_are_recorded_in_issue_order(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    @workflow.defn
    async def shuffle(n: int) -> list[str]:
        async def one() -> str:
            await workflow.sleep(0.02)
            return await workflow.side_effect(fresh_code)

        return list(await asyncio.gather(*(one() for _ in range(n))))

    async with open_worker(client, task_queue=QUEUE, workflows=[shuffle]):
        handle = await client.start_workflow(shuffle, 5, id="shuffle", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)
        async with asyncio.timeout(WAIT):
            codes = await handle.result()
        history = await handle.history()

    assert len(set(codes)) == 5
    assert len(CALLS) == 5
    markers = _markers(history)
    assert [m.seq for m in markers] == [1, 2, 3, 4, 5]
    assert codes == [client.converter.decode(m.value) for m in markers if m.value is not None]
    instance = replay_history(Registry([shuffle]), history)
    assert instance.completion is not None
    assert instance.completion.result is not None
    assert client.converter.decode(instance.completion.result) == codes
    assert len(CALLS) == 5


# -- crashes ------------------------------------------------------------------------------------


@activity.defn
async def echo(value: str) -> str:
    return value


@workflow.defn
async def stamped() -> bool:
    """True iff every replay saw the value the side effect produced the first time: ``echo``
    recorded it before any crash, and a side effect run again would draw another one."""
    first = await workflow.side_effect(fresh_code)
    echoed_first = await echo(first)
    await workflow.sleep(0.01)
    second = await workflow.side_effect(fresh_code)
    echoed_second = await echo(second)
    return (echoed_first, echoed_second) == (first, second) and first != second


async def test_side_effects_survive_a_crash_at_every_fault_point(tmp_path: Path) -> None:
    report = await crash_resume(stamped, activities=[echo], expected=True, directory=tmp_path)

    assert report.result is True
    assert report.crashes >= 10
    assert report.points[FaultPoint.BEFORE_APPEND] >= 4


async def test_side_effect_runs_once_when_a_signal_lands_while_it_is_being_recorded(
    db_path: Path,
) -> None:
    """The side effect runs, a signal from another process is appended before the worker
    records the value (its append conflicts and it catches up first): the function must not
    run a second time for the retried append."""
    signal_from_elsewhere: list[Callable[[], None]] = []

    def code_and_interrupt() -> str:
        CALLS.append("code_and_interrupt")
        if len(CALLS) == 1:
            signal_from_elsewhere[0]()
        return f"code-{len(CALLS)}"

    @workflow.defn
    class Raced:
        def __init__(self) -> None:
            self.signals = 0

        @workflow.signal
        def poke(self) -> None:
            self.signals += 1

        @workflow.run
        async def run(self) -> tuple[str, int]:
            code = await workflow.side_effect(code_and_interrupt)
            await workflow.wait_condition(lambda: self.signals > 0)
            return code, self.signals

    other_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=other_loop.run_forever, daemon=True)
    thread.start()
    try:
        async with open_client(db_path) as client:
            handle = await client.start_workflow(Raced, id="raced", task_queue=QUEUE)

            async def poke() -> None:
                async with open_client(db_path) as elsewhere:
                    await elsewhere.get_handle("raced").signal("poke")

            def blocking_poke() -> None:
                asyncio.run_coroutine_threadsafe(poke(), other_loop).result(WAIT)

            signal_from_elsewhere.append(blocking_poke)
            async with open_worker(client, task_queue=QUEUE, workflows=[Raced]):
                async with asyncio.timeout(WAIT):
                    result = await handle.result()
            history = await handle.history()
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        thread.join(WAIT)
        other_loop.close()

    assert result == ("code-1", 1)
    assert CALLS == ["code_and_interrupt"]
    [signal] = [e for e in history if isinstance(e, SignalReceived)]
    [marker] = _markers(history)
    assert signal.event_id < marker.event_id  # the signal did land first
