"""Parsing of durations ("250ms", "30s", "5m", "2h", seconds, timedelta), rates ("10/s") and sizes ("2GB")."""

from __future__ import annotations

import re
from datetime import timedelta

Duration = str | int | float | timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:/|\s+per\s+)\s*(\d*(?:\.\d*)?)\s*([a-z]+)\s*$")
# the units a rate's period may be written in, also as words: "2 per second", "100 per 10 minutes"
_RATE_UNITS = {**_UNITS, "sec": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
               "hour": 3600.0, "hours": 3600.0, "day": 86400.0, "days": 86400.0}


def parse_duration(value: Duration, *, what: str = "duration") -> float:
    """Seconds as a float from "250ms" / "30s" / "5m" / "2h" / "1d", a number of seconds, or a timedelta.

    A malformed or negative value raises ValueError naming it.

    Args:
        value: "250ms", "30s", "5m", "2h", "1d" (a bare number string is seconds, "1.5" or
            "1.5h" work too), an int or float of seconds, or a `datetime.timedelta`.
        what: how the error message names the value (default "duration"), e.g. "timeout".

    Returns:
        The duration in seconds, finite and non-negative.

    Raises:
        ValueError: a malformed, negative, infinite or NaN value (or a bool).
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: expected e.g. '250ms', '30s', '5m', '2h' or seconds")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"invalid {what} {value!r}: expected e.g. '250ms', '30s', '5m', '2h' or seconds")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"invalid {what} {value!r}: must be a finite, non-negative duration")
    return seconds


def optional_duration(value: Duration | None, *, what: str = "duration") -> float | None:
    """parse_duration, letting None through (for options that may be unset)."""
    return None if value is None else parse_duration(value, what=what)


def parse_rate(value: str) -> tuple[float, float]:
    """(count, period in seconds) from "10/s", "100/m", "5/10s", or in words "2 per second",
    "100 per minute", "5 per 10 seconds"; ValueError naming a malformed one."""
    match = _RATE.match(value.lower()) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0 or match.group(3) not in _RATE_UNITS:
        raise ValueError(f"invalid rate {value!r}: expected e.g. '10/s', '100/m', '5/10s' or '2 per second'")
    period = float(match.group(2) or 1) * _RATE_UNITS[match.group(3)]
    if period <= 0:
        raise ValueError(f"invalid rate {value!r}: the period must be positive")
    return float(match.group(1)), period


_SIZES = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(value: int | str) -> int:
    """Bytes from an int or "512MB" / "2GB" / "1GiB"; ValueError naming a malformed one."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if match and match.group(2).lower() in _SIZES and float(match.group(1)) > 0:
        return int(float(match.group(1)) * _SIZES[match.group(2).lower()])
    raise ValueError(f"invalid size {value!r}: expected bytes or e.g. '512MB', '2GB'")
