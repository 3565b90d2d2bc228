"""A real perdura server for each test: ``engine.server.serve`` in a thread of its own, with
uvicorn on 127.0.0.1 (a free port), a fresh SQLite file and an in-process worker running
``tests.server.server_app``. Tests talk to it over HTTP with httpx, like any client would.

Nothing sleeps to let things settle: ``wait_for`` polls the API for a condition, bounded by a
timeout so a regression fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from engine.server import RunningServer, serve
from tests.server import graph_app, server_app

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.server.server_app:app"
GRAPH_APP = "tests.server.graph_app:app"
TOKEN = "s3cret-token-for-tests"
WAIT = 10.0


@dataclass
class LiveServer:
    url: str
    db_path: Path
    token: str | None
    running: RunningServer
    thread: threading.Thread
    errors: list[BaseException]

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=WAIT)

    def stop(self) -> None:
        self.running.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the server did not stop"
        if self.errors:
            raise self.errors[0]


def start_server(db_path: Path, **options: Any) -> LiveServer:
    """Run ``serve`` in a thread until the returned server's ``stop()``."""
    options = dict(options)
    token = options.get("token")
    ready = threading.Event()
    holder: dict[str, RunningServer] = {}
    errors: list[BaseException] = []

    def on_ready(running: RunningServer) -> None:
        holder["running"] = running
        ready.set()

    def run() -> None:
        try:
            asyncio.run(
                serve(
                    f"sqlite:///{db_path}",
                    port=0,
                    app_specs=options.pop("app_specs", [APP]),
                    app_dir=str(ROOT),
                    handle_signals=False,
                    on_ready=on_ready,
                    **options,
                )
            )
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="perdura-server", daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the server did not start"
    if errors:
        raise errors[0]
    running = holder["running"]
    return LiveServer(
        url=running.url,
        db_path=db_path,
        token=token,
        running=running,
        thread=thread,
        errors=errors,
    )


@pytest.fixture(autouse=True)
def _reset_switches() -> Iterator[None]:
    server_app.FRAGILE_FAILS.clear()
    server_app.CRUNCH_RELEASE.clear()
    graph_app.ARCHIVE_RELEASE.clear()
    yield
    # Let a held activity finish so the worker stops at once.
    server_app.CRUNCH_RELEASE.set()
    graph_app.ARCHIVE_RELEASE.set()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server without a token on 127.0.0.1."""
    live = start_server(tmp_path / "perdura.db")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on 127.0.0.1 with a token (required for mutations)."""
    live = start_server(tmp_path / "perdura.db", token=TOKEN)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def graph_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server without a token whose worker runs the graph app (``graph_app``)."""
    live = start_server(tmp_path / "perdura.db", app_specs=[GRAPH_APP])
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def wait_for(probe: Callable[[], T | None], *, within: float = WAIT, what: str = "") -> T:
    """``probe()``'s first value other than ``None`` (or ``False``), polled every 20 ms."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or probe}")
        time.sleep(0.02)


def start(api: httpx.Client, workflow_type: str, workflow_id: str, *args: Any) -> dict[str, Any]:
    response = api.post(
        "/api/durable/executions",
        json={"workflow_type": workflow_type, "workflow_id": workflow_id, "args": list(args)},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def status_of(api: httpx.Client, ident: str) -> str:
    response = api.get(f"/api/durable/executions/{ident}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def wait_status(api: httpx.Client, ident: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/api/durable/executions/{ident}").json()
        return body if body.get("status") == status else None

    return wait_for(probe, what=f"{ident} to be {status}")
