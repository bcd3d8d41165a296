"""Submitting: what `submit`/`submit_many` turn their arguments into, for `Supervisor` and `Client` alike.

Both store runs the same way, so one function makes the rows and checks the options; each
caller then resolves the job its own way (a supervisor refuses names it does not serve, a
client also accepts a bare name) and inserts the rows.

A run submitted by job name alone (a client that was not given the job) stores the input as
given and version `BY_NAME`: the serving supervisor fills in its job's version and unique key
when it loads the run, and the worker validates the input (an invalid one fails that run).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .durations import Duration, optional_duration, parse_duration
from .job import Job
from .run import NewRun
from .stores.base import BY_NAME


def new_runs(job: Job[Any, Any] | str, inputs: Iterable[Any], now: float, *, default_attempts: int | None,
             priority: int | None = None, timeout: Duration | None = None, delay: Duration | None = None,
             at: datetime | None = None, keys: Sequence[str] | None = None) -> list[NewRun]:
    """The rows to store for `inputs`, in order; raises before anything is stored.

    - `job`: a `Job` (each input is validated: pydantic.ValidationError) or a bare job name
      (each input stored as is: JSON text, or data serialized with `json.dumps`).
    - `now`: epoch seconds, the base of `delay`.
    - `default_attempts`: the attempts of the submitter's default retry, used for a `Job` with
      no retry of its own; None stores no limit, so the serving supervisor's policy decides when
      it loads the run (what a client does). A bare name always stores None.
    - `priority`: an int, higher first (default: the job's; 0 for a bare name).
    - `timeout`: a duration overriding the job's timeout for these runs.
    - `delay` / `at`: hold the runs for a duration / until a datetime (not both).
    - `keys`: one idempotency key per input (while a run with that key is in the store,
      submitting it again gives back that run).
    """
    run_timeout = optional_duration(timeout, what="timeout")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise TypeError(f"priority must be an int, got {priority!r}")
    scheduled = scheduled_at(now, delay, at)
    if isinstance(job, Job):
        prio = job.priority if priority is None else priority
        attempts = default_attempts
        if attempts is not None and job.retry is not None:
            attempts = job.retry.attempts
        validate, unique_key, version = job.validate_input, job.unique_key, job.version
        rows = [NewRun(job.name, text, prio, attempts, run_timeout, scheduled, version, None, unique_key(text))
                for text in map(validate, inputs)]
    else:
        prio = 0 if priority is None else priority
        rows = [NewRun(job, value if isinstance(value, str) else json.dumps(value), prio, None, run_timeout,
                       scheduled, BY_NAME) for value in inputs]
    if keys is not None:
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} inputs")
        for row, key in zip(rows, keys, strict=True):
            row.key = key
    return rows


def scheduled_at(now: float, delay: Duration | None, at: datetime | None) -> float:
    """When a submitted run may start (epoch seconds); 0 for now."""
    if delay is not None and at is not None:
        raise ValueError("give either delay or at, not both")
    if delay is not None:
        return now + parse_duration(delay, what="delay")
    if at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"at must be a datetime, got {at!r}")
        return at.timestamp()
    return 0.0
