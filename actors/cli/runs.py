"""`actors runs`, `show`, `retry`, `cancel`, `purge`: reading and operating on stored runs."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import click

from ..errors import RunNotFound
from ..run import Attempt, RunRecord, RunStatus
from . import output
from .common import app_option, config_option, json_option, open_client, parse_since, store_option
from .errors import CliError

STATUSES = click.Choice([s.value for s in RunStatus])


def run_row(record: RunRecord) -> dict[str, Any]:
    limit = "" if record.max_attempts is None else f"/{record.max_attempts}"
    return {"id": record.id, "job": record.job, "status": str(record.status), "attempts": f"{record.attempts}{limit}",
            "created_at": record.created_at, "finished_at": record.finished_at, "error_type": record.error_type,
            "message": record.message, "progress": record.progress, "key": record.key, "rerun_of": record.rerun_of}


def run_data(record: RunRecord) -> dict[str, Any]:
    """The whole record as JSON data: input and output parsed, attempts as a list."""
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "attempt_log"}
    data["status"] = str(record.status)
    for name in ("input", "output"):
        try:
            data[name] = None if data[name] is None else json.loads(data[name])
        except ValueError:
            pass
    data["attempts_log"] = [attempt_data(a) for a in record.attempt_log]
    data["waiting_for"], data["children"] = record.waiting_for, record.children
    return data


def attempt_data(attempt: Attempt) -> dict[str, Any]:
    data = {f.name: getattr(attempt, f.name) for f in dataclasses.fields(attempt)}
    data["outcome"] = None if attempt.outcome is None else str(attempt.outcome)
    return data


@click.command()
@click.option("--status", type=STATUSES, default=None, help="Only runs in this status.")
@click.option("--job", default=None, help="Only runs of this job.")
@click.option("--since", default=None, metavar="DURATION", help="Only runs created this long ago or later (1h, 30m, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="At most this many, newest first.")
@store_option
@config_option
@json_option
def runs(status: str | None, job: str | None, since: str | None, limit: int, store: str | None,
         config_path: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    client, _ = open_client(store, config_path=config_path)
    with client:
        records = client.runs(status=status, job=job, limit=limit, since=parse_since(since))
    now = time.time()
    rows = [run_row(r) for r in records]
    shown = [{**row, "created_at": output.age(row["created_at"], now), "finished_at": output.age(row["finished_at"], now),
              "progress": "" if row["progress"] is None else f"{row['progress']:.0%}"} for row in rows]
    output.table(rows, [("id", "ID"), ("job", "JOB"), ("status", "STATUS"), ("attempts", "ATTEMPTS"),
                        ("created_at", "CREATED"), ("finished_at", "FINISHED"), ("progress", "PROGRESS"),
                        ("error_type", "ERROR")], as_json=as_json, shown=shown, empty="no runs")


@click.command()
@click.argument("run_id", type=int)
@store_option
@config_option
@json_option
def show(run_id: int, store: str | None, config_path: str | None, as_json: bool) -> None:
    """One run with its attempts, tracebacks, steps, progress, metadata, input and output."""
    client, _ = open_client(store, config_path=config_path)
    with client:
        record = client.run(run_id)
    data = run_data(record)
    if as_json:
        output.record(data, as_json=True)
        return
    now = time.time()
    output.record({"run": record.summary(now), "job": record.job, "status": str(record.status),
                   "attempts": run_row(record)["attempts"], "version": str(record.version), "priority": str(record.priority),
                   "key": record.key, "rerun_of": None if record.rerun_of is None else str(record.rerun_of),
                   "tenant": record.tenant, "parent": None if record.parent_id is None else str(record.parent_id),
                   "waiting": record.waiting_for, "current step": record.current_step,
                   "children": ", ".join(str(i) for i in record.children) or None,
                   "created": output.age(record.created_at, now), "started": output.age(record.started_at, now),
                   "finished": output.age(record.finished_at, now),
                   "progress": None if record.progress is None else f"{record.progress:.0%} {record.progress_message or ''}".strip(),
                   "metadata": record.metadata, "input": data["input"], "output": data["output"],
                   "error": f"{record.error_type}: {record.message}" if record.error_type else None,
                   "steps": record.steps}, as_json=False)
    if record.attempt_log:
        rows = [attempt_data(a) for a in record.attempt_log]
        shown = [{**row, "started_at": output.age(row["started_at"], now),
                  "took": "" if a.finished_at is None else f"{a.finished_at - a.started_at:.3f}s",
                  "peak_rss": output.size(row["peak_rss"]),
                  "exit": row["exit_code"] if row["signal"] is None else f"signal {row['signal']}"}
                 for row, a in zip(rows, record.attempt_log, strict=True)]
        output.table(rows, [("number", "#"), ("outcome", "OUTCOME"), ("started_at", "STARTED"), ("took", "TOOK"),
                            ("error_type", "ERROR"), ("message", "MESSAGE"), ("worker_pid", "PID"), ("exit", "EXIT"),
                            ("peak_rss", "PEAK RSS")], as_json=False, shown=shown)
    tracebacks = [a for a in record.attempt_log if a.traceback]
    if tracebacks or record.traceback:
        last = tracebacks[-1].traceback if tracebacks else record.traceback
        output.console.print("traceback (latest attempt):", markup=False)
        output.console.print(last, markup=False, soft_wrap=True)


@click.command()
@click.argument("run_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Retry every failed run (that was not retried already).")
@click.option("--job", default=None, help="With --failed: only runs of this job.")
@store_option
@app_option
@config_option
@json_option
def retry(run_id: int | None, failed: bool, job: str | None, store: str | None, app_spec: str | None,
          config_path: str | None, as_json: bool) -> None:
    """Run again a run that failed, timed out or was cancelled (a new run; rerun_of names the old one)."""
    if (run_id is None) == (not failed):
        raise CliError("give a RUN_ID or --failed (not both)")
    if job is not None and not failed:
        raise CliError("--job goes with --failed")
    client, _ = open_client(store, app_spec, config_path)
    with client:
        if run_id is not None:
            targets = [run_id]
        else:
            everything = client.runs(limit=10**9)
            retried = {r.rerun_of for r in everything if r.rerun_of is not None}
            targets = sorted(r.id for r in everything if r.status is RunStatus.FAILED and r.id not in retried
                             and (job is None or r.job == job))
        made = []
        for target in targets:
            try:
                made.append((target, client.retry(target).id))
            except RunNotFound:
                raise CliError(f"no run {target} in store {client.store.path}: see `actors runs`") from None  # type: ignore[attr-defined]
    if as_json:
        output.line("", as_json=True, data={"retried": [{"run": old, "new_run": new} for old, new in made]})
    elif not made:
        output.line("no failed runs to retry")
    else:
        for old, new in made:
            output.line(f"run {old} -> new run {new} queued")


@click.command()
@click.argument("run_id", type=int)
@store_option
@config_option
@json_option
def cancel(run_id: int, store: str | None, config_path: str | None, as_json: bool) -> int:
    """Cancel a queued, delayed or retrying run."""
    client, _ = open_client(store, config_path=config_path)
    with client:
        record = client.run(run_id, attempts=False)
        if client.cancel(run_id):
            output.line(f"run {run_id} cancelled", as_json=as_json, data={"run": run_id, "cancelled": True})
            return 0
    if record.status is RunStatus.RUNNING:
        raise CliError(f"run {run_id} is running: only the supervisor serving it can stop it "
                       "(a cancel from this command reaches queued, delayed and retrying runs)", code=1)
    raise CliError(f"run {run_id} has already ended ({record.status}): nothing to cancel", code=1)


@click.command()
@click.option("--older-than", required=True, metavar="DURATION", help="Runs that ended this long ago (7d, 12h).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(["succeeded", "failed", "timed_out", "cancelled"]),
              help="Only runs that ended so (repeatable; default: every ended status).")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1), help="Runs deleted per transaction.")
@store_option
@config_option
@json_option
def purge(older_than: str, statuses: tuple[str, ...], batch: int, store: str | None, config_path: str | None,
          as_json: bool) -> None:
    """Delete ended runs (with their attempts and steps), in short transactions."""
    client, _ = open_client(store, config_path=config_path)
    with client:
        count = client.purge(older_than, list(statuses) or None, batch=batch)
    output.line(f"purged {count} run(s)", as_json=as_json, data={"purged": count})
