"""The testing kit users run on their own workflows (``sdk.testing`` and the pytest plugin):
the time-skipping environment, the replayer, crash/resume, and the ``workflow_environment``
fixture."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from engine import ReplayCodeError
from history import (
    RetryPolicy,
    RunStatus,
    SqliteStore,
    TimerFired,
    TimerStarted,
    dump_history,
    read_history_file,
)
from sdk import ApplicationError, NondeterminismError, activity, workflow
from sdk.pytest_plugin import EnvironmentFactory
from sdk.testing import (
    CrashPoint,
    CrashResumeError,
    FaultPoint,
    Replayer,
    WorkflowEnvironment,
    crash_at,
    crash_resume,
    fault_points,
)

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
WAIT = 10.0

# -- workflows and activities the tests share ------------------------------------------------

executions: Counter[str] = Counter()


@activity.defn
async def charge(order_id: str) -> str:
    executions[f"charge {order_id}"] += 1
    return f"charged {order_id}"


@activity.defn
async def ship(order_id: str) -> str:
    executions[f"ship {order_id}"] += 1
    return f"shipped {order_id}"


flaky_attempts: Counter[str] = Counter()


@activity.defn(retry_policy=RetryPolicy(initial_interval=30.0))
async def flaky_reserve(order_id: str) -> str:
    flaky_attempts[order_id] += 1
    if activity.info().attempt < 3:
        raise ApplicationError("warehouse busy")
    return f"reserved {order_id}"


@workflow.defn
async def order(order_id: str) -> list[str]:
    """Charge, wait three days (a durable timer), reserve (two failed attempts, 30 s
    apart), ship."""
    steps = [await charge(order_id)]
    await workflow.sleep(timedelta(days=3))
    steps.append(await flaky_reserve(order_id))
    steps.append(await ship(order_id))
    return steps


@workflow.defn
async def two_steps(order_id: str) -> list[str]:
    return [await charge(order_id), await ship(order_id)]


@workflow.defn
async def renewal(account: str) -> list[str]:
    started = workflow.now()
    await workflow.sleep(timedelta(days=30))
    return [started.isoformat(), workflow.now().isoformat()]


@workflow.defn
async def reminders(delays: list[float]) -> list[float]:
    fired: list[float] = []

    async def remind(delay: float) -> None:
        await workflow.sleep(delay)
        fired.append(delay)

    await asyncio.gather(*(remind(d) for d in delays))
    return fired


# -- WorkflowEnvironment ----------------------------------------------------------------------


async def test_a_thirty_day_sleep_finishes_in_milliseconds_of_wall_time() -> None:
    async with WorkflowEnvironment.start(workflows=[renewal]) as env:
        began = time.monotonic()
        started, woke = await env.execute_workflow(renewal, "acme")
        elapsed = time.monotonic() - began

    assert datetime.fromisoformat(woke) - datetime.fromisoformat(started) == timedelta(days=30)
    assert elapsed < 2.0


async def test_timers_fire_in_order_of_their_deadlines_whatever_order_they_start() -> None:
    delays = [7 * DAY, 60.0, 3600.0, 1.0, DAY]
    async with WorkflowEnvironment.start(workflows=[reminders]) as env:
        handle = await env.start_workflow(reminders, delays)
        fired = await env.result(handle)
        history = await handle.history()

    assert fired == sorted(delays)
    started = {e.seq: e.fire_at for e in history if isinstance(e, TimerStarted)}
    fired_at = [started[e.seq] for e in history if isinstance(e, TimerFired)]
    assert fired_at == sorted(fired_at)
    assert len(fired_at) == len(delays)


async def test_workflow_now_follows_the_skipped_clock() -> None:
    async with WorkflowEnvironment.start(workflows=[renewal], start_time=1_800_000_000.0) as env:
        started, woke = await env.execute_workflow(renewal, "acme")
        clock_after = env.clock.now()

    assert datetime.fromisoformat(started).timestamp() == 1_800_000_000.0
    assert datetime.fromisoformat(woke).timestamp() == 1_800_000_000.0 + 30 * DAY
    assert clock_after >= 1_800_000_000.0 + 30 * DAY


async def test_env_sleep_moves_the_clock_and_fires_what_falls_due() -> None:
    async with WorkflowEnvironment.start(workflows=[reminders]) as env:
        handle = await env.start_workflow(reminders, [60.0, DAY])
        await env.sleep(120.0)
        assert [t.seq for t in await env.client.store.pending_timers()] == [2]
        assert (await handle.run_info()).status is RunStatus.RUNNING
        await env.sleep(DAY)
        assert await env.result(handle) == [60.0, DAY]


async def test_activities_and_retries_run_on_the_skipped_clock() -> None:
    flaky_attempts.clear()
    async with WorkflowEnvironment.start(
        workflows=[order], activities=[charge, flaky_reserve, ship]
    ) as env:
        began = time.monotonic()
        result = await env.execute_workflow(order, "o-env")

    assert result == ["charged o-env", "reserved o-env", "shipped o-env"]
    assert flaky_attempts["o-env"] == 3
    assert time.monotonic() - began < 2.0


# -- Replayer ---------------------------------------------------------------------------------


async def _record(path: Path, workflow_fn: Any, *args: Any, activities: list[Any]) -> str:
    """Run one workflow in an environment whose store is kept at ``path``; its run id."""
    async with WorkflowEnvironment.start(
        workflows=[workflow_fn], activities=activities, path=path
    ) as env:
        handle = await env.start_workflow(workflow_fn, *args)
        await env.result(handle)
        assert handle.run_id is not None
        return handle.run_id


def _changed_two_steps() -> Any:
    """``two_steps`` as a later deploy wrote it: ship before charge (same recorded name)."""

    @workflow.defn(name="two_steps")
    async def two_steps_v2(order_id: str) -> list[str]:
        return [await ship(order_id), await charge(order_id)]

    return two_steps_v2


async def test_an_exported_history_file_replays_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    run_id = await _record(db, two_steps, "o-1", activities=[charge, ship])
    async with await SqliteStore.open(db) as store:
        events = await store.read_history(run_id)
    exported = tmp_path / "two_steps.json"
    exported.write_bytes(dump_history(run_id, events))

    result = Replayer(workflows=[two_steps]).replay_file(exported)

    assert (result.run_id, result.workflow_type, result.events) == (
        run_id,
        "two_steps",
        len(events),
    )
    assert result.instance.completion is not None
    assert result.instance.completion.result is not None


async def test_replay_all_replays_every_stored_run_of_a_type(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    async with WorkflowEnvironment.start(
        workflows=[two_steps, renewal], activities=[charge, ship], path=db
    ) as env:
        for n in range(3):
            await env.execute_workflow(two_steps, f"o-{n}")
        await env.execute_workflow(renewal, "acme")
        replayer = Replayer(workflows=[two_steps])

        results = await replayer.replay_all(env.client.store, workflow_type="two_steps")

    assert sorted(r.workflow_type for r in results) == ["two_steps"] * 3


async def test_a_changed_workflow_fails_replay_with_both_sides_in_the_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "prod.db"
    run_id = await _record(db, two_steps, "o-1", activities=[charge, ship])
    async with await SqliteStore.open(db) as store:
        exported = tmp_path / "two_steps.json"
        exported.write_bytes(dump_history(run_id, await store.read_history(run_id)))
        replayer = Replayer(workflows=[_changed_two_steps()])

        with pytest.raises(NondeterminismError) as from_store:
            await replayer.replay_run(store, run_id)
    with pytest.raises(NondeterminismError) as from_file:
        replayer.replay_file(exported)

    message = str(from_store.value)
    assert "history says: activity 'charge' scheduled as activity #1" in message
    assert "code did:     activity #1 is 'ship'" in message
    assert from_file.value.event_id == from_store.value.event_id
    assert f"history file: {exported}" in from_file.value.__notes__


async def test_exported_histories_replay_as_a_folder_in_ci(tmp_path: Path) -> None:
    async with WorkflowEnvironment.start(workflows=[two_steps], activities=[charge, ship]) as env:
        await env.execute_workflow(two_steps, "o-1", id="order/1")
        await env.execute_workflow(two_steps, "o-2", id="order/2")
        written = await env.export_histories(tmp_path / "histories")

    assert sorted(p.name.split(".")[0] for p in written) == ["order_1", "order_2"]
    assert read_history_file(written[0]).workflow_type == "two_steps"
    files = sorted((tmp_path / "histories").glob("*.json"))
    assert len(Replayer(workflows=[two_steps]).replay_files(files)) == 2
    with pytest.raises(NondeterminismError):
        Replayer(workflows=[_changed_two_steps()]).replay_files(files)


# -- crash_resume -----------------------------------------------------------------------------


async def test_crash_resume_passes_on_a_correct_workflow_with_a_timer_and_retries() -> None:
    report = await crash_resume(
        order, "o-cr", activities=[charge, flaky_reserve, ship], max_hits_per_point=3
    )

    assert report.result == ["charged o-cr", "reserved o-cr", "shipped o-cr"]
    assert report.crashes > 10
    assert {case.point for case in report.cases if case.crashed} >= {
        FaultPoint.BEFORE_APPEND,
        FaultPoint.AFTER_APPEND,
        FaultPoint.ACTIVITY_START,
        FaultPoint.ACTIVITY_COMPLETE,
        FaultPoint.TIMER_FIRE,
    }


async def test_crash_resume_reports_how_often_each_point_passed_and_what_ran_again() -> None:
    report = await crash_resume(
        two_steps,
        "o-counts",
        activities=[charge, ship],
        points=[FaultPoint.ACTIVITY_START, FaultPoint.ACTIVITY_COMPLETE],
    )

    assert report.result == ["charged o-counts", "shipped o-counts"]
    assert (
        report.points[FaultPoint.ACTIVITY_START],
        report.points[FaultPoint.ACTIVITY_COMPLETE],
    ) == (
        2,
        2,
    )
    cases = {(c.point, c.hit): c for c in report.cases}
    assert len(cases) == 4
    assert report.crashes == 4
    # Died as charge finished, before its result was recorded: charge runs again, once.
    first_done = cases[FaultPoint.ACTIVITY_COMPLETE, 1]
    assert (first_done.recorded_before, first_done.executions_after) == (
        frozenset(),
        Counter({1: 1, 2: 1}),
    )
    # Died as ship finished: charge's result was recorded and is never recomputed.
    second_done = cases[FaultPoint.ACTIVITY_COMPLETE, 2]
    assert (second_done.recorded_before, second_done.executions_after) == (
        frozenset({1}),
        Counter({2: 1}),
    )
    # Died before ship started: only ship runs after the crash.
    assert cases[FaultPoint.ACTIVITY_START, 2].executions_after == Counter({2: 1})
    assert "4 crashes recovered" in str(report)


async def test_crash_resume_recovers_by_takeover_after_the_lease_expires() -> None:
    report = await crash_resume(
        two_steps,
        "o-takeover",
        activities=[charge, ship],
        points=[FaultPoint.AFTER_CLAIM, FaultPoint.AFTER_APPEND],
        recovery="takeover",
    )

    assert (
        report.crashes
        == report.points[FaultPoint.AFTER_CLAIM] + report.points[FaultPoint.AFTER_APPEND]
    )


@workflow.defn
async def refund_limit(order_id: str) -> str:
    await charge(order_id)
    raise ApplicationError(f"refund limit reached for {order_id}", type="RefundLimit")


async def test_crash_resume_checks_that_a_failing_workflow_fails_the_same_way() -> None:
    report = await crash_resume(
        refund_limit, "o-fail", activities=[charge], points=[FaultPoint.ACTIVITY_COMPLETE]
    )

    assert report.result is None
    assert report.failure == ("RefundLimit", "refund limit reached for o-fail")
    assert report.crashes == 1
    assert "failure RefundLimit: refund limit reached for o-fail" in str(report)


replays = Counter[str]()


@workflow.defn
async def forgetful(order_id: str) -> str:
    """Not deterministic: the second time its code runs (a recovery), it calls another
    activity than the one its history recorded."""
    replays[order_id] += 1
    if replays[order_id] == 1:
        return await charge(order_id)
    return await ship(order_id)


async def test_crash_resume_reports_a_workflow_that_cannot_replay_its_history() -> None:
    replays.clear()
    with pytest.raises(CrashResumeError) as caught:
        await crash_at(
            CrashPoint(FaultPoint.AFTER_APPEND, 1),
            forgetful,
            "o-bad",
            activities=[charge, ship],
            expected="charged o-bad",
        )

    assert "NondeterminismError" in str(caught.value)
    assert "activity #1 is 'ship'" in str(caught.value)


@settings(max_examples=8, deadline=None)
@given(crash=fault_points(max_hit=4))
async def test_crash_at_any_generated_fault_point_keeps_the_result(crash: CrashPoint) -> None:
    case = await crash_at(
        crash,
        two_steps,
        "o-gen",
        activities=[charge, ship],
        expected=["charged o-gen", "shipped o-gen"],
    )

    assert case.point is crash.point
    assert not (case.recorded_before & set(case.executions_after))


def test_fault_points_rejects_an_empty_choice() -> None:
    with pytest.raises(ValueError, match="at least one fault point"):
        fault_points(points=[])


def test_fault_points_draws_only_the_chosen_points() -> None:
    chosen = [FaultPoint.ACTIVITY_START, FaultPoint.TIMER_FIRE]

    @settings(max_examples=20, database=None)
    @given(crash=fault_points(points=chosen, max_hit=3))
    def check(crash: CrashPoint) -> None:
        assert crash.point in chosen
        assert 1 <= crash.hit <= 3

    check()


# -- the pytest plugin ------------------------------------------------------------------------


def test_the_plugin_is_registered_through_the_pytest11_entry_point(
    request: pytest.FixtureRequest,
) -> None:
    registered = {ep.name: ep.value for ep in entry_points(group="pytest11")}

    assert registered.get("perdura") == "sdk.pytest_plugin"
    assert request.config.pluginmanager.has_plugin("perdura")


async def test_the_workflow_environment_fixture_runs_workflows_on_a_skipped_clock(
    workflow_environment: EnvironmentFactory, tmp_path: Path
) -> None:
    async with workflow_environment(workflows=[renewal]) as env:
        started, woke = await env.execute_workflow(renewal, "acme")
        assert env.path.parent == tmp_path

    assert datetime.fromisoformat(woke) - datetime.fromisoformat(started) == timedelta(days=30)


async def test_two_environments_from_the_fixture_have_separate_stores(
    workflow_environment: EnvironmentFactory,
) -> None:
    async with (
        workflow_environment(workflows=[two_steps], activities=[charge, ship]) as one,
        workflow_environment(workflows=[two_steps], activities=[charge, ship]) as two,
    ):
        await one.execute_workflow(two_steps, "o-1")
        assert one.path != two.path
        assert await two.client.count_runs() == 0


@pytest.mark.slow
def test_the_export_option_writes_the_histories_of_a_passing_test(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from sdk import workflow

            @workflow.defn
            async def hello(name: str) -> str:
                await workflow.sleep(3600)
                return f"hello {name}"

            async def test_hello(workflow_environment):
                async with workflow_environment(workflows=[hello]) as env:
                    assert await env.execute_workflow(hello, "ada", id="greeting") == "hello ada"
            """
        )
    )
    histories = tmp_path / "histories"

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            f"--perdura-export-histories={histories}",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    [exported] = histories.glob("greeting.*.json")
    assert read_history_file(exported).workflow_type == "hello"


