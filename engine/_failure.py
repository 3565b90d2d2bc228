"""Exceptions to recorded failures and back.

A failure crosses process and version boundaries, so it is recorded as data (type name,
message, stack text, details) and rebuilt on the other side as an :class:`ApplicationError`
carrying the original type name — never by unpickling the original exception.
"""

from __future__ import annotations

import traceback

from history import Failure, PayloadConverter, PayloadEncodeError

from ._errors import ActivityError, ApplicationError, ChildWorkflowError

__all__ = ["error_from_failure", "failure_from_exception", "qualified_name"]


def qualified_name(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    if module in ("builtins", "__main__"):
        return exc_type.__qualname__
    return f"{module}.{exc_type.__qualname__}"


def failure_from_exception(
    exc: BaseException, converter: PayloadConverter, *, depth: int = 0
) -> Failure:
    """Record ``exc`` (and up to 5 levels of its cause chain)."""
    non_retryable = False
    details: tuple[object, ...] = ()
    type_name = qualified_name(type(exc))
    message = str(exc)
    if isinstance(exc, ApplicationError):
        non_retryable = exc.non_retryable
        details = exc.details
        type_name = exc.type or type_name
        message = exc.message
    try:
        encoded = tuple(
            converter.encode(d, name=f"detail {i} of {type_name}") for i, d in enumerate(details)
        )
    except PayloadEncodeError as err:
        message = f"{message} (details dropped: {err})"
        encoded = ()
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return Failure(
        classification=_classification(exc),
        type=type_name,
        message=message,
        stack="".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False)),
        non_retryable=non_retryable,
        details=encoded,
        cause=(
            failure_from_exception(cause, converter, depth=depth + 1)
            if cause is not None and depth < 5
            else None
        ),
    )


def _classification(exc: BaseException) -> str | None:
    """The failure class an error carries: chosen by the code (``ApplicationError``), or the
    recorded class of the activity or child failure it reports (timeouts are ``timeout``)."""
    if isinstance(exc, ApplicationError):
        if exc.classification is not None:
            return exc.classification.value
        return None if exc.failure is None else exc.failure.classification
    if isinstance(exc, ActivityError):
        return "timeout" if exc.failure is None else exc.failure.classification
    if isinstance(exc, ChildWorkflowError):
        return exc.failure.classification
    return None


def error_from_failure(failure: Failure) -> ApplicationError:
    """The recorded failure as an exception workflow or client code can catch and inspect."""
    error = ApplicationError(
        failure.message, type=failure.type, non_retryable=failure.non_retryable
    )
    error.failure = failure
    if failure.cause is not None:
        error.__cause__ = error_from_failure(failure.cause)
    return error
