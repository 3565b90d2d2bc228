"""Request and response bodies of the HTTP API, as ``msgspec.Struct`` types.

These types are the API's contract: requests are decoded and validated with them (unknown
fields are refused, so a typo is an error, not a silently ignored option), responses are
encoded from them, and the OpenAPI document's schemas are generated from them with
``msgspec.json.schema_components``. Constraints (``Meta``) bound every string and number a
client sends, so that no value can reach the store that it would choke on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from history import RunStatus

__all__ = [
    "MAX_HISTORY_PAGE",
    "MAX_PAGE_SIZE",
    "ActionResult",
    "CancelRequest",
    "ErrorDetail",
    "ErrorResponse",
    "ExecutionDetail",
    "ExecutionPage",
    "ExecutionRef",
    "ExecutionSummary",
    "FailureView",
    "ExtensionError",
    "ForkRequest",
    "GraphEdgeView",
    "GraphNodeView",
    "GraphStateView",
    "GraphView",
    "GraphWaitView",
    "Health",
    "HistoryEvent",
    "HistoryPage",
    "HistoryParams",
    "ListParams",
    "OriginView",
    "PendingActivityView",
    "PendingTimerView",
    "QueryParams",
    "QueryResult",
    "RecoverRequest",
    "ResetRequest",
    "SignalRequest",
    "StartRequest",
    "TerminateRequest",
    "TimelineAttempt",
    "TimelineMarker",
    "TimelineStep",
    "TimelineView",
]

MAX_PAGE_SIZE: Final = 200
"""Largest page of executions one request may ask for."""
MAX_HISTORY_PAGE: Final = 5000
"""Largest number of events one history request returns."""
_MAX_TIMEOUT: Final = 100 * 366 * 86400.0
"""A century: longer timeouts are typos, and would overflow a datetime."""

Identifier = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="1 to 512 characters, no control characters.",
    ),
]
Name = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=256,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="1 to 256 characters, no control characters.",
    ),
]
Reason = Annotated[
    str, Meta(max_length=2000, description="Free text recorded in the run's history.")
]
EventId = Annotated[int, Meta(ge=1, le=2**53, description="An event id of the run (1 = first).")]
Seconds = Annotated[float, Meta(ge=0, le=_MAX_TIMEOUT, description="Seconds.")]


class _Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


# -- requests ------------------------------------------------------------------------------


class StartRequest(_Request):
    """Start a run of a workflow type (by its registered name)."""

    workflow_type: Name
    workflow_id: Identifier
    task_queue: Name = "default"
    args: list[Any] = msgspec.field(default_factory=list)
    """The workflow's arguments, in order, as JSON values."""
    execution_timeout: Seconds | None = None
    run_timeout: Seconds | None = None


class CancelRequest(_Request):
    """Ask a run to stop: its code sees a cancellation and may clean up."""

    reason: Reason = ""


class TerminateRequest(_Request):
    """End a run now, without running any more of its code."""

    reason: Reason = ""


class RecoverRequest(_Request):
    """Make a stuck or failed run move again."""

    reason: Reason = ""


class SignalRequest(_Request):
    """Deliver a signal (its handler's arguments as JSON values)."""

    args: list[Any] = msgspec.field(default_factory=list)


class ResetRequest(_Request):
    """Start a new run from a copy of this run's history up to ``to_event_id``."""

    to_event_id: EventId
    reason: Reason = ""


class ForkRequest(_Request):
    """Start a run of another workflow id from a copy of this run's history."""

    at_event_id: EventId
    new_workflow_id: Identifier
    reason: Reason = ""


class ListParams(_Request):
    """Query parameters of the execution list."""

    page: Annotated[int, Meta(ge=0, le=1_000_000, description="0-based page number.")] = 0
    size: Annotated[int, Meta(ge=1, le=MAX_PAGE_SIZE, description="Executions per page.")] = 20
    status: RunStatus | None = None
    type: Annotated[str, Meta(max_length=256, description="Exact workflow type.")] | None = None
    q: (
        Annotated[
            str,
            Meta(
                max_length=512,
                description="Search: a prefix of the workflow id, run id or workflow type "
                "(case-insensitive).",
            ),
        ]
        | None
    ) = None


