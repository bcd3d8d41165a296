"""How values read on a page: times, spans, sizes, JSON, and the small bar charts (SVG)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any, NamedTuple


def when(ts: float | None) -> str:
    """An epoch time as UTC, to the second: `2026-12-02 06:30:22Z`."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float | None) -> str:
    """A duration as a person reads it: `850ms`, `4.2s`, `3m 10s`, `2h 5m`, `3d 4h`."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    delta = now - ts
    return f"in {span(-delta)}" if delta < 0 else f"{span(delta)} ago"


def size(n: int | None) -> str:
    """Bytes as `812 B`, `3.1 MB`, `1.2 GB`."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def pretty(text: str | None, complete: bool = True) -> str:
    """Stored JSON indented for reading; text that was cut (or is not JSON) as it is."""
    if text is None:
        return ""
    if complete:
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
        except ValueError:
            pass
    return text


def number(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


class Bar(NamedTuple):
    x: float
    y: float
    height: float
    label: str


def bars(minutes: dict[int, Counter[str]], statuses: tuple[str, ...], now: float, width: float = 600,
         height: float = 60, count: int = 60) -> tuple[list[Bar], int]:
    """One bar per minute of the last `count` minutes (oldest left): the runs that ended then in
    `statuses`; the bars and the tallest bar's count."""
    last = int(now // 60)
    values = [sum(minutes.get(m, Counter()).get(s, 0) for s in statuses) for m in range(last - count + 1, last + 1)]
    top = max(values) if values else 0
    step = width / count
    result = []
    for i, value in enumerate(values):
        h = 0.0 if top == 0 else max(1.0, value / top * height) if value else 0.0
        minute = last - count + 1 + i
        label = f"{when(minute * 60)[11:16]}Z: {value:,}"
        result.append(Bar(round(i * step + 1, 1), round(height - h, 1), round(h, 1), label))
    return result, top


def filters() -> dict[str, Any]:
    return {"when": when, "span": span, "size": size, "pretty": pretty, "number": number}
