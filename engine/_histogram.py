"""A Prometheus histogram cheap enough to observe on every activity attempt.

``prometheus_client.Histogram.observe`` takes two locks (the sum's and the bucket's), checks
twice that the metric is observable and walks the bucket bounds in Python: about a tenth of
what a worker spends on a no-op step, and it is paid twice per step (schedule-to-start and
attempt duration). Here an observation is a ``bisect`` in C and two additions under one
lock; the buckets are made cumulative, and exposed in the text format, only when scraped,
through ``prometheus_client``'s custom-collector interface.

What a scrape shows is what ``prometheus_client.Histogram`` would show for the same
observations (``_bucket``, ``_count``, ``_sum``), without the ``_created`` sample.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["Histogram", "Series"]


def _bucket_name(bound: float) -> str:
    """The ``le`` label of a bound, formatted as ``prometheus_client`` formats it."""
    name: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return name


class Series:
    """One labelled series of a :class:`Histogram`."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount: Prometheus buckets are "less or equal".
        index = bisect.bisect_left(self._bounds, amount)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def snapshot(self) -> tuple[list[int], float]:
        """Counts per bucket (not cumulative) and the sum, read together."""
        with self._lock:
            return list(self._counts), self._sum


class Histogram:
    """A labelled histogram registered in ``registry`` (``labels(...).observe(x)``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(bounds[:-1])
        self._bucket_names = [_bucket_name(b) for b in bounds]
        self._series: dict[tuple[str, ...], Series] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> Series:
        if len(values) != len(self._labelnames):
            raise ValueError(
                f"histogram {self._name}: {len(values)} label value(s) for labels "
                f"{', '.join(self._labelnames)}"
            )
        key = tuple(str(v) for v in values)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = Series(self._bounds)
            return series

    def describe(self) -> list[Metric]:
        """The family without samples: what the registry checks names against."""
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            series = list(self._series.items())
        for key, one in series:
            counts, total = one.snapshot()
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for name, count in zip(self._bucket_names, counts, strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            family.add_metric(list(key), buckets, total)
        return [family]
