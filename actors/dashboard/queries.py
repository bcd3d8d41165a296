"""Every SQL statement the dashboard runs, on read-only connections to an SQLite store.

Why each query stays bounded on a store of a million runs (`benchmarks/dashboard.py`):
- a run, its attempts, steps and reruns: primary-key lookups (reruns by the partial index
  `runs_rerun`, which only runs made by a retry enter);
- counts per job and status, the last hour's throughput, the queue depth: `Counts` (counts.py)
  keeps them, reading on each page only the runs past the highest id it read and the live
  runs again by primary key; a full count runs in a background thread when the app starts
  (and every few minutes, to forget purged runs). No index is added for it: one on live
  statuses cost the supervisor's throughput 15 to 30 percent in benchmarks/throughput.py, and
  even one on finish time (one append per finished run) cost it about 18 percent there;
- the runs page filtered by a live status: the live run ids `Counts` holds, read by primary
  key in chunks;
- the runs page filtered by an ended status or a job: a scan by id from the newest down, in
  windows, that stops when the page is full or after SCAN_BUDGET seconds and then says how far
  it searched, with a link to search on from there. Never OFFSET: pages are keyset (`before` /
  `after` a run id);
- time filters (`since` / `until`) become id bounds by bisecting ids on `created_at` (ids are
  given in submission order, so creation times rise with them), about 20 lookups.

A connection reads in autocommit: each statement is its own short read transaction, so a page
never holds a snapshot that would keep a serving supervisor's WAL from being checkpointed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..run import describe_wait
from ..stores.sqlite_file import APPLICATION_ID, inspect

LIVE = ("queued", "running", "retrying", "waiting")  # waiting: a durable run, suspended (RunStatus.WAITING)
ENDED = ("succeeded", "failed", "timed_out", "cancelled")
STATUSES = LIVE + ENDED
SCAN_WINDOW = 50_000  # ids per step of a scan by id
SCAN_BUDGET = 0.04  # seconds one page may spend scanning ids for matches
TEXT_CAP = 64 * 1024  # characters of input, output, traceback or a step shown on a page

_MINUTE = "CAST(finished_at / 60 AS INTEGER)"
LIST_COLUMNS = ("id, job, status, attempts, max_attempts, created_at, scheduled_at, started_at, finished_at, "
                "error_type, substr(message, 1, 300), progress")


@dataclass(slots=True)
class RunRow:
    """A run as the runs page lists it (no payloads)."""

    id: int
    job: str
    status: str
    attempts: int
    max_attempts: int | None
    created_at: float
    scheduled_at: float
    started_at: float | None
    finished_at: float | None
    error_type: str | None
    message: str | None
    progress: float | None


@dataclass(slots=True)
class RunPage:
    rows: list[RunRow]
    older: int | None  # `before` for the next page down (older runs), None at the end
    newer: int | None  # `after` for the page above (newer runs), None at the top
    searched_to: int | None = None  # a scan stopped here (ids >= it searched) before the page filled


@dataclass(slots=True)
class Detail:
    """Everything the run page shows. Texts are cut at TEXT_CAP characters; `sizes` has their
    full lengths."""

    run: dict[str, Any]
    attempts: list[dict[str, Any]]
    steps: list[tuple[str, str, int]]  # name, value (cut), full length
    reruns: list[tuple[int, str]]  # runs made by retrying this one: id, status
    sizes: dict[str, int] = field(default_factory=dict)
    children: list[tuple[int, str, str]] = field(default_factory=list)  # runs it dispatched: id, job, status


DURABLE_COLUMNS = ("parent_id", "tenant", "wait", "current_step")  # the run page's durable-execution facts
CHILDREN_SHOWN = 200


def durable_facts(run: dict[str, Any], values: tuple[Any, ...]) -> None:
    """Add a run's parent, tenant, current step and what it waits for (in words) to the run
    page's `run`, from `values` of DURABLE_COLUMNS (all None for a store from before them)."""
    run.update(zip(DURABLE_COLUMNS, values, strict=True))
    wait = run.pop("wait")
    run["waiting_for"] = None
    if run["status"] == "waiting" and wait:
        try:
            run["waiting_for"] = describe_wait(json.loads(wait))
        except (ValueError, TypeError, AttributeError):
            run["waiting_for"] = wait


