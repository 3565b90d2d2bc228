"""The web UI end to end: Debian's headless Chromium, driven by Playwright, against a real
server, store and worker. No browser is downloaded: the test uses /usr/bin/chromium, which
``make test`` installs from Debian's packages; without it the tests fail saying so.

Screenshots are saved as test artifacts under ``$PERDURA_ARTIFACTS`` (default
``artifacts/ui`` in the checkout, ignored by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import playwright.sync_api as playwright_api
import pytest

from tests.server import server_app
from tests.server.conftest import TOKEN, LiveServer, start, start_server, wait_for, wait_status

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PERDURA_ARTIFACTS", ROOT / "artifacts" / "ui"))
API = "/api/durable"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
        pytest.fail(
            "Debian's chromium is not installed at /usr/bin/chromium "
            "(apt-get install chromium; make test does it)"
        )
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        yield page
    finally:
        context.close()
    # A script error (or a CSP violation) is a failure even if the assertions passed.
    assert not [e for e in errors if "401" not in e], errors


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_list_open_a_run_and_cancel_it_with_a_reason(
    server: LiveServer, api: httpx.Client, page: Any
) -> None:
    start(api, "greet", "greeting-7", "ada")
    start(api, "Approval", "approval-3", "req-3")
    api.post(f"{API}/executions/approval-3/signals/comment", json={"args": ["checked stock"]})
    start(api, "batch", "nightly-batch", 8)
    start(api, "sleeper", "order-1042", 3600)
    wait_status(api, "greeting-7", "completed")

    page.goto(f"{server.url}/ui/")
    row = page.locator("#executions tr[data-workflow-id='order-1042']")
    row.wait_for()
    assert row.locator(".badge").inner_text() == "running"
    assert page.locator("#executions tr").count() == 4

    # Search narrows the list; the status filter too.
    page.fill("#filter-search", "greet")
    page.locator("#executions tr[data-workflow-id='order-1042']").wait_for(state="detached")
    assert page.locator("#executions tr").count() == 1
    page.fill("#filter-search", "")
    row.wait_for()
    page.select_option("#filter-status", "completed")
    page.locator("#executions tr[data-workflow-id='order-1042']").wait_for(state="detached")
    assert page.locator("#executions tr[data-workflow-id='greeting-7']").count() == 1
    page.select_option("#filter-status", "")
    row.wait_for()

    row.locator("a").first.click()
    page.locator("#run-title").wait_for()
    assert page.locator("#run-title").inner_text() == "order-1042"
    page.locator("#timeline .step-timer").wait_for()
    assert page.locator("#history tr.event-TimerStarted").count() == 1
    screenshot(page, "ui-execution-running.png")

    page.click("#action-cancel")
    page.fill("#dialog-input", "customer changed their mind")
    page.click("#dialog-confirm")
    page.locator("#run-status .badge[data-status='cancelled']").wait_for()
    assert page.locator("#history tr.event-CancelRequested").count() == 1
    assert "customer changed their mind" in page.locator(".facts").inner_text()
    page.locator("#timeline .mark-cancel_requested").wait_for()
    screenshot(page, "ui-execution-cancelled.png")
    assert wait_status(api, "order-1042", "cancelled")["cancel_reason"] == (
        "customer changed their mind"
    )

    page.click("text=← Executions")
    page.locator(
        "#executions tr[data-workflow-id='order-1042'] .badge[data-status='cancelled']"
    ).wait_for()
    screenshot(page, "ui-list.png")


def test_execution_page_shows_heartbeat_progress_and_signals(
    server: LiveServer, api: httpx.Client, page: Any
) -> None:
    start(api, "batch", "progress-run", 4)
    wait_for(
        lambda: (
            (p := api.get(f"{API}/executions/progress-run").json()["pending_activities"])
            and p[0]["progress"] == 0.75
        ),
        what="crunch to report 3 of 4",
    )
    page.goto(f"{server.url}/ui/#/executions/progress-run")
    bar = page.locator("#pending-activities [role=progressbar]")
    bar.wait_for()
    assert bar.get_attribute("aria-valuenow") == "75"
    screenshot(page, "ui-pending-activity.png")
    server_app.CRUNCH_RELEASE.set()
    page.locator("#run-status .badge[data-status='completed']").wait_for()
    assert page.locator("#pending-activities").count() == 0
    assert page.locator("#run-result").inner_text() == "4"


def test_reset_to_an_event_from_the_history_table_opens_the_new_run(
    server: LiveServer, api: httpx.Client, page: Any
) -> None:
    old = start(api, "sleeper", "reset-me", 3600)
    wait_for(lambda: api.get(f"{API}/executions/reset-me").json()["pending_timers"])
    page.goto(f"{server.url}/ui/#/executions/reset-me")
    page.locator("#history tr[data-event-id='2'] button").click()
    page.fill("#dialog-input", "try again")
    page.click("#dialog-confirm")
    page.wait_for_function(
        f"() => !window.location.hash.includes('reset-me') && "
        f"!window.location.hash.includes('{old['run_id']}')"
    )
    page.locator("#run-title").wait_for()
    assert "reset of" in page.locator(".facts").inner_text()
    assert api.get(f"{API}/executions/{old['run_id']}").json()["status"] == "reset"


def test_recover_button_resumes_a_failed_run(
    server: LiveServer, api: httpx.Client, page: Any
) -> None:
    server_app.FRAGILE_FAILS.set()
    start(api, "checkout", "failing-order", "o-9")
    wait_status(api, "failing-order", "failed")
    page.goto(f"{server.url}/ui/#/executions/failing-order")
    page.locator("#run-status .badge[data-status='failed']").wait_for()
    assert "card declined" in page.locator(".facts").inner_text()
    server_app.FRAGILE_FAILS.clear()
    page.click("#action-recover")
    page.fill("#dialog-input", "card replaced")
    page.click("#dialog-confirm")
    page.locator("#run-status .badge[data-status='completed']").wait_for()
    assert "recover of" in page.locator(".facts").inner_text()


def test_with_a_token_the_ui_asks_for_it_and_sends_it(tmp_path: Path, browser: Any) -> None:
    live = start_server(tmp_path / "secured.db", token=TOKEN)
    try:
        with live.client(token=TOKEN) as api:
            start(api, "sleeper", "guarded", 3600)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{live.url}/ui/#/executions/guarded")
        page.locator("#run-title").wait_for()
        page.click("#action-cancel")
        page.fill("#dialog-input", "no token yet")
        page.click("#dialog-confirm")
        # The 401 opens the token dialog; once given, the action works.
        page.locator("#dialog-title", has_text="Bearer token").wait_for()
        page.fill("#dialog-input", TOKEN)
        page.click("#dialog-confirm")
        page.locator("#token-button", has_text="✓").wait_for()
        page.click("#action-cancel")
        page.fill("#dialog-input", "with the token")
        page.click("#dialog-confirm")
        page.locator("#run-status .badge[data-status='cancelled']").wait_for()
        assert page.evaluate("sessionStorage.getItem('perdura.token')") == TOKEN
        context.close()
    finally:
        live.stop()


def test_timeline_picture_shows_retries_children_timers_and_signals(
    server: LiveServer, api: httpx.Client, page: Any
) -> None:
    start(api, "Fulfilment", "order-2077", "o-2077")

    def types() -> list[str]:
        events = api.get(f"{API}/executions/order-2077/history").json()["events"]
        return [e["type"] for e in events]

    wait_for(lambda: "TimerFired" in types(), what="the timer to fire")
    api.post(f"{API}/executions/order-2077/signals/ship_by", json={"args": ["parcel-express"]})
    wait_for(
        lambda: (
            (p := api.get(f"{API}/executions/order-2077").json()["pending_activities"])
            and p[0]["progress"] == 0.8
        ),
        what="crunch to report 4 of 5",
    )
    page.goto(f"{server.url}/ui/#/executions/order-2077")
    timeline = page.locator("#timeline")
    timeline.locator(".attempt-open").wait_for()
    assert timeline.locator(".step-activity").count() == 3
    assert timeline.locator(".attempt-failed").count() == 2
    assert timeline.locator(".attempt-completed").count() == 2
    assert timeline.locator(".step-child .child-completed").count() == 1
    assert timeline.locator(".step-timer .timer-bar").count() == 1
    assert timeline.locator(".mark-signal").count() == 1
    path = screenshot(page, "ui-timeline.png")
    if os.environ.get("PERDURA_UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(path, ROOT / "docs" / "ui.png")
    # The child's row links to the child run.
    timeline.locator(".step-child a").click()
    page.locator("#run-title", has_text="o-2077-notify").wait_for()
    server_app.CRUNCH_RELEASE.set()
    assert wait_status(api, "order-2077", "completed")["result"] == (
        "reserved o-2077, 5 items, via parcel-express"
    )
