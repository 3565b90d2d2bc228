"""Every fault point a generated run passes, crashed one at a time and recovered.

For each generated program: one uninterrupted run counts how often the worker passes each
fault point; then, for every point and every hit (up to a cap), a new run of it (on the same
store file), a worker that dies at exactly that hit, and a recovering worker — the restarted
process (same identity: immediate) or another one (new identity: after the dead worker's
lease expires). Each case
ends with the full check of ``harness.Harness.finish``: the oracle's result, no recorded
attempt executed again, at most one re-execution of the attempt in flight, append-only
histories, replay, ``PRAGMA integrity_check``.

This is the systematic half of the exploration (every site of a run, one crash each); the
state machine in ``test_crash_anywhere.py`` is the other half (several crashes, several
workers, pauses, graceful stops, interleaved).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from harness import Harness, Violation, captured_engine_errors
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from programs import Step, describe, programs
from stats import STATS, budget

from sdk.testing import FaultPoint

HITS_CAP = 12
"""Hits of one fault point crashed at, per program (the first ones)."""

_explored: list[int] = []


async def _crash_case(
    harness: Harness, program: Step, point: FaultPoint, hit: int, reuse_identity: bool
) -> bool:
    """One case on ``harness``'s store: True if the worker died there and the run was
    recovered with every invariant intact."""
    harness.new_case()
    await harness.start_run(program)
    await harness.start_worker(reuse_identity=False, crash=(point, hit))
    if not await harness.drive(advances=400):
        await harness.finish()  # the run ended before the hit came round
        await harness.retire()
        return False
    harness.check(replay=True)
    await harness.start_worker(reuse_identity=reuse_identity)
    try:
        await harness.finish()
    except Violation as exc:
        raise Violation(
            f"crash at {point.value} (hit #{hit}), recovered by "
            f"{'the same identity' if reuse_identity else 'another identity'}:\n{exc}"
        ) from None
    await harness.retire()
    return True


async def _explore(directory: Path, program: Step, reuse_identity: bool) -> int:
    """Count the fault points of one uninterrupted run, then crash at each in turn."""
    harness = Harness(directory, shared_store=True)
    await harness.open()
    try:
        await harness.start_run(program)
        reference = await harness.start_worker(reuse_identity=False)
        await harness.finish()
        await harness.retire()
        explored = 0
        for point in FaultPoint:
            for hit in range(1, min(reference.plan.hits[point], HITS_CAP) + 1):
                explored += await _crash_case(harness, program, point, hit, reuse_identity)
        return explored
    finally:
        await harness.close()


def _run_program(program: Step, reuse_identity: bool) -> None:
    note(f"program: {describe(program)}")
    root = Path(tempfile.mkdtemp(prefix="perdura-points-"))
    loop = asyncio.new_event_loop()
    try:
        _explored.append(loop.run_until_complete(_explore(root, program, reuse_identity)))
        STATS.programs += 1
    finally:
        loop.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_crash_at_every_fault_point_of_a_run_is_recovered() -> None:
    profile = settings.get_current_profile_name()
    plan = budget(profile)
    started = time.monotonic()
    failing: list[bool] = []

    @settings(
        max_examples=plan.programs,
        suppress_health_check=[HealthCheck.too_slow],
        deadline=None,
    )
    @given(program=programs(max_leaves=5), reuse_identity=st.booleans())
    def every_point(program: Step, reuse_identity: bool) -> None:
        # Explored enough: hypothesis only draws the remaining examples. Not while it
        # shrinks a failure, which must replay every example it tries.
        if 0 < plan.program_target <= sum(_explored) and not failing:
            return
        try:
            _run_program(program, reuse_identity)
        except BaseException:
            failing.append(True)
            raise

    _explored.clear()
    with captured_engine_errors():
        every_point()
    explored = sum(_explored)
    STATS.record("every point", profile, time.monotonic() - started, explored)
    print(f"\nevery fault point: {explored} crash points; {STATS.summary()}")
    assert explored >= plan.program_target, (
        f"the {profile!r} profile must explore at least {plan.program_target} crash points "
        f"here; it explored {explored} (see BUDGETS in tests/property/stats.py)"
    )
