"""The management server: HTTP API, web UI and an in-process worker in one process.

``perdura server`` runs :func:`serve`; :func:`create_app` builds the same ASGI app for any
ASGI server or for tests. What it serves:

* ``/api/durable/...``: the JSON API (list, describe, history, timeline, start, cancel,
  terminate, signal, query, recover, reset, fork, export); ``/api/durable/openapi.json``.
* ``/ui/``: the web UI (plain HTML, CSS and ES modules: nothing to build).
* ``/healthz``, and ``/metrics`` (Prometheus) when the metrics module is available.

Security model (docs/http-api.md): it listens on 127.0.0.1 unless told otherwise; on any
other address it refuses to start without a bearer token, which then guards every data
endpoint; with a token configured, every mutating request needs it, wherever it listens.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from history import PerduraError, open_store

from ._apps import App, load_app
from ._client import Client
from ._http._api import (
    API_PREFIX,
    BUILTIN_DESCRIBERS,
    OPERATIONS,
    ApiContext,
    ApiRouter,
    RunDescriber,
)
from ._http._errors import ApiError, error_response
from ._http._guard import LOOPBACK_HOSTS, Guard
from ._http._openapi import openapi_document
from ._worker import Worker

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "RunDescriber",
    "RunningServer",
    "ServerConfigError",
    "create_app",
    "is_loopback",
    "serve",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
TOKEN_ENV: Final = "PERDURA_SERVER_TOKEN"
"""Where ``perdura server`` reads its token from when ``--token`` is not given (a token on
the command line is visible to every user of the machine in ``ps``)."""
STATIC_DIR: Final = Path(__file__).parent / "_http" / "static"

log = structlog.get_logger("perdura.server")


class ServerConfigError(PerduraError):
    """The server was asked to start in a way that is unsafe or impossible."""


def _version() -> str:
    try:
        return importlib.metadata.version("perdura")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _metrics_app() -> Any | None:
    """The Prometheus ``/metrics`` app, if this engine has metrics."""
    try:
        from . import _metrics
    except ImportError:
        return None
    factory = getattr(_metrics, "metrics_asgi_app", None)
    return factory() if callable(factory) else None


def create_app(
    client: Client,
    *,
    token: str | None = None,
    apps: Iterable[App] | None = None,
    protect_reads: bool = False,
    allowed_hosts: Iterable[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    describers: Mapping[str, RunDescriber] | None = None,
    metrics: bool = True,
    worker_identities: Callable[[], list[str]] | None = None,
) -> Starlette:
    """The API, UI, health and metrics endpoints for the runs in ``client``'s store.

    Args:
        client: starts and inspects runs; an in-process worker should be one of its
            listeners, so runs started here reach it without polling.
        token: bearer token. With one, every mutating request must carry it.
        apps: workflow code for answering queries (the client's own registry is used too).
        protect_reads: require the token for reads as well (for a server that is reachable
            from other machines; ``serve`` sets it for any non-loopback address).
        allowed_hosts: Host header names accepted (``None``: any). ``serve`` bound to
            loopback allows only loopback names, which shuts out DNS rebinding.
        max_body_bytes: largest request body accepted (413 beyond).
        describers: extra views of a run shown on its page, by name, next to the built-in
            ``graph`` view of graph runs (a describer named ``graph`` replaces it).
        metrics: mount ``/metrics`` when the metrics module is available.
        worker_identities: names the in-process workers for ``/healthz``.
    """
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be > 0, got {max_body_bytes}")
    if token is not None and not token.strip():
        raise ValueError("token must not be empty or blank")
    query_client = client
    workflows = [w for app in apps or () for w in app.workflows]
    if workflows:
        known = list(client.registry.workflows.values())
        query_client = Client(
            client.store,
            converter=client.converter,
            clock=client.clock,
            workflows=[*known, *(w for w in workflows if w not in known)],
        )
    version = _version()
    ctx = ApiContext(
        client=client,
        query_client=query_client,
        max_body_bytes=max_body_bytes,
        version=version,
        worker_identities=worker_identities or list,
        describers={**BUILTIN_DESCRIBERS, **(describers or {})},
    )
    ctx.openapi = msgspec.json.encode(
        openapi_document(OPERATIONS, version=version, token_configured=protect_reads)
    )
    router = ApiRouter(ctx)
    routes: list[Any] = [
        Route("/", _to_ui),
        Route("/healthz", router),
        Mount(API_PREFIX, app=router),
        Mount("/ui", app=StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
    ]
    metrics_app = _metrics_app() if metrics else None
    if metrics_app is not None:
        routes.append(Route("/metrics", _Asgi(metrics_app), methods=["GET", "HEAD"]))
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Guard,
                token=token,
                protect_reads=protect_reads,
                allowed_hosts=None if allowed_hosts is None else list(allowed_hosts),
            )
        ],
        exception_handlers={HTTPException: _http_exception},
    )


class _Asgi:
    """An ASGI callable as a route endpoint (Starlette calls plain functions with a
    request instead)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def _to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (paths outside the API) in the API's JSON error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return error_response(ApiError(code, f"{exc.detail}: {request.url.path}"))


# -- serving -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunningServer:
    """Handed to ``serve``'s ``on_ready``: where the server listens, and how to stop it
    (from any thread)."""

    url: str
    host: str
    port: int
    worker_identities: tuple[str, ...]
    _stop: Callable[[], None]

    def stop(self) -> None:
        """Stop gracefully: no new requests, workers hand their runs back, the store closes."""
        self._stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServerConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(
    store_url: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    app_specs: Sequence[str] = (),
    app_dir: str | None = None,
    protect_reads: bool | None = None,
    run_worker: bool = True,
    task_queues: Sequence[str] = ("default",),
    identity: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    describers: Mapping[str, RunDescriber] | None = None,
    worker_options: Mapping[str, Any] | None = None,
    log_level: str = "warning",
    handle_signals: bool = True,
    on_ready: Callable[[RunningServer], None] | None = None,
) -> None:
    """Run the HTTP API, the web UI and (with ``run_worker``) a worker per task queue for
    the apps in ``app_specs``, all in this process and event loop, until stopped.

    Stops on SIGINT/SIGTERM (when ``handle_signals`` and on the main thread) or
    ``RunningServer.stop()``: the server stops accepting requests, the workers hand their
    runs back for immediate pickup, the store closes. A second signal exits at once.

    ``protect_reads`` requires the token for reads too; it is forced on for a non-loopback
    ``host``, and worth turning on for loopback on a machine shared with other users.

    Raises ``ServerConfigError`` before opening anything when the configuration is unsafe
    (a non-loopback ``host`` without ``token``) or the address cannot be bound, and
    ``AppLoadError`` for a bad app spec.
    """
    loopback = is_loopback(host)
    if token is not None and not token.strip():
        raise ServerConfigError("the token must not be empty or blank")
    if not loopback and not token:
        raise ServerConfigError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            f"read and steer every run; pass a token (or ${TOKEN_ENV}), or listen on 127.0.0.1"
        )
    if protect_reads is None:
        protect_reads = not loopback
    elif not protect_reads and not loopback:
        raise ServerConfigError(
            f"reads cannot be left unprotected on {host}: it is reachable from other machines"
        )
    if protect_reads and not token:
        raise ServerConfigError("protect_reads needs a token")
    if not task_queues or any(not q for q in task_queues):
        raise ServerConfigError("task_queues must name at least one non-empty queue")
    # Apps are loaded before anything is opened: a bad spec must not create a store file.
    apps = [load_app(spec, app_dir=app_dir) for spec in app_specs]
    workflows = [w for app in apps for w in app.workflows]
    activities = [a for app in apps for a in app.activities]
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    url_host = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    url = f"http://{url_host}:{bound_port}"
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        stack.callback(sock.close)
        store = await open_store(store_url)
        stack.push_async_callback(store.close)
        client = Client(store, workflows=workflows)
        workers: list[Worker] = []
        if run_worker and (workflows or activities):
            for index, queue in enumerate(task_queues):
                name = identity if identity is None or index == 0 else f"{identity}:{queue}"
                worker = Worker(
                    store,
                    task_queue=queue,
                    workflows=workflows,
                    activities=activities,
                    identity=name,
                    converter=client.converter,
                    **dict(worker_options or {}),
                )
                client.add_listener(worker)
                stack.callback(client.remove_listener, worker)
                await stack.enter_async_context(worker)
                workers.append(worker)
        elif run_worker:
            log.warning("no --app given: serving the API and UI without a worker")
        identities = [w.identity for w in workers]
        app = create_app(
            client,
            token=token,
            apps=apps,
            protect_reads=protect_reads,
            allowed_hosts=(LOOPBACK_HOSTS | {host.strip("[]").lower()}) if loopback else None,
            max_body_bytes=max_body_bytes,
            describers=describers,
            worker_identities=lambda: list(identities),
        )
        config = uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="off",
            access_log=log_level in ("debug", "trace"),
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        config.load()
        # Driven step by step rather than through ``Server.serve``: startup tells us when it
        # listens, and uvicorn's own signal handling (which re-raises the signal afterwards,
        # killing the process on SIGTERM before the workers hand their runs back) stays out.
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)

        def request_stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        def on_signal(signum: int) -> None:
            if stop.is_set():
                sys.stderr.write("perdura: second signal, exiting without a graceful stop\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            log.info("stopping server gracefully", signal=signal.Signals(signum).name)
            stop.set()

        installed: list[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
        try:
            await server.startup(sockets=[sock])
            serving = asyncio.ensure_future(server.main_loop())
            stopping = asyncio.ensure_future(stop.wait())
            # A worker's poll loop runs in its background task (this module is part of the
            # engine, so it may look): if one dies, the server must not linger without it.
            backgrounds = {w._background for w in workers if w._background is not None}
            try:
                log.info("server ready", url=url, workers=identities, store=store.url)
                if on_ready is not None:
                    on_ready(
                        RunningServer(
                            url=url,
                            host=host,
                            port=bound_port,
                            worker_identities=tuple(identities),
                            _stop=request_stop,
                        )
                    )
                done, _ = await asyncio.wait(
                    {serving, stopping, *backgrounds}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                server.should_exit = True
                await serving
                await server.shutdown(sockets=[sock])
            for task in done & backgrounds:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise PerduraError(f"a worker stopped unexpectedly: {error!r}") from error
        finally:
            for installed_signal in installed:
                loop.remove_signal_handler(installed_signal)
