"""Logging: structlog, with the run's identity on every line.

The runtime logs through structlog loggers named ``perdura.*``. While a worker drives a run or
runs an activity attempt, the run's identity is bound in structlog's context variables, so
every line logged from there — by the runtime, by ``workflow.logger``, ``activity.logger``,
or any structlog logger in an activity — carries ``workflow_id``, ``run_id``,
``workflow_type`` and ``task_queue``, and in an activity also ``activity``, ``activity_id``
and ``attempt``.

``workflow.logger`` is silent while the code replays recorded history, so a recovered run
does not print its past again: a line is printed when the step that logs it runs for the
first time (a step whose outcome a crash kept from being recorded runs again, and so logs
again — exactly like its activities run again).

Nothing is configured on import: an application that configured structlog or stdlib logging
keeps its configuration. :func:`configure_logging` is the one-call set-up for the rest (the
CLI's worker uses it): structlog routed through stdlib ``logging`` (so ``logging.getLogger``
records of other libraries are rendered the same way, and stdlib handlers receive perdura's),
a console renderer (colours on a terminal) or JSON lines (``json=True``,
``PERDURA_LOG_FORMAT=json``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, Final

import structlog

from ._activity import current_activity
from ._instance import current_instance
from ._sandbox import unrestricted

__all__ = [
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "ActivityLogger",
    "WorkflowLogger",
    "configure_logging",
]

LOG_FORMAT_ENV: Final = "PERDURA_LOG_FORMAT"
LOG_LEVEL_ENV: Final = "PERDURA_LOG_LEVEL"
_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR, "critical": logging.CRITICAL}  # fmt: skip


def configure_logging(
    *,
    json: bool | None = None,
    level: str | int | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Set up structlog and stdlib logging for perdura and everything else in the process.

    ``json``: JSON lines (one object per line) instead of the console renderer; default
    ``$PERDURA_LOG_FORMAT == "json"``. ``level``: a name or a ``logging`` level; default
    ``$PERDURA_LOG_LEVEL`` or ``info``. ``stream``: where lines go (default stderr). Colours
    are used only when the console renderer writes to a terminal.

    Replaces the handlers of the root logger, as ``logging.basicConfig(force=True)`` does.
    """
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "json"
    numeric = _level(level if level is not None else os.environ.get(LOG_LEVEL_ENV, "info"))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.dict_tracebacks)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def _level(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return _LEVELS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}; got {value!r}") from None


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Levels:
    """The logging methods user code calls; subclasses decide where a line goes."""

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("exception", event, fields)


class WorkflowLogger(_Levels):
    """``workflow.logger``: a structlog logger bound to the current run, silent while the
    code replays history (a recovery does not print the past again)."""

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        instance = current_instance("workflow.logger")
        if instance.is_replaying:
            return
        # Rendering a line reads the clock and may write to files: runtime work.
        with unrestricted():
            logger = structlog.get_logger("perdura.workflow").bind(
                workflow_id=instance.workflow_id,
                run_id=instance.run_id,
                workflow_type=instance.workflow_type,
                task_queue=instance.started.task_queue,
            )
            getattr(logger, level)(event, **fields)


class ActivityLogger(_Levels):
    """``activity.logger``: a structlog logger bound to the running attempt (workflow and run
    ids, workflow type, task queue, activity type and id, attempt number)."""

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        info = current_activity("activity.logger").info
        logger = structlog.get_logger("perdura.activity").bind(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            task_queue=info.task_queue,
            activity=info.activity_type,
            activity_id=info.activity_id,
            attempt=info.attempt,
        )
        getattr(logger, level)(event, **fields)