@workflow.defn
async def pausing(order_id: str) -> str:
    receipt = await charge(order_id)
    breakpoint()  # a developer's pause, for a debugger during replay
    return receipt


def _read_this_file(*args: Any, **kwargs: Any) -> None:
    """A stand-in for pdb: it reads a file, as pdb reads ~/.pdbrc."""
    Path(__file__).read_text()
    _debugger_calls.append("read")


_debugger_calls: list[str] = []


async def test_a_debug_replayer_lets_breakpoint_reach_the_debugger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "breakpointhook", lambda *a, **k: None)
    db = tmp_path / "prod.db"
    run_id = await _record(db, pausing, "o-7", activities=[charge])
    async with await SqliteStore.open(db) as store:
        events = await store.read_history(run_id)
    monkeypatch.setattr(sys, "breakpointhook", _read_this_file)
    _debugger_calls.clear()

    result = Replayer(workflows=[pausing], debug=True).replay(events, run_id=run_id)

    assert _debugger_calls == ["read"]
    assert result.instance.completion is not None
    assert result.instance.completion.result is not None


async def test_a_replayer_keeps_the_sandbox_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "breakpointhook", lambda *a, **k: None)
    db = tmp_path / "prod.db"
    run_id = await _record(db, pausing, "o-8", activities=[charge])
    async with await SqliteStore.open(db) as store:
        events = await store.read_history(run_id)
    monkeypatch.setattr(sys, "breakpointhook", _read_this_file)
    _debugger_calls.clear()

    with pytest.raises(ReplayCodeError, match="open"):
        Replayer(workflows=[pausing]).replay(events, run_id=run_id)
    assert _debugger_calls == []
