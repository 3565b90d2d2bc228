"""SIGKILL real worker processes mid-run; other workers must finish every run correctly.

What each test checks after the dust settles:

* the run completes with the right result;
* every activity attempt whose outcome was recorded before the kill ran exactly once (the
  ledger has one line for it): a recorded result is never recomputed;
* an attempt that was in flight at the kill ran exactly twice (at-least-once, and no more);
* every execution in the ledger is accounted for by the final history;
* the SQLite file passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from e2e_support import (
    Cluster,
    WorkerProcess,
    assert_order_result,
    recorded_attempts,
    wait_until,
)

from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    AnyEvent,
    TimerFired,
    TimerStarted,
)

pytestmark = pytest.mark.slow


def _outcome_of(history: list[AnyEvent], activity: str) -> bool:
    seqs = {
        e.seq for e in history if isinstance(e, ActivityScheduled) and e.activity_type == activity
    }
    return any(isinstance(e, ActivityCompleted) and e.seq in seqs for e in history)


def _claimed(cluster: Cluster, order_id: str, worker: WorkerProcess) -> None:
    wait_until("the run to be claimed", lambda: cluster.run_info(order_id).owner == worker.identity)


def _charge_running(cluster: Cluster, order_id: str, worker: WorkerProcess) -> None:
    wait_until(
        "charge to be running",
        lambda: any(e.activity == "charge" for e in cluster.ledger(order_id)),
    )


def _charge_backing_off(cluster: Cluster, order_id: str, worker: WorkerProcess) -> None:
    cluster.wait_history(
        order_id,
        "charge attempt 1 to fail",
        lambda h: any(isinstance(e, ActivityFailed) for e in h),
    )


def _timer_running(cluster: Cluster, order_id: str, worker: WorkerProcess) -> None:
    cluster.wait_history(
        order_id,
        "the timer to start",
        lambda h: any(isinstance(e, TimerStarted) for e in h),
    )


def _ship_running(cluster: Cluster, order_id: str, worker: WorkerProcess) -> None:
    wait_until(
        "ship to be running",
        lambda: any(e.activity == "ship" for e in cluster.ledger(order_id)),
    )


@dataclass(frozen=True)
class KillPoint:
    name: str
    reach: Callable[[Cluster, str, WorkerProcess], None]
    """Block until the first worker is at the point where it is to be killed."""
    expect: Callable[[list[AnyEvent], set[tuple[str, int]]], bool]
    """Given the history and the in-flight attempts at the kill: was it killed there?"""
    work_seconds: float = 0.3
    charge_failures: int = 0
    wait_for_timer_due: bool = False


POINTS = [
    KillPoint(
        "right-after-claim",
        _claimed,
        lambda h, in_flight: not recorded_attempts(h),
        work_seconds=1.0,
    ),
    KillPoint(
        "during-async-activity",
        _charge_running,
        lambda h, in_flight: ("charge", 1) in in_flight and not recorded_attempts(h),
        work_seconds=1.0,
    ),
    KillPoint(
        "during-retry-backoff",
        _charge_backing_off,
        lambda h, in_flight: recorded_attempts(h) == {("charge", 1)} and not in_flight,
        charge_failures=1,
    ),
    KillPoint(
        "during-timer",
        _timer_running,
        lambda h, in_flight: not any(isinstance(e, TimerFired) for e in h),
    ),
    KillPoint(
        "timer-due-while-down",
        _timer_running,
        lambda h, in_flight: not any(isinstance(e, TimerFired) for e in h),
        wait_for_timer_due=True,
    ),
    KillPoint(
        "during-sync-activity",
        _ship_running,
        lambda h, in_flight: ("ship", 1) in in_flight and not _outcome_of(h, "ship"),
        work_seconds=1.0,
    ),
]


@pytest.mark.parametrize("point", POINTS, ids=[p.name for p in POINTS])
def test_sigkilled_worker_is_replaced_without_repeating_recorded_steps(
    cluster: Cluster, point: KillPoint
) -> None:
    order_id = f"order-{point.name}"
    first = cluster.start_worker(
        "worker-a", work_seconds=point.work_seconds, charge_failures=point.charge_failures
    )
    cluster.start_order(order_id)
    point.reach(cluster, order_id, first)
    first.kill()

    history = cluster.history(order_id)
    recorded = recorded_attempts(history)
    in_flight = {(e.activity, e.attempt) for e in cluster.ledger(order_id)} - recorded
    assert point.expect(history, in_flight), (point.name, history, in_flight)
    if point.wait_for_timer_due:
        [timer] = [e for e in history if isinstance(e, TimerStarted)]
        wait_until("the timer to be due", lambda: time.time() > timer.fire_at.timestamp())

    # Same identity: the new process drops the dead one's leases and resumes at once.
    cluster.start_worker("worker-a", work_seconds=0.1, charge_failures=point.charge_failures)
    assert_order_result(cluster.result(order_id), order_id)

    final = recorded_attempts(cluster.history(order_id))
    executions = Counter((e.activity, e.attempt) for e in cluster.ledger(order_id))
    for attempt in recorded:
        assert executions[attempt] == 1, f"{attempt} was recorded before the kill yet re-ran"
    for attempt in final - recorded:
        expected = 2 if attempt in in_flight else 1
        assert executions[attempt] == expected, (attempt, executions)
    assert set(executions) == final
    assert {"charge", "ship", "email_receipt", "award_points"} <= {a for a, _ in final}
    assert cluster.integrity_check() == "ok"


def test_workers_share_runs_and_take_over_a_dead_workers_runs_after_its_lease(
    cluster: Cluster,
) -> None:
    # Each worker may hold two runs at once, so four runs are split between them.
    limit = ("--max-concurrent-runs", "2")
    a = cluster.start_worker("worker-a", lease_seconds=1.0, extra=limit)
    b = cluster.start_worker("worker-b", lease_seconds=1.0, extra=limit)
    a.wait_ready()
    b.wait_ready()
    orders = [f"order-{i}" for i in range(4)]
    for order_id in orders:
        cluster.start_order(order_id, ship_after=2.0)

    def owners() -> dict[str, str] | None:
        held = {r.workflow_id: r.owner for r in cluster.runs() if r.owner is not None}
        return held if set(held.values()) == {"worker-a", "worker-b"} and len(held) == 4 else None

    held = wait_until("both workers to hold two runs each", owners)
    a.kill()
    orphans = sorted(w for w, owner in held.items() if owner == "worker-a")
    assert len(orphans) == 2
    # Read after the kill: nothing renews these leases any more.
    expiry = {r.workflow_id: r.lease_expires_at for r in cluster.runs() if r.workflow_id in orphans}
    before = {w: cluster.history(w) for w in orders}

    # Nobody restarts worker-a: worker-b claims its runs once their leases run out.
    for order_id in orders:
        assert_order_result(cluster.result(order_id), order_id)
    for order_id in orphans:
        lease_end = expiry[order_id]
        assert lease_end is not None
        after_kill = cluster.history(order_id)[len(before[order_id]) :]
        assert after_kill, f"{order_id} made no progress after the kill"
        assert min(e.timestamp.timestamp() for e in after_kill) >= lease_end
        shippers = {e.pid for e in cluster.ledger(order_id) if e.activity == "ship"}
        assert shippers == {b.pid}, f"{order_id} was not finished by worker-b"
    for order_id in orders:
        executions = Counter((e.activity, e.attempt) for e in cluster.ledger(order_id))
        for attempt in recorded_attempts(before[order_id]):
            assert executions[attempt] == 1, (order_id, attempt, executions)
    assert cluster.integrity_check() == "ok"
