"""Errors of the HTTP API: one JSON shape, stable codes, perdura errors mapped by type.

Every error response is ``{"error": {"code": "...", "message": "..."}}``. The ``code`` is
the contract (scripts branch on it); the ``message`` is for people and may change. Errors
the engine raises are mapped by their type, never by their message text.
"""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.responses import Response

from history import (
    AppendConflictError,
    CorruptStoreError,
    HistoryFileError,
    LeaseLostError,
    PayloadError,
    PerduraError,
    RunAlreadyExistsError,
    RunClosedError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    WorkflowAlreadyRunningError,
)

from .._query import QueryError
from ._schemas import ErrorDetail, ErrorResponse

__all__ = ["ERROR_CODES", "ApiError", "error_response", "from_perdura_error"]

ERROR_CODES: Final[dict[str, tuple[int, str]]] = {
    "bad_request": (400, "The request is malformed: a body that is not JSON, a bad parameter."),
    "unauthorized": (401, "A bearer token is required and was missing or wrong."),
    "forbidden_origin": (403, "A mutating request came from a page of another origin."),
    "not_found": (404, "No workflow or run with that id (or no such path)."),
    "method_not_allowed": (405, "The path exists but not with that HTTP method."),
    "run_closed": (409, "The run has already closed; it takes no more signals or requests."),
    "workflow_already_running": (409, "The workflow id already has an open run."),
    "run_already_exists": (409, "A run with that run id is already in the store."),
    "conflict": (409, "The operation cannot be applied to the run in its current state."),
    "payload_too_large": (413, "The request body exceeds the server's limit."),
    "unsupported_media_type": (415, "A request body must be sent as application/json."),
    "misdirected_request": (421, "The Host header names a host this server does not serve."),
    "validation_error": (422, "The body or a parameter does not match its schema."),
    "query_failed": (422, "The query is unknown to the workflow, or its handler raised."),
    "query_unavailable": (409, "This server was not given the workflow's code to answer it."),
    "store_unavailable": (503, "The store could not carry out the request."),
    "internal_error": (500, "A bug in the server; the message says what failed."),
}
"""Every error code the API returns, with its HTTP status and meaning (docs/http-api.md)."""

_encoder: Final = msgspec.json.Encoder()


class ApiError(Exception):
    """An error response to send: ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.headers = headers or {}


def error_response(error: ApiError) -> Response:
    body = _encoder.encode(ErrorResponse(error=ErrorDetail(code=error.code, message=error.message)))
    return Response(
        body, status_code=error.status, media_type="application/json", headers=error.headers
    )


def from_perdura_error(exc: PerduraError) -> ApiError:
    """The API error for an error the engine or the store raised while serving a request."""
    if isinstance(exc, RunNotFoundError):
        return ApiError("not_found", str(exc))
    if isinstance(exc, RunClosedError):
        return ApiError("run_closed", str(exc))
    if isinstance(exc, WorkflowAlreadyRunningError):
        return ApiError("workflow_already_running", str(exc))
    if isinstance(exc, RunAlreadyExistsError):
        return ApiError("run_already_exists", str(exc))
    if isinstance(exc, QueryError):
        return ApiError("query_failed", str(exc))
    if isinstance(exc, PayloadError | HistoryFileError):
        return ApiError("validation_error", str(exc))
    if isinstance(exc, CorruptStoreError | SchemaVersionError):
        return ApiError("store_unavailable", str(exc))
    if isinstance(exc, StoreError) and not isinstance(exc, AppendConflictError | LeaseLostError):
        return ApiError("store_unavailable", str(exc))
    return ApiError("conflict", str(exc))
