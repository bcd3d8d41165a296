"""SQLite store: one file, WAL mode, group commit, JSON payloads only.

- WAL with synchronous=NORMAL: a commit survives any process crash (`durability="full"` makes
  it synchronous=FULL, which also survives power loss). Writes begin IMMEDIATE.
- Files are created 0600; the schema version lives in `PRAGMA user_version`. An older store is
  upgraded when opened, in one transaction (version 2 added `runs.rerun_of`, for reruns: see
  `base.py`); an older actors then refuses the file as newer than itself.
- Other people's files are left alone: ours carry `PRAGMA application_id`, and a path is
  inspected read-only before anything changes there (`sqlite_file.py`).
- No index on `status`: keeping one costs every claim and finish more than it saves; the
  queries that filter by status run at start (about 60 ms per million runs) or for inspection.
- Two supervisors never serve one file: the serving supervisor holds an exclusive `flock` on
  `<file>.lock` for its lifetime. The kernel drops the lock when the process dies (even by
  `kill -9`), so every run a new owner finds `running` was orphaned and goes back to the queue.
  Clients (other processes submitting or reading) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from typing import Any

import pydantic_core

from ..errors import StoreError, StoreLocked
from ..run import (
    TERMINAL,
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
    DUPLICATE,
    SCHEMA_VERSION,
    Changes,
    Pending,
    interrupted_message,
    success_as_finish,
)
from .group_commit import GroupCommit
from .sqlite_durable import _BY_POSITION, DurableSQLite
from .sqlite_file import APPLICATION_ID, create, inspect, newer, upgrade

# Inputs over LARGE_INPUT characters live in their own table, so that the status updates of a
# run (claim, finish), which rewrite its whole row, do not copy megabytes each time.
LARGE_INPUT = 64 * 1024
_INPUT = "coalesce(input, (SELECT l.input FROM large_inputs AS l WHERE l.run_id = runs.id))"
_RUN_COLUMNS = (
    f"id, job, status, {_INPUT}, output, priority, attempts, max_attempts, timeout, created_at, "
    "scheduled_at, started_at, finished_at, error_type, message, traceback, progress, progress_message, metadata, "
    "version, key, rerun_of, parent_id, tenant, wait, current_step"
)
_READY_COLUMNS = f"id, job, {_INPUT}, priority, attempts, free_attempts, max_attempts, timeout, scheduled_at, status, version"

_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO attempts (run_id, number, started_at, finished_at, outcome, error_type, "
    "message, traceback, worker_pid, exit_code, signal, peak_rss) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


# Whether a run's attempt `number` ended interrupted (a primary-key lookup per run).
_LAST_INTERRUPTED = ("EXISTS (SELECT 1 FROM attempts AS a WHERE a.run_id = runs.id AND a.number = {number} "
                     "AND a.outcome = 'interrupted')")


def _field(index: int) -> str:
    return f"json_extract(j.value, '$[{index}]')"


_BATCHED_OUTPUT = 64 * 1024  # characters of output above which a success is written on its own
# Successes of one turn as a JSON array of [run_id, attempt, output, started_at, worker_pid, peak_rss].
# A succeeded attempt is the run's last: it is described by the run's own row (started_at,
# finished_at, worker_pid, peak_rss) rather than by a row in `attempts`, which saves an insert per
# run on the hot path; `get()` puts it back in the attempt log.
_SUCCEED_RUNS = (
    f"UPDATE runs SET status='succeeded', output={_field(2)}, finished_at=?2, error_type=NULL, message=NULL, "
    f"traceback=NULL, worker_pid={_field(4)}, peak_rss={_field(5)} FROM json_each(?1) AS j "
    f"WHERE runs.id={_field(0)} AND runs.attempts={_field(1)} AND runs.status='running'"
)


def _json(value: Any) -> str:
    """JSON text of a batch (pydantic-core's encoder: about 4x the standard library's speed)."""
    return pydantic_core.to_json(value).decode()


def _claim(ids: list[int], now: float) -> tuple[str, tuple[Any, ...]]:
    """The claim UPDATE for a turn's runs: as a few id ranges when they are (new runs mostly
    are consecutive), else as a JSON list."""
    ordered = sorted(ids)
    ranges: list[list[int]] = []
    for run_id in ordered:
        if ranges and run_id == ranges[-1][1] + 1:
            ranges[-1][1] = run_id
        else:
            ranges.append([run_id, run_id])
    head = "UPDATE runs SET status='running', attempts=attempts+1, started_at=? WHERE "
    tail = " AND status IN ('queued', 'retrying')"
    if len(ranges) <= 4:
        where = " OR ".join("id BETWEEN ? AND ?" for _ in ranges)
        return f"{head}({where}){tail}", (now, *(bound for pair in ranges for bound in pair))
    return f"{head}id IN (SELECT value FROM json_each(?)){tail}", (now, _json(ids))


class SQLiteStore(DurableSQLite):
    """A `Store` in one SQLite file. The serving lock is taken by `acquire()` (a supervisor's
    `serve()`) or at once with `lock=True`, and let go by `release()` or `close()`.

    Args:
        path: the database file, created (with its schema) if it does not exist; the serving
            lock is the file beside it named `path + ".lock"`.
        durability: "normal" (WAL with synchronous=NORMAL: a commit survives any process
            crash) or "full" (synchronous=FULL: also a power loss). Default "normal".
        lock: take the serving lock now (default False); StoreLocked if a live process holds it.

    Raises:
        StoreError: the file is not a usable store (corrupt, newer schema, unreadable).
        ValueError: an unknown `durability`.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal", lock: bool = False) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(f"invalid durability {durability!r}: expected 'normal' or 'full'")
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(f"the SQLite store needs SQLite >= 3.35 (UPDATE ... FROM, JSON); this Python has {sqlite3.sqlite_version}")
        self.path = os.fspath(path)
        self._mutex = threading.RLock()
        self._group = GroupCommit(self._mutex, self._insert)  # submits from several threads share commits
        self._lock_fd: int | None = None
        inspect(self.path)  # before anything is created or changed: the lock, the file, WAL
        if lock:
            self._take_lock()
        db: sqlite3.Connection | None = None
        try:
            create(self.path)
            self._db = db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise newer(self.path, version)  # its header was older than its -wal
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            if version < SCHEMA_VERSION or db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                with self._write():  # schema, version and mark in one transaction
                    if version < SCHEMA_VERSION:
                        upgrade(db)
                    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute("SELECT count(*) FROM runs WHERE id < 0").fetchone()
        except BaseException as exc:
            if db is not None:
                db.close()
            self._release_lock()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot use store {self.path}: {exc}") from exc
            raise
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    # -- the serving lock -------------------------------------------------------------------

    def check_writable(self) -> None:
        """StoreError now if this file cannot be written (read-only, immutable), rather than at
        the first submit: a no-row UPDATE inside a rolled-back transaction is refused there."""
        with self._mutex:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("UPDATE runs SET status=status WHERE id < 0")
                finally:
                    self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot use store {self.path}: {exc}") from exc

    def acquire(self) -> None:
        """Take the serving lock (StoreLocked if another process holds it); a no-op if held."""
        if self._lock_fd is None:
            self._take_lock()

    def release(self) -> None:
        """Let go of the serving lock, if held: another process may serve the store now."""
        with self._mutex:
            self._release_lock()

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot serve store {self.path}: cannot create its lock file {lock_path}: "
                             f"{exc.strerror} (is its directory writable?)") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(f"store {self.path} is already served by another supervisor (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)  # no pid: nobody serves (see `served`)
            os.close(self._lock_fd)
            self._lock_fd = None

    def served(self) -> bool:
        """Whether a supervisor holds this store's serving lock: the lock file names a live pid.
        (A supervisor empties it when it lets go; one killed leaves a dead pid behind.)"""
        try:
            with open(self.path + ".lock", "rb") as file:
                pid = int(file.read(32).strip() or 0)
        except (OSError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, someone else's
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"  # a zombie serves nothing
        except OSError:
            return True

    # -- transactions -----------------------------------------------------------------------

    def _write(self) -> _Transaction:
        return _Transaction(self)

    def insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        """Store the new `runs`, created at `now` (see `Store.insert`), with group commit: calls
        from several threads at once share one transaction (`group_commit.py`)."""
        return self._group.insert(runs, now)

    def _insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        """`insert`'s transaction; called with the mutex held (by `GroupCommit`)."""
        sql = ("INSERT INTO runs (job, status, input, priority, max_attempts, timeout, created_at, scheduled_at, "
               "version, key, unique_key, parent_id, tenant, metadata, rerun_of) "
               "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        rows = [(r.job, r.input if len(r.input) <= LARGE_INPUT else None, r.priority, r.max_attempts, r.timeout, now,
                 r.scheduled_at or now, r.version, r.key, r.unique_key, r.parent_id, r.tenant, r.metadata, r.rerun_of)
                for r in runs]
        db = self._db
        plain = not any(r.key or r.unique_key or len(r.input) > LARGE_INPUT for r in runs)
        if plain and len(rows) == 1:
            # one statement in autocommit is its own durable transaction: one call into SQLite
            # (one release of the GIL) instead of three, which matters while the loop thread runs
            try:
                run_id = db.execute(sql, rows[0]).lastrowid
                assert run_id is not None
                return [(run_id, True)]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write store {self.path}: {exc}") from exc
        with self._write():
            if plain:
                db.executemany(sql, rows)
                last = db.execute("SELECT max(id) FROM runs").fetchone()[0]
                assert last is not None
                # one writer inside one transaction: the rows got consecutive ids ending at `last`
                return [(run_id, True) for run_id in range(last - len(rows) + 1, last + 1)]
            result = []
            for run, row in zip(runs, rows, strict=True):
                existing: Any = None
                replaced: int | None = None
                rerun_of: int | None = None
                if run.debounce and run.key is not None:  # see `Store.insert`
                    existing = db.execute("SELECT id FROM runs WHERE job=? AND key=? AND status='queued' AND attempts=0 "
                                          "AND scheduled_at>?", (run.job, run.key, now)).fetchone()
                    if existing is not None:
                        self._debounced(existing[0], run)
                    else:  # none, or it is due, started or ended: a new burst, a new run takes the key
                        held = db.execute("SELECT id FROM runs WHERE job=? AND key=?", (run.job, run.key)).fetchone()
                        replaced = held[0] if held is not None else None
                elif run.key is not None:
                    existing = db.execute("SELECT id, status FROM runs WHERE job=? AND key=?", (run.job, run.key)).fetchone()
                    if existing is not None and run.rerun and RunStatus(existing[1]) in run.rerun & TERMINAL:
                        replaced, existing = existing[0], None  # a rerun (see `Store.insert`)
                        rerun_of = replaced
                if existing is None and run.unique_key is not None:
                    existing = db.execute(
                        "SELECT id FROM runs WHERE job=? AND unique_key=? AND status IN ('queued', 'running', 'retrying', 'waiting')",
                        (run.job, run.unique_key),
                    ).fetchone()
                if existing is not None:
                    result.append((existing[0], False))
                    continue
                if replaced is not None:  # the key moves to the new run
                    db.execute("UPDATE runs SET key=NULL WHERE id=?", (replaced,))
                run_id = db.execute(sql, row if rerun_of is None else (*row[:-1], rerun_of)).lastrowid
                if row[1] is None:
                    db.execute("INSERT INTO large_inputs (run_id, input) VALUES (?, ?)", (run_id, run.input))
                result.append((run_id, True))
            return result

    def _debounced(self, run_id: int, run: NewRun) -> None:
        """The queued run `run_id` takes a later debounced submit's input and due time (inside
        `insert`'s transaction)."""
        db = self._db
        large = len(run.input) > LARGE_INPUT
        db.execute("UPDATE runs SET input=?, scheduled_at=?, priority=?, timeout=?, metadata=?, tenant=? WHERE id=?",
                   (None if large else run.input, run.scheduled_at, run.priority, run.timeout, run.metadata,
                    run.tenant, run_id))
        if large:
            db.execute("INSERT OR REPLACE INTO large_inputs (run_id, input) VALUES (?, ?)", (run_id, run.input))
        else:
            db.execute("DELETE FROM large_inputs WHERE run_id=?", (run_id,))

    def steps(self, run_id: int) -> dict[str, str]:
        with self._mutex:
            return dict(self._db.execute(f"SELECT name, value FROM steps WHERE run_id=? {_BY_POSITION}",
                                         (run_id,)).fetchall())

    def commit(self, changes: Changes, now: float) -> set[int]:
        db = self._db
        lost: set[int] = set()
        with self._write():
            if changes.wakes:  # before the claims: a run woken in this turn may be claimed in it
                db.execute("UPDATE runs SET status='queued', wait=NULL, scheduled_at=? WHERE id IN "
                           "(SELECT value FROM json_each(?)) AND status='waiting'", (now, _json(changes.wakes)))
            for run_id, version, unique_key in changes.adopts:
                if unique_key is not None and db.execute(
                    "SELECT 1 FROM runs AS o, runs AS r WHERE r.id=?1 AND o.job=r.job AND o.unique_key=?2 "
                    "AND o.status IN ('queued', 'running', 'retrying', 'waiting') AND o.id<>?1", (run_id, unique_key),
                ).fetchone():
                    db.execute("UPDATE runs SET status='cancelled', finished_at=?, error_type='DuplicateRun', "
                               "message=? WHERE id=? AND status IN ('queued', 'retrying')", (now, DUPLICATE, run_id))
                else:
                    db.execute("UPDATE runs SET version=?, unique_key=? WHERE id=? AND version=0",
                               (version, unique_key, run_id))
            if changes.claims:
                ids = [run_id for run_id, _ in changes.claims]
                cursor = db.execute(*_claim(ids, now))
                if cursor.rowcount != len(ids):
                    expected = dict(changes.claims)
                    rows = db.execute(
                        "SELECT id, status, attempts FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                        (_json(ids),),
                    ).fetchall()
                    found = {row[0]: row for row in rows}
                    for run_id in ids:
                        row = found.get(run_id)
                        if row is None or row[1] != "running" or row[2] != expected[run_id]:
                            lost.add(run_id)
            if changes.unclaims:
                db.executemany(
                    "UPDATE runs SET status='queued', attempts=attempts-1 WHERE id=? AND attempts=? AND status='running'",
                    changes.unclaims,
                )
            if changes.successes or changes.finishes:
                # small successes (the hot path) go set-based, the turn's rows as one JSON array; big
                # outputs and other endings row by row, since escaping megabytes into one JSON batch
                # and parsing them back costs more than it saves
                successes = changes.successes
                others = changes.finishes
                if any(len(s[2]) >= _BATCHED_OUTPUT for s in successes):
                    others = others + [success_as_finish(s, now) for s in successes if len(s[2]) >= _BATCHED_OUTPUT]
                    successes = [s for s in successes if len(s[2]) < _BATCHED_OUTPUT]
                if successes:
                    db.execute(_SUCCEED_RUNS, (_json(successes), now))
                for f in others:  # rare: one conditional statement each, the attempt only if accepted
                    cursor = db.execute(
                        "UPDATE runs SET status=?, output=?, finished_at=?, error_type=?, message=?, traceback=?, "
                        "scheduled_at=coalesce(?, scheduled_at), free_attempts=free_attempts+? "
                        "WHERE id=? AND attempts=? AND status='running'",
                        (f.status, f.output, None if f.retry_at else f.finished_at, f.error_type, f.message,
                         f.traceback, f.retry_at, 0 if f.charged else 1, f.run_id, f.attempt),
                    )
                    if cursor.rowcount:
                        db.execute(_INSERT_ATTEMPT, (f.run_id, f.attempt, f.started_at, f.finished_at, f.outcome,
                                                     f.error_type, f.message, f.traceback, f.worker_pid, f.exit_code,
                                                     f.signal, f.peak_rss))
            if changes.suspends:
                self._suspend(changes.suspends)
            if changes.requeues:
                db.execute(
                    "UPDATE runs SET status='queued' WHERE id IN (SELECT value FROM json_each(?)) AND status='retrying'",
                    (_json(changes.requeues),),
                )
            if changes.ends:
                db.executemany(
                    "UPDATE runs SET status=?, finished_at=?, error_type=?, message=? "
                    "WHERE id=? AND status IN ('queued', 'retrying')",
                    [(status, now, kind, message, run_id) for run_id, status, kind, message in changes.ends],
                )
            if changes.steps:
                db.executemany("INSERT INTO steps (run_id, name, value, position) VALUES (?, ?, ?, ?) ON CONFLICT "
                               "DO UPDATE SET value=excluded.value, position=coalesce(excluded.position, position)",
                               changes.steps)
            if changes.current_steps:
                db.executemany("UPDATE runs SET current_step=?2 WHERE id=?1 AND status='running'", changes.current_steps)
            if changes.handled_events:
                db.execute("UPDATE events SET handled=1 WHERE id IN (SELECT value FROM json_each(?))",
                           (_json(changes.handled_events),))
            if changes.progress:
                db.executemany(
                    "UPDATE runs SET progress=coalesce(?1, progress), progress_message=coalesce(?2, progress_message), "
                    "metadata=CASE WHEN ?3 IS NULL THEN metadata ELSE json_patch(coalesce(metadata, '{}'), ?3) END "
                    "WHERE id=?4",
                    [(fraction, message, metadata, run_id) for run_id, fraction, message, metadata in changes.progress],
                )
            if changes.status is not None:
                info, workers = changes.status
                db.execute("INSERT OR REPLACE INTO supervisor (id, pid, host, started_at, heartbeat_at, workers, "
                           "restarts, kills, stopped_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (*info[:6], _json(info.kills), info.stopped_at))
                db.execute("DELETE FROM workers")
                db.executemany("INSERT INTO workers (slot, pid, run_id, job, busy_since, rss, started_at, restarts, "
                               "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", workers)
        return lost

    def recover(self, now: float) -> int:
        with self._write():
            rows = self._db.execute(
                f"SELECT id, attempts, started_at, {_LAST_INTERRUPTED.format(number='attempts - 1')} "
                "FROM runs WHERE status='running'"
            ).fetchall()
            self._db.executemany(
                _INSERT_ATTEMPT,
                [
                    (run_id, attempt, started, now, Outcome.INTERRUPTED.value, "Interrupted",
                     interrupted_message(bool(again)), None, None, None, None, None)
                    for run_id, attempt, started, again in rows
                ],
            )
            self._db.execute(  # one statement even with no rows: a read-only store is refused here
                "UPDATE runs SET status='queued', "
                f"free_attempts=free_attempts + NOT {_LAST_INTERRUPTED.format(number='attempts - 1')} "
                "WHERE status='running'"
            )
        return len(rows)

    def load_ready(self, after_id: int = 0, limit: int | None = None) -> list[Pending]:
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {_READY_COLUMNS}, {_LAST_INTERRUPTED.format(number='attempts')}, tenant "
                "FROM runs WHERE status IN ('queued', 'retrying') AND id > ? ORDER BY id LIMIT ?",
                (after_id, -1 if limit is None else limit),
            ).fetchall()
        return [Pending(*row) for row in rows]

    def changed(self) -> bool:
        with self._mutex:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    # -- reading ----------------------------------------------------------------------------

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        with self._mutex:
            row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return None
            record = _record(row)
            if attempts:
                rows = self._db.execute(
                    "SELECT number, started_at, finished_at, outcome, error_type, message, traceback, "
                    "worker_pid, exit_code, signal, peak_rss FROM attempts WHERE run_id=? ORDER BY number",
                    (run_id,),
                ).fetchall()
                record.attempt_log = [Attempt(a[0], a[1], a[2], Outcome(a[3]) if a[3] else None, *a[4:]) for a in rows]
                if record.status is RunStatus.SUCCEEDED and (not rows or rows[-1][0] != record.attempts):
                    pid, rss = self._db.execute("SELECT worker_pid, peak_rss FROM runs WHERE id=?", (run_id,)).fetchone()
                    record.attempt_log.append(Attempt(record.attempts, record.started_at or 0.0, record.finished_at,
                                                      Outcome.SUCCEEDED, worker_pid=pid, peak_rss=rss))
                record.steps = {name: json.loads(value) for name, value in
                                self._db.execute(f"SELECT name, value FROM steps WHERE run_id=? {_BY_POSITION}",
                                                 (run_id,))}
        return record

    def runs(
        self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50, offset: int = 0,
        since: float | None = None, tenant: str | None = None,
    ) -> list[RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("created_at>=?")
            args.append(since)
        if tenant is not None:
            where.append("tenant=?")  # the runs_tenant index
            args.append(tenant)
        if status is not None:
            where.append("status=?")
            args.append(str(RunStatus(status)))
        if job is not None:
            where.append("job=?")
            args.append(job)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._mutex:
            rows = self._db.execute(sql, (*args, limit, offset)).fetchall()
        return [_record(row) for row in rows]

    def cancel_queued(self, run_id: int, now: float) -> bool:
        with self._write():
            cursor = self._db.execute(
                "UPDATE runs SET status='cancelled', finished_at=?, error_type='RunCancelled', wait=NULL, "
                "message=CASE status WHEN 'waiting' THEN 'cancelled while waiting' ELSE 'cancelled before it started' "
                "END WHERE id=? AND status IN ('queued', 'retrying', 'waiting')",
                (now, run_id),
            )
        return cursor.rowcount == 1

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self._mutex:
            for job, status, count in self._db.execute("SELECT job, status, count(*) FROM runs GROUP BY job, status"):
                result.setdefault(job, {})[status] = count
        return result

    def version_counts(self) -> dict[str, dict[int, int]]:
        """{job: {version: stored runs}} (`actors jobs`)."""
        result: dict[str, dict[int, int]] = {}
        with self._mutex:
            for job, version, count in self._db.execute("SELECT job, version, count(*) FROM runs GROUP BY job, version"):
                result.setdefault(job, {})[version] = count
        return result

    def record_jobs(self, jobs: list[JobInfo]) -> None:
        with self._write():
            self._db.executemany(
                "INSERT OR REPLACE INTO jobs (name, version, min_version, cron, options, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(j.name, j.version, j.min_version, j.cron, _json(j.options), j.recorded_at) for j in jobs])

    def jobs(self) -> list[JobInfo]:
        with self._mutex:
            rows = self._db.execute("SELECT name, version, min_version, cron, options, recorded_at FROM jobs "
                                    "ORDER BY name").fetchall()
        return [JobInfo(name, version, low, cron, json.loads(options), at) for name, version, low, cron, options, at
                in rows]

    def workers(self) -> list[WorkerInfo]:
        with self._mutex:
            rows = self._db.execute("SELECT slot, pid, run_id, job, busy_since, rss, started_at, restarts, updated_at "
                                    "FROM workers ORDER BY slot").fetchall()
        return [WorkerInfo(*row) for row in rows]

    def supervisor_info(self) -> SupervisorInfo | None:
        with self._mutex:
            row = self._db.execute("SELECT pid, host, started_at, heartbeat_at, workers, restarts, kills, stopped_at "
                                   "FROM supervisor WHERE id=1").fetchone()
        if row is None:
            return None
        return SupervisorInfo(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])

    def finished_runs(self, since: float) -> list[tuple[str, str, float | None, float]]:
        """(job, status, started_at, finished_at) of the runs that ended since `since` (epoch
        seconds): what `actors stats` computes rates and run times from. A scan (no index on
        finish time: it would cost every finish on the hot path)."""
        with self._mutex:
            return self._db.execute(
                "SELECT job, status, started_at, finished_at FROM runs WHERE finished_at>=? "
                "AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled')", (since,)).fetchall()

    def purge(self, older_than: float, statuses: frozenset[str], batch: int = 500) -> int:
        wanted = sorted(str(RunStatus(s)) for s in statuses if RunStatus(s).is_terminal)
        if not wanted:
            return 0
        marks = ", ".join("?" for _ in wanted)
        total = 0
        db = self._db
        while True:
            with self._write():  # one short transaction per batch: a serving supervisor waits at most that long
                ids = [row[0] for row in db.execute(
                    f"SELECT id FROM runs WHERE status IN ({marks}) AND finished_at<? LIMIT ?",
                    (*wanted, older_than, batch))]
                if ids:
                    chosen = _json(ids)
                    for table, column in (("attempts", "run_id"), ("steps", "run_id"), ("large_inputs", "run_id"),
                                          ("runs", "id")):
                        db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))", (chosen,))
            total += len(ids)
            if len(ids) < batch:
                return total

    def cron_last(self, job: str) -> float | None:
        with self._mutex:
            row = self._db.execute("SELECT last_tick FROM cron WHERE job=?", (job,)).fetchone()
        return None if row is None else row[0]

    def set_cron(self, job: str, tick: float) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO cron (job, last_tick) VALUES (?, ?)", (job, tick))

    def close(self) -> None:
        with self._mutex:
            try:
                self._db.close()
            finally:
                self._release_lock()


def _record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(row[0], row[1], RunStatus(row[2]), *row[3:18], json.loads(row[18]) if row[18] else {},  # type: ignore[call-arg]
                     *row[19:24], json.loads(row[24]) if row[24] else None, row[25])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's mutex; store errors become StoreError."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._mutex.acquire()
        try:
            self._store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._store._mutex.release()
            raise StoreError(f"cannot write store {self._store.path}: {exc}") from exc

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        db = self._store._db
        try:
            if kind is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise StoreError(f"cannot write store {self._store.path}: {error}") from error
            else:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot write store {self._store.path}: {exc}") from exc
        finally:
            self._store._mutex.release()
