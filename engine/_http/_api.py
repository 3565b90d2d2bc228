"""The endpoints under ``/api/durable``, declared once in :data:`OPERATIONS`.

The table routes requests and documents them (``_openapi`` builds the OpenAPI document from
it), so a route cannot exist undocumented. Routing works on the raw, still percent-encoded
path split at ``/``: a workflow id may contain a slash (``orders/42``), sent as ``%2F``,
and must reach the endpoint as one id.

``{id}`` in a path is a workflow id (meaning its newest run) or a run id, as in the CLI.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, unquote

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from history import (
    AnyEvent,
    PerduraError,
    RunInfo,
    RunNotFoundError,
    RunQuery,
    WorkflowAlreadyRunningError,
)

from .._client import Client, WorkflowHandle
from .._query import QueryError
from ._errors import ApiError, from_perdura_error
from ._schemas import (
    ActionResult,
    CancelRequest,
    ExecutionDetail,
    ExecutionPage,
    ExecutionRef,
    ForkRequest,
    Health,
    HistoryPage,
    HistoryParams,
    ListParams,
    QueryParams,
    QueryResult,
    RecoverRequest,
    ResetRequest,
    SignalRequest,
    StartRequest,
    TerminateRequest,
    TimelineView,
)
from ._views import (
    execution_detail,
    execution_summary,
    graph_view,
    history_page,
    timeline_view,
)

__all__ = [
    "API_PREFIX",
    "BUILTIN_DESCRIBERS",
    "OPERATIONS",
    "ApiContext",
    "ApiRouter",
    "Operation",
    "RunDescriber",
]

API_PREFIX: Final = "/api/durable"
SEARCH_SCAN_LIMIT: Final = 10_000
"""Most executions a ``q`` search looks at (newest first) before it reports ``truncated``."""
_SCAN_BATCH: Final = 500

RunDescriber = Callable[[RunInfo, Sequence[AnyEvent]], Any]
"""An extra view of a run for the execution page (the built-in one draws graph runs): it
returns JSON-like data (or an awaitable of it), or ``None`` when the run is not its kind."""

BUILTIN_DESCRIBERS: Final[Mapping[str, RunDescriber]] = {"graph": graph_view}
"""The describers every server has: ``graph`` draws graph runs (``sdk.graph``) from their
history alone, so the server needs neither the graph's code nor an import of ``sdk``."""

S = TypeVar("S", bound=msgspec.Struct)
_encoder: Final = msgspec.json.Encoder()


@dataclass(kw_only=True)
class ApiContext:
    """What the endpoints work with."""

    client: Client
    query_client: Client
    """The client whose registry holds the workflow code that answers queries."""
    max_body_bytes: int
    version: str
    worker_identities: Callable[[], list[str]] = list
    describers: Mapping[str, RunDescriber] = field(default_factory=dict)
    openapi: bytes = b"{}"
    """The OpenAPI document, encoded once when the app is built."""


