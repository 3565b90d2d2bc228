"""Fault points: named places where a test can make a worker crash.

The promise of the runtime is "crash anywhere, lose nothing, redo nothing that was recorded".
To test *anywhere*, the runtime calls :meth:`Faults.hit` at every point where a crash would
leave a different state behind: before and after each store transaction, when an activity
attempt starts and when it completes, when a timer fires, when leases are renewed.

A :class:`Faults` object decides, per hit, whether to crash. Crashing raises
:class:`InjectedCrash`, a ``BaseException`` (so ``except Exception`` in user code or in the
runtime cannot swallow it); the worker then dies the way a killed process does: every task is
cancelled, nothing is released, no cached state survives. Only the store is left, exactly as
a real crash leaves it, and a new worker must recover from it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FaultPoint", "Faults", "InjectedCrash"]


class FaultPoint(enum.Enum):
    BEFORE_APPEND = "before_append"
    AFTER_APPEND = "after_append"
    BEFORE_CLAIM = "before_claim"
    AFTER_CLAIM = "after_claim"
    ACTIVITY_START = "activity_start"
    ACTIVITY_COMPLETE = "activity_complete"
    TIMER_FIRE = "timer_fire"
    LEASE_RENEW = "lease_renew"
    RELEASE = "release"


class InjectedCrash(BaseException):
    """The simulated death of a worker process at a fault point."""

    def __init__(self, point: FaultPoint, hit: int) -> None:
        self.point = point
        self.hit = hit
        super().__init__(f"injected crash at {point.value} (hit #{hit})")


@dataclass(eq=False)
class Faults:
    """Counts every hit per point; crashes when ``decide(point, hit_number)`` says so.

    ``crash_at(point, n)`` is the common case: crash at the n-th hit of one point.
    """

    decide: Callable[[FaultPoint, int], bool] = lambda point, hit: False
    hits: Counter[FaultPoint] = field(default_factory=Counter)
    crashed: InjectedCrash | None = None

    @classmethod
    def crash_at(cls, point: FaultPoint, hit: int) -> Faults:
        return cls(decide=lambda p, n: p is point and n == hit)

    def hit(self, point: FaultPoint) -> None:
        self.hits[point] += 1
        number = self.hits[point]
        if self.crashed is None and self.decide(point, number):
            self.crashed = InjectedCrash(point, number)
        if self.crashed is not None:
            # Once crashed, every further step of this worker dies too: a dead process
            # does nothing more.
            raise self.crashed
