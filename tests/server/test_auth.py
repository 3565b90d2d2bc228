"""Who may do what: the bearer token, protected reads, the Host and Origin checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.server import ServerConfigError, is_loopback, serve
from tests.server.conftest import TOKEN, LiveServer, start, start_server, wait_for

API = "/api/durable"

MUTATIONS = [
    ("/executions", {"workflow_type": "greet", "workflow_id": "sneaky", "args": ["x"]}),
    ("/executions/guarded/cancel", {"reason": "x"}),
    ("/executions/guarded/terminate", {"reason": "x"}),
    ("/executions/guarded/signals/approve", {"args": ["x"]}),
    ("/executions/guarded/recover", {}),
    ("/executions/guarded/reset", {"to_event_id": 1}),
    ("/executions/guarded/fork", {"at_event_id": 1, "new_workflow_id": "copy"}),
]


@pytest.fixture
def guarded(secured_server: LiveServer) -> LiveServer:
    """A secured server with one open run, ``guarded``, waiting on a timer."""
    with secured_server.client(token=TOKEN) as api:
        start(api, "sleeper", "guarded", 3600)
        wait_for(lambda: api.get(f"{API}/executions/guarded").json()["pending_timers"])
    return secured_server


@pytest.fixture
def reads_protected(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "perdura.db", token=TOKEN, protect_reads=True)
    try:
        yield live
    finally:
        live.stop()


def code_of(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


@pytest.mark.parametrize(("path", "body"), MUTATIONS, ids=[p for p, _ in MUTATIONS])
def test_with_a_token_configured_a_mutation_without_it_is_refused_and_changes_nothing(
    guarded: LiveServer, path: str, body: dict[str, object]
) -> None:
    with guarded.client() as anonymous:
        before = anonymous.get(f"{API}/executions/guarded/history").json()["history_length"]
        response = anonymous.post(API + path, json=body)
        assert response.status_code == 401
        assert code_of(response) == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        after = anonymous.get(f"{API}/executions/guarded").json()
        assert (after["status"], after["history_length"]) == ("running", before)
        assert anonymous.get(f"{API}/executions/sneaky").status_code == 404
        assert anonymous.get(f"{API}/executions/copy").status_code == 404


def test_a_wrong_token_is_refused(guarded: LiveServer) -> None:
    with guarded.client(token="not-the-token") as api:
        response = api.post(f"{API}/executions/guarded/cancel", json={"reason": "x"})
    assert response.status_code == 401
    assert "wrong" in response.json()["error"]["message"]


def test_a_token_sent_with_another_scheme_is_refused(guarded: LiveServer) -> None:
    with guarded.client() as api:
        response = api.post(
            f"{API}/executions/guarded/cancel",
            json={"reason": "x"},
            headers={"Authorization": f"Basic {TOKEN}"},
        )
    assert response.status_code == 401


def test_with_the_token_a_mutation_is_accepted(guarded: LiveServer) -> None:
    with guarded.client(token=TOKEN) as api:
        response = api.post(f"{API}/executions/guarded/cancel", json={"reason": "ok"})
        assert response.status_code == 202


def test_on_loopback_reads_stay_open_when_a_token_is_configured(guarded: LiveServer) -> None:
    with guarded.client() as anonymous:
        for path in [
            "/healthz",
            f"{API}/executions",
            f"{API}/executions/guarded",
            f"{API}/executions/guarded/history",
            f"{API}/openapi.json",
        ]:
            assert anonymous.get(path).status_code == 200, path


def test_without_a_token_on_loopback_mutations_are_open(api: httpx.Client) -> None:
    start(api, "sleeper", "open-door", 3600)
    assert api.post(f"{API}/executions/open-door/cancel", json={}).status_code == 202


def test_protected_reads_need_the_token_on_every_data_endpoint(
    reads_protected: LiveServer,
) -> None:
    paths = [
        "/healthz",
        "/metrics",
        f"{API}/openapi.json",
        f"{API}/executions",
        f"{API}/executions/x",
        f"{API}/executions/x/history",
    ]
    with reads_protected.client() as anonymous:
        for path in paths:
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert code_of(response) == "unauthorized"
    with reads_protected.client(token=TOKEN) as api:
        assert api.get("/healthz").status_code == 200
        assert api.get(f"{API}/executions").status_code == 200
        assert api.get(f"{API}/executions/x").status_code == 404


def test_protected_reads_still_serve_the_ui_files_which_hold_no_data(
    reads_protected: LiveServer,
) -> None:
    with reads_protected.client() as anonymous:
        for path in ["/ui/", "/ui/js/app.js", "/ui/style.css"]:
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.get("/").status_code == 307


def test_a_host_header_naming_another_host_is_refused(api: httpx.Client) -> None:
    # What a DNS-rebinding page sends: its own domain, resolved to 127.0.0.1.
    response = api.get(f"{API}/executions", headers={"Host": "attacker.example:8080"})
    assert response.status_code == 421
    assert code_of(response) == "misdirected_request"
    assert api.get(f"{API}/executions", headers={"Host": "localhost:8080"}).status_code == 200


def test_a_mutation_from_a_page_of_another_origin_is_refused(
    server: LiveServer, api: httpx.Client
) -> None:
    start(api, "sleeper", "csrf-target", 3600)
    for origin in ["http://attacker.example", "http://127.0.0.1:1"]:
        response = api.post(
            f"{API}/executions/csrf-target/cancel", json={}, headers={"Origin": origin}
        )
        assert response.status_code == 403
        assert code_of(response) == "forbidden_origin"
    same = api.post(f"{API}/executions/csrf-target/cancel", json={}, headers={"Origin": server.url})
    assert same.status_code == 202


def test_every_response_carries_the_security_headers(api: httpx.Client) -> None:
    for path in ["/ui/", f"{API}/executions", f"{API}/executions/missing"]:
        headers = api.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in headers["content-security-policy"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
async def test_serve_refuses_a_non_loopback_address_without_a_token(
    tmp_path: Path, host: str
) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(ServerConfigError, match="without a token"):
        await serve(f"sqlite:///{db}", host=host, port=0)
    assert not db.exists()


async def test_serve_refuses_unprotected_reads_on_a_non_loopback_address(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="reads cannot be left unprotected"):
        await serve(
            f"sqlite:///{tmp_path / 'x.db'}",
            host="0.0.0.0",
            port=0,
            token=TOKEN,
            protect_reads=False,
        )


async def test_serve_refuses_a_blank_token(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="blank"):
        await serve(f"sqlite:///{tmp_path / 'x.db'}", port=0, token="  ")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("my-host.lan", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