class Reader:
    """Read-only connections to one store file, one per thread (sqlite3 connections are not
    shared between threads here); `fresh()` gives a private one (the event stream's)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise StoreError(f"store {self.path} does not exist (the dashboard only reads; start a supervisor on it first)")
        inspect(self.path)  # read-only: refuses a file that is not an actors store
        self._local = threading.local()
        db = self.fresh()
        try:
            if db.execute("PRAGMA application_id").fetchone()[0] not in (0, APPLICATION_ID):
                raise StoreError(f"{self.path} is not an actors store")
            self.tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
            self.run_columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            self.has_step_positions = "position" in {row[1] for row in db.execute("PRAGMA table_info(steps)")}
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc
        finally:
            db.close()
        if "runs" not in self.tables:
            raise StoreError(f"{self.path} is not an actors store (it has no runs table)")

    def fresh(self) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=2.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path} read-only: {exc}") from exc
        db.execute("PRAGMA query_only=1")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self.fresh()
        return db

    def has(self, name: str) -> bool:
        return name in self.tables

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)  # what a failed read raises

    def full_count(self, since_minute: int) -> tuple[int, list[tuple[str, str, int | None, int]], dict[int, str]]:
        """In one snapshot: the highest id, (job, status, epoch minute if in the charts' hour,
        count) of the ended runs, and {id: job} of the live ones (a scan: counts.py)."""
        db = self.fresh()
        try:
            db.execute("BEGIN")  # one snapshot for the reads
            top = db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]
            ended = db.execute(
                "SELECT job, status, CASE WHEN finished_at >= ?1 * 60 THEN CAST(finished_at / 60 AS INTEGER) END, "
                "count(*) FROM runs WHERE finished_at IS NOT NULL AND id <= ?2 GROUP BY 1, 2, 3", (since_minute, top)
            ).fetchall()
            live = {run_id: job for run_id, job in db.execute(
                "SELECT id, job FROM runs WHERE finished_at IS NULL AND id <= ? ORDER BY id", (top,))}
            db.execute("COMMIT")
        finally:
            db.close()
        return top, ended, live

    # -- overview ---------------------------------------------------------------------------

    def new_runs(self, after: int, limit: int) -> tuple[int, list[tuple[int, str]], list[tuple[str, str, int, int]]]:
        """The runs past id `after` (at most `limit` ids), read in one snapshot: the highest id
        read, (id, job) of those still live, and (job, status, epoch minute, count) of those
        that ended (counted by SQLite: in a burst, most runs have ended by the next page)."""
        db = self.db
        db.execute("BEGIN")
        try:
            top = min(db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0], after + limit)
            if top <= after:
                return after, [], []
            live = db.execute("SELECT id, job FROM runs WHERE id > ? AND id <= ? AND finished_at IS NULL ORDER BY id",
                              (after, top)).fetchall()
            ended = db.execute(f"SELECT job, status, {_MINUTE}, count(*) FROM runs WHERE id > ? AND id <= ? "
                               "AND finished_at IS NOT NULL GROUP BY 1, 2, 3", (after, top)).fetchall()
            return top, live, ended
        finally:
            db.execute("COMMIT")

    def recheck(self, ids: list[int]) -> list[tuple[int, str, str, int | None]]:
        """(id, job, status, epoch minute it ended or None) of the runs with these ids."""
        if not ids:
            return []
        return self.db.execute(
            f"SELECT id, job, status, {_MINUTE} FROM runs WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()

    def next_due(self, ids: list[int]) -> float | None:
        """The earliest scheduled time among these runs if queued or retrying (a delay, a backoff)."""
        if not ids:
            return None
        return self.db.execute(
            "SELECT min(scheduled_at) FROM runs WHERE id IN (SELECT value FROM json_each(?)) "
            "AND status IN ('queued', 'retrying')", (json.dumps(ids),),
        ).fetchone()[0]

    def supervisor(self) -> dict[str, Any] | None:
        if not self.has("supervisor"):
            return None
        row = self.db.execute(
            "SELECT pid, host, started_at, heartbeat_at, workers, restarts, kills, stopped_at FROM supervisor WHERE id=1"
        ).fetchone()
        if row is None:
            return None
        keys = ("pid", "host", "started_at", "heartbeat_at", "workers", "restarts", "kills", "stopped_at")
        info = dict(zip(keys, row, strict=True))
        try:
            info["kills"] = json.loads(info["kills"] or "{}")
        except ValueError:
            info["kills"] = {}
        return info

    def supervisors(self) -> list[dict[str, Any]]:
        """The supervisors serving (one at most on SQLite: the store's lock)."""
        info = self.supervisor()
        return [info] if info is not None and info["stopped_at"] is None else []

    def workers(self) -> list[dict[str, Any]]:
        if not self.has("workers"):
            return []
        keys = ("slot", "pid", "run_id", "job", "busy_since", "rss", "started_at", "restarts", "updated_at")
        rows = self.db.execute(f"SELECT {', '.join(keys)} FROM workers ORDER BY slot").fetchall()
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def recent_failures(self, limit: int = 10, window: int = 5_000) -> list[RunRow]:
        """The latest failed or timed-out runs among the newest `window` ids."""
        top = self.max_id()
        rows = self.db.execute(
            f"SELECT {LIST_COLUMNS} FROM runs WHERE id > ? AND status IN ('failed', 'timed_out') ORDER BY id DESC LIMIT ?",
            (top - window, limit),
        ).fetchall()
        return [RunRow(*row) for row in rows]

    def declared_jobs(self) -> dict[str, dict[str, Any]]:
        """The jobs the serving supervisors recorded (schema 4): name -> version, min_version,
        cron and options. Empty for a store no supervisor of this version served yet."""
        if not self.has("jobs"):
            return {}
        rows = self.db.execute("SELECT name, version, min_version, cron, options, recorded_at FROM jobs").fetchall()
        return {name: {"version": version, "min_version": low, "cron": cron, "options": json.loads(options),
                       "recorded_at": at} for name, version, low, cron, options, at in rows}

    def cron(self) -> dict[str, float]:
        if not self.has("cron"):
            return {}
        return dict(self.db.execute("SELECT job, last_tick FROM cron").fetchall())

    def latest_per_job(self, jobs: list[str], window: int = 20_000) -> dict[str, tuple[int, int, float]]:
        """{job: (id, version, created_at)} of each job's newest run among the newest `window` ids."""
        top = self.max_id()
        found: dict[str, tuple[int, int, float]] = {}
        for job in jobs:
            row = self.db.execute(
                "SELECT id, version, created_at FROM runs WHERE id > ? AND job=? ORDER BY id DESC LIMIT 1",
                (top - window, job),
            ).fetchone()
            if row is not None:
                found[job] = (row[0], row[1], row[2])
        return found

    def max_id(self) -> int:
        return self.db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]

    def data_version(self, db: sqlite3.Connection) -> int:
        return int(db.execute("PRAGMA data_version").fetchone()[0])

    # -- the runs page ----------------------------------------------------------------------

    def id_at(self, moment: float) -> int:
        """The smallest run id created at or after `moment` (max id + 1 if none): a bisection on
        ids, since ids rise with creation time."""
        db = self.db
        lo, hi = 1, self.max_id() + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = db.execute("SELECT id, created_at FROM runs WHERE id >= ? ORDER BY id LIMIT 1", (mid,)).fetchone()
            if row is None or row[1] >= moment:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    def runs(self, *, status: str | None, job: str | None, since: float | None, until: float | None,
             before: int | None, after: int | None, limit: int,
             live_ids: Callable[[int, int], list[int]] | None = None) -> RunPage:
        """A keyset page of runs, newest first, between `after` and `before` (exclusive)."""
        top = self.max_id()
        lo = 1 if after is None else after + 1
        hi = top if before is None else min(top, before - 1)
        if since is not None:
            lo = max(lo, self.id_at(since))
        if until is not None:
            hi = min(hi, self.id_at(until) - 1)
        where: list[str] = ["id BETWEEN ? AND ?"]
        args: list[Any] = []
        if status is not None:
            where.append("status=?")
            args.append(status)
        if job is not None:
            where.append("job=?")
            args.append(job)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if until is not None:
            where.append("created_at < ?")
            args.append(until)
        upward = after is not None and before is None  # the page just above `after`: search up from it
        order = "ASC" if upward else "DESC"
        rows: list[RunRow] = []
        searched_to: int | None = None
        if lo <= hi:
            if status in LIVE and live_ids is not None:
                rows = self._among(live_ids(hi + 1, lo - 1), where, args, lo, hi, limit + 1, upward)
            elif status is None and job is None:  # the primary key alone
                sql = f"SELECT {LIST_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
                rows = [RunRow(*r) for r in self.db.execute(sql, (lo, hi, *args, limit + 1))]
            else:
                rows, searched_to = self._scan(where, args, lo, hi, limit + 1, upward)
        more = len(rows) > limit
        rows = rows[:limit]
        if upward:
            rows.reverse()  # shown newest first, like every page
            top_older: int = rows[-1].id if rows else lo
            newer = (rows[0].id if rows else hi) if (more or searched_to is not None) else None
            if searched_to is not None and not more:
                newer = searched_to - 1
            return RunPage(rows, older=top_older, newer=newer, searched_to=searched_to)
        older: int | None = rows[-1].id if more and rows else None
        if searched_to is not None and not more:
            older = searched_to  # the scan stopped: the next page searches on below it
        newer = None
        if before is not None:
            newer = rows[0].id if rows else before - 1
        return RunPage(rows, older=older, newer=newer, searched_to=searched_to)

    def _among(self, candidates: list[int], where: list[str], args: list[Any], lo: int, hi: int, want: int,
               upward: bool) -> list[RunRow]:
        """The runs matching `where` among candidate ids (newest first), read in chunks by key."""
        if upward:
            candidates = candidates[::-1]
        sql = (f"SELECT {LIST_COLUMNS} FROM runs WHERE id IN (SELECT value FROM json_each(?)) AND "
               f"{' AND '.join(where)} ORDER BY id {'ASC' if upward else 'DESC'} LIMIT ?")
        found: list[RunRow] = []
        for start in range(0, len(candidates), 2000):
            chunk = json.dumps(candidates[start:start + 2000])
            found.extend(RunRow(*r) for r in self.db.execute(sql, (chunk, lo, hi, *args, want - len(found))))
            if len(found) >= want:
                break
        return found

    def _scan(self, where: list[str], args: list[Any], lo: int, hi: int, want: int,
              upward: bool) -> tuple[list[RunRow], int | None]:
        """Windows of SCAN_WINDOW ids from `hi` down (or from `lo` up) until `want` rows or the
        time budget; the rows and, when it stopped short of the end, the id it reached."""
        sql = f"SELECT {LIST_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id {'ASC' if upward else 'DESC'} LIMIT ?"
        found: list[RunRow] = []
        deadline = time.perf_counter() + SCAN_BUDGET
        while lo <= hi and len(found) < want:
            if upward:
                start, end = lo, min(hi, lo + SCAN_WINDOW - 1)
                lo = end + 1
            else:
                start, end = max(lo, hi - SCAN_WINDOW + 1), hi
                hi = start - 1
            found.extend(RunRow(*r) for r in self.db.execute(sql, (start, end, *args, want - len(found))))
            if time.perf_counter() > deadline and len(found) < want and lo <= hi:
                return found, (lo if upward else hi + 1)
        return found, None

    # -- one run ----------------------------------------------------------------------------

    def detail(self, run_id: int) -> Detail | None:
        db = self.db
        rerun = "rerun_of" if "rerun_of" in self.run_columns else "NULL"
        durable = ", ".join(c if c in self.run_columns else "NULL" for c in DURABLE_COLUMNS)
        cap = TEXT_CAP
        row = db.execute(
            "SELECT id, job, status, priority, attempts, free_attempts, max_attempts, timeout, created_at, "
            "scheduled_at, started_at, finished_at, error_type, message, progress, progress_message, metadata, "
            f"version, key, worker_pid, peak_rss, {rerun}, {durable}, "
            "substr(coalesce(input, (SELECT l.input FROM large_inputs AS l WHERE l.run_id = runs.id)), 1, ?), "
            "length(coalesce(input, (SELECT l.input FROM large_inputs AS l WHERE l.run_id = runs.id))), "
            "substr(output, 1, ?), length(output), substr(traceback, 1, ?), length(traceback) "
            "FROM runs WHERE id=?",
            (cap, cap, cap, run_id),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "job", "status", "priority", "attempts", "free_attempts", "max_attempts", "timeout",
                "created_at", "scheduled_at", "started_at", "finished_at", "error_type", "message", "progress",
                "progress_message", "metadata", "version", "key", "worker_pid", "peak_rss", "rerun_of")
        run = dict(zip(keys, row[:22], strict=True))
        durable_facts(run, row[22:26])
        run["input"], run["output"], run["traceback"] = row[26], row[28], row[30]
        sizes = {"input": row[27] or 0, "output": row[29] or 0, "traceback": row[31] or 0}
        attempt_keys = ("number", "started_at", "finished_at", "outcome", "error_type", "message", "traceback",
                        "worker_pid", "exit_code", "signal", "peak_rss")
        attempts = [dict(zip(attempt_keys, a, strict=True)) for a in db.execute(
            "SELECT number, started_at, finished_at, outcome, error_type, message, substr(traceback, 1, ?), "
            "worker_pid, exit_code, signal, peak_rss FROM attempts WHERE run_id=? ORDER BY number LIMIT 200",
            (cap, run_id),
        )]
        if run["status"] == "succeeded" and (not attempts or attempts[-1]["number"] != run["attempts"]):
            # a succeeded attempt has no row of its own: the run's row describes it (see SQLiteStore.get)
            attempts.append({"number": run["attempts"], "started_at": run["started_at"],
                             "finished_at": run["finished_at"], "outcome": "succeeded", "error_type": None,
                             "message": None, "traceback": None, "worker_pid": run["worker_pid"],
                             "exit_code": None, "signal": None, "peak_rss": run["peak_rss"]})
        steps = [(name, value, size) for name, value, size in db.execute(
            "SELECT name, substr(value, 1, ?), length(value) FROM steps WHERE run_id=? "
            f"{'ORDER BY position IS NULL, position, name ' if self.has_step_positions else ''}LIMIT 200",
            (cap, run_id),
        )]
        reruns: list[tuple[int, str]] = []
        if "rerun_of" in self.run_columns and self.has("runs_rerun"):  # without its index: a scan, skipped
            reruns = [(r[0], r[1]) for r in db.execute(
                "SELECT id, status FROM runs WHERE rerun_of=? ORDER BY id LIMIT 50", (run_id,))]
        children: list[tuple[int, str, str]] = []
        if self.has("runs_parent"):  # without its index (a store from before it): a scan, skipped
            children = [(r[0], r[1], r[2]) for r in db.execute(
                "SELECT id, job, status FROM runs WHERE parent_id=? ORDER BY id LIMIT ?", (run_id, CHILDREN_SHOWN))]
        return Detail(run, attempts, steps, reruns, sizes, children)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
