"""Versioning: ``workflow.patched(id)`` lets changed code continue runs that started on the old
code, ``workflow.deprecate_patch(id)`` lets histories that recorded the patch replay once the
old branch is deleted, and a change without either is caught as a ``NondeterminismError``.

Every version below is registered under the same workflow name, ``shipment``, as successive
deploys of one workflow would be. An upgrade is a real restart: the worker running the old
code stops and its store is closed; a worker with the new code opens the same file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Client, Registry, replay_history
from history import (
    ActivityScheduled,
    AnyEvent,
    MarkerRecorded,
    RunStatus,
    SignalReceived,
    WorkflowTaskFailed,
)
from sdk import NondeterminismError, activity, open_client, open_worker, workflow
from sdk.testing import Replayer

QUEUE = "versions"
WAIT = 10.0
RAN: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    RAN.clear()


# One activity per step, so that taking another branch schedules another activity type.


@activity.defn(name="pack")
async def pack() -> str:
    RAN.append("pack")
    return "pack"


@activity.defn(name="pack+label")
async def pack_with_label() -> str:
    RAN.append("pack+label")
    return "pack+label"


@activity.defn(name="post")
async def post() -> str:
    RAN.append("post")
    return "post"


@activity.defn(name="courier")
async def courier() -> str:
    RAN.append("courier")
    return "courier"


STEPS = [pack, pack_with_label, post, courier]


class _Gate:
    """Shared shape of every version: a signal ``go`` lets the second half run."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@workflow.defn(name="shipment")
class ShipmentV1(_Gate):
    @workflow.run
    async def run(self) -> list[str]:
        first = await pack()
        await workflow.wait_condition(lambda: self.go)
        second = await post()
        return [first, second]


@workflow.defn(name="shipment")
class ShipmentV2(_Gate):
    """Both halves changed, each behind its own patch."""

    @workflow.run
    async def run(self) -> list[str]:
        if workflow.patched("pack-with-label"):
            first = await pack_with_label()
        else:
            first = await pack()
        await workflow.wait_condition(lambda: self.go)
        if workflow.patched("courier"):
            second = await courier()
        else:
            second = await post()
        return [first, second]


@workflow.defn(name="shipment")
class ShipmentV2OnePatch(_Gate):
    """Both halves changed behind one patch id: a run decides it once, at the first call."""

    @workflow.run
    async def run(self) -> list[str]:
        if workflow.patched("v2"):
            first = await pack_with_label()
        else:
            first = await pack()
        await workflow.wait_condition(lambda: self.go)
        if workflow.patched("v2"):
            second = await courier()
        else:
            second = await post()
        return [first, second]


@workflow.defn(name="shipment")
class ShipmentV3(_Gate):
    """Once no run without the patches remains: old branches deleted, patches deprecated."""

    @workflow.run
    async def run(self) -> list[str]:
        workflow.deprecate_patch("pack-with-label")
        first = await pack_with_label()
        await workflow.wait_condition(lambda: self.go)
        workflow.deprecate_patch("courier")
        second = await courier()
        return [first, second]


@workflow.defn(name="shipment")
class ShipmentUnguarded(_Gate):
    """The change made carelessly: no patch."""

    @workflow.run
    async def run(self) -> list[str]:
        first = await pack_with_label()
        await workflow.wait_condition(lambda: self.go)
        second = await courier()
        return [first, second]


def _patches(history: list[AnyEvent]) -> list[str]:
    return [e.name for e in history if isinstance(e, MarkerRecorded) and e.kind == "patch"]


def _replay(code: object, history: list[AnyEvent]) -> Any:
    return replay_history(Registry([code]), history).completion


async def _started_on(
    db_path: Path, code: object, workflow_id: str, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    """Start a run on ``code`` and leave it waiting for ``go``, with no worker running."""
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[code], activities=STEPS):
            handle = await client.start_workflow(code, id=workflow_id, task_queue=QUEUE)
            await wait_for_event(handle, ActivityScheduled)
            async with asyncio.timeout(WAIT):
                while True:  # released: no worker holds it any more
                    if (await handle.run_info()).owner is None:
                        break
                    await asyncio.sleep(0.01)


async def _finish_on(db_path: Path, code: object, workflow_id: str) -> tuple[Any, list[AnyEvent]]:
    """Restart with ``code``, let the run proceed, and return its result and history."""
    async with open_client(db_path) as client:
        handle = client.get_handle(workflow_id)
        async with open_worker(client, task_queue=QUEUE, workflows=[code], activities=STEPS):
            await handle.signal("proceed")
            async with asyncio.timeout(WAIT):
                result = await handle.result()
        return result, await handle.history()


