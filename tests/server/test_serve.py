"""``serve()``: what ``perdura server`` runs. Refusals before anything is opened, a graceful
stop that hands runs back, and the server without a worker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine._apps import AppLoadError
from engine.server import ServerConfigError, serve
from history import RunStatus, open_store
from tests.server.conftest import start, start_server, wait_for

API = "/api/durable"


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ServerConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(f"sqlite:///{tmp_path / 'x.db'}", port=port)


async def test_a_bad_app_spec_fails_before_the_store_is_created(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(AppLoadError, match="no module named 'no_such_module'"):
        await serve(f"sqlite:///{db}", port=0, app_specs=["no_such_module:app"])
    assert not db.exists()


async def test_no_task_queue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="task_queues"):
        await serve(f"sqlite:///{tmp_path / 'x.db'}", port=0, task_queues=())


async def test_stopping_the_server_hands_its_runs_back_for_immediate_pickup(
    tmp_path: Path,
) -> None:
    live = start_server(tmp_path / "perdura.db")
    with live.client() as api:
        start(api, "batch", "held", 3)
        wait_for(
            lambda: api.get(f"{API}/executions/held").json()["pending_activities"],
            what="the activity to start",
        )
        assert api.get(f"{API}/executions/held").json()["owner"] is not None
    live.stop()
    store = await open_store(f"sqlite:///{live.db_path}")
    try:
        info = await store.find_run("held")
        assert info.status is RunStatus.RUNNING
        assert info.owner is None  # released, not left to a lease expiry
    finally:
        await store.close()


def test_without_apps_the_server_serves_the_api_but_runs_nothing(tmp_path: Path) -> None:
    live = start_server(tmp_path / "perdura.db", app_specs=[])
    try:
        with live.client() as api:
            assert api.get("/healthz").json()["workers"] == []
            start(api, "greet", "unserved", "x")
            run = api.get(f"{API}/executions/unserved").json()
            assert (run["status"], run["history_length"]) == ("running", 1)
            # Queries need the workflow's code, which this server was not given.
            response = api.get(f"{API}/executions/unserved/queries/state")
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "query_unavailable"
    finally:
        live.stop()


def test_a_second_task_queue_gets_its_own_worker(tmp_path: Path) -> None:
    live = start_server(tmp_path / "perdura.db", task_queues=("default", "batch"), identity="srv")
    try:
        assert live.running.worker_identities == ("srv", "srv:batch")
        with live.client() as api:
            response = api.post(
                f"{API}/executions",
                json={
                    "workflow_type": "greet",
                    "workflow_id": "q2",
                    "task_queue": "batch",
                    "args": ["b"],
                },
            )
            assert response.status_code == 201
            wait_for(
                lambda: api.get(f"{API}/executions/q2").json()["status"] == "completed",
                what="the run on the second queue to complete",
            )
    finally:
        live.stop()
