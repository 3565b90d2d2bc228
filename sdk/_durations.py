from __future__ import annotations

from datetime import timedelta

__all__ = ["seconds"]


def seconds(value: float | timedelta | None, field: str) -> float | None:
    """Durations are accepted as seconds or ``timedelta``; stored as seconds."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{field} must be seconds or a timedelta, got {value!r}")
    if result < 0:
        raise ValueError(f"{field} must not be negative, got {value!r}")
    return result
