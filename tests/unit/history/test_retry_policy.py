"""Retry policies: backoff arithmetic, attempt limits, non-retryable errors, validation."""

from __future__ import annotations

import math

import msgspec
import pytest

from history import RetryPolicy


def test_first_retry_waits_the_initial_interval() -> None:
    assert RetryPolicy(initial_interval=1.5).delay_after(1) == 1.5


def test_each_further_retry_multiplies_the_delay_by_the_backoff_coefficient() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=3.0, maximum_interval=1000)

    assert [policy.delay_after(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_a_backoff_coefficient_of_one_retries_at_a_fixed_interval() -> None:
    policy = RetryPolicy(initial_interval=2.0, backoff_coefficient=1.0)

    assert {policy.delay_after(n) for n in range(1, 50)} == {2.0}


def test_delay_is_capped_at_maximum_interval() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=10.0)

    assert [policy.delay_after(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_without_maximum_interval_the_cap_is_100_times_the_initial_interval() -> None:
    policy = RetryPolicy(initial_interval=0.5, backoff_coefficient=2.0)

    assert policy.delay_after(7) == 0.5 * 2**6
    assert policy.delay_after(8) == 50.0
    assert policy.delay_after(50) == 50.0


def test_a_zero_initial_interval_retries_at_once() -> None:
    policy = RetryPolicy(initial_interval=0.0)

    assert policy.delay_after(1) == 0.0
    assert policy.delay_after(100) == 0.0


@pytest.mark.parametrize("attempt", [1_000, 1_025, 2_000, 10**9, 10**30])
@pytest.mark.parametrize("coefficient", [2.0, 10.0, 1e6])
def test_huge_attempt_numbers_do_not_overflow_and_stay_at_the_cap(
    attempt: int, coefficient: float
) -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=coefficient)

    delay = policy.delay_after(attempt)

    assert delay == 100.0
    assert math.isfinite(delay)


def test_maximum_attempts_zero_means_unlimited() -> None:
    policy = RetryPolicy(maximum_attempts=0)

    assert policy.allows_another_attempt(1)
    assert policy.allows_another_attempt(10**9)


def test_maximum_attempts_allows_exactly_that_many_attempts() -> None:
    policy = RetryPolicy(maximum_attempts=3)

    assert [policy.allows_another_attempt(n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_maximum_attempts_of_one_never_retries() -> None:
    assert not RetryPolicy(maximum_attempts=1).allows_another_attempt(1)


def test_every_error_is_retryable_by_default() -> None:
    assert RetryPolicy().is_retryable("builtins.ValueError")


def test_a_listed_bare_name_matches_the_qualified_error_type() -> None:
    policy = RetryPolicy(non_retryable_error_types=("PaymentDeclined",))

    assert not policy.is_retryable("shop.payments.PaymentDeclined")
    assert not policy.is_retryable("PaymentDeclined")


def test_a_listed_qualified_name_matches_only_that_module() -> None:
    policy = RetryPolicy(non_retryable_error_types=("shop.payments.PaymentDeclined",))

    assert not policy.is_retryable("shop.payments.PaymentDeclined")
    assert policy.is_retryable("other.PaymentDeclined")


def test_an_error_type_that_merely_contains_a_listed_name_stays_retryable() -> None:
    policy = RetryPolicy(non_retryable_error_types=("Declined",))

    assert policy.is_retryable("shop.PaymentDeclined")
    assert policy.is_retryable("shop.Declined.Other")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_interval": -1.0}, "initial_interval"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"initial_interval": 10.0, "maximum_interval": 5.0}, "maximum_interval"),
        ({"maximum_attempts": -1}, "maximum_attempts"),
    ],
)
def test_an_invalid_value_raises_value_error_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"RetryPolicy\.{field}"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_an_invalid_policy_in_stored_bytes_fails_to_decode_naming_the_field() -> None:
    data = msgspec.json.encode({"maximum_attempts": -2})

    with pytest.raises(msgspec.ValidationError, match="maximum_attempts"):
        msgspec.json.decode(data, type=RetryPolicy)


def test_a_policy_survives_a_round_trip_through_json() -> None:
    policy = RetryPolicy(
        initial_interval=0.25,
        backoff_coefficient=1.5,
        maximum_interval=30.0,
        maximum_attempts=7,
        non_retryable_error_types=("ValueError", "shop.Declined"),
    )

    assert msgspec.json.decode(msgspec.json.encode(policy), type=RetryPolicy) == policy
