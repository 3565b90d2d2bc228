"""The timeline and history renderers, on histories written out by hand."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from engine._timeline import (
    Outcome,
    StepKind,
    build_timeline,
    event_to_json,
    format_duration,
    format_payload,
    history_rows,
    timeline_text,
)
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    Failure,
    Payload,
    PerduraError,
    RunStatus,
    TimeoutType,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowTaskFailed,
)

ORIGIN = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
LONG = "x" * 200


def at(seconds: float) -> datetime:
    return ORIGIN + timedelta(seconds=seconds)


def p(value: Any) -> Payload:
    return Payload("json", msgspec.json.encode(value))


def order_history() -> list[AnyEvent]:
    """charge fails once and succeeds on its retry, a 3 s timer, ship, completion."""
    return [
        WorkflowStarted(
            event_id=1,
            timestamp=at(0),
            workflow_type="order",
            workflow_id="o-1",
            task_queue="q",
            args=(p("o-1"), p(4200)),
        ),
        ActivityScheduled(
            event_id=2,
            timestamp=at(0.5),
            seq=1,
            activity_type="charge",
            task_queue="q",
            args=(p("o-1"), p(4200)),
            scheduled_at=at(0),
        ),
        ActivityFailed(
            event_id=3,
            timestamp=at(0.5),
            seq=1,
            attempt=1,
            failure=Failure(type="ConnectionError", message="card network timed out\nline 2"),
            retry_at=at(1.5),
        ),
        ActivityCompleted(event_id=4, timestamp=at(2.0), seq=1, attempt=2, result=p("rcpt")),
        TimerStarted(event_id=5, timestamp=at(2.0), seq=1, fire_at=at(5.0), duration=3.0),
        TimerFired(event_id=6, timestamp=at(5.0), seq=1),
        ActivityScheduled(
            event_id=7,
            timestamp=at(6.0),
            seq=2,
            activity_type="ship",
            task_queue="q",
            args=(p("o-1"),),
            scheduled_at=at(5.0),
        ),
        ActivityCompleted(event_id=8, timestamp=at(6.0), seq=2, attempt=1, result=p(LONG)),
        WorkflowCompleted(event_id=9, timestamp=at(6.0), result=p({"receipt": "rcpt"})),
    ]


def test_each_activity_is_one_step_with_its_attempts_as_offsets() -> None:
    timeline = build_timeline(order_history())
    charge = timeline.steps[0]
    assert (charge.kind, charge.label, charge.call) == (
        StepKind.ACTIVITY,
        "#1 charge",
        'charge("o-1", 4200)',
    )
    assert (charge.start, charge.end, charge.outcome) == (0.0, 2.0, Outcome.COMPLETED)
    assert [(a.number, a.start, a.end, a.outcome) for a in charge.attempts] == [
        (1, 0.0, 0.5, Outcome.FAILED),
        (2, 1.5, 2.0, Outcome.COMPLETED),
    ]
    assert charge.attempts[0].detail == "ConnectionError: card network timed out"
    assert charge.attempts[0].retry_at == 1.5
    assert charge.result == '"rcpt"'


def test_timers_are_steps_from_start_to_firing() -> None:
    timeline = build_timeline(order_history())
    assert [s.label for s in timeline.steps] == ["#1 charge", "T1 sleep 3s", "#2 ship"]
    timer = timeline.steps[1]
    assert (timer.kind, timer.start, timer.end, timer.outcome) == (
        StepKind.TIMER,
        2.0,
        5.0,
        Outcome.FIRED,
    )


def test_a_closed_run_is_charted_to_its_close_with_its_result() -> None:
    timeline = build_timeline(order_history(), now=at(100))
    assert (timeline.status, timeline.end, timeline.span) == (RunStatus.COMPLETED, 6.0, 6.0)
    assert timeline.call == 'order("o-1", 4200)'
    assert timeline.result == '{"receipt":"rcpt"}'


def test_an_open_run_is_charted_to_now_with_its_timer_due() -> None:
    timeline = build_timeline(order_history()[:5], now=at(3.0))
    assert (timeline.status, timeline.end, timeline.span) == (RunStatus.RUNNING, None, 3.0)
    timer = timeline.steps[1]
    assert (timer.outcome, timer.end, timer.due) == (Outcome.WAITING, None, 5.0)


def test_an_activity_waiting_for_its_retry_is_open_until_then() -> None:
    charge = build_timeline(order_history()[:3]).steps[0]
    assert (charge.outcome, charge.end, charge.due) == (Outcome.RETRYING, None, 1.5)


def test_a_heartbeat_after_a_failure_shows_the_retry_running() -> None:
    events = [
        *order_history()[:3],
        ActivityHeartbeat(event_id=4, timestamp=at(1.7), seq=1, attempt=2, details=(p(7),)),
    ]
    charge = build_timeline(events).steps[0]
    assert (charge.outcome, charge.due) == (Outcome.RUNNING, None)


def test_a_timed_out_attempt_names_its_timeout() -> None:
    events = [
        *order_history()[:2],
        ActivityTimedOut(
            event_id=3,
            timestamp=at(0.5),
            seq=1,
            attempt=1,
            timeout_type=TimeoutType.START_TO_CLOSE,
        ),
    ]
    charge = build_timeline(events).steps[0]
    assert (charge.outcome, charge.end) == (Outcome.TIMED_OUT, 0.5)
    assert charge.attempts[0].detail == "start_to_close timeout"


def test_failures_of_the_run_and_of_workflow_tasks_are_reported() -> None:
    failure = Failure(type="OutOfStock", message="no stock")
    events = [
        order_history()[0],
        WorkflowTaskFailed(
            event_id=2,
            timestamp=at(1),
            failure=Failure(type="NondeterminismError", message="bad\nmore"),
        ),
        WorkflowFailed(event_id=3, timestamp=at(2), failure=failure),
    ]
    timeline = build_timeline(events)
    assert (timeline.status, timeline.failure) == (RunStatus.FAILED, "OutOfStock: no stock")
    assert timeline.task_failures == ((1.0, "NondeterminismError: bad"),)
    text = timeline_text(timeline)
    assert "failed: OutOfStock: no stock" in text
    assert "! +1.00s workflow task failed: NondeterminismError: bad" in text


def test_long_payloads_are_cut_and_undecodable_ones_described() -> None:
    ship = build_timeline(order_history()).steps[2]
    assert len(ship.result) == 60
    assert ship.result.endswith("...")
    assert format_payload(Payload("json", b"\xff{")) == "<json payload, 2 bytes, not decodable>"
    assert format_payload(Payload("cbor", b"abc")).startswith("<cbor payload")


def test_the_chart_draws_each_step_on_one_time_scale() -> None:
    text = timeline_text(build_timeline(order_history()), bar_width=60)
    bars = {
        line.split()[0] + " " + line.split()[1]: line.split("|")[1]
        for line in text.splitlines()
        if line.count("|") == 2 and not line.startswith("STEP")
    }
    # 60 cells for 6 s: 10 cells a second.
    assert bars["#1 charge"] == "x" * 5 + "." * 10 + "#" * 5 + " " * 40
    assert bars["T1 sleep"] == " " * 20 + "=" * 30 + " " * 10
    assert bars["#2 ship"] == " " * 50 + "#" * 10
    assert "attempt 1  +0.00s..+0.50s  failed: ConnectionError: card network timed out" in text
    assert "(retry at +1.50s)" in text


def test_an_open_step_runs_off_the_end_of_the_chart() -> None:
    text = timeline_text(build_timeline(order_history()[:5], now=at(3.0)), bar_width=30)
    [timer] = [line for line in text.splitlines() if line.startswith("T1 sleep 3s  ")]
    assert timer.split("|")[1] == " " * 20 + "=" * 9 + ">"
    assert "due +5.00s" in timer


def test_unicode_drawing_uses_block_characters() -> None:
    text = timeline_text(build_timeline(order_history()), bar_width=60, unicode=True)
    assert "█" in text
    assert "░" in text
    assert "#" not in text.split("|")[1]


def test_history_rows_say_what_each_event_means() -> None:
    rows = history_rows(order_history())
    assert [r.event_id for r in rows] == list(range(1, 10))
    assert [r.offset for r in rows][:4] == [0.0, 0.5, 0.5, 2.0]
    details = {r.event_id: r.details for r in rows}
    assert details[1] == "order(\"o-1\", 4200) on queue 'q'"
    assert details[2] == '#1 charge("o-1", 4200)'
    assert details[3] == (
        "#1 charge attempt 1: ConnectionError: card network timed out; retry at +1.50s"
    )
    assert details[4] == '#1 charge attempt 2 -> "rcpt"'
    assert details[5] == "T1 sleep 3s, fires at +5.00s"
    assert details[9] == '-> {"receipt":"rcpt"}'


def test_event_json_decodes_payloads_in_full() -> None:
    events = order_history()
    assert event_to_json(events[7])["result"] == LONG
    started = event_to_json(events[0])
    assert started["type"] == "WorkflowStarted"
    assert started["args"] == ["o-1", 4200]
    assert started["timestamp"] == "2027-01-15T08:00:00Z"
    failed = event_to_json(events[2])
    assert failed["failure"]["type"] == "ConnectionError"
    assert failed["retry_at"] == "2027-01-15T08:00:01.500000Z"


def test_event_json_keeps_the_bytes_of_an_undecodable_payload() -> None:
    event = ActivityCompleted(
        event_id=2, timestamp=at(1), seq=1, attempt=1, result=Payload("json", b"\xff{")
    )
    result = event_to_json(event)["result"]
    assert result == {"encoding": "json", "data": base64.b64encode(b"\xff{").decode()}


def test_a_history_must_start_with_workflow_started() -> None:
    with pytest.raises(PerduraError, match="must start with a WorkflowStarted"):
        build_timeline(order_history()[1:])
    with pytest.raises(PerduraError):
        build_timeline([])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.00s"),
        (1.234, "1.23s"),
        (12.34, "12.3s"),
        (125, "2m05s"),
        (3720, "1h02m"),
        (3 * 86400 + 4 * 3600, "3d04h"),
        (-1, "0.00s"),
    ],
)
def test_durations_are_as_short_as_their_size_allows(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