Endpoint = Callable[[ApiContext, Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One endpoint: how it is routed, validated, protected and documented."""

    method: str
    path: str
    """Relative to the API prefix (or absolute when it starts with ``//``); ``{id}`` and
    ``{name}`` are one path segment each."""
    operation_id: str
    summary: str
    endpoint: Endpoint
    response: type | None
    status: int = 200
    body: type | None = None
    body_required: bool = False
    params: type | None = None
    errors: tuple[str, ...] = ()
    media_type: str = "application/json"

    @property
    def mutating(self) -> bool:
        return self.method != "GET"

    @property
    def full_path(self) -> str:
        return self.path[1:] if self.path.startswith("//") else API_PREFIX + self.path

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.full_path.strip("/").split("/"))


# -- helpers -------------------------------------------------------------------------------


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type="application/json")


def _validation_message(exc: msgspec.ValidationError, where: str) -> str:
    text = str(exc)
    return f"{where}: {text}"


def parse_params(request: Request, params_type: type[S]) -> S:
    """Query parameters, typed and bounded by ``params_type``; unknown ones are refused."""
    raw: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in raw:
            raise ApiError("validation_error", f"query parameter {key!r} given more than once")
        raw[key] = value
    try:
        return msgspec.convert(raw, params_type, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "query parameter `")
        if "Object contains unknown field" in message:
            message = message.replace("Object contains unknown field", "unknown query parameter")
        raise ApiError("validation_error", message) from None


async def read_body(request: Request, body_type: type[S], *, required: bool, limit: int) -> S:
    """The request body decoded into ``body_type``: at most ``limit`` bytes, JSON only."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError("bad_request", f"bad Content-Length {length!r}") from None
        if declared > limit:
            raise ApiError(
                "payload_too_large", f"request body of {declared} bytes exceeds {limit} bytes"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        if required:
            raise ApiError("validation_error", f"a JSON body ({body_type.__name__}) is required")
        return body_type()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(
            "unsupported_media_type",
            f"send the body as application/json (got {media or 'no Content-Type'})",
        )
    try:
        return msgspec.json.decode(data, type=body_type)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "field `").replace("`$`", "the body")
        raise ApiError("validation_error", f"invalid {body_type.__name__}: {message}") from None
    except msgspec.DecodeError as exc:
        raise ApiError("bad_request", f"the body is not valid JSON: {exc}") from None


async def resolve(client: Client, ident: str) -> RunInfo:
    """A workflow id's newest run, or the run with that run id; 404 otherwise."""
    if not ident:
        raise ApiError("not_found", "no execution id given")
    try:
        return await client.store.find_run(ident)
    except RunNotFoundError:
        pass
    try:
        return await client.store.get_run(ident)
    except RunNotFoundError:
        raise ApiError("not_found", f"no workflow or run with id {ident!r}") from None


async def _handle(ctx: ApiContext, ident: str) -> WorkflowHandle:
    info = await resolve(ctx.client, ident)
    return ctx.client.get_handle(info.workflow_id, info.run_id)


async def _ref(handle: WorkflowHandle) -> ExecutionRef:
    run_id = handle.run_id
    if run_id is None:
        run_id = (await handle.run_info()).run_id
    return ExecutionRef(workflow_id=handle.workflow_id, run_id=run_id)


# -- endpoints -----------------------------------------------------------------------------


async def health(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    return json_response(Health(version=ctx.version, workers=ctx.worker_identities()))


async def openapi(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    return Response(ctx.openapi, media_type="application/json")


async def list_executions(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    params = parse_params(request, ListParams)
    base = RunQuery(status=params.status, workflow_type=params.type or None)
    store = ctx.client.store
    if not params.q:
        query = msgspec.structs.replace(base, limit=params.size, offset=params.page * params.size)
        runs = await store.list_runs(query)
        total = await store.count_runs(base)
        truncated = False
    else:
        runs, total, truncated = await _search(ctx, base, params)
    return json_response(
        ExecutionPage(
            items=[execution_summary(info) for info in runs],
            page=params.page,
            size=params.size,
            total=total,
            total_pages=math.ceil(total / params.size),
            truncated=truncated,
        )
    )


async def _search(
    ctx: ApiContext, base: RunQuery, params: ListParams
) -> tuple[list[RunInfo], int, bool]:
    """Executions whose workflow id, run id or type starts with ``q`` (case-insensitive),
    newest first, among the newest :data:`SEARCH_SCAN_LIMIT` matching the other filters.

    The store protocol filters by exact values only, so the prefix is matched here, a batch
    at a time; the page is cut from the matches in order.
    """
    assert params.q is not None
    needle = params.q.casefold()
    skip, wanted = params.page * params.size, params.size
    page: list[RunInfo] = []
    total = scanned = 0
    while scanned < SEARCH_SCAN_LIMIT:
        batch = await ctx.client.store.list_runs(
            msgspec.structs.replace(base, limit=_SCAN_BATCH, offset=scanned)
        )
        for info in batch:
            if any(
                text.casefold().startswith(needle)
                for text in (info.workflow_id, info.run_id, info.workflow_type)
            ):
                if total >= skip and len(page) < wanted:
                    page.append(info)
                total += 1
        scanned += len(batch)
        if len(batch) < _SCAN_BATCH:
            return page, total, False
    return page, total, True


async def start_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, StartRequest, required=True, limit=ctx.max_body_bytes)
    try:
        handle = await ctx.client.start_workflow(
            body.workflow_type,
            *body.args,
            id=body.workflow_id,
            task_queue=body.task_queue,
            execution_timeout=body.execution_timeout,
            run_timeout=body.run_timeout,
        )
    except WorkflowAlreadyRunningError as exc:
        raise from_perdura_error(exc) from None
    return json_response(await _ref(handle), 201)


async def get_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    info = await resolve(ctx.client, path["id"])
    store = ctx.client.store
    history = await store.read_history(info.run_id)
    timers = await store.pending_timers(info.run_id)
    extensions = await _extensions(ctx, info, history)
    return json_response(execution_detail(info, history, timers, ctx.client.converter, extensions))


async def _extensions(
    ctx: ApiContext, info: RunInfo, history: Sequence[AnyEvent]
) -> dict[str, Any]:
    """What each describer says about the run; one that fails says why instead."""
    out: dict[str, Any] = {}
    for name, describe in ctx.describers.items():
        try:
            value = describe(info, history)
            if inspect.isawaitable(value):
                value = await value
            if value is not None:
                out[name] = msgspec.to_builtins(value)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


async def get_history(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    params = parse_params(request, HistoryParams)
    info = await resolve(ctx.client, path["id"])
    events = await ctx.client.store.read_history(info.run_id)
    return json_response(
        history_page(info, events, after_event_id=params.after_event_id, limit=params.limit)
    )


async def get_timeline(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    info = await resolve(ctx.client, path["id"])
    events = await ctx.client.store.read_history(info.run_id)
    now = datetime.fromtimestamp(ctx.client.clock.now(), UTC)
    return json_response(timeline_view(info, events, now=now))


async def export_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    info = await resolve(ctx.client, path["id"])
    data = await ctx.client.get_handle(info.workflow_id, info.run_id).export()
    filename = f"{info.workflow_id}-{info.run_id}.json"
    return Response(
        data,
        media_type="application/json",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quote(filename)}"},
    )


def _quote(text: str) -> str:
    return quote(text, safe="")


async def cancel_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, CancelRequest, required=False, limit=ctx.max_body_bytes)
    handle = await _handle(ctx, path["id"])
    await handle.cancel(body.reason)
    return await _accepted(handle)


async def terminate_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, TerminateRequest, required=False, limit=ctx.max_body_bytes)
    handle = await _handle(ctx, path["id"])
    await handle.terminate(body.reason)
    return await _accepted(handle)


async def signal_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, SignalRequest, required=False, limit=ctx.max_body_bytes)
    name = path["name"]
    if not name:
        raise ApiError("not_found", "no signal name given")
    handle = await _handle(ctx, path["id"])
    await handle.signal(name, *body.args)
    return await _accepted(handle)


async def _accepted(handle: WorkflowHandle) -> Response:
    # The request went to the run continuing the chain if this one continued as new.
    info = await handle.current_run()
    return json_response(ActionResult(workflow_id=info.workflow_id, run_id=info.run_id), 202)


async def query_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    params = parse_params(request, QueryParams)
    args: list[Any] = []
    if params.args is not None:
        try:
            args = json.loads(params.args)
        except ValueError as exc:
            raise ApiError(
                "validation_error", f"query parameter `args` is not JSON: {exc}"
            ) from None
        if not isinstance(args, list):
            raise ApiError("validation_error", "query parameter `args` must be a JSON array")
    name = path["name"]
    info = await resolve(ctx.client, path["id"])
    registry = ctx.query_client.registry
    if info.workflow_type not in registry.workflows:
        loaded = ", ".join(sorted(registry.workflows)) or "none"
        raise ApiError(
            "query_unavailable",
            f"this server was not given the code of workflow type {info.workflow_type!r} "
            f"(loaded: {loaded}); start it with --app naming the module that defines it",
        )
    handle = ctx.query_client.get_handle(info.workflow_id, info.run_id)
    try:
        answer = await handle.query(name, *args)
    except QueryError as exc:
        raise ApiError("query_failed", str(exc)) from None
    except PerduraError:
        raise
    except Exception as exc:  # the handler's own bug, or replay that no longer matches
        raise ApiError(
            "query_failed", f"query {name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    try:
        result = msgspec.to_builtins(answer)
    except TypeError as exc:
        raise ApiError("query_failed", f"the answer of query {name!r} is not JSON: {exc}") from None
    return json_response(
        QueryResult(workflow_id=info.workflow_id, run_id=info.run_id, result=result)
    )


async def recover_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, RecoverRequest, required=False, limit=ctx.max_body_bytes)
    handle = await _handle(ctx, path["id"])
    recovered = await _call(handle.recover, reason=body.reason)
    return json_response(await _ref(recovered), 202)


async def reset_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, ResetRequest, required=True, limit=ctx.max_body_bytes)
    handle = await _handle(ctx, path["id"])
    new = await _call(handle.reset, body.to_event_id, reason=body.reason)
    return json_response(await _ref(new), 201)


async def fork_execution(ctx: ApiContext, request: Request, path: dict[str, str]) -> Response:
    body = await read_body(request, ForkRequest, required=True, limit=ctx.max_body_bytes)
    handle = await _handle(ctx, path["id"])
    new = await _call(handle.fork, body.at_event_id, body.new_workflow_id, reason=body.reason)
    return json_response(await _ref(new), 201)


async def _call(method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> WorkflowHandle:
    """Run a time-travel operation; a request it cannot honour is the caller's error."""
    try:
        result = await method(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ApiError("validation_error", str(exc)) from None
    assert isinstance(result, WorkflowHandle)
    return result


_RUN_ERRORS: Final = ("not_found",)
_BODY_ERRORS: Final = (
    "bad_request",
    "payload_too_large",
    "unsupported_media_type",
    "validation_error",
)

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        method="GET",
        path="//healthz",
        operation_id="health",
        summary="Liveness: the server answers and names its in-process workers.",
        endpoint=health,
        response=Health,
    ),
    Operation(
        method="GET",
        path="/openapi.json",
        operation_id="openapi",
        summary="This document.",
        endpoint=openapi,
        response=None,
    ),
    Operation(
        method="GET",
        path="/executions",
        operation_id="listExecutions",
        summary="List executions, newest first, a page at a time.",
        endpoint=list_executions,
        response=ExecutionPage,
        params=ListParams,
        errors=("validation_error",),
    ),
    Operation(
        method="POST",
        path="/executions",
        operation_id="startExecution",
        summary="Start a run of a workflow type.",
        endpoint=start_execution,
        response=ExecutionRef,
        status=201,
        body=StartRequest,
        body_required=True,
        errors=(*_BODY_ERRORS, "workflow_already_running"),
    ),
    Operation(
        method="GET",
        path="/executions/{id}",
        operation_id="getExecution",
        summary="A run's status, what it waits on, its failure or result.",
        endpoint=get_execution,
        response=ExecutionDetail,
        errors=_RUN_ERRORS,
    ),
    Operation(
        method="GET",
        path="/executions/{id}/history",
        operation_id="getHistory",
        summary="A run's events, oldest first, a page at a time.",
        endpoint=get_history,
        response=HistoryPage,
        params=HistoryParams,
        errors=(*_RUN_ERRORS, "validation_error"),
    ),
    Operation(
        method="GET",
        path="/executions/{id}/timeline",
        operation_id="getTimeline",
        summary="A run's activities (with attempts), timers and child runs, and its signals, "
        "as offsets from its start.",
        endpoint=get_timeline,
        response=TimelineView,
        errors=_RUN_ERRORS,
    ),
    Operation(
        method="GET",
        path="/executions/{id}/export",
        operation_id="exportExecution",
        summary="A run's history as an export file (for `perdura replay` or import).",
        endpoint=export_execution,
        response=None,
        errors=_RUN_ERRORS,
    ),
    Operation(
        method="POST",
        path="/executions/{id}/cancel",
        operation_id="cancelExecution",
        summary="Ask the run to stop; its code sees the cancellation and may clean up.",
        endpoint=cancel_execution,
        response=ActionResult,
        status=202,
        body=CancelRequest,
        errors=(*_RUN_ERRORS, *_BODY_ERRORS, "run_closed"),
    ),
    Operation(
        method="POST",
        path="/executions/{id}/terminate",
        operation_id="terminateExecution",
        summary="End the run now, without running any more of its code.",
        endpoint=terminate_execution,
        response=ActionResult,
        status=202,
        body=TerminateRequest,
        errors=(*_RUN_ERRORS, *_BODY_ERRORS, "run_closed"),
    ),
    Operation(
        method="POST",
        path="/executions/{id}/signals/{name}",
        operation_id="signalExecution",
        summary="Deliver a signal; it is recorded in the run's history before the reply.",
        endpoint=signal_execution,
        response=ActionResult,
        status=202,
        body=SignalRequest,
        errors=(*_RUN_ERRORS, *_BODY_ERRORS, "run_closed"),
    ),
    Operation(
        method="GET",
        path="/executions/{id}/queries/{name}",
        operation_id="queryExecution",
        summary="Answer a query from the run's replayed state; writes nothing.",
        endpoint=query_execution,
        response=QueryResult,
        params=QueryParams,
        errors=(*_RUN_ERRORS, "validation_error", "query_failed", "query_unavailable"),
    ),
    Operation(
        method="POST",
        path="/executions/{id}/recover",
        operation_id="recoverExecution",
        summary="Make a stuck or failed run move again.",
        endpoint=recover_execution,
        response=ExecutionRef,
        status=202,
        body=RecoverRequest,
        errors=(*_RUN_ERRORS, *_BODY_ERRORS, "conflict"),
    ),
    Operation(
        method="POST",
        path="/executions/{id}/reset",
        operation_id="resetExecution",
        summary="Start a new run from a copy of this run's history up to an event; this run "
        "closes as reset.",
        endpoint=reset_execution,
        response=ExecutionRef,
        status=201,
        body=ResetRequest,
        body_required=True,
        errors=(*_RUN_ERRORS, *_BODY_ERRORS, "conflict"),
    ),
    Operation(
        method="POST",
        path="/executions/{id}/fork",
        operation_id="forkExecution",
        summary="Start a run of a new workflow id from a copy of this run's history up to an "
        "event; this run is unchanged.",
        endpoint=fork_execution,
        response=ExecutionRef,
        status=201,
        body=ForkRequest,
        body_required=True,
        errors=(
            *_RUN_ERRORS,
            *_BODY_ERRORS,
            "conflict",
            "workflow_already_running",
        ),
    ),
)


class ApiRouter:
    """ASGI app dispatching the API paths of :data:`OPERATIONS`; 404 and 405 as JSON."""

    def __init__(self, ctx: ApiContext, operations: Sequence[Operation] = OPERATIONS) -> None:
        self.ctx = ctx
        self.operations = list(operations)

    def match(self, raw_path: str, method: str) -> tuple[Operation, dict[str, str]]:
        segments = raw_path.strip("/").split("/") if raw_path.strip("/") else []
        allowed: list[str] = []
        for operation in self.operations:
            pattern = operation.segments
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for expected, actual in zip(pattern, segments, strict=True):
                if expected.startswith("{") and expected.endswith("}"):
                    params[expected[1:-1]] = unquote(actual, errors="replace")
                elif expected != actual:
                    break
            else:
                if operation.method == method or (method == "HEAD" and operation.method == "GET"):
                    return operation, params
                allowed.append(operation.method)
        if allowed:
            raise ApiError(
                "method_not_allowed",
                f"{method} is not allowed here; use {' or '.join(sorted(set(allowed)))}",
                headers={"Allow": ", ".join(sorted(set(allowed)))},
            )
        raise ApiError("not_found", f"no such endpoint: {unquote(raw_path)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1").split("?", 1)[0] if raw else scope["path"]
        operation, params = self.match(raw_path, scope["method"])
        request = Request(scope, receive)
        try:
            response = await operation.endpoint(self.ctx, request, params)
        except PerduraError as exc:
            raise from_perdura_error(exc) from None
        await response(scope, receive, send)
