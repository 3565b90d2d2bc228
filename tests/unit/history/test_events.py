"""Events: every type survives MessagePack (storage) and JSON (export) unchanged."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from history import (
    ActivityCancelled,
    ActivityCompleted,
    ActivityFailed,
    ActivityHeartbeat,
    ActivityScheduled,
    ActivityTimedOut,
    AnyEvent,
    CancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowStarted,
    Failure,
    MarkerRecorded,
    Payload,
    RetryPolicy,
    RunOrigin,
    SignalReceived,
    TimeoutType,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowReset,
    WorkflowStarted,
    WorkflowTaskFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
    decode_event,
    decode_events_json,
    encode_event,
    encode_events_json,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PAYLOAD = Payload("json", b'{"amount":42}')
FAILURE = Failure(
    type="payments.PaymentDeclined",
    message="card declined",
    stack="Traceback ...",
    non_retryable=True,
    details=(Payload("msgpack", b"\x01"),),
    cause=Failure(type="OSError", message="connection reset"),
)

# Every field set to a non-default value, so a field lost on the way would show.
FULL_EVENTS: list[AnyEvent] = [
    WorkflowStarted(
        event_id=1,
        timestamp=T0,
        workflow_type="Order",
        workflow_id="order-1",
        task_queue="orders",
        args=(PAYLOAD, Payload("msgpack", b"\x93\x01\x02\x03")),
        seed=123456789,
        origin=RunOrigin(kind="reset", run_id="r0", event_id=12, reason="bad deploy"),
    ),
    WorkflowCompleted(event_id=2, timestamp=T0, result=PAYLOAD),
    WorkflowFailed(event_id=3, timestamp=T0, failure=FAILURE),
    WorkflowTaskFailed(event_id=3, timestamp=T0, failure=FAILURE),
    ActivityScheduled(
        event_id=4,
        timestamp=T0,
        seq=1,
        activity_type="charge",
        task_queue="payments",
        args=(PAYLOAD,),
        retry_policy=RetryPolicy(
            initial_interval=0.5,
            backoff_coefficient=3.0,
            maximum_interval=60.0,
            maximum_attempts=5,
            non_retryable_error_types=("ValueError",),
        ),
        start_to_close_timeout=10.0,
        schedule_to_close_timeout=100.0,
        heartbeat_timeout=2.5,
        scheduled_at=T0 - timedelta(seconds=1),
    ),
    ActivityCompleted(event_id=5, timestamp=T0, seq=1, attempt=2, result=PAYLOAD),
    ActivityFailed(
        event_id=6, timestamp=T0, seq=1, attempt=1, failure=FAILURE, retry_at=T0 + timedelta(1)
    ),
    ActivityTimedOut(
        event_id=7,
        timestamp=T0,
        seq=1,
        attempt=3,
        timeout_type=TimeoutType.HEARTBEAT,
        retry_at=T0 + timedelta(seconds=8),
    ),
    ActivityHeartbeat(event_id=8, timestamp=T0, seq=1, attempt=3, details=(PAYLOAD,)),
    TimerStarted(event_id=9, timestamp=T0, seq=1, fire_at=T0 + timedelta(hours=1), duration=3600),
    TimerFired(event_id=10, timestamp=T0, seq=1),
    TimerCancelled(event_id=11, timestamp=T0, seq=2),
    ActivityCancelled(event_id=12, timestamp=T0, seq=3),
    SignalReceived(event_id=13, timestamp=T0, name="approve", args=(PAYLOAD,)),
    CancelRequested(event_id=14, timestamp=T0, reason="customer asked"),
    MarkerRecorded(event_id=15, timestamp=T0, kind="side_effect", seq=1, value=PAYLOAD),
    MarkerRecorded(event_id=16, timestamp=T0, kind="patch", name="v2"),
    WorkflowCancelled(event_id=17, timestamp=T0, reason="customer asked"),
    WorkflowTimedOut(event_id=18, timestamp=T0, timeout_type="run", deadline=T0),
    WorkflowTerminated(event_id=19, timestamp=T0, reason="ops"),
    WorkflowReset(event_id=19, timestamp=T0, new_run_id="r3", to_event_id=7, reason="bad deploy"),
    WorkflowContinuedAsNew(event_id=20, timestamp=T0, new_run_id="r2", args=(PAYLOAD,)),
    ChildWorkflowStarted(
        event_id=21,
        timestamp=T0,
        seq=1,
        workflow_id="w/child-1",
        run_id="r3",
        workflow_type="child",
        task_queue="q",
        parent_close_policy="abandon",
    ),
    ChildWorkflowCompleted(event_id=22, timestamp=T0, seq=1, result=PAYLOAD),
    ChildWorkflowFailed(event_id=23, timestamp=T0, seq=2, status="failed", failure=FAILURE),
]

# Only the required fields: defaults must come back as defaults.
MINIMAL_EVENTS: list[AnyEvent] = [
    WorkflowStarted(timestamp=T0, workflow_type="Order", workflow_id="o", task_queue="q"),
    WorkflowCompleted(timestamp=T0, result=PAYLOAD),
    WorkflowFailed(timestamp=T0, failure=Failure(type="E", message="")),
    WorkflowTaskFailed(timestamp=T0, failure=Failure(type="E", message="")),
    ActivityScheduled(timestamp=T0, seq=1, activity_type="a", task_queue="q"),
    ActivityCompleted(timestamp=T0, seq=1, attempt=1, result=PAYLOAD),
    ActivityFailed(timestamp=T0, seq=1, attempt=1, failure=Failure(type="E", message="")),
    ActivityTimedOut(timestamp=T0, seq=1, attempt=1, timeout_type=TimeoutType.START_TO_CLOSE),
    ActivityHeartbeat(timestamp=T0, seq=1, attempt=1),
    TimerStarted(timestamp=T0, seq=1, fire_at=T0, duration=0.0),
    TimerFired(timestamp=T0, seq=1),
    TimerCancelled(timestamp=T0, seq=1),
    ActivityCancelled(timestamp=T0, seq=1),
    SignalReceived(timestamp=T0, name="s"),
    CancelRequested(timestamp=T0),
    MarkerRecorded(timestamp=T0, kind="patch"),
    WorkflowCancelled(timestamp=T0),
    WorkflowTimedOut(timestamp=T0, timeout_type="execution", deadline=T0),
    WorkflowTerminated(timestamp=T0),
    WorkflowReset(timestamp=T0, new_run_id="r3", to_event_id=2),
    WorkflowContinuedAsNew(timestamp=T0, new_run_id="r"),
    ChildWorkflowStarted(
        timestamp=T0, seq=1, workflow_id="c", run_id="r", workflow_type="t", task_queue="q"
    ),
    ChildWorkflowCompleted(timestamp=T0, seq=1, result=PAYLOAD),
    ChildWorkflowFailed(timestamp=T0, seq=1, status="failed", failure=FAILURE),
]

ALL_EVENTS = FULL_EVENTS + MINIMAL_EVENTS


def _name(event: object) -> str:
    return type(event).__name__


def test_samples_cover_every_event_type_of_the_union() -> None:
    union = set(typing.get_args(AnyEvent))
    assert {type(e) for e in FULL_EVENTS} == union
    assert {type(e) for e in MINIMAL_EVENTS} == union


@pytest.mark.parametrize("event", ALL_EVENTS, ids=_name)
def test_msgpack_round_trip_returns_an_equal_event(event: AnyEvent) -> None:
    decoded = decode_event(encode_event(event))

    assert decoded == event
    assert type(decoded) is type(event)


@pytest.mark.parametrize("event", ALL_EVENTS, ids=_name)
def test_json_round_trip_returns_an_equal_event(event: AnyEvent) -> None:
    assert decode_events_json(encode_events_json([event])) == [event]


def test_json_round_trip_keeps_the_order_of_a_whole_history() -> None:
    assert decode_events_json(encode_events_json(FULL_EVENTS)) == FULL_EVENTS


def test_json_export_names_each_event_by_its_class_in_the_type_field() -> None:
    exported = msgspec.json.decode(encode_events_json(FULL_EVENTS))

    assert [e["type"] for e in exported] == [_name(e) for e in FULL_EVENTS]


def test_timestamps_keep_their_instant_and_timezone_through_msgpack() -> None:
    event = TimerStarted(timestamp=T0, seq=1, fire_at=T0 + timedelta(microseconds=7), duration=0)

    decoded = decode_event(encode_event(event))

    assert isinstance(decoded, TimerStarted)
    assert decoded.fire_at == T0 + timedelta(microseconds=7)
    assert decoded.fire_at.utcoffset() == timedelta(0)


def test_omit_defaults_leaves_default_fields_out_of_the_stored_bytes() -> None:
    event = ActivityScheduled(timestamp=T0, seq=1, activity_type="a", task_queue="q")

    stored = msgspec.msgpack.decode(encode_event(event))

    assert set(stored) == {"type", "timestamp", "seq", "activity_type", "task_queue"}


def test_omit_defaults_makes_a_minimal_event_smaller_than_one_with_defaults_spelled_out() -> None:
    minimal = ActivityScheduled(timestamp=T0, seq=1, activity_type="a", task_queue="q")
    spelled_out = msgspec.msgpack.encode(msgspec.structs.asdict(minimal) | {"type": "x"})

    assert len(encode_event(minimal)) < len(spelled_out) / 2


def test_a_field_set_to_a_non_default_value_is_stored() -> None:
    event = ActivityScheduled(
        timestamp=T0,
        seq=1,
        activity_type="a",
        task_queue="q",
        retry_policy=RetryPolicy(maximum_attempts=3),
    )

    stored = msgspec.msgpack.decode(encode_event(event))

    assert stored["retry_policy"]["maximum_attempts"] == 3


def test_an_unknown_event_type_tag_fails_to_decode() -> None:
    data = msgspec.msgpack.encode({"type": "WorkflowExploded", "timestamp": T0})

    with pytest.raises(msgspec.DecodeError, match="WorkflowExploded"):
        decode_event(data)


def test_an_unknown_event_type_tag_fails_to_decode_from_json() -> None:
    data = b'[{"type": "WorkflowExploded", "timestamp": "2024-05-01T12:00:00Z"}]'

    with pytest.raises(msgspec.DecodeError, match="WorkflowExploded"):
        decode_events_json(data)


def test_an_event_missing_a_required_field_fails_to_decode() -> None:
    data = msgspec.msgpack.encode({"type": "TimerFired", "timestamp": T0})

    with pytest.raises(msgspec.DecodeError, match="seq"):
        decode_event(data)


def test_damaged_bytes_fail_to_decode() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(encode_event(FULL_EVENTS[0])[:-5])


def test_an_unknown_field_from_a_newer_writer_is_ignored() -> None:
    event = TimerFired(event_id=4, timestamp=T0, seq=1)
    stored = msgspec.msgpack.decode(encode_event(event))
    stored["added_in_a_later_version"] = "x"

    assert decode_event(msgspec.msgpack.encode(stored)) == event


def test_events_are_frozen() -> None:
    event = TimerFired(timestamp=T0, seq=1)

    with pytest.raises(AttributeError):
        event.seq = 2  # type: ignore[misc]
