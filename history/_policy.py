"""Retry policies: recorded with each scheduled activity so any worker retries it the same way."""

from __future__ import annotations

import msgspec

__all__ = ["RetryPolicy"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """How a failed activity attempt is retried.

    Intervals are seconds. ``maximum_attempts=0`` means no limit (Temporal's default): an
    activity that keeps failing with a retryable error keeps retrying until a
    schedule-to-close timeout, if any, ends it. ``maximum_interval`` defaults to 100 times
    ``initial_interval``. ``non_retryable_error_types`` lists exception class names (bare
    or qualified) that fail the activity at once.

    Fields equal to their default are not written into history (``omit_defaults``: the
    default policy was ~40% of every ``ActivityScheduled``), so a default, once released,
    never changes.
    """

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.initial_interval < 0:
            raise ValueError(
                f"RetryPolicy.initial_interval must be >= 0, got {self.initial_interval}"
            )
        if self.backoff_coefficient < 1:
            raise ValueError(
                f"RetryPolicy.backoff_coefficient must be >= 1, got {self.backoff_coefficient}"
            )
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError(
                "RetryPolicy.maximum_interval must be >= initial_interval, got "
                f"{self.maximum_interval} < {self.initial_interval}"
            )
        if self.maximum_attempts < 0:
            raise ValueError(
                f"RetryPolicy.maximum_attempts must be >= 0 (0 = unlimited), "
                f"got {self.maximum_attempts}"
            )

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next."""
        cap = (
            self.maximum_interval
            if self.maximum_interval is not None
            else self.initial_interval * 100
        )
        # Exponent clamped: a float overflow at attempt 2000 must not crash a worker.
        exponent = min(attempt - 1, 1000)
        try:
            delay = self.initial_interval * self.backoff_coefficient**exponent
        except OverflowError:
            delay = cap
        return min(delay, cap)

    def allows_another_attempt(self, attempt: int) -> bool:
        """Whether attempt number ``attempt + 1`` may run under the attempt limit."""
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts

    def is_retryable(self, error_type: str) -> bool:
        """``error_type`` is a qualified class name; a listed bare name matches it too."""
        bare = error_type.rsplit(".", 1)[-1]
        return not any(
            name == error_type or name == bare for name in self.non_retryable_error_types
        )
