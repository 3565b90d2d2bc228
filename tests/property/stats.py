"""What the property tests explored, summed over the session and reported at its end."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BUDGETS", "FLOORS", "STATS", "Budget", "Stats", "budget"]


@dataclass(frozen=True)
class Budget:
    """How much each property test explores under one hypothesis profile.

    Each test asserts its own floor, and the floors of a profile add up to at least the
    issue's minimum for it (``FLOORS``). The state machine and the real kills are bounded by
    their example counts; the every-point test explores programs until it reaches its floor
    (``program_target``), so the total is met whatever the shapes hypothesis drew.
    """

    programs: int
    """At most this many programs for ``test_crash_every_point`` (each crashed at every
    fault point it passes) …"""
    program_target: int
    """… stopping once this many crash points are explored (its floor)."""
    scenarios: int
    """State-machine scenarios (``max_examples`` of ``test_crash_anywhere``)."""
    steps: int
    """Steps per scenario (``stateful_step_count``)."""
    scenario_floor: int
    kills: int
    """Worker subprocesses ``test_sigkill`` starts to kill (a run may finish first)."""
    kill_floor: int

    @property
    def floor(self) -> int:
        return self.program_target + self.scenario_floor + self.kill_floor


BUDGETS = {
    "ci": Budget(
        programs=60,
        program_target=440,
        scenarios=100,
        steps=20,
        scenario_floor=57,
        kills=6,
        kill_floor=3,
    ),
    "thorough": Budget(
        programs=1_500,
        program_target=9_400,
        scenarios=800,
        steps=30,
        scenario_floor=600,
        kills=40,
        kill_floor=15,
    ),
}
DEV = Budget(
    programs=5, program_target=0, scenarios=50, steps=12, scenario_floor=0, kills=2, kill_floor=0
)
FLOORS = {"ci": 500, "thorough": 10_000}
"""Crash points each profile must explore over the whole property directory (issue 3)."""
assert all(BUDGETS[p].floor >= f for p, f in FLOORS.items()), "floors must add up"


def budget(profile: str) -> Budget:
    return BUDGETS.get(profile, DEV)


@dataclass
class Stats:
    crashes: Counter[str] = field(default_factory=Counter)
    """Injected crashes that happened, by fault kind (a fault point, or a real kill)."""
    fault_hits: Counter[str] = field(default_factory=Counter)
    """Fault points passed by workers (crash or not)."""
    runs: int = 0
    """Workflow runs generated and started."""
    scenarios: int = 0
    """State-machine scenarios (hypothesis test cases) run to the end."""
    programs: int = 0
    """Programs crashed at every fault point."""
    stops: int = 0
    pauses: int = 0
    wall: dict[str, float] = field(default_factory=dict)
    by_test: dict[str, int] = field(default_factory=dict)
    """Crash points explored by each property test."""
    profile: str = ""

    def record(self, test: str, profile: str, seconds: float, explored: int) -> None:
        self.profile = profile
        self.wall[test] = seconds
        self.by_test[test] = explored

    @property
    def crash_points(self) -> int:
        return sum(self.crashes.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "crash_points_explored": self.crash_points,
            "fault_kinds": sorted(self.crashes),
            "distinct_fault_kinds": len(self.crashes),
            "crashes_by_kind": dict(sorted(self.crashes.items())),
            "fault_point_hits": dict(sorted(self.fault_hits.items())),
            "crash_points_by_test": self.by_test,
            "floor": FLOORS.get(self.profile),
            "runs_generated": self.runs,
            "state_machine_scenarios": self.scenarios,
            "programs_crashed_at_every_point": self.programs,
            "graceful_stops": self.stops,
            "pauses_past_the_lease": self.pauses,
            "wall_seconds": {k: round(v, 1) for k, v in self.wall.items()},
        }

    def summary(self) -> str:
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.crashes.items()))
        floor = FLOORS.get(self.profile)
        by_test = ", ".join(f"{k} {n}" for k, n in self.by_test.items())
        wall = ", ".join(f"{k} {v:.1f}s" for k, v in self.wall.items())
        return "\n".join(
            [
                f"crash/resume [{self.profile or 'dev'}]: {self.crash_points} crash points "
                f"explored" + (f" (floor {floor})" if floor else "") + f" — {by_test}",
                f"  {len(self.crashes)} distinct fault kinds: {kinds}",
                f"  {self.runs} runs generated: {self.scenarios} state-machine scenarios "
                f"({self.stops} graceful stops, {self.pauses} pauses past the lease), "
                f"{self.programs} programs crashed at every point",
                f"  wall time: {wall}",
            ]
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


STATS = Stats()
