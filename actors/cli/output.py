"""One helper for everything a command prints: a table or a record for a person (rich), or
JSON for a script (`--json`). Times print as ages ("3s ago"); in JSON they stay epoch seconds."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ..run import _span

# Piped output is not cut to 80 columns (rich's default off a terminal): wide enough for a table's lines.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, width=_WIDTH)


def age(epoch: float | None, now: float | None = None) -> str:
    """"3s ago" / "in 5m" / "" for None."""
    if epoch is None:
        return ""
    now = time.time() if now is None else now
    return f"{_span(now - epoch)} ago" if epoch <= now else f"in {_span(epoch - now)}"


def size(count: int | None) -> str:
    if count is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count = count / 1024  # type: ignore[assignment]
    return str(count)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, as_json: bool,
          title: str | None = None, empty: str = "nothing to show", shown: Sequence[dict[str, Any]] | None = None) -> None:
    """`rows` as a table of `columns` ((key, header) pairs), or as a JSON list of the rows.
    `shown`: the rows as a person reads them (ages, sizes), same order; default `rows`."""
    if as_json:
        print(json.dumps(list(rows), default=str))
        return
    if not rows:
        console.print(empty)
        return
    view = new_table(title)
    for _, header in columns:
        view.add_column(header, overflow="fold")
    for row in shown or rows:
        view.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in columns))
    console.print(view)


def new_table(title: str | None = None, **options: Any) -> Table:
    """A table in the one style every command uses."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, header_style="bold",
                 pad_edge=False, **options)


def record(data: dict[str, Any], *, as_json: bool, title: str | None = None) -> None:
    """One object: `key: value` lines for a person, a JSON object for a script."""
    if as_json:
        print(json.dumps(data, default=str))
        return
    if title:
        console.print(f"[bold]{title}[/bold]")
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if value is None or value == {} or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        console.print(f"{key.ljust(width)}  {text}", markup=False)


def line(text: str, *, as_json: bool = False, data: dict[str, Any] | None = None) -> None:
    """A one-line result ("run 12 queued"), or its data as JSON."""
    if as_json:
        print(json.dumps(data or {"message": text}, default=str))
    else:
        console.print(text, markup=False)
