"""`Handle`: one submitted run, read through the `RunOwner` that stored it.

A handle keeps no store of its own: it asks its owner (a `Supervisor` or a `Client`) to read
the run, to wait for it and to cancel it. So this module imports neither of them, and nothing
below the package's face imports `client.py` (no import circle client <-> supervisor).

Waiting: `result()` asks the owner to wait in slices of 1 ms growing to 50 ms. A supervisor
wakes the handle as soon as a run it holds ends; for a run it does not hold (served by another
process, or cancelled by one) it cannot, and then the slices are the poll interval. A client
cannot wake anyone: its `wait_for` polls the store.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, Generic, Protocol, TypeVar

from .errors import NotServing, RunCancelled, RunFailed, RunNotFound, RunTimedOut
from .job import Job
from .run import RunRecord, RunStatus, StepRecord

Out = TypeVar("Out")

FIRST_PAUSE = 0.001  # seconds: the first slice of a wait, doubled each time...
MAX_PAUSE = 0.05  # ...up to this
NOT_SERVING_GRACE = 1.0  # seconds a wait without a timeout sees no supervisor before NotServing


class RunOwner(Protocol):
    """What a handle needs from whoever stored its run (`Supervisor` and `Client` satisfy it)."""

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        """The run as stored now (with its attempt log if asked); None if there is no such run."""
        ...

    def wait_for(self, run_id: int, timeout: float) -> bool:
        """Block until the run has ended, or `timeout` seconds; whether it ended."""
        ...

    def cancel(self, run_id: int) -> bool:
        """Cancel the run; whether it was still live."""
        ...

    def serving(self) -> bool | None:
        """Whether a supervisor serves the run's store now (None: cannot tell)."""
        ...


def read_run(owner: RunOwner, run_id: int, attempts: bool = False) -> RunRecord:
    """The stored run, or RunNotFound: what `run()` of a supervisor or a client and a handle's
    `record()` return."""
    record = owner.get(run_id, attempts=attempts)
    if record is None:
        raise RunNotFound(f"run {run_id} does not exist in the store")
    return record


class Handle(Generic[Out]):
    """A submitted run: `.id`, `.status()`, `.result(timeout)`, `.cancel()`, and `await handle`.

    `job` parses the output into the job's output type; without it (the job is unknown where the
    handle was made) `result()` returns plain JSON data.

    Made by `submit` and `handle(run_id)` of a `Supervisor` or a `Client`, rarely directly.

    Args:
        owner: the `Supervisor` or `Client` that reads, waits for and cancels the run.
        run_id: the run's id in the store (also `.id`).
        job: the run's `Job`, or None when it is not known here.
    """

    __slots__ = ("id", "job", "_owner")

    def __init__(self, owner: RunOwner, run_id: int, job: Job[Any, Out] | None) -> None:
        self.id = run_id
        self.job = job
        self._owner = owner

    def __repr__(self) -> str:
        """`<Handle 42 thumbnail succeeded attempts=1/4 finished 3s ago>`: the run as stored now
        (`RunRecord.summary`). A repr is for a person, who wants the status, so it reads the
        store once, as `status()` does (one primary-key read); it never raises: a run the store
        does not hold, or a store that cannot be read (closed), is said instead."""
        try:
            record = self._owner.get(self.id)
        except Exception as exc:
            record, missing = None, f"store unreadable: {type(exc).__name__}"
        else:
            missing = "not in the store"
        if record is None:
            return f"<Handle {self.id} {self.job.name if self.job else '?'} ({missing})>"
        return f"<Handle {record.summary()}>"

    def record(self, attempts: bool = False) -> RunRecord:
        """The run as stored now (with its attempt log if `attempts`); RunNotFound if the store
        no longer holds it (purged)."""
        return read_run(self._owner, self.id, attempts)

    def status(self) -> RunStatus:
        """The run's state now; `progress()` and `record()` say more while it runs."""
        return self.record().status

    def progress(self) -> tuple[float | None, str | None]:
        """The last `ctx.progress(fraction, message)` the running job reported."""
        record = self.record()
        return record.progress, record.progress_message

    def metadata(self) -> dict[str, Any]:
        """The run's metadata as stored now: what `submit(..., metadata=...)` gave, merged with
        what the job attached since (`ctx.metadata`)."""
        return self.record().metadata

    def waiting_for(self) -> str | None:
        """What the run waits for while it is `waiting`, for a person (`RunRecord.waiting_for`):
        sleeping until a time, waiting for its children, or for an event; None otherwise."""
        return self.record().waiting_for

    def children(self) -> list[Handle[Any]]:
        """Handles of the runs this one dispatched or invoked (`ctx.dispatch`, `ctx.invoke`), in
        order; a child's `result()` is typed when this handle's owner knows its job, else JSON."""
        jobs = getattr(self._owner, "jobs", None) or {}
        return [Handle(self._owner, step.value["run"], jobs.get(step.name)) for step in self.steps()
                if step.kind == "child" and isinstance(step.value, dict) and "run" in step.value]

    def steps(self) -> list[StepRecord]:
        """The run's durable records in order (`RunRecord.step_log`): steps with their failed
        tries, sleeps, children and waits."""
        return self.record(attempts=True).step_log

    def result(self, timeout: float | None = None) -> Out:
        """Wait for the run to end and return its output (validated by the job's output type,
        or plain JSON data when the job is unknown here). Raises RunFailed, RunTimedOut or
        RunCancelled when it ended without one, TimeoutError when `timeout` seconds pass first.

        Without a timeout, a wait that could never end raises NotServing: when for a second no
        supervisor serves the store (none serving in this process, and the store's serving lock
        free), as when `serve()` was forgotten or has returned."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_PAUSE
        unserved: float | None = None  # since when no supervisor was seen serving
        holds = getattr(self._owner, "holds", None)
        if callable(holds) and holds(self.id):  # live in the serving loop here: wait before reading
            self._owner.wait_for(self.id, MAX_PAUSE if timeout is None else min(MAX_PAUSE, max(timeout, 0.0)))
        while True:
            record = self.record()
            if record.status.is_terminal:
                return self._unwrap(record)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {self.id} is still {record.status} after {timeout} s")
            if deadline is None:
                unserved = self._check_served(record, unserved)
            self._owner.wait_for(self.id, pause if left is None else min(pause, left))
            pause = min(pause * 2, MAX_PAUSE)

    def _check_served(self, record: RunRecord, unserved: float | None) -> float | None:
        if self._owner.serving() is not False:
            return None
        now = time.monotonic()
        if unserved is None:
            return now
        if now - unserved < NOT_SERVING_GRACE:
            return unserved
        raise NotServing(f"run {self.id} is {record.status} and no supervisor serves its store, so result() "
                         "would wait forever: call serve() (or serve(until=\"drained\")) first, or serve the "
                         "store from another process, or pass a timeout")

    def _unwrap(self, record: RunRecord) -> Out:
        if record.status is RunStatus.SUCCEEDED:
            if self.job is not None and record.output is not None:
                return self.job.parse_output(record.output)
            return record.result
        error = {RunStatus.TIMED_OUT: RunTimedOut, RunStatus.CANCELLED: RunCancelled}.get(record.status, RunFailed)
        raise error(record.id, record.error_type, record.message, record.traceback)

    def cancel(self) -> bool:
        """Cancel the run; whether it was still live. A queued or retrying run is cancelled at once."""
        return self._owner.cancel(self.id)

    def __await__(self) -> Generator[Any, None, Out]:
        import asyncio

        return asyncio.get_running_loop().run_in_executor(None, self.result).__await__()
