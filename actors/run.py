"""The shapes the store persists: a run, its attempts, and their statuses.

Times are stored as epoch seconds (`created_at`, `started_at`, ...: what the store and the
supervisor compute with); for a person, each also reads as an aware UTC datetime (`created`,
`started`, ...), and `repr()` is one short line: `<Run 42 thumbnail succeeded attempts=1/4
finished 3s ago>` (see `RunRecord.summary`). Input, output and tracebacks stay out of reprs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple


class RunStatus(StrEnum):
    """queued -> running -> succeeded; running -> retrying -> queued; running -> failed | timed_out;
    running -> waiting -> queued (a durable sleep, invoke or event wait); cancelled from any
    live state."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})
LIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING, RunStatus.WAITING})


class Outcome(StrEnum):
    """How one attempt ended. `interrupted` attempts are not charged against the retry policy
    (once in a row); `suspended` ones never are: the run waits (a sleep, children, an event)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    MEMORY_EXCEEDED = "memory_exceeded"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"


@dataclass(slots=True)
class NewRun:
    """A run about to be stored by `submit`: input already validated and serialized as JSON."""

    job: str
    input: str
    priority: int = 0
    max_attempts: int | None = 1  # None: the job's policy decides (runs submitted by name)
    timeout: float | None = None
    scheduled_at: float = 0.0
    version: int = 1
    key: str | None = None  # idempotency key: names one current run of the job (see `Store.insert`)
    unique_key: str | None = None  # one live (queued/running/retrying) run per key
    # with a key: the ended statuses in which the key's run is replaced by this new one (a rerun)
    rerun: frozenset[RunStatus] | None = None
    rerun_of: int | None = None  # set by `Client.retry`: the ended run this one runs again
    parent_id: int | None = None  # the run that invoked or dispatched this one (`ctx.invoke`)
    tenant: str | None = None  # stored, filterable (`runs(tenant=...)`), usable as a limit's key
    metadata: str | None = None  # a JSON object given at submit (merged with `ctx.metadata`)
    # a debounced job's run (`@job(debounce=...)`): a queued, not yet due run under the same key
    # takes this one's input and due time instead of a new run being stored (see `Store.insert`)
    debounce: bool = False


class WorkerInfo(NamedTuple):
    """One worker slot of the serving supervisor as it last wrote it to the store (about once a
    second; `store.workers()`). Times are epoch seconds, `rss` bytes (None until sampled)."""

    slot: int
    pid: int
    run_id: int | None  # the run it executes now, if any
    job: str | None
    busy_since: float | None  # when that run started
    rss: int | None
    started_at: float  # when this worker process started
    restarts: int  # worker processes this slot started before this one
    updated_at: float


class JobInfo(NamedTuple):
    """A job as the supervisor that last served the store declared it (`store.jobs()`), written
    when serving starts, so that readers without the code (the dashboard) can show it.

    Attributes:
        name: the job's name.
        version: its version; `min_version` the oldest it runs (None: any).
        cron: its cron expression, or None.
        options: its other options as JSON data (`Job.options()`).
        recorded_at: when a supervisor wrote it (epoch seconds).
    """

    name: str
    version: int
    min_version: int | None
    cron: str | None
    options: dict[str, Any]
    recorded_at: float


class SupervisorInfo(NamedTuple):
    """The supervisor that serves (or last served) a store, as it wrote itself there
    (`store.supervisor_info()`). A clean stop sets `stopped_at` and clears the workers; a
    killed supervisor leaves a stale `heartbeat_at` (check the serving lock: `SQLiteStore.served()`).
    `kills` counts workers killed by reason: "timeout", "memory", "cancel"."""

    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    workers: int
    restarts: int
    kills: dict[str, int]
    stopped_at: float | None


@dataclass(slots=True, repr=False)
class Attempt:
    """One try of a run: times in epoch seconds, outcome, error, and what the worker looked like.

    `started` / `finished` are the times as aware UTC datetimes; `repr()` is one short line,
    `<Attempt 2 failed ValueError 1.2s pid=4242>` (outcome, error type, time taken, worker).

    Attributes:
        number: the attempt's number, 1 for the first.
        started_at: when it started (epoch seconds).
        finished_at: when it ended (epoch seconds); None while it runs.
        outcome: how it ended, an `Outcome`; None while it runs.
        error_type: the exception's class name (or "WorkerCrashed", "RunTimedOut"...), if any.
        message: the error message, if any.
        traceback: the remote traceback text, if any.
        worker_pid: the pid of the worker that ran it.
        exit_code: the worker's exit code, when the worker died.
        signal: the signal that killed the worker, when one did.
        peak_rss: the worker's peak resident memory in bytes, when known.
    """

    number: int
    started_at: float
    finished_at: float | None = None
    outcome: Outcome | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    worker_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_rss: int | None = None

    @property
    def started(self) -> datetime:
        """`started_at` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.started_at, UTC)

    @property
    def finished(self) -> datetime | None:
        """`finished_at` as an aware UTC datetime; None while it runs."""
        return _utc(self.finished_at)

    def __repr__(self) -> str:
        parts = [f"<Attempt {self.number}", str(self.outcome or "running")]
        if self.error_type and self.outcome is not Outcome.SUCCEEDED:
            parts.append(_clip(self.error_type, keep_end=True))
        if self.finished_at is not None:
            parts.append(_span(self.finished_at - self.started_at))
        if self.worker_pid is not None:
            parts.append(f"pid={self.worker_pid}")
        return " ".join(parts) + ">"


