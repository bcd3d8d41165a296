"""In-memory store: the same contract as SQLite, for tests and for runs that need no durability.

Nothing survives the process. Used when `Supervisor(store=":memory:")`.
"""

from __future__ import annotations

import copy
import json
import threading

from ..run import (
    Attempt,
    JobInfo,
    NewRun,
    Outcome,
    RunRecord,
    RunStatus,
    SupervisorInfo,
    WorkerInfo,
)
from .base import (
    BY_NAME,
    DUPLICATE,
    Changes,
    Event,
    Pending,
    Waiting,
    interrupted_message,
    success_as_finish,
)

_PENDING = (RunStatus.QUEUED, RunStatus.RETRYING)
_LIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING, RunStatus.WAITING)


class MemoryStore:
    """A `Store` held in dictionaries, guarded by one lock."""

    def __init__(self) -> None:
        self._runs: dict[int, RunRecord] = {}
        self._free: dict[int, int] = {}
        self._steps: dict[int, dict[str, str]] = {}
        self._positions: dict[int, dict[str, int]] = {}
        self._events: list[tuple[Event, bool]] = []  # (event, handled)
        self._unique: dict[int, tuple[str, str]] = {}
        self._cron: dict[str, float] = {}
        self._supervisor: SupervisorInfo | None = None
        self._workers: list[WorkerInfo] = []
        self._jobs: dict[str, JobInfo] = {}
        self._next_id = 1
        self._lock = threading.Lock()

    def insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        result = []
        with self._lock:
            for new in runs:
                existing, replaced = self._debounced(new, now) if new.debounce else self._existing(new)
                if existing is not None:
                    result.append((existing, False))
                    continue
                if replaced is not None:
                    replaced.key = None  # a rerun: the key moves to the new run
                run_id = self._next_id  # not len(): purge deletes runs
                self._next_id += 1
                self._runs[run_id] = RunRecord(
                    id=run_id, job=new.job, status=RunStatus.QUEUED, input=new.input, priority=new.priority,
                    max_attempts=new.max_attempts, timeout=new.timeout, created_at=now,
                    scheduled_at=new.scheduled_at or now, version=new.version, key=new.key,
                    rerun_of=new.rerun_of if replaced is None or new.debounce else replaced.id,
                    metadata=json.loads(new.metadata) if new.metadata else {}, tenant=new.tenant,
                )
                self._free[run_id] = 0
                self._steps[run_id] = {}
                self._positions[run_id] = {}
                self._runs[run_id].parent_id = new.parent_id
                if new.unique_key is not None:
                    self._unique[run_id] = (new.job, new.unique_key)
                result.append((run_id, True))
        return result

    def _debounced(self, new: NewRun, now: float) -> tuple[int | None, RunRecord | None]:
        """A debounced submit (see `Store.insert`): (the id of the queued, not yet due run under
        its key, which takes its input and due time; or None), (the run whose key moves to the
        new run, or None)."""
        keyed = next((r for r in self._runs.values() if r.job == new.job and r.key == new.key), None)
        if keyed is None:
            return None, None
        if keyed.status is not RunStatus.QUEUED or keyed.attempts or keyed.scheduled_at <= now:
            return None, keyed
        keyed.input, keyed.scheduled_at, keyed.priority, keyed.timeout = new.input, new.scheduled_at, new.priority, \
            new.timeout
        keyed.metadata, keyed.tenant = json.loads(new.metadata) if new.metadata else {}, new.tenant
        return keyed.id, None

    def _existing(self, new: NewRun) -> tuple[int | None, RunRecord | None]:
        """(the id of the run `new` names again, or None; the ended run under its key that it
        reruns instead, or None): see `Store.insert`."""
        if new.key is None and new.unique_key is None:
            return None, None
        replaced = None
        if new.key is not None:
            keyed = next((r for r in self._runs.values() if r.job == new.job and r.key == new.key), None)
            if keyed is not None:
                if not (new.rerun and keyed.status.is_terminal and keyed.status in new.rerun):
                    return keyed.id, None
                replaced = keyed
        if new.unique_key is not None:
            wanted = (new.job, new.unique_key)
            for run in self._runs.values():
                if run.status in _LIVE and self._unique.get(run.id) == wanted:
                    return run.id, None
        return None, replaced

    def steps(self, run_id: int) -> dict[str, str]:
        with self._lock:
            where = self._positions.get(run_id, {})
            return dict(sorted(self._steps.get(run_id, {}).items(), key=lambda kv: (kv[0] not in where,
                                                                                    where.get(kv[0], 0), kv[0])))

    def positions(self, run_id: int) -> dict[str, int]:
        with self._lock:
            return dict(self._positions.get(run_id, {}))

    def load_waiting(self, after_id: int = 0, limit: int | None = None) -> list[Waiting]:
        with self._lock:
            rows = [Waiting(Pending(r.id, r.job, r.input, r.priority, r.attempts, self._free[r.id], r.max_attempts,
                                    r.timeout, r.scheduled_at, str(r.status), r.version, tenant=r.tenant),
                            json.dumps(r.wait or {}))
                    for r in sorted(self._runs.values(), key=lambda r: r.id)
                    if r.id > after_id and r.status is RunStatus.WAITING]
        return rows if limit is None else rows[:limit]

    def outcomes(self, run_ids: list[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        with self._lock:
            return {r.id: (str(r.status), r.output, r.error_type, r.message)
                    for r in (self._runs.get(i) for i in run_ids) if r is not None and r.status.is_terminal}

    def emit(self, name: str, payload: str, now: float) -> int:
        with self._lock:
            event = Event(len(self._events) + 1, name, payload, now)
            self._events.append((event, False))
            return event.id

    def new_events(self, after_id: int, limit: int = 1000) -> list[Event]:
        with self._lock:
            return [e for e, handled in self._events if not handled and e.id > after_id][:limit]

    def find_events(self, name: str, run_id: int, exclude: list[int], limit: int = 1000) -> list[Event]:
        with self._lock:
            run = self._runs.get(run_id)
            since = run.created_at if run is not None else float("inf")
            return [e for e, _ in self._events if e.name == name and e.created_at >= since and e.id not in exclude][:limit]

    def purge_events(self, older_than: float) -> int:
        with self._lock:
            kept = [(e, h) for e, h in self._events if e.created_at >= older_than]
            count, self._events[:] = len(self._events) - len(kept), kept
            return count

    def commit(self, changes: Changes, now: float) -> set[int]:
        lost: set[int] = set()
        runs = self._runs
        with self._lock:
            for run_id in changes.wakes:
                run = runs.get(run_id)
                if run is not None and run.status is RunStatus.WAITING:
                    run.status, run.wait, run.scheduled_at = RunStatus.QUEUED, None, now
            for run_id, version, unique_key in changes.adopts:
                run = runs.get(run_id)
                if run is None or run.version != BY_NAME:
                    continue
                if unique_key is not None and any(
                    other.id != run_id and other.status in _LIVE and self._unique.get(other.id) == (run.job, unique_key)
                    for other in runs.values()
                ):
                    if run.status in _PENDING:
                        run.status, run.finished_at = RunStatus.CANCELLED, now
                        run.error_type, run.message = "DuplicateRun", DUPLICATE
                    continue
                run.version = version
                if unique_key is not None:
                    self._unique[run_id] = (run.job, unique_key)
            for run_id, attempt in changes.claims:
                run = runs.get(run_id)
                if run is None or run.status not in _PENDING or run.attempts + 1 != attempt:
                    lost.add(run_id)
                    continue
                run.status, run.attempts, run.started_at = RunStatus.RUNNING, attempt, now
            for run_id, attempt in changes.unclaims:
                run = runs.get(run_id)
                if run is not None and run.status is RunStatus.RUNNING and run.attempts == attempt:
                    run.status, run.attempts = RunStatus.QUEUED, attempt - 1
            finishes = changes.finishes + [success_as_finish(s, now) for s in changes.successes]
            for f in finishes:
                run = runs.get(f.run_id)
                if run is None or run.status is not RunStatus.RUNNING or run.attempts != f.attempt:
                    continue
                run.status = RunStatus(f.status)
                run.output, run.error_type, run.message, run.traceback = f.output, f.error_type, f.message, f.traceback
                if f.retry_at is not None:
                    run.scheduled_at = f.retry_at
                else:
                    run.finished_at = f.finished_at
                if not f.charged:
                    self._free[f.run_id] += 1
                log = [a for a in run.attempt_log if a.number != f.attempt]
                log.append(Attempt(f.attempt, f.started_at, f.finished_at, Outcome(f.outcome), f.error_type, f.message,
                                   f.traceback, f.worker_pid, f.exit_code, f.signal, f.peak_rss))
                run.attempt_log = log
            for s in changes.suspends:
                run = runs.get(s.run_id)
                if run is None or run.status is not RunStatus.RUNNING or run.attempts != s.attempt:
                    continue
                run.status, run.wait, run.progress = RunStatus.WAITING, json.loads(s.wait), None
                if s.wake_at is not None:
                    run.scheduled_at = s.wake_at
                self._free[s.run_id] += 1
                run.attempt_log = [a for a in run.attempt_log if a.number != s.attempt] + [
                    Attempt(s.attempt, s.started_at, s.finished_at, Outcome.SUSPENDED, worker_pid=s.worker_pid,
                            peak_rss=s.peak_rss)]
            for run_id in changes.requeues:
                run = runs.get(run_id)
                if run is not None and run.status is RunStatus.RETRYING:
                    run.status = RunStatus.QUEUED
            for run_id, status, kind, message in changes.ends:
                run = runs.get(run_id)
                if run is not None and run.status in _PENDING:
                    run.status, run.finished_at, run.error_type, run.message = RunStatus(status), now, kind, message
            for run_id, name, value, position in changes.steps:
                if run_id in self._steps:
                    self._steps[run_id][name] = value
                    if position is not None:
                        self._positions[run_id][name] = position
            for run_id, name in changes.current_steps:
                run = runs.get(run_id)
                if run is not None and run.status is RunStatus.RUNNING:
                    run.current_step = name
            handled = set(changes.handled_events)
            if handled:
                self._events[:] = [(e, h or e.id in handled) for e, h in self._events]
            for run_id, fraction, note, metadata in changes.progress:
                run = runs.get(run_id)
                if run is None:
                    continue
                if fraction is not None:
                    run.progress = fraction
                if note is not None:
                    run.progress_message = note
                if metadata is not None:
                    run.metadata = {**run.metadata, **json.loads(metadata)}
            if changes.status is not None:
                self._supervisor, workers = changes.status
                self._workers = sorted(workers)
        return lost

    def recover(self, now: float) -> int:
        """Runs left `running` (by a supervisor that stopped without finishing them) go back to
        the queue with an `interrupted` attempt ending at `now`, as in the SQLite store."""
        count = 0
        with self._lock:
            for run in self._runs.values():
                if run.status is RunStatus.RUNNING:
                    again = _last_interrupted(run, run.attempts - 1)
                    run.attempt_log.append(Attempt(run.attempts, run.started_at or now, now, Outcome.INTERRUPTED,
                                                   "Interrupted", interrupted_message(again)))
                    run.status = RunStatus.QUEUED
                    self._free[run.id] += 0 if again else 1
                    count += 1
        return count

    def load_ready(self, after_id: int = 0, limit: int | None = None) -> list[Pending]:
        with self._lock:
            rows = [
                Pending(r.id, r.job, r.input, r.priority, r.attempts, self._free[r.id], r.max_attempts, r.timeout,
                        r.scheduled_at, str(r.status), r.version, _last_interrupted(r, r.attempts), r.tenant)
                for r in self._runs.values()
                if r.id > after_id and r.status in _PENDING
            ]
        rows.sort(key=lambda row: row.id)
        return rows if limit is None else rows[:limit]

    def changed(self) -> bool:
        return False

    def acquire(self) -> None:
        """Serving needs no lock: a memory store belongs to one process."""

    def release(self) -> None:
        """See `acquire`."""

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            record = copy.copy(run)
            record.metadata = dict(run.metadata)
            record.attempt_log = list(run.attempt_log) if attempts else []
            record.wait = copy.deepcopy(run.wait)
            record.steps = {k: json.loads(v) for k, v in self._steps[run_id].items()} if attempts else {}
            return record

    def runs(
        self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50, offset: int = 0,
        since: float | None = None, tenant: str | None = None,
    ) -> list[RunRecord]:
        wanted = None if status is None else RunStatus(status)
        with self._lock:
            chosen = [
                r for r in reversed(self._runs.values())
                if (wanted is None or r.status is wanted) and (job is None or r.job == job)
                and (since is None or r.created_at >= since) and (tenant is None or r.tenant == tenant)
            ]
        return [copy.copy(r) for r in chosen[offset : offset + limit]]

    def cancel_queued(self, run_id: int, now: float) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or (run.status not in _PENDING and run.status is not RunStatus.WAITING):
                return False
            waiting = run.status is RunStatus.WAITING
            run.status, run.finished_at, run.wait = RunStatus.CANCELLED, now, None
            run.error_type = "RunCancelled"
            run.message = "cancelled while waiting" if waiting else "cancelled before it started"
            return True

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self._lock:
            for r in self._runs.values():
                per_job = result.setdefault(r.job, {})
                per_job[str(r.status)] = per_job.get(str(r.status), 0) + 1
        return result

    def version_counts(self) -> dict[str, dict[int, int]]:
        """{job: {version: stored runs}}."""
        result: dict[str, dict[int, int]] = {}
        with self._lock:
            for r in self._runs.values():
                per_job = result.setdefault(r.job, {})
                per_job[r.version] = per_job.get(r.version, 0) + 1
        return result

    def record_jobs(self, jobs: list[JobInfo]) -> None:
        with self._lock:
            self._jobs.update((info.name, info) for info in jobs)

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            return [self._jobs[name] for name in sorted(self._jobs)]

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return list(self._workers)

    def supervisor_info(self) -> SupervisorInfo | None:
        with self._lock:
            return self._supervisor

    def finished_runs(self, since: float) -> list[tuple[str, str, float | None, float]]:
        """(job, status, started_at, finished_at) of the runs that ended since `since`."""
        with self._lock:
            return [(r.job, str(r.status), r.started_at, r.finished_at) for r in self._runs.values()
                    if r.status.is_terminal and r.finished_at is not None and r.finished_at >= since]

    def purge(self, older_than: float, statuses: frozenset[str], batch: int = 500) -> int:
        wanted = {RunStatus(s) for s in statuses if RunStatus(s).is_terminal}
        with self._lock:
            doomed = [r.id for r in self._runs.values() if r.status in wanted and r.finished_at is not None
                      and r.finished_at < older_than]
            for run_id in doomed:
                for table in (self._runs, self._free, self._steps, self._positions, self._unique):
                    table.pop(run_id, None)
        return len(doomed)

    def cron_last(self, job: str) -> float | None:
        return self._cron.get(job)

    def set_cron(self, job: str, tick: float) -> None:
        self._cron[job] = tick

    def close(self) -> None:
        pass


def _last_interrupted(run: RunRecord, number: int) -> bool:
    """Whether the run's attempt `number` ended interrupted."""
    return any(a.number == number and a.outcome is Outcome.INTERRUPTED for a in run.attempt_log[-2:])
