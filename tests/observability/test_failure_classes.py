"""Failure classification: every failed activity attempt gets a class, the class drives the
retry, and the class is recorded in history and shown by describe."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from obs_support import WAIT

from engine import (
    ApplicationError,
    Client,
    FailureClass,
    FailurePolicy,
    PerduraConfig,
    Worker,
    classify_exception,
)
from history import (
    ActivityCompleted,
    ActivityFailed,
    ActivityTimedOut,
    SqliteStore,
    decode_event,
    encode_event,
)
from sdk import RetryPolicy, WorkflowFailureError, activity, open_client, open_worker, workflow
from sdk.testing import FaultPoint, Faults

QUEUE = "classes"

#: Unlimited attempts, 10 ms apart, doubling: fast, and the test decides when they end.
FAST = RetryPolicy(initial_interval=0.01, backoff_coefficient=2.0)


class PaymentDeclined(Exception):
    """A domain error whose class says what it is."""

    classification = "permanent"


class GatewayBusy(Exception):
    classification = FailureClass.RESOURCE_EXHAUSTION


async def _run(db_path: Path, wf: Any, *args: Any, activities: list[Any], **options: Any) -> Any:
    """Run ``wf`` to its end on a real worker; return (history, result or the error)."""
    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[wf], activities=activities, **options
        ):
            handle = await client.start_workflow(wf, *args, id="wf-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                try:
                    outcome: Any = await handle.result()
                except WorkflowFailureError as exc:
                    outcome = exc
        return await handle.history(), outcome, await handle.describe()


def _failures(history: list[Any]) -> list[ActivityFailed]:
    return [e for e in history if isinstance(e, ActivityFailed)]


# -- the classifier ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionResetError("peer reset"), FailureClass.TRANSIENT),
        (TimeoutError("read timed out"), FailureClass.TRANSIENT),
        (OSError(errno.EIO, "I/O error"), FailureClass.TRANSIENT),
        (OSError(errno.ENOSPC, "No space left on device"), FailureClass.RESOURCE_EXHAUSTION),
        (MemoryError(), FailureClass.RESOURCE_EXHAUSTION),
        (ValueError("bad amount"), FailureClass.PERMANENT),
        (TypeError("wrong argument"), FailureClass.PERMANENT),
        (PermissionError("forbidden"), FailureClass.PERMANENT),
        (KeyError("missing"), FailureClass.UNKNOWN),
        (RuntimeError("something"), FailureClass.UNKNOWN),
    ],
)
def test_builtin_exceptions_get_their_default_class(
    error: BaseException, expected: FailureClass
) -> None:
    assert classify_exception(error) is expected


def test_an_application_error_names_its_own_class() -> None:
    error = ApplicationError("rate limited", classification="resource_exhaustion")
    assert classify_exception(error) is FailureClass.RESOURCE_EXHAUSTION


def test_a_classification_attribute_on_an_exception_type_wins_over_the_defaults() -> None:
    assert classify_exception(PaymentDeclined("card declined")) is FailureClass.PERMANENT
    assert classify_exception(GatewayBusy()) is FailureClass.RESOURCE_EXHAUSTION


def test_the_cause_is_classified_when_the_error_itself_is_unknown() -> None:
    error = RuntimeError("could not load the order")
    error.__cause__ = ConnectionRefusedError("db down")
    assert classify_exception(error) is FailureClass.TRANSIENT


def test_a_worker_classifier_overrides_everything_and_may_pass() -> None:
    def classifier(exc: BaseException) -> str | None:
        return "transient" if isinstance(exc, KeyError) else None

    assert classify_exception(KeyError("x"), classifier) is FailureClass.TRANSIENT
    assert classify_exception(ValueError("x"), classifier) is FailureClass.PERMANENT


def test_an_unknown_class_name_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="must be one of transient, permanent"):
        ApplicationError("x", classification="flaky")


def test_a_raised_timeout_grows_up_to_the_limit_and_never_shrinks() -> None:
    policy = FailurePolicy(timeout_growth=2.0, timeout_limit=50.0)
    assert policy.next_start_to_close(10.0) == 20.0
    assert policy.next_start_to_close(40.0) == 50.0
    assert policy.next_start_to_close(50.0) is None
    assert policy.next_start_to_close(80.0) is None  # scheduled above the limit: kept
    assert policy.next_start_to_close(None) is None


def test_histories_recorded_before_classification_still_decode() -> None:
    # An ActivityFailed as an older version stored it: no classification field at all.
    stored = msgspec.msgpack.encode(
        {
            "type": "ActivityFailed",
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "seq": 1,
            "attempt": 1,
            "failure": {"type": "ConnectionError", "message": "down"},
        }
    )
    decoded = decode_event(stored)
    assert isinstance(decoded, ActivityFailed)
    assert decoded.failure.classification is None
    assert decode_event(encode_event(decoded)) == decoded


# -- each class drives its policy (real worker, real SQLite file) -----------------------------


async def test_transient_failures_retry_with_the_activitys_backoff(db_path: Path) -> None:
    @activity.defn
    async def fetch_rates(currency: str) -> str:
        if activity.info().attempt < 3:
            raise ConnectionResetError("rates service reset the connection")
        return f"{currency}=1.08"

    @workflow.defn
    async def convert(currency: str) -> str:
        return await workflow.execute_activity(fetch_rates, currency, retry_policy=FAST)

    history, result, _ = await _run(db_path, convert, "EUR", activities=[fetch_rates])

    assert result == "EUR=1.08"
    failed = _failures(history)
    assert [f.failure.classification for f in failed] == ["transient", "transient"]
    delays = [(f.retry_at - f.timestamp).total_seconds() for f in failed if f.retry_at]
    assert delays == pytest.approx([0.01, 0.02])


async def test_a_permanent_failure_fails_the_activity_at_once_despite_unlimited_retries(
    db_path: Path,
) -> None:
    attempts: list[int] = []

    @activity.defn
    async def charge(amount: int) -> str:
        attempts.append(activity.info().attempt)
        raise ValueError(f"amount {amount} is negative")

    @workflow.defn
    async def pay(amount: int) -> str:
        return await workflow.execute_activity(charge, amount, retry_policy=FAST)

    history, error, description = await _run(db_path, pay, -5, activities=[charge])

    assert attempts == [1]
    [failed] = _failures(history)
    assert failed.retry_at is None
    assert failed.failure.classification == "permanent"
    assert isinstance(error, WorkflowFailureError)
    assert description.failure_class == "permanent"


@activity.defn
async def render(page: int) -> str:
    """Runs out of memory on its first attempt."""
    if activity.info().attempt == 1:
        raise MemoryError("renderer ran out of memory")
    return f"page {page}"


@workflow.defn
async def report(page: int) -> str:
    return await workflow.execute_activity(render, page, retry_policy=FAST)


async def test_resource_exhaustion_retries_four_times_later_than_the_backoff(
    db_path: Path,
) -> None:
    history, result, _ = await _run(db_path, report, 7, activities=[render])

    assert result == "page 7"
    [failed] = _failures(history)
    assert failed.failure.classification == "resource_exhaustion"
    assert failed.retry_at is not None
    assert (failed.retry_at - failed.timestamp) == timedelta(seconds=0.04)  # 4 x 10 ms


async def test_the_resource_exhaustion_factor_comes_from_the_configuration(
    db_path: Path,
) -> None:
    config = msgspec.convert({"failures": {"resource_exhaustion_backoff": 10}}, PerduraConfig)
    history, _, _ = await _run(db_path, report, 7, activities=[render], config=config)

    [failed] = _failures(history)
    assert failed.retry_at is not None
    assert (failed.retry_at - failed.timestamp) == timedelta(seconds=0.1)


async def test_a_timed_out_attempt_is_retried_with_a_raised_start_to_close_timeout(
    db_path: Path,
) -> None:
    @activity.defn
    async def export(rows: int) -> str:
        await asyncio.sleep(0.25)  # longer than the first timeout, shorter than the raised one
        return f"{rows} rows (attempt {activity.info().attempt})"

    @workflow.defn
    async def nightly(rows: int) -> str:
        return await workflow.execute_activity(
            export, rows, retry_policy=FAST, start_to_close_timeout=0.2
        )

    history, result, _ = await _run(db_path, nightly, 10, activities=[export])

    assert result == "10 rows (attempt 2)"
    [timed_out] = [e for e in history if isinstance(e, ActivityTimedOut)]
    assert timed_out.next_start_to_close_timeout == 0.4
    [completed] = [e for e in history if isinstance(e, ActivityCompleted)]
    assert completed.attempt == 2


async def test_user_classification_overrides_the_default_of_the_exception_type(
    db_path: Path,
) -> None:
    @activity.defn
    async def reserve(sku: str) -> str:
        if activity.info().attempt == 1:
            # A ValueError is permanent by default; this one is known to pass.
            raise ApplicationError(
                "stock cache stale", type="ValueError", classification="transient"
            )
        return f"reserved {sku}"

    @workflow.defn
    async def order(sku: str) -> str:
        return await workflow.execute_activity(reserve, sku, retry_policy=FAST)

    history, result, _ = await _run(db_path, order, "sku-1", activities=[reserve])

    assert result == "reserved sku-1"
    assert [f.failure.classification for f in _failures(history)] == ["transient"]


async def test_a_worker_classifier_makes_an_unknown_error_permanent(db_path: Path) -> None:
    @activity.defn
    async def lookup(key: str) -> str:
        raise KeyError(key)

    @workflow.defn
    async def find(key: str) -> str:
        return await workflow.execute_activity(lookup, key, retry_policy=FAST)

    def classifier(exc: BaseException) -> FailureClass | None:
        return FailureClass.PERMANENT if isinstance(exc, KeyError) else None

    history, error, description = await _run(
        db_path, find, "k", activities=[lookup], failure_classifier=classifier
    )

    assert [f.failure.classification for f in _failures(history)] == ["permanent"]
    assert isinstance(error, WorkflowFailureError)
    assert description.failure_class == "permanent"


async def test_describe_shows_the_class_of_a_pending_activitys_last_failure(
    db_path: Path,
) -> None:
    gate = asyncio.Event()

    @activity.defn
    async def sync_inventory(store_id: str) -> str:
        if not gate.is_set():
            raise ConnectionRefusedError("inventory service refused the connection")
        return "synced"

    @workflow.defn
    async def inventory(store_id: str) -> str:
        return await workflow.execute_activity(
            sync_inventory, store_id, retry_policy=RetryPolicy(initial_interval=0.05)
        )

    async with open_client(db_path) as client:
        async with open_worker(
            client, task_queue=QUEUE, workflows=[inventory], activities=[sync_inventory]
        ):
            handle = await client.start_workflow(inventory, "s-1", id="inv-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                while True:
                    description = await handle.describe()
                    pending = description.pending_activities
                    if pending and pending[0].last_failure is not None:
                        break
                    await asyncio.sleep(0.01)
            gate.set()
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "synced"

    assert pending[0].last_failure is not None
    assert pending[0].last_failure.classification == "transient"


async def test_a_remote_attempt_that_timed_out_is_retried_with_the_raised_timeout(
    db_path: Path,
) -> None:
    @activity.defn(name="archive")
    async def archive(key: str) -> str:
        await asyncio.sleep(0.25)
        return f"archived {key} on attempt {activity.info().attempt}"

    @workflow.defn(name="archiving")
    async def archiving(key: str) -> str:
        return await workflow.execute_activity(
            archive, key, task_queue="cold", retry_policy=FAST, start_to_close_timeout=0.2
        )

    async with open_client(db_path) as client:
        async with (
            open_worker(client, task_queue=QUEUE, workflows=[archiving], poll_interval=0.02),
            open_worker(client, task_queue="cold", activities=[archive], poll_interval=0.02),
        ):
            handle = await client.start_workflow(archiving, "k1", id="arc-1", task_queue=QUEUE)
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "archived k1 on attempt 2"
        history = await handle.history()

    [timed_out] = [e for e in history if isinstance(e, ActivityTimedOut)]
    assert timed_out.next_start_to_close_timeout == 0.4


async def test_a_raised_timeout_survives_a_crash_because_it_is_read_back_from_history(
    db_path: Path,
) -> None:
    @activity.defn(name="compact")
    async def compact(table: str) -> str:
        await asyncio.sleep(0.25)
        return f"compacted {table} on attempt {activity.info().attempt}"

    @workflow.defn(name="maintenance")
    async def maintenance(table: str) -> str:
        return await workflow.execute_activity(
            compact, table, retry_policy=FAST, start_to_close_timeout=0.2
        )

    store = await SqliteStore.open(db_path)
    try:
        client = Client(store)
        options: dict[str, Any] = {
            "task_queue": QUEUE,
            "workflows": [maintenance],
            "activities": [compact],
        }
        # Attempt 1 times out (0.2 s), attempt 2 runs with 0.4 s and the worker dies as it
        # returns: the recovered worker must run attempt 2 again with 0.4 s, not 0.2 s.
        doomed = Worker(
            store, identity="w1", faults=Faults.crash_at(FaultPoint.ACTIVITY_COMPLETE, 2), **options
        )
        handle = await client.start_workflow(maintenance, "t1", id="mnt-1", task_queue=QUEUE)
        await doomed.start()
        async with asyncio.timeout(WAIT):
            await doomed.stopped.wait()
        assert doomed.crashed is not None
        await doomed.stop()
        async with Worker(store, identity="w1", **options):
            async with asyncio.timeout(WAIT):
                assert await handle.result() == "compacted t1 on attempt 2"
    finally:
        await store.close()
