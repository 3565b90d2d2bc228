"""``perdura worker`` as a real process: graceful stop on a signal, clear failure on bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import pytest
from e2e_support import ROOT, Cluster, assert_order_result, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_worker_gracefully_and_hands_its_run_back_at_once(
    cluster: Cluster,
) -> None:
    # A 30 s lease: if the second worker finishes the run well within it, the first one
    # must have released the run rather than let its lease run out.
    first = cluster.start_worker("worker-a", lease_seconds=30.0, work_seconds=5.0)
    cluster.start_order("order-1", ship_after=0.1)
    wait_until("charge to be running", lambda: cluster.ledger("order-1"))

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=10) == 0
    output = first.output()
    assert "stopping worker gracefully" in output
    assert "Traceback" not in output
    info = cluster.run_info("order-1")
    assert info.status.is_open
    assert info.owner is None

    cluster.start_worker("worker-b", lease_seconds=30.0, work_seconds=0.1)
    assert_order_result(cluster.result("order-1", timeout=15), "order-1")
    executions = Counter((e.activity, e.attempt) for e in cluster.ledger("order-1"))
    # The interrupted charge ran again (at-least-once); everything else ran once.
    assert executions == {
        ("charge", 1): 2,
        ("ship", 1): 1,
        ("email_receipt", 1): 1,
        ("award_points", 1): 1,
    }
    assert cluster.integrity_check() == "ok"


def test_sigint_stops_an_idle_worker_with_exit_code_zero(cluster: Cluster) -> None:
    worker = cluster.start_worker("worker-a")
    worker.wait_ready()
    worker.proc.send_signal(signal.SIGINT)
    assert worker.proc.wait(timeout=10) == 0
    assert "Traceback" not in worker.output()


def test_bad_app_spec_is_one_line_on_stderr_and_exit_code_one(cluster: Cluster) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "--app",
            "examples.orders:no_such_app",
            "--store",
            cluster.store_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "perdura: error: cannot load app 'examples.orders:no_such_app': module "
        "'examples.orders' has no attribute 'no_such_app'"
    ]
    assert not cluster.db.exists()