class StepRecord(NamedTuple):
    """One durable record of a run (`RunRecord.step_log`, `Handle.steps()`), in the order the job
    made them.

    Attributes:
        kind: "step" (`ctx.step`), "sleep", "child" (`ctx.dispatch`/`ctx.invoke`), "wait"
            (`ctx.wait_for`) or "event" (`ctx.wait_for_event`).
        name: the step's or sleep's name, the child's job, the event's name ("" for a wait).
        value: the stored JSON data: the step's value, `{"until": ...}`, the child's
            `{"run": id, "status": ..., ...}`, the event's payload once it came.
        failures: tries of a step that failed before this value (its own `retry`); 0 otherwise.
        error: the last failed try's "Type: message", if any.
    """

    kind: str
    name: str
    value: Any
    failures: int = 0
    error: str | None = None

    @classmethod
    def of(cls, record: str, value: Any, failed: Any = None) -> StepRecord:
        """A stored record by its name (see `RunRecord.steps`) and the step's failures, if any."""
        failures = failed.get("failures", 0) if isinstance(failed, dict) else 0
        error = failed.get("error") if isinstance(failed, dict) else None
        for prefix, kind in (("sleep:", "sleep"), ("run:", "child"), ("event:", "event")):
            if record.startswith(prefix):
                name = record[len(prefix):]
                return cls(kind, name if kind == "sleep" else name.rpartition("#")[0], value)
        if record.startswith("wait#") and record[5:].isdigit():
            return cls("wait", "", value)
        return cls("step", record, value, failures, error)


