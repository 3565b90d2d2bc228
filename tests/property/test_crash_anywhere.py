"""Crash anywhere, lose nothing, redo nothing that was recorded — generated, not assumed.

A hypothesis state machine interleaves, over one SQLite file and one skipped clock:

* ``start_run``: a generated program (activities that fail and retry, non-retryable failures
  caught or not, durable timers from a second to thirty days, sequences and nested
  gathers) started as a run of the one interpreted workflow;
* ``start_worker``: a worker with a dead worker's identity (a restarted process: immediate
  recovery) or a new identity (it takes over once the dead worker's leases expire); up to
  two live workers, each with its own connection to the file;
* ``crash``: arm "die at the n-th hit of fault point P" on one live worker and let the
  workers work — and move the clock — until it dies there;
* ``progress``: let the workers work and the clock move, with nothing armed;
* ``disrupt``: a graceful stop of one worker (in-flight work cancelled, runs handed back),
  or a pause of every worker past its lease, so a run may be taken over from a live worker.

Workers only move while a rule runs the loop; the checks read the file synchronously, as
another process would, so nothing moves under them.

After every step the harness checks what the store holds (append-only gap-free histories,
no recorded attempt executed again, at most one execution per attempt between crashes,
no engine error logged) and, after a crash, that every history replays. At the end it
recovers everything on one worker, runs each run to its close and compares the result with
the pure oracle, replays every history, and checks ``PRAGMA integrity_check``.
See ``harness.py`` for the exact invariants.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, captured_engine_errors
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from programs import Step, describe, programs
from stats import STATS, budget

from sdk.testing import FaultPoint

MAX_RUNS = 8
MAX_WORKERS = 2
CRASH_ADVANCES = 40
"""Clock jumps an armed crash may wait for its fault point."""


class CrashAnywhere(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="perdura-crash-"))
        self.loop = asyncio.new_event_loop()
        self.harness = Harness(self.tmp)
        self.failed = False
        self._do(self.harness.open())

    def _do(self, coro: Any) -> Any:
        try:
            return self.loop.run_until_complete(coro)
        except BaseException:
            self.failed = True
            raise

    # -- rules -------------------------------------------------------------------------------

    @initialize(first=st.lists(programs(), min_size=1, max_size=3))
    def first_runs(self, first: list[Step]) -> None:
        async def go() -> None:
            for program in first:
                record = await self.harness.start_run(program)
                note(f"{record.label}: {describe(program)}")
            await self.harness.start_worker(reuse_identity=False)

        self._do(go())

    @rule(program=programs())
    def start_run(self, program: Step) -> None:
        if len(self.harness.runs) >= MAX_RUNS:
            return
        record = self._do(self.harness.start_run(program))
        note(f"{record.label}: {describe(program)}")

    # Preconditions may depend only on what was drawn (runs started), never on what the
    # runtime did (which workers are alive): hypothesis replays draws, not thread timing.
    # A rule that does not apply right now does nothing instead.

    @rule(reuse_identity=st.booleans())
    def start_worker(self, reuse_identity: bool) -> None:
        if len(self.harness.live) >= MAX_WORKERS:
            return
        live = self._do(self.harness.start_worker(reuse_identity=reuse_identity))
        note(f"started worker {live.name}")

    @rule(
        worker=st.integers(0, MAX_WORKERS - 1),
        point=st.sampled_from(FaultPoint),
        nth=st.integers(1, 4),
        reuse_identity=st.booleans(),
    )
    def crash(self, worker: int, point: FaultPoint, nth: int, reuse_identity: bool) -> None:
        """Die at the ``nth`` hit of ``point`` from now, whenever the workers (and the clock)
        get there. A worker is restarted first if none is alive; with every run closed, the
        first program starts again, so the crash has something to interrupt."""

        async def go() -> None:
            if not self.harness.live:
                live = await self.harness.start_worker(reuse_identity=reuse_identity)
                note(f"started worker {live.name}")
            if self.harness.all_closed() and len(self.harness.runs) < MAX_RUNS:
                first = next(iter(self.harness.runs.values())).program
                record = await self.harness.start_run(first)
                note(f"{record.label}: {describe(first)} (the first program again)")
            target = self.harness.live[worker % len(self.harness.live)]
            for disruption in await self.harness.drive(
                advances=CRASH_ADVANCES, crash=(target, point, nth)
            ):
                note(disruption.describe())
                self.harness.check(replay=True)

        self._do(go())

    @rule(advances=st.integers(1, 3))
    def progress(self, advances: int) -> None:
        self._do(self.harness.drive(advances=advances))

    @rule(worker=st.integers(0, MAX_WORKERS - 1), pause=st.booleans())
    def disrupt(self, worker: int, pause: bool) -> None:
        """A graceful stop of one worker, or a pause of every worker past its lease (with a
        second worker started first if needed): a run may then be taken over from a worker
        that is still alive."""
        if pause:

            async def go() -> None:
                while len(self.harness.live) < MAX_WORKERS:
                    live = await self.harness.start_worker(reuse_identity=False)
                    note(f"started worker {live.name}")
                note((await self.harness.pause()).describe())

            self._do(go())
        elif self.harness.live:
            target = self.harness.live[worker % len(self.harness.live)]
            note(self._do(self.harness.stop_worker(target)).describe())

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def store_and_ledger_agree(self) -> None:
        try:
            self.harness.check(replay=False)
        except BaseException:
            self.failed = True
            raise

    def teardown(self) -> None:
        try:
            if not self.failed:
                self._do(self.harness.finish())
                STATS.scenarios += 1
        finally:
            try:
                self.loop.run_until_complete(self.harness.close())
            finally:
                self.loop.close()
                shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
def test_crash_anywhere_loses_nothing_and_redoes_nothing_recorded() -> None:
    profile = settings.get_current_profile_name()
    plan = budget(profile)
    before = STATS.crash_points
    started = time.monotonic()
    with captured_engine_errors():
        run_state_machine_as_test(
            CrashAnywhere,
            settings=settings(
                max_examples=plan.scenarios,
                stateful_step_count=plan.steps,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                deadline=None,
            ),
        )
    explored = STATS.crash_points - before
    STATS.record("state machine", profile, time.monotonic() - started, explored)
    print(f"\nstate machine: {explored} crash points; {STATS.summary()}")
    assert explored >= plan.scenario_floor, (
        f"the {profile!r} profile must explore at least {plan.scenario_floor} crash points "
        f"here; it explored {explored} (see BUDGETS in tests/property/stats.py)"
    )
