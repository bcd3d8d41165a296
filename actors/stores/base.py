"""The Store contract: what the supervisor and clients need from durable storage.

The supervisor is the only process that changes a run once it is stored; clients only insert
queued runs and cancel queued ones. One loop turn's changes arrive as one `Changes` batch and
are committed in one transaction (group commit). Every finishing write is conditional on the
run still being `running` in that attempt, so a late result loses cleanly to a timeout or a
cancel.

Idempotency keys and reruns: a key names one current run of its job. Submitting the key again
gives that run back, whatever its status, unless the submission asks for a rerun
(`NewRun.rerun`, from `submit(..., rerun="failed")`) and the key's run has ended in one of the
statuses asked for. Then a new run is stored and takes the key over, in the same transaction:
the old run keeps its history (attempts, steps, error, output) but no longer holds the key,
and the new run names it in `rerun_of`. A rerun is a new run rather than the old one queued
again, so that every run still ends exactly once (a handle or hook that saw the old run fail
stays right), the attempt log and steps of each try stay apart (a fix may change a step's
result), and the (job, key) unique index still holds: at most one run holds a key. Inserting
a rerun changes the old run's row, which a client may do: that run has ended, so no
supervisor writes it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from ..run import JobInfo, NewRun, RunRecord, RunStatus, SupervisorInfo, WorkerInfo

SCHEMA_VERSION = 5  # 2: runs.rerun_of; 3: the supervisor and workers tables (what serves, ~1/s); 4: jobs;
# 5: durable execution (runs.parent_id, wait, current_step; steps.position; events) and runs.tenant


class Pending(NamedTuple):
    """A queued or retrying run as the supervisor loads it (`load_ready`)."""

    id: int
    job: str
    input: str
    priority: int
    attempts: int
    free_attempts: int
    max_attempts: int | None
    timeout: float | None
    scheduled_at: float
    status: str
    version: int
    interrupted: bool = False  # its last attempt was interrupted (the next one in a row is charged)
    tenant: str | None = None  # as given at submit (a `Limit(n, key="tenant")` limits by it)


BY_NAME = 0  # the version of a run submitted by job name: the serving supervisor fills in its job's
DUPLICATE = "a live run of this job has the same unique key"


class Waiting(NamedTuple):
    """A waiting run as the supervisor loads it when serving starts (`load_waiting`)."""

    pending: Pending
    wait: str  # JSON: what it waits for (see `RunRecord.wait`)


class Suspension(NamedTuple):
    """An attempt that ended `suspended`: the run waits (`wait`, JSON) and is due at `wake_at`
    whatever else happens, if given. Not charged: it counts as a free attempt."""

    run_id: int
    attempt: int
    started_at: float
    finished_at: float
    wait: str
    wake_at: float | None
    worker_pid: int | None
    peak_rss: int | None


class Event(NamedTuple):
    """A stored event (`emit`)."""

    id: int
    name: str
    payload: str  # JSON
    created_at: float


class Finish(NamedTuple):
    """The end of one attempt, and the run's status after it (`retrying` with `retry_at`)."""

    run_id: int
    attempt: int
    status: str
    outcome: str
    started_at: float
    finished_at: float
    output: str | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    worker_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_rss: int | None = None
    retry_at: float | None = None
    charged: bool = True


def success_as_finish(row: tuple[int, int, str, float, int | None, int | None], now: float) -> Finish:
    """A compact success row (see `Changes.successes`) as a full Finish, for the general path."""
    run_id, attempt, output, started_at, worker_pid, peak_rss = row
    return Finish(run_id, attempt, "succeeded", "succeeded", started_at, now, output, worker_pid=worker_pid,
                  peak_rss=peak_rss)


def interrupted_message(again: bool) -> str:
    """What the attempt log says of an attempt whose supervisor died (see `Store.recover`)."""
    if again:
        return ("the supervisor running this attempt died, as during the attempt before: charged, so a run "
                "that takes its supervisor down runs out of attempts")
    return "the supervisor running this attempt died"