@dataclass(slots=True, repr=False)
class RunRecord:
    """A run as stored. `input` and `output` are JSON text; `attempts` counts claimed attempts.

    A rerun (`submit(..., key=k, rerun="failed")` of a run that ended without success) is a new
    run that takes key `k` over: the earlier run keeps its attempts and steps but no key, and
    the new one names it in `rerun_of`, so the runs a key named form a chain back from its
    current one.

    Times are epoch seconds; `created`, `scheduled`, `started` and `finished` give them as
    aware UTC datetimes.

    Attributes:
        id: the run's id.
        job: the job's name.
        status: a `RunStatus`.
        input: the input as JSON text.
        output: the output as JSON text once it succeeded (`result` parses it), else None.
        priority: higher runs first.
        attempts: attempts claimed so far.
        max_attempts: the attempt limit; None when the serving supervisor's policy decides.
        timeout: seconds: the job's timeout unless the submit gave one; None for a job without
            one, or a run stored by name by a client that does not know the job.
        created_at: when it was submitted.
        scheduled_at: when it may start (after a `delay`, `at`, or a retry's backoff).
        started_at: when its latest attempt started; None before one.
        finished_at: when it ended; None while live.
        error_type: the last error's type name, if any.
        message: the last error's message, if any.
        traceback: the last error's remote traceback text, if any.
        progress: the last fraction the job reported (`Context.progress`), if any.
        progress_message: the last progress message, if any.
        metadata: what the job attached with `Context.metadata`.
        version: the job version it was submitted for (0: by name, not yet adopted).
        key: its idempotency key; None without one, or once a rerun took it over.
        rerun_of: the id of the run under the same key that this one reruns.
        parent_id: the run that invoked or dispatched this one, if any.
        tenant: the tenant given at submit, if any.
        wait: what a waiting run waits for, as JSON data: {"until": epoch seconds} (a sleep),
            {"runs": [ids]} (children), {"event": name, "match": {...}, "until": ...}; else None.
        current_step: the step the running attempt is in (`ctx.step`), if any.
        attempt_log: the `Attempt` records, when read with attempts.
        steps: the stored records of `Context.step` (by the step's name) and of the durable
            calls (`sleep:NAME`, `run:JOB#POSITION`, `wait#POSITION`, `event:NAME#POSITION`),
            {name: JSON data} in the order they were made, when read with attempts; `step_log`
            reads them.
    """

    id: int
    job: str
    status: RunStatus
    input: str
    output: str | None = None
    priority: int = 0
    attempts: int = 0
    max_attempts: int | None = 1
    # seconds: the job's timeout unless the submit gave one; None for a job without one, or a run
    # stored by name by a client that does not know the job (the serving job's then applies)
    timeout: float | None = None
    created_at: float = 0.0
    scheduled_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    key: str | None = None  # None once a rerun took the key over (see `rerun_of`)
    rerun_of: int | None = None  # the run under the same key that this one reruns
    parent_id: int | None = None
    tenant: str | None = None
    wait: dict[str, Any] | None = None
    current_step: str | None = None
    attempt_log: list[Attempt] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        """The output as plain JSON data (for callers without the job's models)."""
        import json

        return None if self.output is None else json.loads(self.output)

    # -- durable execution: what a run waits for, its children, its steps -------------------------

    @property
    def waiting_for(self) -> str | None:
        """In words, what a waiting run waits for, or None unless the run is waiting.

        For example "sleeping until 2026-12-03T10:00:00Z", "waiting for runs 4, 5", or
        "waiting for event 'approved' matching {...} until ..."."""
        if self.status is not RunStatus.WAITING or self.wait is None:
            return None
        return describe_wait(self.wait)

    @property
    def children(self) -> list[int]:
        """The ids of the runs this one dispatched or invoked (`ctx.dispatch`, `ctx.invoke`), in
        order; needs the record read with attempts (its `steps`)."""
        return [step.value["run"] for step in self.step_log
                if step.kind == "child" and isinstance(step.value, dict) and "run" in step.value]

    @property
    def step_log(self) -> list[StepRecord]:
        """The run's durable records in order (each a `StepRecord`): steps with their failed tries,
        sleeps, children and waits; needs the record read with attempts (its `steps`)."""
        failures = self.metadata.get("step_failures")
        failures = failures if isinstance(failures, dict) else {}
        return [StepRecord.of(name, value, failures.get(name)) for name, value in self.steps.items()]

    # -- for a person: datetimes beside the epoch floats, and a one-line repr ---------------------

    @property
    def created(self) -> datetime:
        """`created_at` (when it was submitted) as an aware UTC datetime."""
        return datetime.fromtimestamp(self.created_at, UTC)

    @property
    def scheduled(self) -> datetime:
        """`scheduled_at` (when it may start: after a delay, or a retry's backoff) as an aware
        UTC datetime."""
        return datetime.fromtimestamp(self.scheduled_at, UTC)

    @property
    def started(self) -> datetime | None:
        """`started_at` (the latest attempt's start) as an aware UTC datetime; None before one."""
        return _utc(self.started_at)

    @property
    def finished(self) -> datetime | None:
        """`finished_at` as an aware UTC datetime; None while the run is live."""
        return _utc(self.finished_at)

    def summary(self, now: float | None = None) -> str:
        """The run in one short line (what `repr()` shows inside `<Run ...>`): id, job, status,
        `attempts=claimed/limit` (just the count when the serving supervisor's policy sets the
        limit), the progress of a running run, the error type of one that failed, timed out or
        waits to retry, and its age relative to `now` (epoch seconds; default: the clock now).
        For example `42 thumbnail succeeded attempts=1/4 finished 3s ago`, `43 thumbnail retrying
        attempts=1/4 ValueError retry in 2.0s`, `44 thumbnail queued attempts=0/4 due in 5m`."""
        now = time.time() if now is None else now
        limit = "" if self.max_attempts is None else f"/{self.max_attempts}"
        parts = [str(self.id), _clip(self.job), str(self.status), f"attempts={self.attempts}{limit}"]
        if self.status is RunStatus.RUNNING and self.progress is not None:
            parts.append(f"{self.progress:.0%}")
        if self.error_type and self.status in _SHOWS_ERROR and self.error_type != _OWN_ERROR.get(self.status):
            parts.append(_clip(self.error_type, keep_end=True))
        parts.append(self._age(now))
        return " ".join(parts)

    def _age(self, now: float) -> str:
        if self.status.is_terminal and self.finished_at is not None:
            return f"finished {_span(now - self.finished_at)} ago"
        if self.status is RunStatus.RUNNING and self.started_at is not None:
            return f"started {_span(now - self.started_at)} ago"
        if self.status is RunStatus.WAITING and self.wait is not None:
            return self._waits(now)
        due = self.scheduled_at or self.created_at
        if self.status is RunStatus.RETRYING:
            return f"retry in {_span(due - now)}" if due > now else f"retry due {_span(now - due)} ago"
        return f"due in {_span(due - now)}" if due > now else f"queued {_span(now - due)} ago"

    def _waits(self, now: float) -> str:
        """A waiting run's part of the summary: `for runs 4, 5`, `for event 'approved'`, `wakes in 5m`."""
        wait = self.wait or {}
        if "runs" in wait:
            return _clip("for runs " + ", ".join(str(i) for i in wait["runs"]), 40)
        if "event" in wait:
            return f"for event {_clip(str(wait['event']))!r}"
        until = wait.get("until")
        return "sleeping" if until is None else f"wakes in {_span(until - now)}"

    def __repr__(self) -> str:
        return f"<Run {self.summary()}>"


