"""`Handle` (one run, read back from the store) and `Client` (another process's door to a store).

A handle reads the store, so it keeps working after `serve()` returns and in processes that
never served. In the supervisor's own process, `result()` wakes as soon as the run finishes;
elsewhere it polls the store (1 ms growing to 50 ms).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .durations import Duration, optional_duration
from .errors import JobNotFound, RunCancelled, RunFailed, RunNotFound, RunTimedOut
from .job import Job
from .run import NewRun, RunRecord, RunStatus
from .stores import Store, open_store
from .stores.base import BY_NAME

if TYPE_CHECKING:
    from .supervisor.supervisor import Supervisor

Out = TypeVar("Out")


class Handle(Generic[Out]):
    """A submitted run: `.id`, `.status()`, `.result(timeout)`, `.cancel()`, and `await handle`."""

    __slots__ = ("id", "job", "_store", "_owner")

    def __init__(self, store: Store, run_id: int, job: Job[Any, Out] | None, owner: Supervisor | None = None) -> None:
        self.id = run_id
        self.job = job
        self._store = store
        self._owner = owner

    def __repr__(self) -> str:
        return f"<Handle run={self.id} job={self.job.name if self.job else '?'}>"

    def record(self, attempts: bool = False) -> RunRecord:
        """The run as stored now (with its attempt log if asked)."""
        record = self._store.get(self.id, attempts=attempts)
        if record is None:
            raise RunNotFound(f"run {self.id} does not exist in the store")
        return record

    def status(self) -> RunStatus:
        """The run's state now; `progress()` and `record()` say more while it runs."""
        return self.record().status

    def progress(self) -> tuple[float | None, str | None]:
        """The last `ctx.progress(fraction, message)` the running job reported."""
        record = self.record()
        return record.progress, record.progress_message

    def result(self, timeout: float | None = None) -> Out:
        """Wait for the run to end and return its output (validated by the job's output type,
        or plain JSON data when the job is unknown here). Raises RunFailed, RunTimedOut or
        RunCancelled when it ended without one, TimeoutError when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            record = self.record()
            if record.status.is_terminal:
                return self._unwrap(record)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {self.id} is still {record.status} after {timeout} s")
            wait = pause if left is None else min(pause, left)
            if self._owner is not None:
                self._owner.wait_for(self.id, wait)  # wakes as soon as the run ends
            else:
                time.sleep(wait)
            pause = min(pause * 2, 0.05)

    def _unwrap(self, record: RunRecord) -> Out:
        if record.status is RunStatus.SUCCEEDED:
            if self.job is not None and record.output is not None:
                return self.job.parse_output(record.output)
            return record.result
        error = {RunStatus.TIMED_OUT: RunTimedOut, RunStatus.CANCELLED: RunCancelled}.get(record.status, RunFailed)
        raise error(record.id, record.error_type, record.message, record.traceback)

    def cancel(self) -> bool:
        """Cancel the run; whether it was still live. A queued or retrying run is cancelled at once."""
        if self._owner is not None:
            return self._owner.cancel(self.id)
        return self._store.cancel_queued(self.id, time.time())

    def __await__(self) -> Generator[Any, None, Out]:
        return asyncio.get_running_loop().run_in_executor(None, self.result).__await__()


class Client:
    """Submit into and read from a store that a supervisor (maybe in another process) serves.

    `Client(store="runs.db").submit("thumbnail", {"src": "a.jpg"})`: with a `Job` the input is
    validated here; with a job name it is validated by the worker (a bad one fails the run).
    The serving supervisor notices new runs within its poll interval (50 ms by default).
    """

    def __init__(self, store: str | os.PathLike[str] | Store = "actors.db", jobs: Iterable[Job[Any, Any]] = ()) -> None:
        if isinstance(store, str) and store == ":memory:":
            raise ValueError("a Client needs a store shared with a supervisor: a path, not ':memory:'")
        self.store = open_store(store, lock=False)
        self.jobs = {j.name: j for j in jobs}

    def submit(self, job: Job[Any, Out] | str, input: Any, *, priority: int | None = None,
               timeout: Duration | None = None) -> Handle[Out]:
        return self.submit_many(job, [input], priority=priority, timeout=timeout)[0]

    def submit_many(self, job: Job[Any, Out] | str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None) -> list[Handle[Out]]:
        """Store a batch of runs in one transaction."""
        if isinstance(job, str):
            known = self.jobs.get(job)
            name = job
        elif isinstance(job, Job):
            known, name = job, job.name
        else:
            raise JobNotFound(f"not a job or a job name: {job!r}")
        rows = []
        prio = priority if priority is not None else (known.priority if known else 0)
        run_timeout = optional_duration(timeout, what="timeout")
        for value in inputs:
            if known is not None:
                text = known.validate_input(value)
                rows.append(NewRun(name, text, prio, None, run_timeout, 0.0, known.version, None,
                                   known.unique_key(text)))
            else:  # the worker validates it; an invalid one fails its run, saying why
                rows.append(NewRun(name, value if isinstance(value, str) else _json(value), prio, None, run_timeout,
                                   version=BY_NAME))
        stored = self.store.insert(rows, time.time())
        return [Handle(self.store, run_id, known) for run_id, _ in stored]

    def handle(self, run_id: int, job: Job[Any, Out] | None = None) -> Handle[Out]:
        """A handle on an existing run (results as plain JSON data unless its job is given/known)."""
        if job is None:
            record = self.store.get(run_id)
            if record is None:
                raise RunNotFound(f"run {run_id} does not exist in the store")
            job = self.jobs.get(record.job)
        return Handle(self.store, run_id, job)

    def run(self, run_id: int, attempts: bool = True) -> RunRecord:
        record = self.store.get(run_id, attempts=attempts)
        if record is None:
            raise RunNotFound(f"run {run_id} does not exist in the store")
        return record

    def runs(self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50,
             offset: int = 0) -> list[RunRecord]:
        return self.store.runs(status=status, job=job, limit=limit, offset=offset)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
