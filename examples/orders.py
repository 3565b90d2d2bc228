"""The order workflow from the README: charge, wait durably, ship, then tell the customer.

Run it against a store (``$PERDURA_STORE`` or ``./perdura.db``)::

    perdura worker --app examples.orders:app
    perdura start order --id order-42 --arg '"order-42"' --arg 4200 --arg 5
    perdura result order-42

Each activity appends one line to a ledger file (``$PERDURA_LEDGER``) as it starts, so the
demo and the end-to-end tests can count how often each one really executed: a step whose
result is recorded must appear exactly once, whatever happened to the workers. Two more
variables make the activities behave like real ones: ``$PERDURA_ACTIVITY_SECONDS`` (time each
one spends "working", default 0.2) and ``$PERDURA_CHARGE_FAILURES`` (how many charge attempts
fail before one succeeds, default 0: a flaky card network).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk import App, RetryPolicy, activity, workflow

__all__ = [
    "LEDGER_ENV",
    "LedgerEntry",
    "app",
    "award_points",
    "charge",
    "email_receipt",
    "order",
    "read_ledger",
    "ship",
]

LEDGER_ENV = "PERDURA_LEDGER"
WORK_SECONDS_ENV = "PERDURA_ACTIVITY_SECONDS"
CHARGE_FAILURES_ENV = "PERDURA_CHARGE_FAILURES"

THREE_DAYS = 3 * 24 * 3600.0


@dataclass(frozen=True)
class LedgerEntry:
    """One execution of one activity attempt, as written by the process that ran it."""

    activity: str
    order_id: str
    attempt: int
    pid: int


def _record(name: str, order_id: str) -> None:
    """Append the ledger line before the work starts: an attempt cut short by a crash still
    counts as an execution, which is exactly what at-least-once means."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    line = f"{name}\t{order_id}\t{activity.info().attempt}\t{os.getpid()}\n"
    with open(path, "a", encoding="utf-8") as ledger:
        ledger.write(line)


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """Every execution recorded so far, in the order they started."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        name, order_id, attempt, pid = line.split("\t")
        entries.append(LedgerEntry(name, order_id, int(attempt), int(pid)))
    return entries


def _work_seconds() -> float:
    return float(os.environ.get(WORK_SECONDS_ENV, "0.2"))


@activity.defn
async def charge(order_id: str, amount: int) -> str:
    """Charge the customer's card; the receipt id is what the rest of the order refers to."""
    _record("charge", order_id)
    await asyncio.sleep(_work_seconds())
    if activity.info().attempt <= int(os.environ.get(CHARGE_FAILURES_ENV, "0")):
        raise ConnectionError("card network timed out")
    return f"rcpt-{order_id}-{amount}"


@activity.defn
def ship(order_id: str) -> str:
    """Hand the parcel to the carrier. A plain ``def``: the worker runs it in a thread."""
    _record("ship", order_id)
    time.sleep(_work_seconds())
    return f"trk-{order_id}"


@activity.defn
async def email_receipt(order_id: str, receipt: str, tracking: str) -> str:
    _record("email_receipt", order_id)
    await asyncio.sleep(_work_seconds())
    return f"sent {receipt} and {tracking}"


@activity.defn
async def award_points(order_id: str, amount: int) -> int:
    _record("award_points", order_id)
    await asyncio.sleep(_work_seconds())
    return amount // 100


@workflow.defn
async def order(order_id: str, amount: int, ship_after: float = THREE_DAYS) -> dict[str, Any]:
    """Charge now, ship after ``ship_after`` seconds (three days unless told otherwise).

    The wait is a durable timer: no worker holds it, and a worker that starts after it is
    due fires it and carries on from there.
    """
    receipt = await workflow.execute_activity(
        charge,
        order_id,
        amount,
        start_to_close_timeout=30,
        retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=1, backoff_coefficient=2),
    )
    await workflow.sleep(ship_after)
    tracking = await ship(order_id)
    await email_receipt(order_id, receipt, tracking)
    points = await award_points(order_id, amount)
    return {
        "receipt": receipt,
        "tracking": tracking,
        "points": points,
        "at": workflow.now().isoformat(),
    }


app = App(workflows=[order], activities=[charge, ship, email_receipt, award_points])
