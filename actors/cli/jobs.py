"""`actors jobs` and `actors config`: what an app declares, and what is in effect."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click

from .. import config as configuration
from . import output
from .common import app_option, config_option, json_option, load_app, settings, store_option
from .errors import CliError


def next_fire(expression: str | None, now: float) -> float | None:
    if not expression:
        return None
    from croniter import croniter

    return float(croniter(expression, now).get_next(float))


@click.command()
@app_option
@store_option
@config_option
@json_option
def jobs(app_spec: str | None, store: str | None, config_path: str | None, as_json: bool) -> None:
    """Each job of APP with its options, versions, cron schedule and stored runs per version."""
    if app_spec is None:
        raise CliError("jobs needs --app APP")
    app = load_app(app_spec)
    effective, file, path = settings({"store": store}, app, config_path)
    declared = configuration.apply_jobs(app.jobs, file, path)
    counts: dict[str, dict[int, int]] = {}
    from ..client import Client
    from ..errors import StoreError

    try:
        with Client(effective["store"].value) as client:
            counts = client.store.version_counts()
    except StoreError:
        counts = {}  # no store yet: no runs
    now = time.time()
    rows: list[dict[str, Any]] = []
    for found in declared:
        fire = next_fire(found.cron, now)
        rows.append({
            "name": found.name, "timeout": found.timeout, "retry": found.retry.attempts if found.retry else None,
            "priority": found.priority, "concurrency": found.concurrency, "rate": found.rate,
            "unique": bool(found.unique), "version": found.version, "min_version": found.min_version,
            "cron": found.cron, "next_fire": fire,
            "next_fire_utc": None if fire is None else datetime.fromtimestamp(fire, UTC).isoformat(),
            "runs_per_version": {str(v): n for v, n in sorted(counts.get(found.name, {}).items())},
        })
    shown = [{**row, "timeout": "" if row["timeout"] is None else f"{row['timeout']:g}s",
              "version": f"{row['version']}" + (f" (min {row['min_version']})" if row["min_version"] else ""),
              "next_fire": "" if row["next_fire"] is None else f"{row['next_fire_utc'][:19]}Z ({output.age(row['next_fire'], now)})",
              "runs_per_version": " ".join(f"v{v}:{n}" for v, n in row["runs_per_version"].items()),
              "unique": "yes" if row["unique"] else ""} for row in rows]
    output.table(rows, [("name", "JOB"), ("timeout", "TIMEOUT"), ("retry", "ATTEMPTS"), ("priority", "PRIORITY"),
                        ("concurrency", "CONCURRENCY"), ("rate", "RATE"), ("unique", "UNIQUE"), ("version", "VERSION"),
                        ("cron", "CRON"), ("next_fire", "NEXT FIRE"), ("runs_per_version", "RUNS PER VERSION")],
                 as_json=as_json, shown=shown, empty="no jobs")


@click.command("config")
@app_option
@store_option
@config_option
@json_option
def show_config(app_spec: str | None, store: str | None, config_path: str | None, as_json: bool) -> None:
    """The effective configuration and where each value came from (flag > env > file > code > default)."""
    app = load_app(app_spec) if app_spec else None
    effective, file, path = settings({"store": store}, app, config_path)
    rows = [{"key": key, "value": setting.value, "source": setting.source} for key, setting in effective.items()]
    if app is not None:
        configuration.apply_jobs(app.jobs, file, path)  # a job name the app lacks is an error here too
        for found in app.jobs:
            for key, setting in configuration.job_settings(found, file, path).items():
                rows.append({"key": f"jobs.{found.name}.{key}", "value": setting.value, "source": setting.source})
    if as_json:
        output.record({"file": path, "settings": rows}, as_json=True)
        return
    output.line(f"config file: {path or 'none'}")
    output.table(rows, [("key", "KEY"), ("value", "VALUE"), ("source", "SOURCE")], as_json=False)