# The statuses whose one-line summary names the error type, unless it only repeats the status.
_SHOWS_ERROR = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.RETRYING, RunStatus.CANCELLED})
_OWN_ERROR = {RunStatus.TIMED_OUT: "RunTimedOut", RunStatus.CANCELLED: "RunCancelled"}


def describe_wait(wait: dict[str, Any]) -> str:
    """A stored wait (`RunRecord.wait`) for a person; see `RunRecord.waiting_for`."""
    until = wait.get("until")
    deadline = "" if until is None else f" until {_iso(until)}"
    if "runs" in wait:
        ids = [str(i) for i in wait["runs"]]
        return f"waiting for run{'s' if len(ids) != 1 else ''} {', '.join(ids)}{deadline}"
    if "event" in wait:
        import json

        matching = f" matching {json.dumps(wait['match'], sort_keys=True)}" if wait.get("match") else ""
        return f"waiting for event {wait['event']!r}{matching}{deadline}"
    return f"sleeping{deadline}"


def _iso(epoch: float) -> str:
    """Epoch seconds as a UTC timestamp for a person: 2026-12-03T10:00:00Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _span(seconds: float) -> str:
    """A duration for a person, in the units `actors.durations` reads: 0.3s, 42s, 5m, 3h, 2d.
    A negative one (another host's clock a little ahead) reads as 0.0s."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h"
    return f"{seconds // 86400:.0f}d"


def _clip(text: str, most: int = 30, *, keep_end: bool = False) -> str:
    """A name cut to `most` characters (its end kept for an error type: the class name), so
    that a repr stays one short line."""
    if len(text) <= most:
        return text
    return "…" + text[1 - most :] if keep_end else text[: most - 1] + "…"
