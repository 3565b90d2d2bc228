"""The long-running commands: ``perdura worker`` (an app's workflows and activities) and
``perdura server`` (the HTTP API and web UI, with a worker, in one process).

Both run until SIGTERM or SIGINT, then stop gracefully (claim nothing new, hand their runs
back for immediate pickup). A second signal exits at once with ``128 + signum``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import structlog

from ._apps import load_app
from ._cli_base import EXIT_OK, CliError, open_cli_store, store_url
from ._cli_output import Output
from ._config import ConfigError, PerduraConfig
from ._logging import configure_logging as setup_logging
from ._worker import Worker

__all__ = ["cmd_server", "cmd_worker", "configure_logging"]

log = structlog.get_logger("perdura.cli")


def configure_logging(config: PerduraConfig | None = None) -> None:
    """Worker logs go to stderr (stdout stays free for output) as console or JSON lines
    (``log_format``, ``$PERDURA_LOG_FORMAT``), unless the app configured structlog itself."""
    if not structlog.is_configured():
        log_format = None if config is None else config.log_format
        setup_logging(
            json=None if log_format is None else log_format == "json",
            level=None if config is None else config.log_level,
            stream=sys.stderr,
        )


def load_config(args: argparse.Namespace) -> PerduraConfig:
    """``--config FILE`` (or ``$PERDURA_CONFIG``) under the ``PERDURA_*`` environment."""
    try:
        return PerduraConfig.load(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


async def cmd_worker(args: argparse.Namespace, out: Output) -> int:
    # The app is loaded before the store is opened: a bad spec must not create a file.
    app = load_app(args.app, app_dir=args.app_dir)
    config = load_config(args)
    if args.store is None and config.store is not None:
        args.store = config.store
    configure_logging(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            sys.stderr.write("perdura: second signal, exiting without a graceful stop\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        log.info("stopping worker gracefully", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with open_cli_store(args, create=True, durability=config.durability) as store:
            try:
                worker = Worker(
                    store,
                    task_queue=args.task_queue,
                    workflows=app.workflows,
                    activities=app.activities,
                    identity=args.identity,
                    lease_seconds=args.lease_seconds,
                    max_concurrent_runs=args.max_concurrent_runs,
                    config=config,
                    metrics_port=getattr(args, "metrics_port", None),
                )
            except (TypeError, ValueError) as exc:
                raise CliError(f"cannot serve app {args.app!r}: {exc}") from None
            async with worker:
                log.info(
                    "worker ready",
                    identity=worker.identity,
                    task_queue=worker.task_queue,
                    store=store.url,
                    workflows=sorted(worker.registry.workflows),
                    activities=sorted(worker.registry.activities),
                )
                # The poll loop runs in the worker's background task (this module is part
                # of the engine, so it may look): if it dies, the process must not linger.
                background = worker._background
                assert background is not None
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({stopping, background}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if background.done() and not background.cancelled():
                    error = background.exception()
                    raise CliError(f"worker {worker.identity} stopped unexpectedly: {error!r}")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            # A sync activity cut short by the stop keeps running in its thread (threads
            # cannot be killed) and the interpreter waits for it before exiting; its run is
            # already handed back, so another signal must end the process at once.
            signal.signal(signum, _exit_now)
    return EXIT_OK


def _exit_now(signum: int, frame: object) -> None:
    sys.stderr.write("perdura: exiting without waiting for abandoned activity threads\n")
    sys.stderr.flush()
    os._exit(128 + signum)


async def cmd_server(args: argparse.Namespace, out: Output) -> int:
    """The HTTP API, the web UI and a worker per task queue in this one process."""
    from .server import TOKEN_ENV, RunningServer, serve  # uvicorn and starlette: only here

    config = load_config(args)
    if args.store is None and config.store is not None:
        args.store = config.store
    configure_logging(config)

    def on_ready(server: RunningServer) -> None:
        if args.json:  # one line: a script reads it from the still-running process
            ready = {
                "url": server.url,
                "api": f"{server.url}/api/durable",
                "ui": f"{server.url}/ui/",
                "workers": list(server.worker_identities),
            }
            out.line(json.dumps(ready))
        else:
            workers = ", ".join(server.worker_identities) or "none"
            out.line(f"perdura server listening on {server.url}")
            out.line(f"  web UI    {server.url}/ui/")
            out.line(f"  HTTP API  {server.url}/api/durable  (OpenAPI: /api/durable/openapi.json)")
            out.line(f"  workers   {workers}")
        out.flush()

    await serve(
        store_url(args),
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        app_specs=args.app,
        app_dir=args.app_dir,
        run_worker=not args.no_worker,
        task_queues=args.task_queue or ["default"],
        identity=args.identity,
        worker_options={"config": config},
        log_level=args.log_level,
        on_ready=on_ready,
    )
    return EXIT_OK
