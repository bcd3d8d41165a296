"""`actors stats` and `actors watch`: the store's numbers, once or live.

Both read the store only (never the live workers): what they show of the serving supervisor
(workers, their run, RSS, restarts, kills) is what it writes there about once a second, so they
answer at once, also when the supervisor is dead or busy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import click
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.text import Text

from ..client import Client
from ..run import RunStatus
from . import output
from .common import config_option, json_option, open_client, serving_line, store_option

HOUR = 3600.0


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def collect(client: Client, now: float) -> dict[str, Any]:
    store = client.store
    counts = store.counts()
    finished = store.finished_runs(now - HOUR)
    per_minute = [0] * 60
    durations: dict[str, list[float]] = defaultdict(list)
    for job, _, started, ended in finished:
        per_minute[min(59, int((now - ended) // 60))] += 1
        if started is not None:
            durations[job].append(max(ended - started, 0.0))
    info = store.supervisor_info()
    jobs = {}
    for job in sorted(set(counts) | set(durations)):
        by_status = counts.get(job, {})
        jobs[job] = {"counts": by_status, "queued": by_status.get("queued", 0) + by_status.get("retrying", 0),
                     "p50_seconds": percentile(durations.get(job, []), 0.5),
                     "p99_seconds": percentile(durations.get(job, []), 0.99)}
    return {
        "serving": bool(client.serving()), "status": serving_line(client, now),
        "jobs": jobs, "queue_depth": sum(j["queued"] for j in jobs.values()),
        "finished_per_minute": list(reversed(per_minute)),  # oldest minute first, the current one last
        "finished_last_hour": len(finished),
        "supervisor": None if info is None else info._asdict(),
        "workers": [w._asdict() for w in store.workers()],
    }


@click.command()
@store_option
@config_option
@json_option
def stats(store: str | None, config_path: str | None, as_json: bool) -> None:
    """Counts per job and status, queue depth, runs finished per minute (last hour), p50/p99 run
    time per job, worker restarts and kills by reason."""
    client, _ = open_client(store, config_path=config_path)
    with client:
        data = collect(client, time.time())
    if as_json:
        output.record(data, as_json=True)
        return
    output.line(data["status"])
    statuses = [s.value for s in RunStatus]
    rows = [{"job": job, **{s: j["counts"].get(s, 0) for s in statuses},
             "p50": "" if j["p50_seconds"] is None else f"{j['p50_seconds']:.3f}s",
             "p99": "" if j["p99_seconds"] is None else f"{j['p99_seconds']:.3f}s"} for job, j in data["jobs"].items()]
    output.table(rows, [("job", "JOB"), *((s, s.upper()) for s in statuses), ("p50", "P50"), ("p99", "P99")],
                 as_json=False, empty="no runs")
    minutes = data["finished_per_minute"]
    output.line(f"queue depth: {data['queue_depth']}; finished in the last hour: {data['finished_last_hour']} "
                f"(last minute: {minutes[-1]}, busiest minute: {max(minutes)}); per minute: {spark(minutes)}")
    info = data["supervisor"]
    if info is not None:
        kills = ", ".join(f"{reason} {count}" for reason, count in sorted(info["kills"].items()))
        output.line(f"worker restarts: {info['restarts']}; kills: {kills}")


def spark(values: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(values) or 1
    return "".join(bars[min(8, (v * 8 + top - 1) // top)] for v in values)


def screen(client: Client, now: float) -> Group:
    """What `watch` shows: status, workers, progress of running runs, queue depth, failures."""
    store = client.store
    parts: list[Any] = [Text(serving_line(client, now), style="bold")]
    workers = output.new_table("workers")
    for header in ("SLOT", "PID", "RUN", "JOB", "AGE", "RSS", "RESTARTS"):
        workers.add_column(header)
    for w in store.workers():
        workers.add_row(str(w.slot), str(w.pid), "" if w.run_id is None else str(w.run_id), w.job or "idle",
                        "" if w.busy_since is None else f"{now - w.busy_since:.1f}s", output.size(w.rss), str(w.restarts))
    parts.append(workers)
    running = [r for r in store.runs(status="running", limit=20) if r.progress is not None]
    if running:
        bars = output.new_table("progress", show_header=False)
        bars.add_column()
        bars.add_column(width=30)
        bars.add_column()
        for r in running:
            bars.add_row(f"run {r.id} {r.job}", ProgressBar(total=1.0, completed=r.progress or 0.0, width=30),
                         f"{r.progress:.0%} {r.progress_message or ''}")
        parts.append(bars)
    counts = store.counts()
    queued = sum(c.get("queued", 0) for c in counts.values())
    retrying = sum(c.get("retrying", 0) for c in counts.values())
    waiting = sum(c.get("waiting", 0) for c in counts.values())
    parts.append(Text(f"queue depth: {queued} queued, {retrying} waiting to retry"
                      + (f"; {waiting} waiting (sleeping, or on children or an event)" if waiting else "")))
    failures = output.new_table("latest failures")
    for header in ("RUN", "JOB", "STATUS", "ERROR", "WHEN"):
        failures.add_column(header)
    ended = sorted(store.runs(status="failed", limit=5) + store.runs(status="timed_out", limit=5),
                   key=lambda r: r.finished_at or 0, reverse=True)[:5]
    for r in ended:
        failures.add_row(str(r.id), r.job, str(r.status), f"{r.error_type}: {(r.message or '')[:60]}",
                         output.age(r.finished_at, now))
    parts.append(failures if ended else Text("latest failures: none"))
    return Group(*parts)


@click.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1), help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the view once and exit.")
@store_option
@config_option
def watch(interval: float, once: bool, store: str | None, config_path: str | None) -> None:
    """A live view of the store: workers and their runs, progress bars, queue depth, latest failures."""
    from rich.live import Live

    client, _ = open_client(store, config_path=config_path)
    with client:
        if once:
            output.console.print(screen(client, time.time()))
            return
        with Live(screen(client, time.time()), console=output.console, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(screen(client, time.time()), refresh=True)
