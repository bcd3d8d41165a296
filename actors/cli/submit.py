"""`actors submit` and `actors run-now`: storing runs from the command line."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..errors import NotServing, RunCancelled, RunFailed, RunTimedOut
from ..handle import Handle
from . import output
from .common import app_option, config_option, json_option, open_client, store_option
from .errors import CliError


def parse_json(text: str, where: str = "input") -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"invalid JSON {where}: {exc}") from None


def wait(handle: Handle[Any], timeout: float | None, as_json: bool) -> int:
    """Print the run's result (exit 0) or its error (1 failed, 2 timed out or cancelled)."""
    try:
        result = handle.result(timeout=timeout)
    except RunFailed as exc:
        click.echo(f"run {handle.id} failed: {str(exc).splitlines()[0]}", err=True)
        return 1
    except (RunTimedOut, RunCancelled) as exc:
        click.echo(f"run {handle.id} {'timed out' if isinstance(exc, RunTimedOut) else 'was cancelled'}: "
                   f"{str(exc).splitlines()[0]}", err=True)
        return 2
    except NotServing as exc:
        raise CliError(f"run {handle.id} is stored, but {exc}") from None
    except TimeoutError:
        raise CliError(f"run {handle.id} did not end within {timeout} s (it stays queued or running)", code=2) from None
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    print(json.dumps(data, default=str) if as_json or not isinstance(data, str) else data)
    return 0


@click.command()
@click.argument("job")
@click.argument("input", required=False)
@click.option("--file", "-f", "inputs_file", type=click.Path(dir_okay=False), default=None,
              help="A JSONL file: one input per line, all stored in one transaction.")
@app_option
@click.option("--priority", type=int, default=None, help="Higher runs first (default: the job's).")
@click.option("--delay", default=None, metavar="DURATION", help="Hold the run this long (30s, 5m).")
@click.option("--at", "at_text", default=None, metavar="ISO-TIME", help="Hold the run until then (2026-06-01T12:00:00+00:00).")
@click.option("--key", default=None, help="An idempotency key: submitting it again gives back its run.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the result; exit 0 / 1 / 2 for succeeded / failed / timed out or cancelled.")
@click.option("--timeout", "wait_timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@store_option
@config_option
@json_option
def submit(job: str, input: str | None, inputs_file: str | None, app_spec: str | None, priority: int | None,
           delay: str | None, at_text: str | None, key: str | None, wait_: bool, wait_timeout: float | None,
           store: str | None, config_path: str | None, as_json: bool) -> int:
    """Store a run of JOB with INPUT (JSON; default {}). With --app, the input is validated by the
    job's model first; without, it is stored as given, by job name."""
    if input is not None and inputs_file is not None:
        raise CliError("give INPUT or --file, not both")
    at = None
    if at_text is not None:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise CliError(f"invalid --at {at_text!r}: expected an ISO time such as 2026-06-01T12:00:00+00:00") from None
    if inputs_file is not None:
        if key is not None or wait_:
            raise CliError("--key and --wait go with one INPUT, not --file")
        try:
            with open(inputs_file, encoding="utf-8") as file:
                lines = [(n, text) for n, text in enumerate(file, 1) if text.strip()]
        except OSError as exc:
            raise CliError(f"cannot read {inputs_file}: {exc.strerror}") from None
        inputs = [parse_json(text, f"on line {n} of {inputs_file}") for n, text in lines]
    else:
        inputs = [parse_json(input if input is not None else "{}")]
    client, app = open_client(store, app_spec, config_path)
    with client:
        target: Any = job
        if app is not None:
            if job not in client.jobs:
                raise CliError(f"job {job!r} is not in APP {app.spec} (jobs: {', '.join(sorted(client.jobs))})")
            target = client.jobs[job]
        handles = client.submit_many(target, inputs, priority=priority, delay=delay, at=at,
                                     keys=None if key is None else [key])
        if inputs_file is not None:
            output.line(f"{len(handles)} run(s) queued: {handles[0].id}..{handles[-1].id}" if handles else "0 runs queued",
                        as_json=as_json, data={"runs": [h.id for h in handles]})
            return 0
        handle = handles[0]
        if not wait_:
            output.line(f"run {handle.id} queued", as_json=as_json, data={"run": handle.id})
            return 0
        click.echo(f"run {handle.id} queued; waiting", err=True)
        return wait(handle, wait_timeout, as_json)


@click.command("run-now")
@click.argument("job")
@app_option
@store_option
@config_option
@json_option
def run_now(job: str, app_spec: str | None, store: str | None, config_path: str | None, as_json: bool) -> None:
    """Trigger a cron job now, outside its schedule (its run's key says run-now:<time>)."""
    if app_spec is None:
        raise CliError("run-now needs --app APP (to find the job)")
    client, app = open_client(store, app_spec, config_path)
    with client:
        found = client.jobs.get(job)
        if found is None:
            raise CliError(f"job {job!r} is not in APP {app_spec} (jobs: {', '.join(sorted(client.jobs))})")
        if not found.cron:
            raise CliError(f"job {job!r} has no cron schedule: use `actors submit {job} --app {app_spec}`")
        handle = client.run_now(found)
    output.line(f"run {handle.id} of {job} queued now (outside its schedule {found.cron})", as_json=as_json,
                data={"run": handle.id, "job": job, "key": "run-now"})
