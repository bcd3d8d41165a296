"""Submitting: what `submit`/`submit_many` turn their arguments into, for `Supervisor` and `Client` alike.

Both store runs the same way, so one function makes the rows and checks the options; each
caller then resolves the job its own way (a supervisor refuses names it does not serve, a
client also accepts a bare name) and inserts the rows.

A run submitted by job name alone (a client that was not given the job) stores the input as
given and version `BY_NAME`: the serving supervisor fills in its job's version and unique key
when it loads the run, and the worker validates the input (an invalid one fails that run).

`submit` takes its input positionally or, when none is given, as keyword fields (`submitted_input`
holds the rule): the options keep their names, and an option given by a name that is also a
field of the job's input is refused rather than guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from .durations import Duration, optional_duration, parse_duration
from .job import Job, type_name
from .run import NewRun, RunStatus
from .stores.base import BY_NAME


class _NoInput:
    def __repr__(self) -> str:
        return "NO_INPUT"


NO_INPUT: Any = _NoInput()  # the default of submit's input: the input comes from keyword fields


def submitted_input(job: Job[Any, Any] | None, input: Any, fields: dict[str, Any], options: dict[str, Any]) -> Any:
    """The input of one `submit(job, input, **options, **fields)` call (`job`: None for a bare
    job name, whose fields are stored as given).

    Given positionally, `input` is the input, and keyword fields beside it are a TypeError. Else
    the fields are the input, as a dict (none: `{}`, every field at its default). Where a field
    of the input type has an option's name (`priority`, `timeout`, `delay`, `at`, `key`...), that
    keyword is always the option: giving it while submitting by keywords is a TypeError naming
    it, so a field is never taken for an option silently.
    """
    if input is not NO_INPUT:
        if fields:
            raise TypeError(f"submit() takes the input positionally or as keyword fields, not both: got an "
                            f"input and {', '.join(map(repr, fields))}")
        return input
    if job is None:
        return fields
    known = job.input_fields
    if known is None:
        raise TypeError(f"job {job.name!r} takes {type_name(job.input_type)} as input, which has no fields: pass "
                        "the input positionally, submit(job, value)")
    clash = [name for name, value in options.items() if value is not None and name in known]
    if clash:
        raise TypeError(f"submit(): {clash[0]!r} is an option of submit() and also a field of the input of job "
                        f"{job.name!r}; submitting by keywords it is taken as the option, so pass the input "
                        f"positionally instead: submit(job, {{{clash[0]!r}: ...}}, {clash[0]}=...)")
    return fields


def by_name_json(job: str, value: Any) -> str:
    """An input submitted by the job's name alone (a `Client` without the job's code), as the
    JSON the serving supervisor validates: a pydantic model's fields, else the value as JSON
    data (a str is a JSON string, not JSON text); TypeError naming the job for anything else,
    NaN and infinities included."""
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the input of a {job!r} run (submitted by name) cannot be stored as JSON: {exc}") from None


def new_runs(job: Job[Any, Any] | str, inputs: Iterable[Any], now: float, *, default_attempts: int | None,
             priority: int | None = None, timeout: Duration | None = None, delay: Duration | None = None,
             at: datetime | None = None, keys: Sequence[str] | None = None,
             rerun: str | None = None, metadata: dict[str, Any] | None = None,
             tenant: str | None = None) -> list[NewRun]:
    """The rows to store for `inputs`, in order; raises before anything is stored.

    - `job`: a `Job` (each input is validated: pydantic.ValidationError) or a bare job name
      (each input stored as JSON data, unvalidated: see `by_name_json`).
    - `now`: epoch seconds, the base of `delay`.
    - `default_attempts`: the attempts of the submitter's default retry, used for a `Job` with
      no retry of its own; None stores no limit, so the serving supervisor's policy decides when
      it loads the run (what a client does). A bare name always stores None.
    - `priority`: an int, higher first (default: the job's; 0 for a bare name).
    - `timeout`: a duration overriding the job's timeout for these runs.
    - `delay` / `at`: hold the runs for a duration / until a datetime (not both).
    - `keys`: one idempotency key per input (while a run with that key is in the store,
      submitting it again gives back that run).
    - `rerun`: which runs under those keys are run again, as new runs that take the key over
      (see `RERUN`); needs `keys` (ValueError without them).
    - `metadata`: a dict stored as the runs' JSON metadata (TypeError for anything else, or one
      that is not JSON); `ctx.metadata` merges into it later.
    - `tenant`: a non-empty str stored with the runs (ValueError otherwise): `runs(tenant=...)`
      filters by it and `Limit(n, key="tenant")` limits by it.
    - A job's `priority` / `timeout` functions are called per input (unless given here); a
      `debounce` job needs `keys` and takes neither `delay`, `at` nor `rerun` (ValueError).
    """
    statuses = rerun_statuses(rerun)
    metadata_json = metadata_text(metadata)
    check_tenant(tenant)
    if statuses is not None and keys is None:
        raise ValueError(f"rerun={rerun!r} reruns the run under an idempotency key: give key= (submit) "
                         "or keys= (submit_many)")
    run_timeout = optional_duration(timeout, what="timeout")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise TypeError(f"priority must be an int, got {priority!r}")
    scheduled = scheduled_at(now, delay, at)
    debounce = job.debounce if isinstance(job, Job) else None
    if debounce is not None:
        name = job.name if isinstance(job, Job) else job
        if keys is None:
            raise ValueError(f"job {name!r} is debounced: give key= (submit) or keys= (submit_many), the key "
                             "whose burst of submits becomes one run")
        if delay is not None or at is not None or rerun is not None:
            raise ValueError(f"job {name!r} is debounced: its runs start {debounce} s after the last submit, "
                             "so delay=, at= and rerun= do not apply")
        scheduled = now + debounce
    if isinstance(job, Job):
        attempts = default_attempts
        if attempts is not None and job.retry is not None:
            attempts = job.retry.attempts
        validate, unique_key, version = job.validate_input, job.unique_key, job.version
        if job.priority_fn is None and job.timeout_fn is None:  # the common case: no call per input
            prio = job.priority if priority is None else priority
            run_timeout = job.timeout if run_timeout is None else run_timeout  # stored: what record.timeout shows
            rows = [NewRun(job.name, text, prio, attempts, run_timeout, scheduled, version, None, unique_key(text))
                    for text in map(validate, inputs)]
        else:
            prio_for, timeout_for = job.priority_for, job.timeout_for
            rows = [NewRun(job.name, text, prio_for(text) if priority is None else priority, attempts,
                           timeout_for(text) if run_timeout is None else run_timeout, scheduled, version, None,
                           unique_key(text)) for text in map(validate, inputs)]
    else:
        prio = 0 if priority is None else priority
        rows = [NewRun(job, by_name_json(job, value), prio, None, run_timeout, scheduled, BY_NAME)
                for value in inputs]
    if keys is not None:
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} inputs")
        for row, key in zip(rows, keys, strict=True):
            row.key, row.rerun = key, statuses
    if metadata_json is not None or tenant is not None or debounce is not None:
        for row in rows:
            row.metadata, row.tenant, row.debounce = metadata_json, tenant, debounce is not None
    return rows


def metadata_text(metadata: Any) -> str | None:
    """`metadata=` of a submit as JSON object text (None stays None); TypeError naming it for
    anything but a dict that JSON can hold (str keys, finite numbers, JSON values)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict (a JSON object), got {type(metadata).__name__}: {metadata!r}")
    if not all(isinstance(name, str) for name in metadata):
        raise TypeError(f"metadata keys must be str (a JSON object's names), got {list(metadata)!r}")
    try:
        return json.dumps(metadata, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata is not JSON-serializable ({exc}): {metadata!r}") from exc


def check_tenant(tenant: Any) -> None:
    """`tenant=` of a submit: None, or a non-empty str (ValueError naming it otherwise)."""
    if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
        raise ValueError(f"invalid tenant {tenant!r}: expected a non-empty str")


# What `rerun=` accepts: the ended statuses in which the run under a key is replaced by a new run.
# A live run (queued, running, retrying) is always given back, and so is a succeeded one.
RERUN: dict[str, frozenset[RunStatus] | None] = {
    "never": None,  # the default: a key names its run for good
    "failed": frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}),  # every end but success
}


def rerun_statuses(rerun: str | None) -> frozenset[RunStatus] | None:
    """The statuses `rerun` covers (None: never), or ValueError naming the values allowed."""
    if rerun is None:
        return None
    if not isinstance(rerun, str) or rerun not in RERUN:
        raise ValueError(f"invalid rerun {rerun!r}: expected one of {', '.join(map(repr, RERUN))} (\"failed\" reruns a "
                         "run that ended failed, timed_out or cancelled)")
    return RERUN[rerun]


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