@dataclass(slots=True)
class Changes:
    """One loop turn's writes, committed together."""

    # runs submitted by job name (version 0) take the serving job's (run_id, version, unique key);
    # one whose unique key is already live is cancelled as a duplicate (its claim is then lost)
    adopts: list[tuple[int, int, str | None]] = field(default_factory=list)
    claims: list[tuple[int, int]] = field(default_factory=list)  # (run_id, new attempt number)
    # run_id -> its `Limit` key as JSON text, for the claims of jobs whose `Limit` key is a
    # function (the same text in every supervisor for one input): a shared store counts those
    # keys across supervisors (PostgreSQL, `postgres_limits.py`); the others ignore it
    claim_keys: dict[int, str] = field(default_factory=dict)
    finishes: list[Finish] = field(default_factory=list)
    # the hot path's successes, compact: (run_id, attempt, output JSON, started_at, worker_pid, peak_rss)
    successes: list[tuple[int, int, str, float, int | None, int | None]] = field(default_factory=list)
    unclaims: list[tuple[int, int]] = field(default_factory=list)  # claimed, never started
    requeues: list[int] = field(default_factory=list)  # retrying -> queued, backoff over
    ends: list[tuple[int, str, str, str]] = field(default_factory=list)  # queued -> (id, status, type, msg)
    # (run_id, record name, JSON value, position): a record of a run (a step, sleep, invoke, wait);
    # position None keeps the stored one (the supervisor filling in a child's result or an event)
    steps: list[tuple[int, str, str, int | None]] = field(default_factory=list)
    suspends: list[Suspension] = field(default_factory=list)  # running -> waiting
    wakes: list[int] = field(default_factory=list)  # waiting -> queued (written before the claims)
    current_steps: list[tuple[int, str]] = field(default_factory=list)  # (run_id, the step it is in)
    handled_events: list[int] = field(default_factory=list)  # events matched and whose runs were started
    progress: list[tuple[int, float | None, str | None, str | None]] = field(default_factory=list)  # id, fraction, message, metadata JSON
    # the serving supervisor and its workers, written about once a second (None: unchanged);
    # a snapshot replaces every workers row (a stopped supervisor writes none)
    status: tuple[SupervisorInfo, list[WorkerInfo]] | None = None
    # written by `commit`: the lost claims that a limit counted in the store refused (a shared
    # store: other supervisors hold the job's allowance); the supervisor keeps these runs and
    # tries them again later, where it drops the other lost claims
    deferred: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.adopts or self.claims or self.finishes or self.successes or self.unclaims or self.requeues
                    or self.ends or self.steps or self.progress or self.status is not None or self.suspends
                    or self.wakes or self.current_steps or self.handled_events)


