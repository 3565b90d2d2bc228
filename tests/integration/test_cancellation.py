"""Cancellation: ``handle.cancel(reason)`` is recorded with its reason; the workflow sees
``asyncio.CancelledError`` at its current await, may clean up (running activities in
``except``/``finally``), and ends CANCELLED with the reason in its history, its description and
the error ``result()`` raises. Activities in flight are cancelled (a sync one in a thread learns
it from ``activity.heartbeat()``), timers are cancelled, and a finished run cannot be cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Client
from history import (
    ActivityCancelled,
    ActivityCompleted,
    ActivityHeartbeat,
    ActivityScheduled,
    CancelRequested,
    MarkerRecorded,
    RunClosedError,
    RunStatus,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowTaskFailed,
)
from sdk import (
    WorkflowCancelledError,
    activity,
    open_client,
    open_worker,
    workflow,
)
from sdk.activity import ActivityCancelledError

QUEUE = "cancellation"
WAIT = 10.0
DAY = 86400.0

LEDGER: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    LEDGER.clear()


@activity.defn
async def book(trip: str) -> str:
    LEDGER.append(f"book {trip}")
    return f"booking-{trip}"


@activity.defn
async def release(booking: str) -> str:
    LEDGER.append(f"release {booking}")
    return f"released {booking}"


@activity.defn
async def notify(message: str) -> None:
    LEDGER.append(f"notify {message}")


@workflow.defn
class Trip:
    """Books, waits a day, and on cancellation releases the booking and notifies."""

    @workflow.run
    async def run(self, trip: str) -> str:
        booking = await book(trip)
        try:
            await workflow.sleep(DAY)
            return "travelled"
        except asyncio.CancelledError:
            await release(booking)  # an activity in the except block
            raise
        finally:
            await notify(f"{trip} closed")  # and one in finally


@workflow.defn
class Stubborn:
    """Catches the cancellation and returns normally: the run ends COMPLETED."""

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(DAY)
        except asyncio.CancelledError:
            return "cancelled, but wrapped up"
        return "slept"


def _types(history: list[Any]) -> list[str]:
    return [type(e).__name__ for e in history]


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


async def test_cancel_interrupts_the_current_await_runs_cleanup_and_ends_cancelled(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(
        client, task_queue=QUEUE, workflows=[Trip], activities=[book, release, notify]
    ):
        handle = await client.start_workflow(Trip, "lisbon", id="trip-1", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)
        await handle.cancel(reason="customer changed plans")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowCancelledError) as raised:
                await handle.result()
        history = await handle.history()
        description = await handle.describe()

    assert raised.value.reason == "customer changed plans"
    assert "was cancelled: customer changed plans" in str(raised.value)
    assert description.status is RunStatus.CANCELLED
    assert description.cancel_reason == "customer changed plans"
    assert LEDGER == ["book lisbon", "release booking-lisbon", "notify lisbon closed"]

    [requested] = [e for e in history if isinstance(e, CancelRequested)]
    [cancelled] = [e for e in history if isinstance(e, WorkflowCancelled)]
    assert requested.reason == cancelled.reason == "customer changed plans"
    assert history[-1] == cancelled
    # The sleep's timer is cancelled, not fired; cleanup happened after the request.
    assert TimerCancelled.__name__ in _types(history)
    assert TimerFired.__name__ not in _types(history)
    after_request = history[requested.event_id :]
    assert sum(isinstance(e, ActivityCompleted) for e in after_request) == 2
    assert await client.store.pending_timers(handle.run_id) == []


async def test_cancel_reaches_in_flight_async_activities(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    started: list[str] = []
    interrupted: list[str] = []

    @activity.defn
    async def wait_for_parcel(parcel: str) -> str:
        started.append(parcel)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.append(parcel)
            raise
        return parcel

    @workflow.defn
    async def deliveries(parcels: list[str]) -> list[str]:
        return list(await asyncio.gather(*(wait_for_parcel(p) for p in parcels)))

    async with open_worker(
        client, task_queue=QUEUE, workflows=[deliveries], activities=[wait_for_parcel]
    ):
        handle = await client.start_workflow(
            deliveries, ["p1", "p2"], id="deliveries", task_queue=QUEUE
        )
        await _until(lambda: len(started) == 2)
        await handle.cancel(reason="warehouse closed")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowCancelledError):
                await handle.result()
        history = await handle.history()

    assert sorted(interrupted) == ["p1", "p2"]
    cancelled = sorted(e.seq for e in history if isinstance(e, ActivityCancelled))
    scheduled = sorted(e.seq for e in history if isinstance(e, ActivityScheduled))
    assert cancelled == scheduled == [1, 2]
    assert not any(isinstance(e, ActivityCompleted) for e in history)


async def test_sync_activity_in_a_thread_learns_of_the_cancel_through_its_heartbeat(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    gave_up = threading.Event()
    progress: list[int] = []

    @activity.defn
    def crunch(rows: int) -> int:
        for row in range(rows):
            try:
                activity.heartbeat(row)
            except ActivityCancelledError:
                gave_up.set()
                raise
            progress.append(row)
            time.sleep(0.005)
        return rows

    @workflow.defn
    async def report(rows: int) -> int:
        return await crunch(rows)

    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[report], activities=[crunch]):
            handle = await client.start_workflow(report, 100_000, id="report", task_queue=QUEUE)
            await wait_for_event(handle, ActivityHeartbeat)
            # Cancelled from another client, as from another process (the CLI, a web app):
            # the worker is not told, it finds out when its next heartbeat append conflicts.
            async with open_client(db_path) as elsewhere:
                await elsewhere.get_handle("report").cancel(reason="too slow")
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowCancelledError) as raised:
                    await handle.result()
            assert await asyncio.to_thread(gave_up.wait, WAIT)
        history = await handle.history()

    assert raised.value.reason == "too slow"
    assert len(progress) < 100_000
    assert [type(e) for e in history[-2:]] == [ActivityCancelled, WorkflowCancelled]


async def test_cancel_sent_while_no_worker_runs_is_acted_on_after_a_restart(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[Trip], activities=[book, release, notify]
        ):
            handle = await client.start_workflow(Trip, "oslo", id="trip-2", task_queue=QUEUE)
            await wait_for_event(handle, TimerStarted)
    # The stopped worker's copy of the run is garbage now; collecting it closes its suspended
    # code, whose `finally` must not run the cleanup activity for real: the run goes on.
    gc.collect()
    assert LEDGER == ["book oslo"]

    async with open_client(db_path) as client:
        handle = client.get_handle("trip-2")
        await handle.cancel(reason="strike")
        assert (await handle.run_info()).status is RunStatus.RUNNING
        async with open_worker(
            client, task_queue=QUEUE, workflows=[Trip], activities=[book, release, notify]
        ):
            async with asyncio.timeout(WAIT):
                with pytest.raises(WorkflowCancelledError) as raised:
                    await handle.result()
        history = await handle.history()

    assert raised.value.reason == "strike"
    assert LEDGER == ["book oslo", "release booking-oslo", "notify oslo closed"]
    assert sum(isinstance(e, TimerCancelled) for e in history) == 1


async def test_workflow_that_catches_the_cancel_and_returns_ends_completed(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Stubborn]):
        handle = await client.start_workflow(Stubborn, id="stubborn", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)
        await handle.cancel(reason="please stop")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "cancelled, but wrapped up"
        history = await handle.history()

    assert (await handle.describe()).status is RunStatus.COMPLETED
    assert isinstance(history[-1], WorkflowCompleted)
    assert any(isinstance(e, CancelRequested) for e in history)


async def test_cancelling_a_finished_run_raises_run_closed_error(client: Client) -> None:
    @workflow.defn
    async def quick() -> str:
        return "done"

    async with open_worker(client, task_queue=QUEUE, workflows=[quick]):
        handle = await client.start_workflow(quick, id="quick", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "done"
    before = await handle.history()

    with pytest.raises(RunClosedError) as raised:
        await handle.cancel(reason="too late")

    assert "already closed (completed)" in str(raised.value)
    assert await handle.history() == before
    assert await handle.result() == "done"


async def test_cancelling_a_cancelled_run_raises_run_closed_error(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[Stubborn]):
        handle = await client.start_workflow(Stubborn, id="twice", task_queue=QUEUE)
        await wait_for_event(handle, TimerStarted)

    await handle.cancel(reason="first")
    await handle.cancel(reason="second")  # still open: recorded, changes nothing
    async with open_worker(client, task_queue=QUEUE, workflows=[Stubborn]):
        async with asyncio.timeout(WAIT):
            assert await handle.result() == "cancelled, but wrapped up"
    reasons = [e.reason for e in await handle.history() if isinstance(e, CancelRequested)]
    assert reasons == ["first", "second"]
    assert (await handle.describe()).cancel_reason == "first"
    with pytest.raises(RunClosedError):
        await handle.cancel(reason="third")


async def test_describe_during_cleanup_shows_the_reason_and_only_live_activities(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    cleanup_may_finish = asyncio.Event()

    @activity.defn
    async def watch(feed: str) -> str:
        activity.heartbeat("watching")  # records its scheduling while it runs
        await asyncio.Event().wait()
        return feed

    @activity.defn(name="unsubscribe")
    async def unsubscribe(feed: str) -> str:
        activity.heartbeat("unsubscribing")
        await cleanup_may_finish.wait()
        return f"unsubscribed {feed}"

    @workflow.defn
    async def subscription(feed: str) -> str:
        try:
            return await watch(feed)
        finally:
            await unsubscribe(feed)

    async with open_worker(
        client, task_queue=QUEUE, workflows=[subscription], activities=[watch, unsubscribe]
    ):
        handle = await client.start_workflow(subscription, "news", id="sub", task_queue=QUEUE)
        await wait_for_event(handle, ActivityHeartbeat)
        await handle.cancel(reason="unsubscribed by user")
        await wait_for_event(handle, ActivityCancelled)

        async def cleanup_running() -> bool:
            pending = (await handle.describe()).pending_activities
            return [a.activity_type for a in pending] == ["unsubscribe"]

        async with asyncio.timeout(WAIT):
            while True:
                if await cleanup_running():
                    break
                await asyncio.sleep(0.01)
        during = await handle.describe()
        cleanup_may_finish.set()
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowCancelledError):
                await handle.result()

    assert during.status is RunStatus.RUNNING
    assert during.cancel_reason == "unsubscribed by user"
    assert [a.activity_type for a in during.pending_activities] == ["unsubscribe"]


async def test_activity_on_another_worker_learns_of_the_cancel_while_cleanup_runs(
    client: Client, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    gave_up = threading.Event()

    @activity.defn(name="render")
    def render(frames: int) -> int:
        for frame in range(frames):
            try:
                activity.heartbeat(frame)
            except ActivityCancelledError:
                gave_up.set()
                raise
            time.sleep(0.005)
        return frames

    @workflow.defn
    class Film:
        def __init__(self) -> None:
            self.cleaned = False

        @workflow.signal
        def cleanup_done(self) -> None:
            self.cleaned = True

        @workflow.run
        async def run(self, frames: int) -> int:
            try:
                return await workflow.execute_activity("render", frames, task_queue="gpus")
            finally:
                await workflow.wait_condition(lambda: self.cleaned)  # a long cleanup

    async with (
        open_worker(client, task_queue="gpus", activities=[render], lease_seconds=0.6),
        open_worker(client, task_queue=QUEUE, workflows=[Film]),
    ):
        handle = await client.start_workflow(Film, 100_000, id="film", task_queue=QUEUE)
        await wait_for_event(handle, ActivityHeartbeat)
        await handle.cancel(reason="over budget")
        # The attempt on the other worker stops while the run is still cleaning up.
        assert await asyncio.to_thread(gave_up.wait, WAIT)
        assert (await handle.run_info()).status is RunStatus.RUNNING
        await handle.signal("cleanup_done")
        async with asyncio.timeout(WAIT):
            with pytest.raises(WorkflowCancelledError):
                await handle.result()
    history = await handle.history()
    assert [e.seq for e in history if isinstance(e, ActivityCancelled)] == [1]
    assert not any(isinstance(e, ActivityCompleted) for e in history)


# -- cleanup code of a copy of the run that a worker let go of -------------------------------

DISCARDED: list[asyncio.Task[Any]] = []


async def _cleanup_call(kind: str) -> None:
    if kind == "activity":
        await notify("from a discarded copy")
    elif kind == "workflow.sleep":
        await workflow.sleep(60)
    elif kind == "asyncio.sleep":
        await asyncio.sleep(60)
    else:
        await workflow.side_effect(lambda: LEDGER.append("side effect of a discarded copy"))


@workflow.defn
async def leaky(kind: str) -> str:
    task = asyncio.current_task()
    assert task is not None
    DISCARDED.append(task)
    try:
        await workflow.sleep(DAY)
        return "slept"
    finally:
        await _cleanup_call(kind)


@workflow.defn
async def bystander() -> str:
    await book("bystander")
    # What the garbage collector does to a discarded copy of another run, here in the middle
    # of this run's step: close its suspended code, which runs that code's `finally`.
    DISCARDED.pop().get_coro().close()
    return "undisturbed"


@pytest.mark.parametrize("kind", ["activity", "workflow.sleep", "asyncio.sleep", "side_effect"])
async def test_cleanup_of_a_discarded_copy_issues_nothing_into_another_run(
    db_path: Path, kind: str, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    DISCARDED.clear()
    workflows = [leaky, bystander]
    activities = [book, notify]
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=workflows, activities=activities
        ):
            leaking = await client.start_workflow(leaky, kind, id="leaky", task_queue=QUEUE)
            await wait_for_event(leaking, TimerStarted)
        # That worker is gone; its copy of "leaky" is garbage, still suspended in its sleep.
        assert len(DISCARDED) == 1
        async with open_worker(
            client, task_queue=QUEUE, workflows=workflows, activities=activities
        ):
            handle = await client.start_workflow(bystander, id="bystander", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "undisturbed"
        history = await handle.history()
        leaky_history = await leaking.history()
        leaky_status = (await leaking.run_info()).status

    assert LEDGER == ["book bystander"]
    assert [e.activity_type for e in history if isinstance(e, ActivityScheduled)] == [book.name]
    assert not any(isinstance(e, TimerStarted | MarkerRecorded) for e in history)
    assert not any(isinstance(e, WorkflowTaskFailed) for e in history)
    # The run whose copy was discarded is untouched: still asleep, no cleanup recorded.
    assert leaky_status is RunStatus.RUNNING
    assert [type(e).__name__ for e in leaky_history] == ["WorkflowStarted", "TimerStarted"]
