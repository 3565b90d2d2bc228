"""Kill a worker with SIGKILL in the middle of an order, and watch another one finish it.

``make demo`` runs this. It needs nothing but the repository: a fresh SQLite store in a
temporary directory, the order workflow of ``examples/orders.py`` with its three-day wait cut
to three seconds, and two worker processes started with the ``perdura worker`` command.

1. start one order run, then a worker process;
2. watch the run's history until an activity has completed (the card is charged);
3. SIGKILL the worker: no shutdown, no lease released, nothing flushed;
4. start a new worker with the same identity (so it reclaims the dead one's runs at once
   instead of waiting for their leases to expire) and wait for the result;
5. print the run's timeline and the activity ledger, and check the guarantees: every attempt
   whose outcome was recorded before the kill ran exactly once, and the result is right.

Exits 1 if a guarantee does not hold (or the run does not finish in time), 0 otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from examples.orders import (  # noqa: E402
    CHARGE_FAILURES_ENV,
    LEDGER_ENV,
    WORK_SECONDS_ENV,
    read_ledger,
)
from history import (  # noqa: E402
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    TimerStarted,
)
from sdk import open_client  # noqa: E402

WORKFLOW_ID = "order-42"
ORDER_ID = "order-42"
AMOUNT = 4200
SHIP_AFTER = 3.0
IDENTITY = "demo-worker"
DEADLINE = 45.0
"""Seconds any one wait may take before the demo gives up (the whole demo takes about 7)."""

_started = time.monotonic()


def say(text: str = "") -> None:
    print(f"[{time.monotonic() - _started:5.1f}s] {text}" if text else "", flush=True)


def start_worker(store_url: str, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """A worker as its own process, through the CLI exactly as an operator would run it."""
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        "--app",
        "examples.orders:app",
        "--store",
        store_url,
        "--identity",
        IDENTITY,
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)


def recorded_attempts(history: list[AnyEvent]) -> list[tuple[str, int, str]]:
    """``(activity, attempt, outcome)`` for every attempt whose outcome is in the history."""
    names = {e.seq: e.activity_type for e in history if isinstance(e, ActivityScheduled)}
    out = []
    for event in history:
        if isinstance(event, ActivityCompleted):
            out.append((names[event.seq], event.attempt, "completed"))
        elif isinstance(event, ActivityFailed | ActivityTimedOut):
            out.append((names[event.seq], event.attempt, "failed"))
    return out


def run_demo(workdir: Path) -> bool:
    store_url = f"sqlite:///{workdir / 'demo.db'}"
    ledger = workdir / "ledger.tsv"
    env = {
        **os.environ,
        LEDGER_ENV: str(ledger),
        WORK_SECONDS_ENV: "0.3",
        CHARGE_FAILURES_ENV: "1",  # the first charge attempt fails: a retry to look at
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    say(f"store {store_url}")
    asyncio.run(start_order(store_url))
    say(
        f"started workflow {WORKFLOW_ID} (order {ORDER_ID}, {AMOUNT} cents, ships after "
        f"{SHIP_AFTER:g}s instead of three days)"
    )

    with open(workdir / "worker-1.log", "wb") as log1:
        first = start_worker(store_url, env, log1)
        say(f"worker 1 started as process {first.pid} (identity {IDENTITY!r})")
        try:
            history = wait_for_history(
                store_url, first, lambda h: any(isinstance(e, ActivityCompleted) for e in h)
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    before_kill = recorded_attempts(history)
    say(f"SIGKILL sent to worker 1 (pid {first.pid}) with {len(history)} events recorded:")
    for name, attempt, outcome in before_kill:
        say(f"    {name} attempt {attempt}: {outcome}")
    if any(isinstance(e, TimerStarted) for e in history):
        say(f"    and the {SHIP_AFTER:g}s timer running")

    with open(workdir / "worker-2.log", "wb") as log2:
        second = start_worker(store_url, env, log2)
        say(f"worker 2 started as process {second.pid}, same identity: it reclaims the run")
        try:
            result = asyncio.run(wait_for_result(store_url))
        finally:
            second.send_signal(signal.SIGTERM)
            stopped = second.wait(timeout=10)
    say(f"result: {result}")
    say(f"worker 2 stopped gracefully on SIGTERM (exit code {stopped})")

    print()
    print(f"$ perdura timeline {WORKFLOW_ID}")
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "timeline", WORKFLOW_ID, "--store", store_url],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return check(ledger, before_kill, result, first.pid)


async def start_order(store_url: str) -> None:
    async with open_client(store_url) as client:
        await client.start_workflow("order", ORDER_ID, AMOUNT, SHIP_AFTER, id=WORKFLOW_ID)


async def read_history(store_url: str) -> list[AnyEvent]:
    async with open_client(store_url) as client:
        return await client.get_handle(WORKFLOW_ID).history()


def wait_for_history(
    store_url: str, worker: subprocess.Popen[bytes], done: Callable[[list[AnyEvent]], bool]
) -> list[AnyEvent]:
    """Poll the run's history until ``done`` says so; the run lives in another process."""
    deadline = time.monotonic() + DEADLINE
    while True:
        history = asyncio.run(read_history(store_url))
        if done(history):
            return history
        if worker.poll() is not None:
            raise RuntimeError(f"worker 1 exited early with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no activity completed within {DEADLINE:g}s")
        time.sleep(0.05)


async def wait_for_result(store_url: str) -> Any:
    async with open_client(store_url) as client, asyncio.timeout(DEADLINE):
        return await client.get_handle(WORKFLOW_ID).result()


def check(
    ledger: Path, before_kill: list[tuple[str, int, str]], result: Any, first_pid: int
) -> bool:
    entries = [e for e in read_ledger(ledger) if e.order_id == ORDER_ID]
    print()
    print(f"Ledger {ledger} (one line per execution, written as each attempt starts):")
    for entry in entries:
        worker = "worker 1" if entry.pid == first_pid else "worker 2"
        print(f"    {entry.activity:<14} attempt {entry.attempt}   {worker} (pid {entry.pid})")
    print()
    runs = Counter((e.activity, e.attempt) for e in entries)
    ok = True
    for name, attempt, outcome in before_kill:
        count = runs[(name, attempt)]
        good = count == 1
        ok &= good
        mark = "ok  " if good else "FAIL"
        print(f"{mark} {name} attempt {attempt} ({outcome} before the kill) ran {count} time(s)")
    for name in ("charge", "ship", "email_receipt", "award_points"):
        if not any(e.activity == name for e in entries):
            ok = False
            print(f"FAIL {name} never ran")
    expected = {
        "receipt": f"rcpt-{ORDER_ID}-{AMOUNT}",
        "tracking": f"trk-{ORDER_ID}",
        "points": AMOUNT // 100,
    }
    good = isinstance(result, dict) and all(result.get(k) == v for k, v in expected.items())
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} result has {expected}")
    return ok


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="perdura-demo-"))
    try:
        ok = run_demo(workdir)
    except (TimeoutError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"demo failed: {exc!r}; worker logs are in {workdir}", file=sys.stderr)
        return 1
    print()
    took = time.monotonic() - _started
    if not ok:
        print(f"GUARANTEES VIOLATED (after {took:.1f}s); data kept in {workdir}")
        return 1
    print(f"All guarantees held; the demo took {took:.1f}s. Look around:")
    print(f"    .venv/bin/perdura history {WORKFLOW_ID} --store {workdir / 'demo.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
