"""perdura's own histogram scrapes exactly like ``prometheus_client.Histogram``.

The worker's duration histograms are observed on every activity attempt, so they are a
cheaper implementation (``engine._histogram``) behind the same exposition: these tests put
the same observations into both and compare what a scrape returns.
"""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as ReferenceHistogram

from engine._histogram import Histogram

BUCKETS = (0.001, 0.01, 0.5, 1.0, 60.0, 86400.0, math.inf)
LABELS = ("task_queue", "activity_type")


def _scrape(registry: CollectorRegistry) -> list[str]:
    """The text exposition without ``_created`` samples (which perdura's does not have)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, ReferenceHistogram]:
    ours, reference = CollectorRegistry(), CollectorRegistry()
    mine = Histogram("perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, ours)
    theirs = ReferenceHistogram(
        "perdura_test_seconds", "A test histogram.", LABELS, registry=reference, buckets=BUCKETS
    )
    return ours, mine, reference, theirs


@given(
    st.lists(
        st.tuples(
            st.sampled_from([("q", "charge"), ("q", "mail"), ("other", "charge")]),
            st.floats(min_value=0, max_value=1e6, allow_nan=False)
            | st.sampled_from([0.001, 0.01, 0.5, 1.0, 60.0, 86400.0]),
        ),
        max_size=40,
    )
)
def test_a_scrape_shows_what_prometheus_client_would_for_the_same_observations(
    observations: list[tuple[tuple[str, str], float]],
) -> None:
    ours, mine, reference, theirs = _pair()
    for labels, amount in observations:
        mine.labels(*labels).observe(amount)
        theirs.labels(*labels).observe(amount)

    assert _scrape(ours) == _scrape(reference)


def test_an_observation_on_a_bound_counts_in_that_bound_s_bucket() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, registry)

    histogram.labels("q", "charge").observe(0.5)

    labels = {"task_queue": "q", "activity_type": "charge"}
    bucket = "perdura_test_seconds_bucket"
    assert registry.get_sample_value(bucket, {**labels, "le": "0.01"}) == 0
    assert registry.get_sample_value(bucket, {**labels, "le": "0.5"}) == 1
    assert registry.get_sample_value("perdura_test_seconds_count", labels) == 1
    assert registry.get_sample_value("perdura_test_seconds_sum", labels) == 0.5


def test_the_wrong_number_of_label_values_is_refused_with_the_labels_named() -> None:
    histogram = Histogram(
        "perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, CollectorRegistry()
    )

    with pytest.raises(ValueError, match="task_queue, activity_type"):
        histogram.labels("q")


def test_a_registry_refuses_a_second_histogram_of_the_same_name() -> None:
    registry = CollectorRegistry()
    Histogram("perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, registry)

    with pytest.raises(ValueError, match="perdura_test_seconds"):
        Histogram("perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, registry)


def test_observations_from_several_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    series = Histogram(
        "perdura_test_seconds", "A test histogram.", LABELS, BUCKETS, registry
    ).labels("q", "charge")

    def observe() -> None:
        for _ in range(20_000):
            series.observe(0.002)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    labels = {"task_queue": "q", "activity_type": "charge"}
    assert registry.get_sample_value("perdura_test_seconds_count", labels) == 80_000
    assert registry.get_sample_value("perdura_test_seconds_sum", labels) == pytest.approx(
        80_000 * 0.002
    )
