"""A sample of crash cases with real processes: a worker subprocess dies at a fault point by
SIGKILL (or ``os._exit``), a second one recovers, and the same invariants hold.

The in-process harness simulates a crash by cancelling every task of a worker; this test
checks the simulation is honest about what a real death leaves behind: a SQLite file in
the middle of whatever it was doing (WAL, ``synchronous=FULL``), a ledger line written by an
attempt whose outcome never reached the store, leases nobody renews. After every kill the
file must pass ``PRAGMA integrity_check``; the recovering process — the same identity
restarted, or another identity once the dead one's short lease expires — must finish every
run with the oracle's result, without executing again any attempt recorded before the kill.

The cases are few (a handful in ``ci``) and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Harness, Violation
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from programs import (
    EPOCH_ENV,
    LEDGER_ENV,
    SHORT_RETRY_INTERVALS,
    SHORT_SLEEPS,
    Ledger,
    Step,
    describe,
    programs,
)
from stats import STATS, budget

from engine import SystemClock
from history import Durability
from sdk.testing import FaultPoint

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sigkill_worker.py")

WAIT = 30.0
"""Wall seconds any one phase may take."""
SHORT_LEASE = 1.0
"""Lease of the killed worker when another identity recovers (it waits that long)."""

#: Points a worker passes in a few seconds of real time (a lease renewal needs a third of
#: the lease to pass, so it is left to the in-process harness).
POINTS = [p for p in FaultPoint if p is not FaultPoint.LEASE_RENEW]


class WorkerProcess:
    def __init__(self, directory: Path, identity: str, epoch: int, args: list[str]) -> None:
        self.log = directory / f"worker-{identity}-{epoch}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            LEDGER_ENV: str(directory / "ledger.tsv"),
            EPOCH_ENV: str(epoch),
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), "--identity", identity, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        """Until it polls (a SIGTERM before its handler is installed would kill it)."""
        _wait(
            f"worker {self.log.name} to be ready",
            lambda: self.proc.poll() is not None or "worker ready" in self.output(),
        )
        if self.proc.poll() is not None:
            raise Violation(f"worker exited early ({self.proc.returncode}):\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=WAIT)

    def errors(self) -> list[str]:
        """Error-level log lines (invariant 6)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "critical", "exception"):
                found.append(line)
        return found


def _wait(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not probe():
        if time.monotonic() > deadline:
            raise Violation(f"timed out after {WAIT:g}s waiting for {what}")
        time.sleep(0.02)


def _sigkill_case(
    directory: Path,
    runs: list[Step],
    point: FaultPoint,
    hit: int,
    how: str,
    reuse_identity: bool,
) -> bool:
    harness = Harness(directory, durability=Durability.FULL, clock=SystemClock())

    async def start() -> None:
        await harness.open()
        for program in runs:
            await harness.start_run(program)
        await harness.close_client()

    asyncio.run(start())
    db = ["--db", str(harness.path)]
    try:
        lease = ["--lease", str(SHORT_LEASE if not reuse_identity else 10.0)]
        doomed = WorkerProcess(
            directory,
            "w1",
            0,
            [*db, *lease, "--kill-at", f"{point.value}:{hit}", "--kill-with", how],
        )
        _wait(
            "the worker to die or the runs to close",
            lambda: doomed.proc.poll() is not None or harness.all_closed(),
        )
        if doomed.proc.poll() is None:
            doomed.stop()  # the runs finished before the fault point came round
            return False
        code = doomed.proc.returncode
        if code not in (-9, 137):
            raise Violation(f"worker exited with {code}, not killed:\n{doomed.output()}")
        STATS.crashes["sigkill" if how == "sigkill" else "os._exit"] += 1
        integrity = harness.integrity_check()
        if integrity != "ok":
            raise Violation(f"PRAGMA integrity_check after the kill: {integrity}")
        harness.ledger = Ledger(entries=Ledger.read(directory / "ledger.tsv"))
        disruption = harness.open_epoch(how, "w1", point, hit)
        note(disruption.describe())
        harness.check(replay=True)

        rescuer = WorkerProcess(directory, "w1" if reuse_identity else "w2", 1, db)
        rescuer.wait_ready()
        _wait("every run to close after recovery", harness.all_closed)
        if rescuer.stop() != 0:
            raise Violation(f"recovering worker failed:\n{rescuer.output()}")
        errors = doomed.errors() + rescuer.errors()
        if errors:
            raise Violation("a worker logged an error:\n" + "\n".join(errors[:3]))
        harness.ledger = Ledger(entries=Ledger.read(directory / "ledger.tsv"))
        harness.check(replay=True)
        harness.check_final()
        return True
    except Violation as exc:
        raise Violation(
            f"{how} at {point.value} (hit #{hit}), recovered by "
            f"{'the same identity' if reuse_identity else 'another identity'}:\n{exc}"
        ) from None
    finally:
        asyncio.run(harness.close())


@pytest.mark.slow
def test_a_worker_process_killed_at_a_fault_point_is_recovered_by_another() -> None:
    profile = settings.get_current_profile_name()
    plan = budget(profile)
    started = time.monotonic()
    killed: list[bool] = []

    @settings(
        max_examples=plan.kills,
        suppress_health_check=[HealthCheck.too_slow],
        deadline=None,
    )
    @given(
        runs=st.lists(
            programs(max_leaves=4, sleeps=SHORT_SLEEPS, intervals=SHORT_RETRY_INTERVALS),
            min_size=1,
            max_size=2,
        ),
        point=st.sampled_from(POINTS),
        hit=st.integers(1, 4),
        how=st.sampled_from(["sigkill", "exit"]),
        reuse_identity=st.booleans(),
    )
    def case(runs: list[Step], point: FaultPoint, hit: int, how: str, reuse_identity: bool) -> None:
        for program in runs:
            note(f"program: {describe(program)}")
        directory = Path(tempfile.mkdtemp(prefix="perdura-sigkill-"))
        try:
            killed.append(_sigkill_case(directory, runs, point, hit, how, reuse_identity))
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    case()
    explored = sum(killed)
    STATS.record("sigkill", profile, time.monotonic() - started, explored)
    print(f"\nreal kills: {explored}; {STATS.summary()}")
    assert explored >= plan.kill_floor, (
        f"the {profile!r} profile must kill at least {plan.kill_floor} worker processes; "
        f"it killed {explored} (see BUDGETS in tests/property/stats.py)"
    )
