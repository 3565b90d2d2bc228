"""A real worker process for ``test_sigkill.py``: runs the harness workflow on a store file
and, if told to, kills itself at the n-th hit of a fault point — with SIGKILL, or with
``os._exit`` — so the process dies exactly there, with no cleanup of any kind.

::

    python tests/property/sigkill_worker.py --db STORE --identity ID
        [--kill-at POINT:N --kill-with sigkill|exit] [--lease SECONDS] [--keep-alive S]

The ledger file and the epoch come from ``$PERDURA_HARNESS_LEDGER`` and
``$PERDURA_HARNESS_EPOCH`` (see ``programs.Ledger``). Logs are JSON lines on stderr.
Prints ``worker ready`` once polling; exits 0 on SIGTERM after a graceful stop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import structlog
from programs import interpret, step

from engine import Worker
from history import SqliteStore
from sdk.testing import FaultPoint, Faults

QUEUE = "harness"


def _die(how: str) -> None:
    sys.stdout.flush()
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def _faults(kill_at: str | None, how: str) -> Faults | None:
    if kill_at is None:
        return None
    name, _, nth = kill_at.partition(":")
    point, hit = FaultPoint(name), int(nth)

    def decide(seen: FaultPoint, number: int) -> bool:
        if seen is point and number == hit:
            _die(how)
        return False

    return Faults(decide=decide)


async def main(args: argparse.Namespace) -> None:
    store = await SqliteStore.open(args.db)
    worker = Worker(
        store,
        task_queue=QUEUE,
        workflows=[interpret],
        activities=[step],
        identity=args.identity,
        lease_seconds=args.lease,
        keep_alive=args.keep_alive,
        poll_interval=0.05,
        faults=_faults(args.kill_at, args.kill_with),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        print("worker ready", flush=True)
        await stop.wait()
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--kill-at", default=None)
    parser.add_argument("--kill-with", choices=("sigkill", "exit"), default="sigkill")
    parser.add_argument("--lease", type=float, default=10.0)
    # Short: a run waiting on a 0.2 s timer is handed back to the store and claimed again,
    # so releases and wake-ups through the store happen (and can be killed) too.
    parser.add_argument("--keep-alive", type=float, default=0.05)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(main(parser.parse_args()))