@runtime_checkable
class Store(Protocol):
    """Durable runs and attempts. Implementations: `MemoryStore`, `SQLiteStore`.

    The contract the supervisor and clients use; its methods are documented here once for
    every store. Times (`now`, `since`, `older_than`, ticks) are epoch seconds (`time.time()`),
    and `run_id` is a run's id as `insert` returned it.
    """

    def insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        """Store queued runs in one transaction, durable on return: (id, created) per run, in
        order. A run whose `key` names a run of its job, or whose `unique_key` is live, is not
        created: the existing run's id comes back with created=False. Except a rerun: when the
        key's run has ended (a terminal status) in one of the statuses of the new run's
        `rerun`, the new run is created (created=True; a live run with its `unique_key` still
        wins), the key moves to it from the old run, and it records `rerun_of` = the old run's
        id. Rows of one batch are taken in order, so a key given twice makes one rerun. `now`
        is the runs' `created_at`.

        A debounced run (`NewRun.debounce`, with a `key`): if the key's run of its job is
        queued, never attempted and not due yet (`scheduled_at > now`), that run takes the new
        one's input, due time, priority, timeout, metadata and tenant, in the same transaction
        as the check, and its id comes back with created=False; else a new run is stored and
        takes the key over from the earlier run (which keeps its history). Each run stores its
        `metadata`, `tenant` and `parent_id`."""
        ...

    def steps(self, run_id: int) -> dict[str, str]:
        """The completed steps of run `run_id`: {name: JSON value}, in the order of their positions."""
        ...

    def positions(self, run_id: int) -> dict[str, int]:
        """The position of each record of run `run_id` that has one: {name: position}."""
        ...

    def load_waiting(self, after_id: int = 0, limit: int | None = None) -> list[Waiting]:
        """Waiting runs with id > after_id, in id order, with what they wait for; at most `limit`."""
        ...

    def outcomes(self, run_ids: list[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        """{id: (status, output JSON, error type, message)} of those of `run_ids` that ended."""
        ...

    def emit(self, name: str, payload: str, now: float) -> int:
        """Store an event `name` with JSON `payload` at time `now` (durable on return); its id."""
        ...

    def new_events(self, after_id: int, limit: int = 1000) -> list[Event]:
        """Events not yet handled, with id > after_id, in id order; at most `limit`."""
        ...

    def find_events(self, name: str, run_id: int, exclude: list[int], limit: int = 1000) -> list[Event]:
        """Events `name` stored since run `run_id` was created, but those in `exclude`, in id
        order; at most `limit`."""
        ...

    def purge_events(self, older_than: float) -> int:
        """Delete events stored before `older_than` (epoch seconds); how many."""
        ...

    def commit(self, changes: Changes, now: float) -> set[int]:
        """Apply one turn's `changes` in one transaction, at time `now`; the ids of claims that
        were lost (the run was cancelled or changed by someone else meanwhile)."""
        ...

    def acquire(self) -> None:
        """Take the serving lock, so no other supervisor serves this store (StoreLocked if one
        does). Only `serve()` holds it: a supervisor that merely submits takes none."""
        ...

    def release(self) -> None:
        """Let go of the serving lock (when `serve()` returns)."""
        ...

    def recover(self, now: float) -> int:
        """Runs left `running` by a dead supervisor go back to `queued`, their attempt
        recorded `interrupted`: free, unless the attempt before it was interrupted too (then it
        is charged, so a run that kills its supervisor every time runs out of attempts); how many.
        `now` is when the interrupted attempts are recorded to have finished."""
        ...

    def load_ready(self, after_id: int = 0, limit: int | None = None) -> list[Pending]:
        """Queued and retrying runs with id > after_id, in id order; at most `limit` of them
        (a page: the supervisor reads a long queue a page at a time)."""
        ...

    def changed(self) -> bool:
        """Whether another process committed since the last call (cheap; polled)."""
        ...

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        """Run `run_id`, with its attempt log if `attempts`; None if there is no such run."""
        ...

    def runs(
        self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50, offset: int = 0,
        since: float | None = None, tenant: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, filtered by `status`, `job`, creation time (`since`: epoch
        seconds, created then or later) and `tenant` (as given at submit); at most `limit`
        (default 50) after skipping `offset`."""
        ...

    def cancel_queued(self, run_id: int, now: float) -> bool:
        """Cancel run `run_id` if it is not running (queued, delayed, retrying or waiting), recording
        `now` as its end; whether it was."""
        ...

    def counts(self) -> dict[str, dict[str, int]]:
        """{job: {status: count}}."""
        ...

    def version_counts(self) -> dict[str, dict[int, int]]:
        """{job: {version: count}} of stored runs (0: submitted by name, not yet adopted)."""
        ...

    def record_jobs(self, jobs: list[JobInfo]) -> None:
        """Write the jobs a supervisor serves (at each `serve()`), replacing what an earlier one
        wrote of the same names; other names stay (a store may have served other apps)."""
        ...

    def jobs(self) -> list[JobInfo]:
        """The jobs supervisors recorded (`record_jobs`), by name."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """The serving supervisor's workers as it last wrote them (about once a second), by slot;
        empty when none serves or it stopped cleanly."""
        ...

    def supervisor_info(self) -> SupervisorInfo | None:
        """The supervisor that serves or last served this store, as it last wrote itself; None
        if none ever served it."""
        ...

    def finished_runs(self, since: float) -> list[tuple[str, str, float | None, float]]:
        """(job, status, started_at, finished_at) of the runs that ended at or after `since`
        (epoch seconds), for rates and run times."""
        ...

    def purge(self, older_than: float, statuses: frozenset[str], batch: int = 500) -> int:
        """Delete ended runs in `statuses` that finished before `older_than` (epoch seconds), with
        their attempts and steps, in transactions of `batch` runs (short, so a serving supervisor
        is never held up long); how many."""
        ...

    def cron_last(self, job: str) -> float | None:
        """The last cron tick (epoch seconds) a run of `job` (a name) was submitted for, if any."""
        ...

    def set_cron(self, job: str, tick: float) -> None:
        """Remember the last cron tick submitted for a job."""
        ...

    def close(self) -> None:
        """Release the store (for a file: its connection and the serving lock, if held)."""
        ...
