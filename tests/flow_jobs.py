"""Jobs of the flow-control and submit-option tests (test_flow_control, test_submit_metadata_and_tenant).

Workers import jobs by reference, so they live at the top level of this importable module. Each
reports what it did by appending one line to a file in the directory its input names (`dir`):
the test cannot see inside worker processes otherwise. A line is written with one `write` of a
short string in append mode, so lines of concurrent workers never interleave.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from actors import Context, Limit, job


class Item(BaseModel):
    dir: str
    group: str = ""
    n: int = 0
    sleep: float = 0.0


def _span(item: Item, name: str) -> None:
    """Run for `item.sleep` seconds; then append "group n start end" to `name` in `item.dir`."""
    start = time.time()
    if item.sleep:
        time.sleep(item.sleep)
    with open(os.path.join(item.dir, name), "a") as f:
        f.write(f"{item.group or '-'} {item.n} {start!r} {time.time()!r}\n")


def read_spans(path: str) -> list[tuple[str, int, float, float]]:
    """The lines `_span` wrote: (group, n, start, end)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(g, int(n), float(s), float(e)) for g, n, s, e in (line.split() for line in f if line.strip())]


@job(concurrency=Limit(1, key=lambda item: item.group))
def one_per_group(item: Item) -> int:
    _span(item, "groups.txt")
    return item.n


@job(concurrency=Limit(2, key="tenant"))
def two_per_tenant(item: Item) -> int:
    _span(item, "tenants.txt")
    return item.n


def _bad_key(item: Item) -> str:
    if item.n == 13:
        raise RuntimeError("unlucky input")
    return item.group


@job(concurrency=Limit(1, key=_bad_key))
def keyed_by_a_fragile_function(item: Item) -> int:
    return item.n


@job(throttle="100 per second")
def throttled(item: Item) -> int:
    return item.n


@job(debounce="1s")
def debounced(item: Item) -> int:
    _span(item, "debounced.txt")
    return item.n


@job(timeout=lambda item: item.sleep / 10 if item.sleep else None, priority=lambda item: item.n * 10)
def computed_options(item: Item) -> int:
    _span(item, "computed.txt")
    return item.n


@job
def tag_metadata(item: Item, ctx: Context) -> int:
    ctx.metadata(seen=item.n)
    return item.n
