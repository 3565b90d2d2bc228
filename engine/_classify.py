"""Failure classification: what kind of failure an activity attempt had, and what to do next.

Every failed attempt is put in one class, and the class decides the retry::

    transient            a connection dropped, a service blipped   retry with the backoff
    resource_exhaustion  memory, disk, file handles, quotas         retry, backoff x4
    timeout              the attempt ran out of time                retry, longer timeout
    permanent            bad input, no permission                   fail now: retrying can't help
    unknown              anything else                              retry with the backoff

Precedence, first answer wins: the worker's own ``classifier`` (it returns ``None`` to pass),
a ``classification`` attribute on the exception (``ApplicationError(..., classification=...)``
or a class attribute on your own exception type), the built-in rules below, then the same
questions about the exception's ``__cause__``. A failure that the retry policy or the error
itself marks non-retryable is recorded as ``permanent``: the class in history is the one the
runtime acted on. The class is recorded in the failure (``Failure.classification``), so an
operator, ``describe`` and the automatic recovery service read it back from history.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from history import (
    ActivityFailed,
    ActivityTimedOut,
    AnyEvent,
    Failure,
    WorkflowFailed,
)

__all__ = [
    "DEFAULT_FAILURE_POLICY",
    "Classifier",
    "FailureClass",
    "FailurePolicy",
    "classify_exception",
    "run_failure_class",
]


class FailureClass(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"

    @property
    def recoverable(self) -> bool:
        """Whether a run that failed of it may be recovered automatically: the condition is
        expected to clear by itself (a dependency comes back, memory is freed)."""
        return self in (FailureClass.TRANSIENT, FailureClass.RESOURCE_EXHAUSTION)

    @classmethod
    def parse(cls, value: FailureClass | str, *, what: str = "classification") -> FailureClass:
        """``value`` as a class; a clear error naming the valid names otherwise."""
        if isinstance(value, FailureClass):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise ValueError(f"{what} must be one of {names}; got {value!r}") from None


Classifier = Callable[[BaseException], "FailureClass | str | None"]
"""A worker-level classifier: the class of an exception, or ``None`` to use the defaults."""

#: errno values of an ``OSError`` that mean a resource ran out rather than a blip.
_EXHAUSTED_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "ENOMEM", "EMFILE", "ENFILE", "EDQUOT", "ENOBUFS")
    if hasattr(errno, name)
)

#: Built-in rules, most specific first (``PermissionError`` is an ``OSError``).
_RULES: Final[Sequence[tuple[type[BaseException], FailureClass]]] = (
    (MemoryError, FailureClass.RESOURCE_EXHAUSTION),
    (PermissionError, FailureClass.PERMANENT),
    (TimeoutError, FailureClass.TRANSIENT),  # an I/O timeout inside the activity
    (ConnectionError, FailureClass.TRANSIENT),
    (OSError, FailureClass.TRANSIENT),
    (ValueError, FailureClass.PERMANENT),
    (TypeError, FailureClass.PERMANENT),
    (NotImplementedError, FailureClass.PERMANENT),
)


def _explicit(exc: BaseException) -> FailureClass | None:
    value = getattr(exc, "classification", None)
    if value is None:
        failure = getattr(exc, "failure", None)  # an error rebuilt from a recorded failure
        value = failure.classification if isinstance(failure, Failure) else None
    if value is None:
        return None
    return FailureClass.parse(value, what=f"{type(exc).__name__}.classification")


def _by_rules(exc: BaseException) -> FailureClass | None:
    if isinstance(exc, OSError) and exc.errno in _EXHAUSTED_ERRNOS:
        return FailureClass.RESOURCE_EXHAUSTION
    for exc_type, failure_class in _RULES:
        if isinstance(exc, exc_type):
            return failure_class
    return None


def classify_exception(exc: BaseException, classifier: Classifier | None = None) -> FailureClass:
    """The class of an activity's exception (see the module docstring for the precedence)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(6):  # the exception and up to five causes
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        if classifier is not None:
            chosen = classifier(current)
            if chosen is not None:
                return FailureClass.parse(chosen, what="the worker's failure classifier result")
        found = _explicit(current) or _by_rules(current)
        if found is not None:
            return found
        current = current.__cause__
    return FailureClass.UNKNOWN


@dataclass(frozen=True, kw_only=True)
class FailurePolicy:
    """What each failure class does to the retry of an activity (a worker's setting).

    ``resource_exhaustion_backoff`` multiplies the retry policy's delay for that class;
    ``timeout_growth`` multiplies the start-to-close timeout of the attempt after a
    start-to-close timeout, up to ``timeout_limit`` seconds (never below the scheduled
    value). Transient and unknown failures retry as the activity's retry policy says,
    permanent ones do not retry.
    """

    classifier: Classifier | None = None
    resource_exhaustion_backoff: float = 4.0
    timeout_growth: float = 2.0
    timeout_limit: float = 3600.0

    def __post_init__(self) -> None:
        if not self.resource_exhaustion_backoff >= 1:
            raise ValueError(
                "FailurePolicy.resource_exhaustion_backoff must be >= 1, got "
                f"{self.resource_exhaustion_backoff}"
            )
        if not self.timeout_growth >= 1:
            raise ValueError(
                f"FailurePolicy.timeout_growth must be >= 1, got {self.timeout_growth}"
            )
        if not self.timeout_limit > 0:
            raise ValueError(f"FailurePolicy.timeout_limit must be > 0, got {self.timeout_limit}")

    def classify(self, exc: BaseException) -> FailureClass:
        return classify_exception(exc, self.classifier)

    def next_start_to_close(self, current: float | None) -> float | None:
        """The raised start-to-close timeout after an attempt timed out, or ``None`` to keep
        ``current`` (no timeout set, or already at the limit)."""
        if current is None:
            return None
        raised = min(current * self.timeout_growth, max(self.timeout_limit, current))
        return raised if raised > current else None


DEFAULT_FAILURE_POLICY: Final = FailurePolicy()


def _class_in(failure: Failure | None) -> FailureClass | None:
    depth = 0
    while failure is not None and depth < 6:
        if failure.classification:
            try:
                return FailureClass(failure.classification)
            except ValueError:
                return FailureClass.UNKNOWN
        failure = failure.cause
        depth += 1
    return None


def _names(failure: Failure | None) -> Iterable[str]:
    depth = 0
    while failure is not None and depth < 6:
        yield failure.type
        failure = failure.cause
        depth += 1


def run_failure_class(history: Sequence[AnyEvent]) -> FailureClass | None:
    """The class of the failure that ended a FAILED run, read from its history.

    The run's failure itself if it carries a class; for a run failed by an activity error
    (directly or as the cause of what the code raised), the class of that activity's final
    failed or timed-out attempt; ``unknown`` for a failure raised by workflow code; ``None``
    when the run did not fail.
    """
    closing = history[-1] if history else None
    if not isinstance(closing, WorkflowFailed):
        return None
    found = _class_in(closing.failure)
    if found is not None:
        return found
    if any(name.rsplit(".", 1)[-1] == "ActivityError" for name in _names(closing.failure)):
        for event in reversed(history):
            if isinstance(event, ActivityTimedOut) and event.retry_at is None:
                return FailureClass.TIMEOUT
            if isinstance(event, ActivityFailed) and event.retry_at is None:
                return _class_in(event.failure) or FailureClass.UNKNOWN
    return FailureClass.UNKNOWN
