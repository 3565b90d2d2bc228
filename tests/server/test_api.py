"""Every endpoint of the HTTP API against a real server, store and worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from engine._http._errors import ERROR_CODES
from history import load_history
from tests.server import server_app
from tests.server.conftest import (
    LiveServer,
    start,
    start_server,
    status_of,
    wait_for,
    wait_status,
)

API = "/api/durable"


def error_of(response: httpx.Response) -> dict[str, str]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    detail: dict[str, str] = body["error"]
    return detail


def history_types(api: httpx.Client, ident: str) -> list[str]:
    page = api.get(f"{API}/executions/{ident}/history").json()
    return [event["type"] for event in page["events"]]


# -- health and the OpenAPI document -------------------------------------------------------


def test_healthz_answers_ok_and_names_the_in_process_worker(
    api: httpx.Client, server: LiveServer
) -> None:
    body = api.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["workers"] == list(server.running.worker_identities)
    assert len(body["workers"]) == 1


def test_openapi_document_describes_every_endpoint_with_generated_schemas(
    api: httpx.Client,
) -> None:
    doc = api.get(f"{API}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert operations >= {
        ("GET", "/healthz"),
        ("GET", f"{API}/executions"),
        ("POST", f"{API}/executions"),
        ("GET", f"{API}/executions/{{id}}"),
        ("GET", f"{API}/executions/{{id}}/history"),
        ("POST", f"{API}/executions/{{id}}/recover"),
        ("POST", f"{API}/executions/{{id}}/cancel"),
        ("POST", f"{API}/executions/{{id}}/signals/{{name}}"),
        ("GET", f"{API}/executions/{{id}}/queries/{{name}}"),
        ("POST", f"{API}/executions/{{id}}/reset"),
        ("POST", f"{API}/executions/{{id}}/fork"),
        ("POST", f"{API}/executions/{{id}}/terminate"),
    }
    start_schema = doc["components"]["schemas"]["StartRequest"]
    assert start_schema["required"] == ["workflow_type", "workflow_id"]
    assert start_schema["additionalProperties"] is False
    listing = doc["paths"][f"{API}/executions"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["page", "size", "status", "type", "q"]
    assert doc["paths"][f"{API}/executions/{{id}}/cancel"]["post"]["security"] == [{"bearer": []}]


# -- start ---------------------------------------------------------------------------------


def test_start_records_a_run_that_the_in_process_worker_completes(api: httpx.Client) -> None:
    started = start(api, "greet", "greet-1", "ada")
    assert started["workflow_id"] == "greet-1"
    run = wait_status(api, "greet-1", "completed")
    assert run["run_id"] == started["run_id"]
    assert run["has_result"] is True
    assert run["result"] == "hello ada"
    assert run["args"] == ["ada"]


def test_start_of_a_workflow_id_with_an_open_run_is_a_conflict(api: httpx.Client) -> None:
    first = start(api, "sleeper", "nap", 3600)
    response = api.post(
        f"{API}/executions", json={"workflow_type": "sleeper", "workflow_id": "nap", "args": [5]}
    )
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "workflow_already_running"
    assert first["run_id"] in error["message"]


def test_start_without_a_required_field_names_the_field(api: httpx.Client) -> None:
    response = api.post(f"{API}/executions", json={"workflow_type": "greet"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert "workflow_id" in error["message"]


def test_start_with_an_unknown_field_is_refused_not_ignored(api: httpx.Client) -> None:
    response = api.post(
        f"{API}/executions",
        json={"workflow_type": "greet", "workflow_id": "x", "taskqueue": "typo"},
    )
    assert response.status_code == 422
    assert "taskqueue" in error_of(response)["message"]


def test_start_with_a_body_that_is_not_json_is_a_bad_request(api: httpx.Client) -> None:
    response = api.post(
        f"{API}/executions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_a_body_sent_as_another_media_type_is_refused(api: httpx.Client) -> None:
    response = api.post(
        f"{API}/executions",
        content=b'{"workflow_type": "greet", "workflow_id": "x"}',
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(api: httpx.Client) -> None:
    huge = {"workflow_type": "greet", "workflow_id": "big", "args": ["x" * (1024 * 1024)]}
    response = api.post(f"{API}/executions", json=huge)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert api.get(f"{API}/executions/big").status_code == 404


def test_a_chunked_body_over_the_size_limit_is_refused(api: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"reason": "'
        for _ in range(300):
            yield b"x" * 4096
        yield b'"}'

    start(api, "sleeper", "chunky", 3600)
    response = api.post(
        f"{API}/executions/chunky/cancel",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert status_of(api, "chunky") == "running"


def test_a_timeout_beyond_a_century_is_refused(api: httpx.Client) -> None:
    response = api.post(
        f"{API}/executions",
        json={"workflow_type": "greet", "workflow_id": "t", "run_timeout": 1e300},
    )
    assert response.status_code == 422
    assert "run_timeout" in error_of(response)["message"]


# -- list ----------------------------------------------------------------------------------


def test_list_pages_newest_first_with_totals(api: httpx.Client) -> None:
    for n in range(5):
        start(api, "sleeper", f"page-{n}", 3600)
    first = api.get(f"{API}/executions", params={"size": 2}).json()
    assert [r["workflow_id"] for r in first["items"]] == ["page-4", "page-3"]
    assert (first["total"], first["total_pages"], first["page"]) == (5, 3, 0)
    last = api.get(f"{API}/executions", params={"size": 2, "page": 2}).json()
    assert [r["workflow_id"] for r in last["items"]] == ["page-0"]


def test_list_filters_by_status_and_type(api: httpx.Client) -> None:
    start(api, "greet", "done-1", "a")
    start(api, "sleeper", "open-1", 3600)
    wait_status(api, "done-1", "completed")
    running = api.get(f"{API}/executions", params={"status": "running"}).json()
    assert [r["workflow_id"] for r in running["items"]] == ["open-1"]
    greets = api.get(f"{API}/executions", params={"type": "greet"}).json()
    assert [r["workflow_id"] for r in greets["items"]] == ["done-1"]


def test_list_search_matches_a_prefix_of_id_run_id_or_type(api: httpx.Client) -> None:
    a = start(api, "sleeper", "invoice-17", 3600)
    start(api, "sleeper", "INVOICE-18", 3600)
    start(api, "greet", "receipt-3", "z")

    def ids(q: str) -> list[str]:
        page = api.get(f"{API}/executions", params={"q": q}).json()
        return sorted(r["workflow_id"] for r in page["items"])

    assert ids("invoice") == ["INVOICE-18", "invoice-17"]
    assert ids("gre") == ["receipt-3"]
    assert ids(a["run_id"][:8]) == ["invoice-17"]
    assert ids("nothing") == []


def test_list_search_pages_through_the_matches(api: httpx.Client) -> None:
    for n in range(5):
        start(api, "sleeper", f"match-{n}", 3600)
    start(api, "sleeper", "other", 3600)
    page = api.get(f"{API}/executions", params={"q": "match", "size": 2, "page": 1}).json()
    assert [r["workflow_id"] for r in page["items"]] == ["match-2", "match-1"]
    assert (page["total"], page["total_pages"], page["truncated"]) == (5, 3, False)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page": "x"}, "page"),
        ({"size": "0"}, "size"),
        ({"size": "100000"}, "size"),
        ({"status": "sleeping"}, "status"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_list_refuses_a_bad_parameter_naming_it(
    api: httpx.Client, params: dict[str, str], named: str
) -> None:
    response = api.get(f"{API}/executions", params=params)
    assert response.status_code == 422
    assert named in error_of(response)["message"]


# -- describe, history, timeline, export ---------------------------------------------------


def test_an_unknown_id_is_404_on_every_run_endpoint(api: httpx.Client) -> None:
    for method, path, body in [
        ("GET", "", None),
        ("GET", "/history", None),
        ("GET", "/timeline", None),
        ("GET", "/export", None),
        ("GET", "/queries/state", None),
        ("POST", "/cancel", {"reason": "x"}),
        ("POST", "/terminate", {}),
        ("POST", "/signals/approve", {"args": ["x"]}),
        ("POST", "/recover", {}),
        ("POST", "/reset", {"to_event_id": 1}),
        ("POST", "/fork", {"at_event_id": 1, "new_workflow_id": "f"}),
    ]:
        response = api.request(method, f"{API}/executions/no-such-run{path}", json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response)["code"] == "not_found"
        assert "no-such-run" in error_of(response)["message"]


def test_a_workflow_id_with_a_slash_is_one_path_segment(api: httpx.Client) -> None:
    start(api, "greet", "orders/42", "bo")
    run = wait_status(api, quote("orders/42", safe=""), "completed")
    assert run["workflow_id"] == "orders/42"


def test_describe_by_run_id_shows_that_run(api: httpx.Client) -> None:
    started = start(api, "greet", "by-run", "cy")
    run = wait_status(api, started["run_id"], "completed")
    assert run["workflow_id"] == "by-run"


def test_describe_shows_a_pending_activity_with_its_heartbeat_progress(
    api: httpx.Client,
) -> None:
    start(api, "batch", "crunching", 4)

    def progressed() -> dict[str, Any] | None:
        run = api.get(f"{API}/executions/crunching").json()
        pending = run["pending_activities"]
        return pending[0] if pending and pending[0]["progress"] == 0.75 else None

    activity = wait_for(progressed, what="crunch to report 3 of 4")
    assert activity["activity_type"] == "crunch"
    assert activity["attempt"] == 1
    assert activity["last_heartbeat_details"] == [{"done": 3, "total": 4}]
    assert activity["last_heartbeat_at"] is not None
    server_app.CRUNCH_RELEASE.set()
    assert wait_status(api, "crunching", "completed")["result"] == 4


def test_history_lists_every_event_with_a_summary_and_its_attributes(api: httpx.Client) -> None:
    start(api, "greet", "hist", "di")
    wait_status(api, "hist", "completed")
    page = api.get(f"{API}/executions/hist/history").json()
    types = [e["type"] for e in page["events"]]
    assert types == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    assert [e["event_id"] for e in page["events"]] == [1, 2, 3, 4]
    assert page["events"][2]["summary"] == '#1 compose attempt 1 -> "hello di"'
    assert page["events"][0]["attributes"]["args"] == ["di"]
    assert page["next_after_event_id"] is None


def test_history_pages_with_after_event_id_and_limit(api: httpx.Client) -> None:
    start(api, "greet", "paged", "ed")
    wait_status(api, "paged", "completed")
    first = api.get(f"{API}/executions/paged/history", params={"limit": 3}).json()
    assert [e["event_id"] for e in first["events"]] == [1, 2, 3]
    assert first["next_after_event_id"] == 3
    rest = api.get(
        f"{API}/executions/paged/history", params={"after_event_id": 3, "limit": 3}
    ).json()
    assert [e["event_id"] for e in rest["events"]] == [4]
    assert rest["next_after_event_id"] is None


def test_timeline_draws_activities_timers_children_and_signals(api: httpx.Client) -> None:
    start(api, "parent", "fam", "kid")
    wait_status(api, "fam", "completed")
    timeline = api.get(f"{API}/executions/fam/timeline").json()
    [child] = timeline["steps"]
    assert child["kind"] == "child"
    assert (child["child_workflow_id"], child["outcome"]) == ("kid-child", "completed")
    assert child["end"] is not None

    start(api, "Approval", "signals", "req-1")
    api.post(f"{API}/executions/signals/signals/approve", json={"args": ["ok by me"]})
    wait_status(api, "signals", "completed")
    markers = api.get(f"{API}/executions/signals/timeline").json()["markers"]
    assert [m["kind"] for m in markers] == ["signal", "closed"]
    assert markers[0]["label"] == 'signal approve("ok by me")'

    start(api, "greet", "steps", "fi")
    wait_status(api, "steps", "completed")
    [activity] = api.get(f"{API}/executions/steps/timeline").json()["steps"]
    assert (activity["kind"], activity["name"], activity["outcome"]) == (
        "activity",
        "compose",
        "completed",
    )
    assert [a["number"] for a in activity["attempts"]] == [1]

    start(api, "sleeper", "napping", 3600)
    [timer] = wait_for(
        lambda: api.get(f"{API}/executions/napping/timeline").json()["steps"] or None
    )
    assert (timer["kind"], timer["outcome"], timer["end"]) == ("timer", "waiting", None)
    assert timer["due"] == pytest.approx(3600, abs=1)


def test_export_returns_a_history_file_that_loads(api: httpx.Client) -> None:
    started = start(api, "greet", "exported", "gu")
    wait_status(api, "exported", "completed")
    response = api.get(f"{API}/executions/exported/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    exported = load_history(response.content)
    assert (exported.workflow_id, exported.run_id) == ("exported", started["run_id"])
    assert len(exported.events) == 4


# -- cancel, terminate, signal, query ------------------------------------------------------


def test_cancel_records_the_reason_and_the_run_ends_cancelled(api: httpx.Client) -> None:
    start(api, "sleeper", "to-cancel", 3600)
    response = api.post(f"{API}/executions/to-cancel/cancel", json={"reason": "customer left"})
    assert response.status_code == 202
    assert response.json()["accepted"] is True
    run = wait_status(api, "to-cancel", "cancelled")
    assert run["cancel_reason"] == "customer left"
    assert "CancelRequested" in history_types(api, "to-cancel")


def test_cancel_without_a_body_cancels_with_no_reason(api: httpx.Client) -> None:
    start(api, "sleeper", "quiet-cancel", 3600)
    assert api.post(f"{API}/executions/quiet-cancel/cancel").status_code == 202
    assert wait_status(api, "quiet-cancel", "cancelled")["cancel_reason"] == ""


def test_cancel_of_a_closed_run_is_a_conflict(api: httpx.Client) -> None:
    start(api, "greet", "closed", "ha")
    wait_status(api, "closed", "completed")
    response = api.post(f"{API}/executions/closed/cancel", json={"reason": "late"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "run_closed"


def test_terminate_ends_the_run_at_once(api: httpx.Client) -> None:
    start(api, "sleeper", "to-end", 3600)
    response = api.post(f"{API}/executions/to-end/terminate", json={"reason": "stuck"})
    assert response.status_code == 202
    assert status_of(api, "to-end") == "terminated"
    assert history_types(api, "to-end")[-1] == "WorkflowTerminated"


def test_signal_is_recorded_and_delivered_to_the_handler(api: httpx.Client) -> None:
    start(api, "Approval", "approval-1", "req-9")
    response = api.post(
        f"{API}/executions/approval-1/signals/approve", json={"args": ["looks good"]}
    )
    assert response.status_code == 202
    run = wait_status(api, "approval-1", "completed")
    assert run["result"] == "req-9 approved: looks good"
    assert "SignalReceived" in history_types(api, "approval-1")


def test_signal_to_a_closed_run_is_a_conflict(api: httpx.Client) -> None:
    start(api, "greet", "signal-closed", "x")
    wait_status(api, "signal-closed", "completed")
    response = api.post(f"{API}/executions/signal-closed/signals/approve", json={"args": []})
    assert response.status_code == 409
    assert error_of(response)["code"] == "run_closed"


def test_query_answers_from_the_replayed_state(api: httpx.Client) -> None:
    start(api, "Approval", "queried", "req-2")
    api.post(f"{API}/executions/queried/signals/comment", json={"args": ["first"]})
    wait_for(lambda: "SignalReceived" in history_types(api, "queried"))
    response = api.get(f"{API}/executions/queried/queries/state")
    assert response.status_code == 200
    assert response.json()["result"] == {"approved": False, "notes": ["first"]}
    with_args = api.get(f"{API}/executions/queried/queries/note", params={"args": "[0]"})
    assert with_args.json()["result"] == "first"


def test_an_unknown_query_names_the_ones_the_workflow_has(api: httpx.Client) -> None:
    start(api, "Approval", "unknown-query", "req-3")
    response = api.get(f"{API}/executions/unknown-query/queries/colour")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "query_failed"
    assert "note, state" in error["message"]


def test_query_args_that_are_not_a_json_array_are_refused(api: httpx.Client) -> None:
    start(api, "Approval", "bad-args", "req-4")
    for args in ["[0", '{"a": 1}']:
        response = api.get(f"{API}/executions/bad-args/queries/note", params={"args": args})
        assert response.status_code == 422
        assert "args" in error_of(response)["message"]


def test_a_query_handler_that_raises_is_reported_not_a_server_error(api: httpx.Client) -> None:
    start(api, "Approval", "raising-query", "req-5")
    response = api.get(f"{API}/executions/raising-query/queries/note", params={"args": "[7]"})
    assert response.status_code == 422
    assert "IndexError" in error_of(response)["message"]


# -- recover, reset, fork ------------------------------------------------------------------


def test_recover_resumes_a_failed_run_from_its_failing_step(api: httpx.Client) -> None:
    server_app.FRAGILE_FAILS.set()
    failed = start(api, "checkout", "co-1", "o-1")
    run = wait_status(api, "co-1", "failed")
    assert "card declined for o-1" in run["failure"]["message"]
    server_app.FRAGILE_FAILS.clear()
    response = api.post(f"{API}/executions/co-1/recover", json={"reason": "card fixed"})
    assert response.status_code == 202
    recovered = response.json()
    assert recovered["workflow_id"] == "co-1"
    assert recovered["run_id"] != failed["run_id"]
    done = wait_status(api, recovered["run_id"], "completed")
    assert done["result"] == "hello o-1; charged o-1"
    assert done["origin"]["kind"] == "recover"
    assert done["origin"]["run_id"] == failed["run_id"]
    assert done["origin"]["reason"] == "card fixed"
    assert status_of(api, failed["run_id"]) == "failed"


def test_reset_starts_a_new_run_and_closes_the_open_one_as_reset(api: httpx.Client) -> None:
    old = start(api, "sleeper", "to-reset", 3600)
    wait_for(lambda: "TimerStarted" in history_types(api, "to-reset"))
    response = api.post(
        f"{API}/executions/to-reset/reset", json={"to_event_id": 1, "reason": "redo"}
    )
    assert response.status_code == 201
    new = response.json()
    assert new["workflow_id"] == "to-reset"
    assert new["run_id"] != old["run_id"]
    previous = api.get(f"{API}/executions/{old['run_id']}").json()
    assert previous["status"] == "reset"
    assert previous["successor_run_id"] == new["run_id"]
    assert api.get(f"{API}/executions/to-reset").json()["run_id"] == new["run_id"]


def test_reset_to_an_event_past_the_history_is_refused(api: httpx.Client) -> None:
    start(api, "greet", "short", "x")
    wait_status(api, "short", "completed")
    response = api.post(f"{API}/executions/short/reset", json={"to_event_id": 99})
    assert response.status_code in (409, 422)
    assert "99" in error_of(response)["message"]


def test_fork_copies_the_history_into_a_new_workflow_id(api: httpx.Client) -> None:
    original = start(api, "greet", "fork-src", "jo")
    wait_status(api, "fork-src", "completed")
    response = api.post(
        f"{API}/executions/fork-src/fork",
        json={"at_event_id": 3, "new_workflow_id": "fork-copy", "reason": "what if"},
    )
    assert response.status_code == 201
    assert response.json()["workflow_id"] == "fork-copy"
    copy = wait_status(api, "fork-copy", "completed")
    assert copy["result"] == "hello jo"
    assert copy["origin"] == {
        "kind": "fork",
        "run_id": original["run_id"],
        "event_id": 3,
        "reason": "what if",
    }
    assert status_of(api, "fork-src") == "completed"


def test_fork_needs_a_new_workflow_id(api: httpx.Client) -> None:
    start(api, "greet", "fork-needs-id", "x")
    response = api.post(f"{API}/executions/fork-needs-id/fork", json={"at_event_id": 1})
    assert response.status_code == 422
    assert "new_workflow_id" in error_of(response)["message"]


# -- routing -------------------------------------------------------------------------------


def test_unknown_paths_and_methods_answer_in_the_json_error_shape(api: httpx.Client) -> None:
    missing = api.get(f"{API}/nothing-here")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong = api.delete(f"{API}/executions")
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET, POST"
    outside = api.get("/no/such/page")
    assert outside.status_code == 404
    assert error_of(outside)["code"] == "not_found"


def test_metrics_are_served_in_the_prometheus_format(api: httpx.Client) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text


def test_every_error_code_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text()
    for code, (status, _) in ERROR_CODES.items():
        assert f"| {status} | `{code}` |" in docs, code


def test_recover_of_a_running_run_hands_it_to_the_next_worker_at_once(
    api: httpx.Client,
) -> None:
    started = start(api, "sleeper", "stuck", 3600)
    wait_for(lambda: api.get(f"{API}/executions/stuck").json()["pending_timers"])
    response = api.post(f"{API}/executions/stuck/recover", json={})
    assert response.status_code == 202
    assert response.json() == {"workflow_id": "stuck", "run_id": started["run_id"]}
    assert status_of(api, "stuck") == "running"


def test_describers_add_their_views_of_a_run_to_its_page(tmp_path: Path) -> None:
    def steps(info: Any, history: Any) -> dict[str, Any] | None:
        if info.workflow_type != "greet":
            return None
        return {"activities": ["compose"], "events": len(history)}

    def broken(info: Any, history: Any) -> None:
        raise RuntimeError("describer bug")

    live = start_server(tmp_path / "perdura.db", describers={"steps": steps, "broken": broken})
    try:
        with live.client() as api:
            start(api, "greet", "described", "x")
            run = wait_status(api, "described", "completed")
            assert run["extensions"] == {
                "steps": {"activities": ["compose"], "events": 4},
                "broken": {"error": "RuntimeError: describer bug"},
            }
            start(api, "sleeper", "plain", 3600)
            assert "steps" not in api.get(f"{API}/executions/plain").json()["extensions"]
    finally:
        live.stop()
