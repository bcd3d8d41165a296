"""`Client`: another process's door to a store that a supervisor serves.

A client stores runs and reads them back; it never runs anything. It is a `RunOwner`, so its
handles read the store through it and `result()` polls the store (1 ms growing to 50 ms): no
supervisor in this process can wake them. `Handle` lives in `actors.handle` and is re-exported
here for code that imported it from this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar, overload

from .durations import Duration, parse_duration
from .errors import JobNotFound, StoreError
from .handle import FIRST_PAUSE, MAX_PAUSE, Handle, read_run
from .job import Job
from .run import TERMINAL, NewRun, RunRecord, RunStatus
from .stores import Store, is_postgres_url, open_store
from .stores.base import BY_NAME
from .submission import NO_INPUT, new_runs, submitted_input

__all__ = ["Client", "Handle"]

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})

In = TypeVar("In")
Out = TypeVar("Out")


class Client:
    """Submit into and read from a store that a supervisor (maybe in another process) serves.

    - `store`: the path of the SQLite file a supervisor serves, a PostgreSQL URL
      ("postgresql://...", see `actors.stores.postgres`), or a `Store`. A path is made
      absolute here, so a later `os.chdir` changes nothing. A path where no file exists is
      refused with a StoreError (a typo, or a relative path from another directory, would
      otherwise make a new empty store that no supervisor serves): a supervisor creates its
      store when it first opens it. `create=True` creates it here instead (0600, like a
      supervisor's), for a client that stores runs before any supervisor has started.
    - `jobs`: the `Job`s this process can import (default none). A job known here, passed to
      `submit` as a `Job` or by the name of one in `jobs`, has its input validated before
      anything is stored (pydantic.ValidationError) and its version, priority and timeout
      stored with the run; its handles' `result()`, and that of `handle(run_id)` for a run of
      it, return its output model. A run of any other job name is stored as given, its input
      validated by the worker (a bad one fails the run), and its result is plain JSON data.

    `Client(store="runs.db", jobs=[thumbnail]).submit("thumbnail", {"src": "a.jpg"})`. The
    serving supervisor notices new runs within its poll interval (50 ms by default). Runs
    stored here carry no attempt limit of their own: the serving supervisor's policy (the job's
    retry, else its default) decides.
    """

    def __init__(self, store: str | os.PathLike[str] | Store = "actors.db", jobs: Iterable[Job[Any, Any]] = (),
                 *, create: bool = False) -> None:
        if isinstance(store, str) and store == ":memory:":
            raise ValueError("a Client needs a store shared with a supervisor: a path, not ':memory:'")
        if isinstance(store, str | os.PathLike) and not is_postgres_url(store):
            store = os.path.abspath(store)  # now: a later os.chdir changes nothing
            if not create and not os.path.exists(store):
                raise StoreError(f"store {store} does not exist: a Supervisor creates its store when it first "
                                 "opens it, so start one on this path first (or check the path), or pass "
                                 "Client(..., create=True) to create it here")
        self.store = open_store(store, lock=False)
        self.jobs = {j.name: j for j in jobs}

    # -- submitting (the same options as Supervisor.submit / submit_many) ---------------------------

    @overload
    def submit(self, job: Job[In, Out], input: In | dict[str, Any] = ..., /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Out]: ...
    @overload
    def submit(self, job: str, input: Any = ..., /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Any]: ...
    def submit(self, job: Job[Any, Out] | str, input: Any = NO_INPUT, /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Out]:
        """Store a queued run; durable when this returns. `delay` / `at` hold it until then; `key`
        is an idempotency key (submitting it again returns the stored run's handle), and
        `rerun="failed"` runs again the key's run if it ended without success (see Supervisor.submit).

        The input is positional or, when there is none, given as keyword fields, by the rule of
        `Supervisor.submit` (the options keep their names; for a bare job name not in `jobs`
        the fields are stored as given).

        Args:
            job: the `Job`, or a job's name (one in `jobs`, or one only the serving
                supervisor knows).
            input: the input, positional: a value of the job's input type or a dict.
            priority: overrides the job's priority (default None: the job's, 0 for a job not in
                `jobs`); higher runs first.
            timeout: overrides the job's timeout for this run (a duration: seconds, "30s",
                "5m", "1d"...; default None: the job's).
            delay: hold the run this long (a duration) before it may start (default None).
            at: hold the run until this datetime (default None).
            key: an idempotency key (default None).
            rerun: "failed" (with `key`): rerun the key's run that ended failed, timed out or
                cancelled; default None ("never"): hand back the key's run whatever its status.
                A debounced job (known here) takes `key` as its burst's key (see `job`).
            metadata: a dict of JSON data stored with the run (`RunRecord.metadata`; TypeError
                for anything else).
            tenant: a non-empty str stored with the run (`RunRecord.tenant`, `runs(tenant=...)`,
                `Limit(n, key="tenant")`; ValueError for anything else).
            fields: the input's fields as keywords, when `input` is not given.

        Returns:
            A `Handle` on the stored run.

        Raises:
            pydantic.ValidationError: the input does not validate (a job known here).
            TypeError: an input and keyword fields at once, or a field named as an option.
        """
        if input is NO_INPUT or fields:
            known = self.jobs.get(job) if isinstance(job, str) else job if isinstance(job, Job) else None
            input = submitted_input(known, input, fields,
                                    {"priority": priority, "timeout": timeout, "delay": delay, "at": at, "key": key,
                                     "rerun": rerun, "metadata": metadata, "tenant": tenant})
        return self.submit_many(job, [input], priority=priority, timeout=timeout, delay=delay, at=at,
                                keys=None if key is None else [key], rerun=rerun, metadata=metadata, tenant=tenant)[0]

    @overload
    def submit_many(self, job: Job[In, Out], inputs: Iterable[In | dict[str, Any]], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Out]]: ...
    @overload
    def submit_many(self, job: str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Any]]: ...
    def submit_many(self, job: Job[Any, Out] | str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Out]]:
        """Like `submit`, for a batch stored in one transaction (all or nothing).

        Args:
            job: the `Job`, or a job's name (one in `jobs`, or one only the serving
                supervisor knows).
            inputs: the inputs, each as `submit` takes one (a value or a dict).
            priority: overrides the job's priority for every run (default None: the job's).
            timeout: overrides the job's timeout (a duration; default None: the job's).
            delay: hold every run this long (a duration) before it may start.
            at: hold every run until this datetime.
            keys: one idempotency key per input (default None), as `submit`'s `key`.
            rerun: as in `submit`: "failed" reruns the key's run that ended without success.
            metadata: a dict of JSON data stored with every run, as in `submit`.
            tenant: the tenant of every run, as in `submit`.

        Returns:
            One `Handle` per input, in order.

        Raises:
            JobNotFound: `job` is neither a `Job` nor a name.
            pydantic.ValidationError: an input of a job known here does not validate.
        """
        if isinstance(job, str):
            known: Job[Any, Out] | None = self.jobs.get(job)
        elif isinstance(job, Job):
            known = job
        else:
            raise JobNotFound(f"not a job or a job name: {job!r}")
        now = time.time()
        rows = new_runs(known or job, inputs, now, default_attempts=None, priority=priority, timeout=timeout,
                        delay=delay, at=at, keys=keys, rerun=rerun, metadata=metadata, tenant=tenant)
        if not rows:
            return []
        return [Handle(self, run_id, known) for run_id, _ in self.store.insert(rows, now)]

    # -- the RunOwner protocol (what its handles call) --------------------------------------------

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        """The run `run_id` as stored now (with its attempt log if `attempts`), or None."""
        return self.store.get(run_id, attempts=attempts)

    def wait_for(self, run_id: int, timeout: float) -> bool:
        """Poll the store until the run `run_id` has ended or `timeout` seconds pass; whether it ended
        (False at once for a run that does not exist)."""
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE
        while True:
            record = self.store.get(run_id)
            if record is None or record.status.is_terminal:
                return record is not None
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE)

    def emit(self, name: str, payload: Any = None) -> int:
        """Store an event (durable on return), as `Supervisor.emit`: the serving supervisor wakes
        the runs waiting for it and starts the runs it triggers when it next polls. Its id.

        Args:
            name: the event's name.
            payload: JSON data (TypeError otherwise; default None).
        """
        from .events import payload_json

        return self.store.emit(name, payload_json(name, payload), time.time())

    def cancel(self, run_id: int) -> bool:
        """Cancel the run `run_id` if queued, delayed or retrying; whether it was. A running run cannot be
        cancelled from here (only its supervisor can reach its worker): False."""
        return self.store.cancel_queued(run_id, time.time())

    def serving(self) -> bool | None:
        """Whether a supervisor serves this store now, as far as the store can tell (its serving
        lock); None for a store that cannot tell."""
        served = getattr(self.store, "served", None)
        return served() if callable(served) else None

    # -- reading ----------------------------------------------------------------------------------

    @overload
    def handle(self, run_id: int, job: None = None) -> Handle[Any]: ...
    @overload
    def handle(self, run_id: int, job: Job[Any, Out]) -> Handle[Out]: ...
    def handle(self, run_id: int, job: Job[Any, Out] | None = None) -> Handle[Out]:
        """A handle on the existing run `run_id` (RunNotFound if there is none, when `job` is not given).
        Its `result()` returns the job's output model when the job is given here or was given
        in `jobs=`, else plain JSON data."""
        if job is None:
            job = self.jobs.get(read_run(self, run_id).job)
        return Handle(self, run_id, job)

    def run(self, run_id: int, attempts: bool = True) -> RunRecord:
        """The stored run `run_id`, with its attempt log unless `attempts=False`; RunNotFound if
        there is none."""
        return read_run(self, run_id, attempts)

    def runs(self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50,
             offset: int = 0, since: float | None = None, tenant: str | None = None) -> list[RunRecord]:
        """Runs newest first, filtered by `status` (a `RunStatus` or its name), `job` (a name),
        `since` (epoch seconds: created then or later) and `tenant` (as given at submit); at most
        `limit` (default 50) after skipping the `offset` newest (default 0)."""
        if tenant is None:  # a store without the tenant filter still answers the rest
            return self.store.runs(status=status, job=job, limit=limit, offset=offset, since=since)
        return self.store.runs(status=status, job=job, limit=limit, offset=offset, since=since, tenant=tenant)

    # -- operating: retry and purge -----------------------------------------------------------------

    def retry(self, run_id: int) -> Handle[Any]:
        """Run again the run `run_id` that ended failed, timed_out or cancelled: a new queued run of the same
        job and input (priority and timeout kept), whose `rerun_of` names the old one; the old
        run keeps its history. A run under an idempotency key passes the key to the new run (as
        `submit(..., rerun="failed")` does). The attempt limit and version are the serving
        supervisor's (or, for a job in `jobs`, its version). RunNotFound for an unknown id; a
        ValueError for a run that is live or succeeded."""
        record = read_run(self, run_id)
        if record.status not in RETRYABLE:
            raise ValueError(f"run {run_id} is {record.status}: only a run that ended failed, timed_out or cancelled "
                             "can be retried")
        known = self.jobs.get(record.job)
        row = NewRun(record.job, record.input, record.priority, None, record.timeout, 0.0,
                     known.version if known else BY_NAME, unique_key=known.unique_key(record.input) if known else None,
                     rerun_of=record.id)
        if record.key is not None:  # the key moves to the new run, which names the old one
            row.key, row.rerun = record.key, frozenset({record.status})
        ((new_id, _),) = self.store.insert([row], time.time())
        return Handle(self, new_id, known)

    def run_now(self, job: Job[Any, Out] | str) -> Handle[Out]:
        """Trigger the cron job `job` now, outside its schedule: a run with its default input,
        recorded as such (its key is `run-now:<epoch seconds>`), which the serving supervisor
        runs as it runs its ticks. The job is found in `jobs`, else among those a supervisor
        recorded in the store (`Store.jobs`). JobNotFound for a job known nowhere; a ValueError
        for one without a cron schedule."""
        name = job if isinstance(job, str) else job.name
        known = self.jobs.get(name)
        if known is not None:
            cron = known.cron
        else:
            recorded = {info.name: info for info in self.store.jobs()}.get(name)
            if recorded is None:
                raise JobNotFound(f"job {name!r} is not known here nor recorded in the store by a supervisor")
            cron = recorded.cron
        if not cron:
            raise ValueError(f"job {name!r} has no cron schedule: submit it instead")
        return self.submit(known if known is not None else name, {}, key=f"run-now:{time.time():.3f}")

    def purge(self, older_than: Duration, status: RunStatus | str | Iterable[RunStatus | str] | None = None,
              *, batch: int = 500) -> int:
        """Delete runs that ended more than `older_than` ago ("7d", "12h", seconds) with their attempts and steps; `status` limits it to those statuses (default:
        every ended status; live runs are never purged). Works in transactions of `batch` runs,
        so a serving supervisor is never held up long. How many were deleted."""
        seconds = parse_duration(older_than, what="older_than")
        if status is None:
            statuses = frozenset(str(s) for s in TERMINAL)
        else:
            chosen = [status] if isinstance(status, str | RunStatus) else list(status)
            statuses = frozenset(str(RunStatus(s)) for s in chosen)
            live = sorted(s for s in statuses if not RunStatus(s).is_terminal)
            if live:
                raise ValueError(f"cannot purge runs that are {', '.join(live)}: only ended runs are purged")
        return self.store.purge(time.time() - seconds, statuses, batch)

    def close(self) -> None:
        """Release the store (its connection). `with Client(...) as client:` calls it."""
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
