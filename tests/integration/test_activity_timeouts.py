"""Activity timeouts: start-to-close, schedule-to-close and heartbeat, each ending or retrying
an attempt as its recorded options say."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from engine import Client
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ActivityTimedOut,
    TimeoutType,
)
from sdk import ActivityError, ActivityTimeoutError, RetryPolicy, activity, open_worker, workflow

QUEUE = "timeouts"
WAIT = 10.0


async def _hang() -> None:
    """Work that never finishes on its own: only a timeout ends it."""
    await asyncio.Event().wait()


async def _result_and_history(client: Client, wf: Any, arg: Any, activities: list[Any]) -> Any:
    async with open_worker(client, task_queue=QUEUE, workflows=[wf], activities=activities):
        handle = await client.start_workflow(wf, arg, id=f"{wf.__name__}-1", task_queue=QUEUE)
        async with asyncio.timeout(WAIT):
            result = await handle.result()
    return result, await handle.history()


def _timeout_outcome(err: ActivityError) -> dict[str, Any]:
    cause = err.__cause__
    assert isinstance(cause, ActivityTimeoutError), repr(cause)
    return {"attempt": err.attempt, "timeout": cause.timeout_type.value}


async def test_start_to_close_timeout_ends_an_attempt_and_the_activity_is_retried(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def fetch(url: str) -> str:
        attempts.append(activity.info().attempt)
        await _hang()
        return "never"

    @workflow.defn
    async def crawl(url: str) -> dict[str, Any]:
        try:
            await workflow.execute_activity(
                fetch,
                url,
                start_to_close_timeout=0.1,
                retry_policy=RetryPolicy(initial_interval=0.01, maximum_attempts=2),
            )
        except ActivityError as err:
            return _timeout_outcome(err)
        return {}

    result, history = await _result_and_history(client, crawl, "https://x", [fetch])

    assert result == {"attempt": 2, "timeout": "start_to_close"}
    assert attempts == [1, 2]
    timed_out = [e for e in history if isinstance(e, ActivityTimedOut)]
    assert [(e.attempt, e.timeout_type, e.retry_at is not None) for e in timed_out] == [
        (1, TimeoutType.START_TO_CLOSE, True),
        (2, TimeoutType.START_TO_CLOSE, False),
    ]


async def test_schedule_to_close_timeout_ends_the_activity_without_a_retry(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def fetch(url: str) -> str:
        attempts.append(activity.info().attempt)
        await _hang()
        return "never"

    @workflow.defn
    async def crawl(url: str) -> dict[str, Any]:
        try:
            # Unlimited attempts: only the overall deadline can end this activity.
            await workflow.execute_activity(
                fetch,
                url,
                schedule_to_close_timeout=0.2,
                retry_policy=RetryPolicy(initial_interval=0.01),
            )
        except ActivityError as err:
            return _timeout_outcome(err)
        return {}

    result, history = await _result_and_history(client, crawl, "https://x", [fetch])

    assert result == {"attempt": 1, "timeout": "schedule_to_close"}
    assert attempts == [1]
    [timed_out] = [e for e in history if isinstance(e, ActivityTimedOut)]
    assert (timed_out.timeout_type, timed_out.retry_at) == (TimeoutType.SCHEDULE_TO_CLOSE, None)


async def test_schedule_to_close_timeout_stops_retries_that_would_run_past_it(
    client: Client,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def fetch(url: str) -> str:
        attempts.append(activity.info().attempt)
        raise ConnectionError("connection refused")

    @workflow.defn
    async def crawl(url: str) -> dict[str, Any]:
        try:
            await workflow.execute_activity(
                fetch,
                url,
                schedule_to_close_timeout=0.3,
                retry_policy=RetryPolicy(initial_interval=0.05, backoff_coefficient=1.0),
            )
        except ActivityError as err:
            return {"attempt": err.attempt, "type": err.failure and err.failure.type}
        return {}

    result, history = await _result_and_history(client, crawl, "https://x", [fetch])

    assert result["type"] == "ConnectionError"
    assert result["attempt"] == len(attempts) >= 2
    [scheduled] = [e for e in history if isinstance(e, ActivityScheduled)]
    assert scheduled.scheduled_at is not None
    deadline = scheduled.scheduled_at + timedelta(seconds=0.3)
    failed = [e for e in history if isinstance(e, ActivityFailed)]
    assert all(e.retry_at is not None and e.retry_at < deadline for e in failed[:-1])
    assert failed[-1].retry_at is None


async def test_activity_that_stops_heartbeating_times_out_and_is_retried(
    client: Client,
) -> None:
    seen: list[tuple[int, tuple[Any, ...]]] = []

    @activity.defn
    async def transcode(video: str) -> str:
        info = activity.info()
        seen.append((info.attempt, info.heartbeat_details))
        if info.attempt == 1:
            activity.heartbeat("frame", 120)
            await _hang()  # stuck: no more heartbeats
        return f"done from {info.heartbeat_details}"

    @workflow.defn
    async def publish(video: str) -> str:
        return await workflow.execute_activity(
            transcode,
            video,
            start_to_close_timeout=30,
            heartbeat_timeout=0.2,
            retry_policy=RetryPolicy(initial_interval=0.01),
        )

    result, history = await _result_and_history(client, publish, "talk.mp4", [transcode])

    assert result == "done from ('frame', 120)"
    assert seen == [(1, ()), (2, ("frame", 120))]
    [timed_out] = [e for e in history if isinstance(e, ActivityTimedOut)]
    assert (timed_out.attempt, timed_out.timeout_type) == (1, TimeoutType.HEARTBEAT)
    assert timed_out.retry_at is not None
    [completed] = [e for e in history if isinstance(e, ActivityCompleted)]
    assert completed.attempt == 2


async def test_activity_that_keeps_heartbeating_outlives_its_heartbeat_timeout(
    client: Client,
) -> None:
    @activity.defn
    async def transcode(video: str) -> int:
        for frame in range(8):
            activity.heartbeat(frame)
            await asyncio.sleep(0.05)  # the work itself: 0.4 s in all, 0.05 s per beat
        return activity.info().attempt

    @workflow.defn
    async def publish(video: str) -> int:
        return await workflow.execute_activity(
            transcode, video, start_to_close_timeout=30, heartbeat_timeout=0.2
        )

    result, history = await _result_and_history(client, publish, "talk.mp4", [transcode])

    assert result == 1
    assert not [e for e in history if isinstance(e, ActivityTimedOut)]


async def test_concurrent_attempts_each_time_out_at_their_own_limit_and_others_finish(
    client: Client,
) -> None:
    # One timer serves every attempt's limit on a loop: a short limit started after a long
    # one must still fire first, and an attempt that ends in time is never cancelled.
    ended: dict[str, float] = {}
    loop_started: list[float] = []

    @activity.defn
    async def wait_for(name: str, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        finally:
            ended[name] = asyncio.get_running_loop().time() - loop_started[0]
        return name

    @workflow.defn
    async def race(_: str) -> dict[str, str]:
        limits = {"long": 1.5, "short": 0.2, "middle": 0.5, "quick": 1.5}
        sleeps = {"long": 30.0, "short": 30.0, "middle": 30.0, "quick": 0.05}

        async def one(name: str) -> str:
            try:
                return await workflow.execute_activity(
                    wait_for,
                    name,
                    sleeps[name],
                    start_to_close_timeout=limits[name],
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError as err:
                return _timeout_outcome(err)["timeout"]

        names = ["long", "short", "middle", "quick"]
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))

    loop_started.append(asyncio.get_running_loop().time())
    result, _ = await _result_and_history(client, race, "go", [wait_for])

    assert result == {
        "long": "start_to_close",
        "short": "start_to_close",
        "middle": "start_to_close",
        "quick": "quick",
    }
    assert ended["short"] < ended["middle"] < ended["long"]
    assert 0.15 < ended["short"] < 1.0
    assert 1.3 < ended["long"] < 5.0
