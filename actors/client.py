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
from typing import Any, TypeVar

from .durations import Duration
from .errors import JobNotFound
from .handle import FIRST_PAUSE, MAX_PAUSE, Handle, read_run
from .job import Job
from .run import RunRecord, RunStatus
from .stores import Store, open_store
from .submission import new_runs

__all__ = ["Client", "Handle"]

Out = TypeVar("Out")


class Client:
    """Submit into and read from a store that a supervisor (maybe in another process) serves.

    `Client(store="runs.db").submit("thumbnail", {"src": "a.jpg"})`: with a `Job` (or the name
    of one in `jobs`) the input is validated here; with another job name it is validated by the
    worker (a bad one fails the run). The serving supervisor notices new runs within its poll
    interval (50 ms by default). Runs stored here carry no attempt limit of their own: the
    serving supervisor's policy (the job's retry, else its default) decides.
    """

    def __init__(self, store: str | os.PathLike[str] | Store = "actors.db", jobs: Iterable[Job[Any, Any]] = ()) -> None:
        if isinstance(store, str) and store == ":memory:":
            raise ValueError("a Client needs a store shared with a supervisor: a path, not ':memory:'")
        self.store = open_store(store, lock=False)
        self.jobs = {j.name: j for j in jobs}

    # -- submitting (the same options as Supervisor.submit / submit_many) ---------------------------

    def submit(self, job: Job[Any, Out] | str, input: Any, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None) -> Handle[Out]:
        """Store a queued run; durable when this returns. `delay` / `at` hold it until then; `key`
        is an idempotency key (submitting it again returns the stored run's handle)."""
        return self.submit_many(job, [input], priority=priority, timeout=timeout, delay=delay, at=at,
                                keys=None if key is None else [key])[0]

    def submit_many(self, job: Job[Any, Out] | str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None) -> list[Handle[Out]]:
        """Like submit, for a batch stored in one transaction (all or nothing)."""
        if isinstance(job, str):
            known: Job[Any, Out] | None = self.jobs.get(job)
        elif isinstance(job, Job):
            known = job
        else:
            raise JobNotFound(f"not a job or a job name: {job!r}")
        now = time.time()
        rows = new_runs(known or job, inputs, now, default_attempts=None, priority=priority, timeout=timeout,
                        delay=delay, at=at, keys=keys)
        if not rows:
            return []
        return [Handle(self, run_id, known) for run_id, _ in self.store.insert(rows, now)]

    # -- the RunOwner protocol (what its handles call) --------------------------------------------

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        """The run as stored now, or None."""
        return self.store.get(run_id, attempts=attempts)

    def wait_for(self, run_id: int, timeout: float) -> bool:
        """Poll the store until the run has ended or `timeout` seconds pass; whether it ended
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

    def cancel(self, run_id: int) -> bool:
        """Cancel a queued, delayed or retrying run; whether it was. A running run cannot be
        cancelled from here (only its supervisor can reach its worker): False."""
        return self.store.cancel_queued(run_id, time.time())

    # -- reading ----------------------------------------------------------------------------------

    def handle(self, run_id: int, job: Job[Any, Out] | None = None) -> Handle[Out]:
        """A handle on an existing run (results as plain JSON data unless its job is given/known)."""
        if job is None:
            job = self.jobs.get(read_run(self, run_id).job)
        return Handle(self, run_id, job)

    def run(self, run_id: int, attempts: bool = True) -> RunRecord:
        """The stored run with its attempt log; RunNotFound if there is none."""
        return read_run(self, run_id, attempts)

    def runs(self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50,
             offset: int = 0) -> list[RunRecord]:
        """Runs newest first, filtered by status and job."""
        return self.store.runs(status=status, job=job, limit=limit, offset=offset)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
