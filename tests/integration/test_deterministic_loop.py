"""The ordinary asyncio API inside workflows, on the deterministic loop: each workflow runs on a
real worker (activities finishing in whatever order real time gives them), then its stored
history is replayed with ``replay_history`` and must reach the very same completion."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from engine import Client, Registry, replay_history
from history import AnyEvent, TimerCancelled, TimerFired, TimerStarted, WorkflowCompleted
from sdk import activity, open_worker, workflow

QUEUE = "loop"
WAIT = 10.0
HOUR = 3600.0


@activity.defn
async def work(name: str, seconds: float) -> str:
    await asyncio.sleep(seconds)  # real work of varying length: results arrive out of order
    return name


@activity.defn
async def stall(name: str) -> str:
    await asyncio.Event().wait()
    return name


async def _run_then_replay(client: Client, wf: Any, *args: Any) -> tuple[Any, list[AnyEvent]]:
    """Run ``wf`` to completion, replay its history, and check both completions are equal."""
    async with open_worker(client, task_queue=QUEUE, workflows=[wf], activities=[work, stall]):
        handle = await client.start_workflow(wf, *args, id=f"{wf.__name__}-1", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    history = await handle.history()

    replayed = replay_history(Registry([wf]), history)

    recorded = history[-1]
    assert isinstance(recorded, WorkflowCompleted)
    assert replayed.completion is not None
    assert replayed.completion.result == recorded.result
    return result, history


def _kinds(history: list[AnyEvent]) -> list[str]:
    timer_events = (TimerStarted, TimerFired, TimerCancelled)
    return [type(e).__name__ for e in history if isinstance(e, timer_events)]


@workflow.defn
async def gather_in_finish_order(names: list[str]) -> dict[str, list[str]]:
    finished: list[str] = []

    async def one(name: str, seconds: float) -> str:
        result = await work(name, seconds)
        finished.append(result)
        return result

    delays = [0.03, 0.02, 0.01]
    results = await asyncio.gather(*(one(n, d) for n, d in zip(names, delays, strict=True)))
    return {"results": list(results), "finished": finished}


async def test_gather_replays_to_the_same_result(client: Client) -> None:
    result, _ = await _run_then_replay(client, gather_in_finish_order, ["a", "b", "c"])

    assert result["results"] == ["a", "b", "c"]
    assert sorted(result["finished"]) == ["a", "b", "c"]


@workflow.defn
async def fan_out_with_tasks(count: int) -> list[str]:
    tasks = [asyncio.create_task(work(f"task-{i}", 0.01 * (count - i))) for i in range(count)]
    done: list[str] = []
    for task in asyncio.as_completed(tasks):
        done.append(await task)
    return done + [t.result() for t in tasks]


async def test_create_task_and_as_completed_replay_to_the_same_result(client: Client) -> None:
    result, _ = await _run_then_replay(client, fan_out_with_tasks, 3)

    assert sorted(result[:3]) == ["task-0", "task-1", "task-2"]
    assert result[3:] == ["task-0", "task-1", "task-2"]


@workflow.defn
async def first_of_activity_or_timer(name: str) -> str:
    fetch = asyncio.create_task(work(name, 0.01))
    deadline = asyncio.create_task(asyncio.sleep(HOUR))
    done, pending = await asyncio.wait({fetch, deadline}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return f"{name} won" if fetch in done else "timer won"


async def test_wait_first_completed_replays_to_the_same_result(client: Client) -> None:
    result, history = await _run_then_replay(client, first_of_activity_or_timer, "fetch")

    assert result == "fetch won"
    assert _kinds(history) == ["TimerStarted", "TimerCancelled"]


@workflow.defn
async def wait_for_times_out(name: str) -> str:
    try:
        return await asyncio.wait_for(stall(name), timeout=0.1)
    except TimeoutError:
        return f"gave up on {name} at {workflow.now().isoformat()}"


async def test_wait_for_times_out_on_a_durable_timer_and_replays_to_the_same_result(
    client: Client,
) -> None:
    result, history = await _run_then_replay(client, wait_for_times_out, "slow")

    [fired] = [e for e in history if isinstance(e, TimerFired)]
    assert result == f"gave up on slow at {fired.timestamp.isoformat()}"
    assert _kinds(history) == ["TimerStarted", "TimerFired"]


@workflow.defn
async def wait_for_in_time(name: str) -> str:
    return await asyncio.wait_for(work(name, 0.01), timeout=HOUR)


async def test_wait_for_answered_in_time_cancels_its_timer_and_replays_to_the_same_result(
    client: Client,
) -> None:
    result, history = await _run_then_replay(client, wait_for_in_time, "quick")

    assert result == "quick"
    assert _kinds(history) == ["TimerStarted", "TimerCancelled"]


@workflow.defn
async def handoff_through_event(name: str) -> list[str]:
    log: list[str] = []
    ready = asyncio.Event()

    async def producer() -> None:
        log.append(await work(f"{name}-produced", 0.02))
        ready.set()

    async def consumer() -> None:
        await ready.wait()
        log.append(await work(f"{name}-consumed", 0.0))

    await asyncio.gather(consumer(), producer())
    return log


async def test_asyncio_event_replays_to_the_same_result(client: Client) -> None:
    result, _ = await _run_then_replay(client, handoff_through_event, "box")

    assert result == ["box-produced", "box-consumed"]


@workflow.defn
async def serialise_with_lock(writers: int) -> dict[str, Any]:
    lock = asyncio.Lock()
    balance = {"value": 0}
    log: list[str] = []

    async def deposit(i: int) -> None:
        async with lock:
            current = balance["value"]
            log.append(await work(f"writer-{i} saw {current}", 0.01 * (writers - i)))
            balance["value"] = current + 10

    await asyncio.gather(*(deposit(i) for i in range(writers)))
    return {"balance": balance["value"], "log": log}


async def test_asyncio_lock_replays_to_the_same_result(client: Client) -> None:
    result, _ = await _run_then_replay(client, serialise_with_lock, 3)

    # Without the lock every writer would see 0; with it, each sees the previous deposit.
    assert result == {
        "balance": 30,
        "log": ["writer-0 saw 0", "writer-1 saw 10", "writer-2 saw 20"],
    }


@workflow.defn
async def draw_values(name: str) -> list[str]:
    values: list[str] = []
    for step in range(2):
        values += [
            workflow.now().isoformat(),
            repr(workflow.random().random()),
            str(workflow.uuid4()),
        ]
        if step == 0:
            await work(name, 0.01)
    return values


async def test_workflow_now_random_and_uuid4_are_identical_on_replay(client: Client) -> None:
    result, history = await _run_then_replay(client, draw_values, "x")

    started_at, completed_at = history[0].timestamp, history[-2].timestamp
    assert result[0] == started_at.isoformat()
    assert result[3] == completed_at.isoformat()  # the time of the activity's result
    assert len(set(result)) == 6


@workflow.defn
async def three_steps_and_a_timer() -> str:
    first = await work("a", 0)
    await asyncio.sleep(0.01)
    rest = await asyncio.gather(work("b", 0), work("c", 0))
    return first + "".join(rest)


async def test_a_closed_instance_is_freed_without_the_cyclic_garbage_collector(
    client: Client,
) -> None:
    _, history = await _run_then_replay(client, three_steps_and_a_timer)
    instance = replay_history(Registry([three_steps_and_a_timer]), history)
    assert instance.closed
    gone = weakref.ref(instance)
    loop = weakref.ref(instance.loop)

    gc.disable()
    try:
        del instance
        freed = gone() is None and loop() is None
    finally:
        gc.enable()

    # A worker drops a run's instance when the run closes: reference counting alone must free
    # it, or every finished run would wait for a full collection of the worker's heap.
    assert freed
