"""A real worker process for the multi-process tests: the ``short`` workflow of
``scaleout_app`` on the store named by ``--store`` (PostgreSQL or SQLite).

::

    python tests/e2e/scaleout_worker.py --store URL --identity ID [--lease S] [--poll S]

Prints ``worker ready`` once polling; exits 0 on SIGTERM after a graceful stop. Logs are JSON
lines on stderr (a refused late append shows as a ``lease lost`` warning).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog
from scaleout_app import bump, short

from engine import Worker
from history import open_store

QUEUE = "scaleout"


async def main(args: argparse.Namespace) -> None:
    store = await open_store(args.store)
    worker = Worker(
        store,
        task_queue=QUEUE,
        workflows=[short],
        activities=[bump],
        identity=args.identity,
        lease_seconds=args.lease,
        poll_interval=args.poll,
        keep_alive=0.05,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        print("worker ready", flush=True)
        await stop.wait()
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=1.0)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(main(parser.parse_args()))