class HistoryParams(_Request):
    """Query parameters of a history page."""

    after_event_id: Annotated[
        int, Meta(ge=0, le=2**53, description="Return events after this id.")
    ] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_HISTORY_PAGE, description="Events per page.")] = 1000


class QueryParams(_Request):
    """Query parameters of a workflow query."""

    args: (
        Annotated[
            str,
            Meta(
                max_length=1000,
                description="The query handler's arguments as a JSON array, e.g. "
                '`["a", 1]` (it travels in the URL, hence the bound).',
            ),
        ]
        | None
    ) = None


# -- responses -----------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    """A stable, machine-readable code (see docs/http-api.md)."""
    message: str
    """What was wrong, for a person."""


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorDetail


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    version: str
    workers: list[str]
    """Identities of the workers running inside this server process."""


class FailureView(msgspec.Struct, kw_only=True):
    type: str
    message: str
    stack: str = ""
    non_retryable: bool = False
    cause: FailureView | None = None


class OriginView(msgspec.Struct, kw_only=True):
    """Where a run made from a copied history came from."""

    kind: str
    run_id: str
    event_id: int
    reason: str


class ExecutionRef(msgspec.Struct, kw_only=True):
    """The run an operation created or acted on."""

    workflow_id: str
    run_id: str


class ActionResult(msgspec.Struct, kw_only=True):
    """An accepted request recorded in the run's history."""

    workflow_id: str
    run_id: str
    accepted: Literal[True] = True


class ExecutionSummary(msgspec.Struct, kw_only=True):
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    started_at: datetime
    closed_at: datetime | None
    history_length: int


class ExecutionPage(msgspec.Struct, kw_only=True):
    items: list[ExecutionSummary]
    page: int
    size: int
    total: int
    """Executions matching the filters (with ``q``: among those scanned)."""
    total_pages: int
    truncated: bool = False
    """True when a ``q`` search stopped scanning before the oldest execution."""


class PendingActivityView(msgspec.Struct, kw_only=True):
    seq: int
    activity_type: str
    attempt: int
    retry_at: datetime | None
    last_heartbeat_at: datetime | None
    last_heartbeat_details: list[Any]
    progress: float | None
    """0..1 when the last heartbeat reported progress (a number in [0, 1], or a mapping
    with ``progress``, or ``done``/``completed``/``current`` and ``total``)."""
    last_failure: FailureView | None


class PendingTimerView(msgspec.Struct, kw_only=True):
    seq: int
    fire_at: datetime


class ExecutionDetail(msgspec.Struct, kw_only=True):
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    started_at: datetime
    closed_at: datetime | None
    history_length: int
    owner: str | None
    lease_expires_at: datetime | None
    wake_at: datetime | None
    args: list[Any]
    pending_activities: list[PendingActivityView]
    pending_timers: list[PendingTimerView]
    last_task_failure: FailureView | None
    failure: FailureView | None
    cancel_reason: str | None
    has_result: bool
    result: Any
    """The decoded result when ``has_result``, else null."""
    parent_run_id: str | None
    continued_from: str | None
    successor_run_id: str | None
    """The run that carries on from this one (continue-as-new or reset)."""
    origin: OriginView | None
    extensions: Annotated[
        dict[str, Any],
        Meta(
            description="Extra views of the run by name, from the server's describers. "
            "`graph` (built in) is present for a graph run only; a describer that failed "
            "gives `{error}` instead of its view.",
            extra_json_schema={
                "properties": {
                    "graph": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/GraphView"},
                            {"$ref": "#/components/schemas/ExtensionError"},
                        ]
                    }
                }
            },
        ),
    ]


# -- extensions ----------------------------------------------------------------------------


class ExtensionError(msgspec.Struct, kw_only=True):
    """What an extension shows when its describer raised: the page still loads."""

    error: str
    """The exception's type and message."""