async def test_run_started_on_old_code_continues_on_patched_code_after_an_upgrade(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    await _started_on(db_path, ShipmentV1, "ship-upgrade", wait_for_event)
    assert RAN == ["pack"]

    result, history = await _finish_on(db_path, ShipmentV2, "ship-upgrade")

    # The recorded half replays through the old branch; the new half takes the new one.
    assert result == ["pack", "courier"]
    assert RAN == ["pack", "courier"]
    assert _patches(history) == ["courier"]
    assert not any(isinstance(e, WorkflowTaskFailed) for e in history)
    # And the mixed history keeps replaying on the new code (a later restart, a query).
    assert _replay(ShipmentV2, history).kind == "completed"


async def test_new_runs_take_the_new_branches_and_record_their_patches(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[ShipmentV2], activities=STEPS):
        handle = await client.start_workflow(ShipmentV2, id="ship-new", task_queue=QUEUE)
        await handle.signal("proceed")
        async with asyncio.timeout(WAIT):
            assert await handle.result() == ["pack+label", "courier"]
        history = await handle.history()

    assert _patches(history) == ["pack-with-label", "courier"]
    assert _replay(ShipmentV2, history).kind == "completed"


async def test_one_patch_id_is_decided_once_per_run_and_stays_replayable(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    await _started_on(db_path, ShipmentV1, "ship-one-id", wait_for_event)

    result, history = await _finish_on(db_path, ShipmentV2OnePatch, "ship-one-id")

    # patched("v2") was False for this run (it started before the patch), so it stays on
    # the old code everywhere; a replay makes the same decisions.
    assert result == ["pack", "post"]
    assert _patches(history) == []
    assert _replay(ShipmentV2OnePatch, history).kind == "completed"

    # A new run of the same code decides patched("v2") True, once, at its first call.
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[ShipmentV2OnePatch], activities=STEPS
        ):
            fresh = await client.start_workflow(
                ShipmentV2OnePatch, id="ship-one-id-new", task_queue=QUEUE
            )
            await fresh.signal("proceed")
            async with asyncio.timeout(WAIT):
                assert await fresh.result() == ["pack+label", "courier"]
            fresh_history = await fresh.history()
    assert _patches(fresh_history) == ["v2"]
    assert _replay(ShipmentV2OnePatch, fresh_history).kind == "completed"


async def test_deprecated_patch_replays_histories_that_recorded_it(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    # A run that took both new branches on V2 replays on V3, whose old branches are gone.
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[ShipmentV2], activities=STEPS):
            done = await client.start_workflow(ShipmentV2, id="ship-v2", task_queue=QUEUE)
            await done.signal("proceed")
            async with asyncio.timeout(WAIT):
                assert await done.result() == ["pack+label", "courier"]
            v2_history = await done.history()
    assert _patches(v2_history) == ["pack-with-label", "courier"]
    assert _replay(ShipmentV3, v2_history).kind == "completed"

    # A run started on V2 (first patch recorded) is upgraded mid-run to V3.
    RAN.clear()
    await _started_on(db_path, ShipmentV2, "ship-deprecate", wait_for_event)
    result, history = await _finish_on(db_path, ShipmentV3, "ship-deprecate")

    assert result == ["pack+label", "courier"]
    assert RAN == ["pack+label", "courier"]
    assert _patches(history) == ["pack-with-label"]  # V3 records no new markers
    assert not any(isinstance(e, WorkflowTaskFailed) for e in history)
    assert _replay(ShipmentV3, history).kind == "completed"

    # New runs on V3 record no markers at all.
    async with open_client(db_path) as client:
        async with open_worker(client, task_queue=QUEUE, workflows=[ShipmentV3], activities=STEPS):
            fresh = await client.start_workflow(ShipmentV3, id="ship-v3", task_queue=QUEUE)
            await fresh.signal("proceed")
            async with asyncio.timeout(WAIT):
                assert await fresh.result() == ["pack+label", "courier"]
            assert _patches(await fresh.history()) == []


async def test_removing_the_old_branch_while_old_runs_remain_is_a_nondeterminism_error(
    client: Client,
) -> None:
    async with open_worker(client, task_queue=QUEUE, workflows=[ShipmentV1], activities=STEPS):
        handle = await client.start_workflow(ShipmentV1, id="ship-v1", task_queue=QUEUE)
        await handle.signal("proceed")
        async with asyncio.timeout(WAIT):
            await handle.result()
    history = await handle.history()

    with pytest.raises(NondeterminismError) as raised:
        Replayer(workflows=[ShipmentV3]).replay(history)
    assert "history says: activity 'pack' scheduled" in str(raised.value)
    assert "code did:     activity #1 is 'pack+label'" in str(raised.value)


async def test_changed_code_without_patched_fails_replay_with_nondeterminism_error(
    db_path: Path, wait_for_event: Callable[..., Awaitable[Any]]
) -> None:
    await _started_on(db_path, ShipmentV1, "ship-careless", wait_for_event)

    async with open_client(db_path) as client:
        handle = client.get_handle("ship-careless")
        history = await handle.history()
        with pytest.raises(NondeterminismError) as raised:
            Replayer(workflows=[ShipmentUnguarded]).replay(history)
        message = str(raised.value)
        assert "activity 'pack' scheduled as activity #1" in message
        assert "activity #1 is 'pack+label'" in message

        # A worker running the careless code records the error and leaves the run open,
        # its history intact, instead of carrying on down the wrong path.
        async with open_worker(
            client, task_queue=QUEUE, workflows=[ShipmentUnguarded], activities=STEPS
        ):
            await handle.signal("proceed")
            failed = await wait_for_event(handle, WorkflowTaskFailed)
        assert failed.failure.type.endswith("NondeterminismError")
        assert (await handle.run_info()).status is RunStatus.RUNNING
        after = await handle.history()
        assert after[: len(history)] == history
        assert [type(e) for e in after[len(history) :]] == [SignalReceived, WorkflowTaskFailed]
    assert RAN == ["pack"]

    # Deploying the patched code instead lets the run continue from its history.
    result, _ = await _finish_on(db_path, ShipmentV2, "ship-careless")
    assert result == ["pack", "courier"]