class GraphNodeView(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    """``node``, ``subgraph``, ``start`` (``__start__``) or ``end`` (``__end__``)."""


class GraphEdgeView(msgspec.Struct, kw_only=True):
    source: str
    target: str
    conditional: bool
    """Chosen by a router at run time (drawn dashed)."""
    label: str | None
    """The router's key for this target when it differs from the target's name (``*``: a
    router without declared targets; ``goto``: a ``Command`` destination)."""
    join: bool
    """Part of a join: ``target`` waits for all the sources of its join edges."""


class GraphWaitView(msgspec.Struct, kw_only=True):
    """Something a suspended graph run waits for until a ``__graph_resume`` signal answers."""

    id: str
    """Stable id (``<step>:<kind>:<task id>``); send it as ``interrupt_id`` to answer only
    this one."""
    kind: str
    """``interrupt`` (an ``interrupt(value)`` call in the node), ``before`` or ``after``
    (``interrupt_before`` / ``interrupt_after``)."""
    node: str
    task: str
    value: Any
    """The node's question (the argument of ``interrupt()``); null for before/after."""


class GraphStateView(msgspec.Struct, kw_only=True):
    """One recorded state: after ``step`` super-steps, before the nodes in ``next``."""

    step: int
    source: str
    """Why it was recorded: ``input``, ``loop``, ``wait``, ``interrupt``, ``update``,
    ``fork`` or ``continue``."""
    state: dict[str, Any]
    next: list[str]
    waiting: list[GraphWaitView]
    event_id: int
    """The checkpoint marker's event id in this run's history."""
    timestamp: datetime


class GraphView(msgspec.Struct, kw_only=True):
    """A graph run read from its history alone (``engine.describe_graph_run``)."""

    graph: str
    """The graph's name (its workflow type)."""
    workflow_id: str | None
    status: str
    """``running``, ``waiting`` (suspended on an interrupt) or how the run closed."""
    step: int
    """Super-steps completed."""
    running: list[str]
    """Nodes whose tasks are in flight."""
    waiting: list[GraphWaitView]
    nodes: list[GraphNodeView]
    edges: list[GraphEdgeView]
    mermaid: str | None
    """A Mermaid flowchart with the running and waiting nodes in classes of those names."""
    ascii: str | None
    """A plain-text drawing with the running and waiting nodes marked."""
    states: list[GraphStateView]
    """Every state this run recorded, oldest first."""


class HistoryEvent(msgspec.Struct, kw_only=True):
    event_id: int
    type: str
    timestamp: datetime
    offset_seconds: float
    """Seconds since the run's first event."""
    summary: str
    """What the event means, in words (payloads decoded and cut short)."""
    attributes: dict[str, Any]
    """Every field of the event, payloads decoded in full."""


class HistoryPage(msgspec.Struct, kw_only=True):
    workflow_id: str
    run_id: str
    history_length: int
    events: list[HistoryEvent]
    next_after_event_id: int | None
    """Pass as ``after_event_id`` for the next page; null on the last page."""


class QueryResult(msgspec.Struct, kw_only=True):
    workflow_id: str
    run_id: str
    result: Any


class TimelineAttempt(msgspec.Struct, kw_only=True):
    number: int
    start: float
    end: float
    outcome: str
    detail: str
    retry_at: float | None


class TimelineStep(msgspec.Struct, kw_only=True):
    """An activity, a timer or a child run; offsets in seconds from the run's start."""

    kind: Literal["activity", "timer", "child"]
    seq: int
    label: str
    name: str
    call: str
    start: float
    end: float | None
    outcome: str
    attempts: list[TimelineAttempt]
    result: str
    due: float | None
    child_workflow_id: str | None = None
    child_run_id: str | None = None


class TimelineMarker(msgspec.Struct, kw_only=True):
    """A moment without duration: a signal, a cancel request, a failed workflow task."""

    kind: Literal["signal", "cancel_requested", "task_failed", "closed"]
    event_id: int
    offset: float
    label: str


class TimelineView(msgspec.Struct, kw_only=True):
    workflow_id: str
    run_id: str
    workflow_type: str
    status: RunStatus
    started_at: datetime
    span: float
    """Seconds the picture covers: to the close, or for an open run to now."""
    end: float | None
    call: str
    result: str
    failure: str
    steps: list[TimelineStep]
    markers: list[TimelineMarker]
