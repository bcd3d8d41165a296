"""Every SQL statement the dashboard runs on a PostgreSQL store (the reader beside queries.py's
`Reader`, with the same interface), on read-only connections.

- A connection per reader and thread (the app's pages run in worker threads), in autocommit,
  with `SET default_transaction_read_only = on`: each statement is its own short read-only
  transaction, so the dashboard can never write and never holds a snapshot open; only the
  reads that must agree with each other (the counts) share one REPEATABLE READ transaction.
- The same bounded queries as on SQLite (queries.py says why each is bounded): primary-key
  lookups, keyset pages by id, scans by id in windows under a time budget, time filters turned
  into id bounds by bisection. Never OFFSET.
- What differs: several supervisors may serve at once, one row each in `incarnations`. The
  live ones are those not stopped whose lease (`beat`, by the database clock) is younger than
  the lease (30 s, PostgresStore's default; `?lease=` in the URL changes it); their ages are
  read by the database clock too, so no host's clock decides whether a supervisor is silent.
- Ids are drawn from a sequence and several hosts insert at once, so a run with a smaller id
  may commit after a larger one: ids missing below the highest read are remembered for
  GAP_TTL seconds and read again with the new runs, so that `Counts` still counts each run
  once (an id burnt by a rollback or a duplicate key just expires).
- The event stream's `data_version`: the highest run id, the latest lease renewal, and the
  rows written into runs, attempts and steps by the statistics (pg_stat_user_tables), polled;
  a few index and catalogue lookups, never a scan.

The store is named by its URL: `postgresql://user@host:5432/db?schema=actors` (`schema`, and
`lease`, are the dashboard's; the rest goes to libpq).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..errors import StoreError
from ..stores.postgres import LEASE, PostgresStore, _describe, url_options
from ..stores.postgres_schema import VERSION
from . import queries
from .queries import LIST_COLUMNS, LIVE, TEXT_CAP, Detail, RunPage, RunRow

_MINUTE = "floor(finished_at / 60)::bigint"
GAP_TTL = 60.0  # seconds an id missing below the highest read is looked for again
GAP_CAP = 20_000  # ids remembered at most


def parse_url(url: str) -> tuple[str, str, float]:
    """(libpq DSN, schema, lease) from a store URL, as `PostgresStore` reads it (`?schema=`,
    default "actors"; `?lease=` seconds, default 30; `?notify=` is the supervisors' and
    ignored here: the dashboard polls)."""
    dsn, options = url_options(url)
    return dsn, options.get("schema", "actors"), options.get("lease", LEASE)


def _scalar(row: Any) -> int:
    """The one value of an aggregate's row (an aggregate always returns a row)."""
    assert row is not None
    return int(row[0])


class PostgresReader:
    """Read-only connections to one PostgreSQL store (a schema), one per thread; `fresh()`
    gives a private one (the event stream's). The same methods as queries.Reader."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url
        self.dsn, self.schema, self.lease = parse_url(url)
        self.quoted = f'"{self.schema}"'
        self.path = f"{_describe(self.dsn)} (schema {self.schema})"  # what pages name the store by
        self._local = threading.local()
        self._gaps: dict[int, float] = {}  # missing run id -> when to stop looking for it
        self._sql: dict[str, str] = {}
        db = self.fresh()
        try:
            tables = {row[0] for row in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,))}
            if "runs" not in tables or "schema_version" not in tables:
                raise StoreError(f"{self.path} is not an actors store (it has no runs table; the dashboard only "
                                 "reads: start a supervisor on it first)")
            row = db.execute(self._q("SELECT version FROM {s}.schema_version")).fetchone()
            if row is not None and row[0] > VERSION:
                raise StoreError(f"{self.path} has actors schema version {row[0]}, newer than this actors ({VERSION})")
            self.tables = tables
        except psycopg.Error as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from exc
        finally:
            db.close()

    def _q(self, statement: str) -> str:
        text = self._sql.get(statement)
        if text is None:
            text = self._sql[statement] = statement.replace("{s}", self.quoted)
        return text

    def fresh(self) -> psycopg.Connection[Any]:
        try:
            db = psycopg.connect(self.dsn, autocommit=True, application_name="actors-dashboard", connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to store {self.path}: {exc}") from exc
        try:
            db.execute("SET default_transaction_read_only = on")
            db.execute("SET statement_timeout = '10s'")  # short statements: a page never hangs on the store
            db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # for the few explicit transactions
        except psycopg.Error as exc:
            db.close()
            raise StoreError(f"cannot set up a read-only connection to {self.path}: {exc}") from exc
        return db

    @property
    def db(self) -> psycopg.Connection[Any]:
        db = getattr(self._local, "db", None)
        if db is None or db.closed or db.broken:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            db = self._local.db = self.fresh()
        return db

    def _all(self, statement: str, args: Any = None) -> list[Any]:
        return self.db.execute(self._q(statement), args).fetchall()

    def _one(self, statement: str, args: Any = None) -> Any:
        return self.db.execute(self._q(statement), args).fetchone()

    def has(self, name: str) -> bool:
        return name in self.tables or name == "runs_rerun"

    def client_store(self) -> PostgresStore:
        """A (writing) store for the actions, which go through actors.Client."""
        return PostgresStore(self.dsn, schema=self.schema, lease=self.lease)

    # -- counts (counts.py) -----------------------------------------------------------------

    def full_count(self, since_minute: int) -> tuple[int, list[tuple[str, str, int | None, int]], dict[int, str]]:
        """In one snapshot: the highest id, (job, status, epoch minute if in the charts' hour,
        count) of the ended runs, and {id: job} of the live ones (a scan: counts.py)."""
        with self.fresh() as db, db.transaction():  # a connection of its own: a background thread's
            top = _scalar(db.execute(self._q("SELECT coalesce(max(id), 0) FROM {s}.runs")).fetchone())
            ended = db.execute(self._q(
                f"SELECT job, status, CASE WHEN finished_at >= %s * 60 THEN {_MINUTE} END, count(*) FROM {{s}}.runs "
                "WHERE finished_at IS NOT NULL AND id <= %s GROUP BY 1, 2, 3"), (since_minute, top)).fetchall()
            live = {run_id: job for run_id, job in db.execute(self._q(
                "SELECT id, job FROM {s}.runs WHERE finished_at IS NULL AND id <= %s ORDER BY id"), (top,))}
            gaps = [row[0] for row in db.execute(self._q(
                "SELECT g FROM generate_series(greatest(1, %s - 2000), %s) AS g "
                "WHERE NOT EXISTS (SELECT 1 FROM {s}.runs WHERE id = g)"), (top - 1, top))]
        deadline = time.monotonic() + GAP_TTL
        self._gaps = dict.fromkeys(gaps, deadline)
        return top, ended, live

    def new_runs(self, after: int, limit: int) -> tuple[int, list[tuple[int, str]], list[tuple[str, str, int, int]]]:
        """The runs past id `after` (at most `limit` ids), and those of the remembered missing
        ids that appeared, in one snapshot: the highest id read, (id, job) of those still live,
        and (job, status, epoch minute, count) of those that ended."""
        now = time.monotonic()
        self._gaps = {g: until for g, until in self._gaps.items() if until > now}
        gaps = sorted(self._gaps)
        db = self.db
        with db.transaction():
            top = min(_scalar(db.execute(self._q("SELECT coalesce(max(id), 0) FROM {s}.runs")).fetchone()), after + limit)
            if top <= after and not gaps:
                return after, [], []
            top = max(top, after)
            found = db.execute(self._q(
                "SELECT id, job, finished_at IS NULL, status, "
                f"{_MINUTE} FROM {{s}}.runs WHERE (id > %s AND id <= %s) OR id = ANY(%s::bigint[]) ORDER BY id"),
                (after, top, gaps)).fetchall()
        live: list[tuple[int, str]] = []
        ended: dict[tuple[str, str, int], int] = {}
        seen: set[int] = set()
        for run_id, job, is_live, status, minute in found:
            seen.add(run_id)
            if run_id in self._gaps:
                del self._gaps[run_id]
            if is_live:
                live.append((run_id, job))
            else:
                ended[(job, status, minute)] = ended.get((job, status, minute), 0) + 1
        in_range = sum(1 for run_id in seen if after < run_id <= top)
        if in_range < top - after and len(self._gaps) < GAP_CAP:  # ids below top not committed (yet)
            until = now + GAP_TTL
            for run_id in range(max(after + 1, top - GAP_CAP), top + 1):
                if run_id not in seen:
                    self._gaps[run_id] = until
        live.sort()
        return top, live, [(job, status, minute, count) for (job, status, minute), count in ended.items()]

    def recheck(self, ids: list[int]) -> list[tuple[int, str, str, int | None]]:
        """(id, job, status, epoch minute it ended or None) of the runs with these ids."""
        if not ids:
            return []
        return self._all(f"SELECT id, job, status, {_MINUTE} FROM {{s}}.runs WHERE id = ANY(%s::bigint[])", (ids,))

    def next_due(self, ids: list[int]) -> float | None:
        if not ids:
            return None
        return self._one("SELECT min(scheduled_at) FROM {s}.runs WHERE id = ANY(%s::bigint[]) "
                         "AND status IN ('queued', 'retrying')", (ids,))[0]

    # -- supervisors and workers ------------------------------------------------------------

    _INCARNATION = ("SELECT i.id, i.pid, i.host, i.started_at, i.heartbeat_at, i.workers, i.restarts, i.kills, "
                    "i.stopped_at, extract(epoch FROM now() - i.beat)::float8, "
                    "(i.stopped_at IS NULL AND i.beat >= now() - make_interval(secs => %(lease)s)) FROM {s}.incarnations AS i ")
    _KEYS = ("incarnation", "pid", "host", "started_at", "heartbeat_at", "workers", "restarts", "kills",
             "stopped_at", "age", "live")

    def _incarnations(self, rows: list[Any]) -> list[dict[str, Any]]:
        found = []
        for row in rows:
            info = dict(zip(self._KEYS, row, strict=True))
            try:
                info["kills"] = json.loads(info["kills"] or "{}")
            except ValueError:
                info["kills"] = {}
            found.append(info)
        return found

    def supervisor(self) -> dict[str, Any] | None:
        """A live supervisor if one serves (the latest to renew its lease), else the last that
        served, as PostgresStore.supervisor_info decides; with `age` (seconds since its lease
        was renewed, by the database clock) and `live`."""
        rows = self._incarnations(self._all(
            self._INCARNATION + "ORDER BY 11 DESC, i.beat DESC LIMIT 1", {"lease": self.lease}))
        return rows[0] if rows else None

    def supervisors(self) -> list[dict[str, Any]]:
        """The live supervisors (not stopped, lease younger than the lease), latest first."""
        return self._incarnations(self._all(
            self._INCARNATION + "WHERE i.stopped_at IS NULL AND i.beat >= now() - make_interval(secs => %(lease)s) "
            "ORDER BY i.beat DESC LIMIT 50", {"lease": self.lease}))

    def workers(self) -> list[dict[str, Any]]:
        """The workers of every live supervisor, by incarnation and slot."""
        keys = ("slot", "pid", "run_id", "job", "busy_since", "rss", "started_at", "restarts", "updated_at",
                "incarnation", "host")
        rows = self._all(
            "SELECT w.slot, w.pid, w.run_id, w.job, w.busy_since, w.rss, w.started_at, w.restarts, w.updated_at, "
            "w.incarnation, i.host FROM {s}.workers AS w JOIN {s}.incarnations AS i ON i.id = w.incarnation "
            "WHERE i.stopped_at IS NULL AND i.beat >= now() - make_interval(secs => %(lease)s) "
            "ORDER BY w.incarnation, w.slot LIMIT 1000", {"lease": self.lease})
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def recent_failures(self, limit: int = 10, window: int = 5_000) -> list[RunRow]:
        top = self.max_id()
        rows = self._all(f"SELECT {LIST_COLUMNS} FROM {{s}}.runs WHERE id > %s AND status IN ('failed', 'timed_out') "
                         "ORDER BY id DESC LIMIT %s", (top - window, limit))
        return [RunRow(*row) for row in rows]

    def declared_jobs(self) -> dict[str, dict[str, Any]]:
        if "jobs" not in self.tables:
            return {}
        rows = self._all("SELECT name, version, min_version, cron, options, recorded_at FROM {s}.jobs")
        return {name: {"version": version, "min_version": low, "cron": cron, "options": json.loads(options),
                       "recorded_at": at} for name, version, low, cron, options, at in rows}

    def cron(self) -> dict[str, float]:
        return dict(self._all("SELECT job, last_tick FROM {s}.cron"))

    def latest_per_job(self, jobs: list[str], window: int = 20_000) -> dict[str, tuple[int, int, float]]:
        top = self.max_id()
        found: dict[str, tuple[int, int, float]] = {}
        for job in jobs:
            row = self._one("SELECT id, version, created_at FROM {s}.runs WHERE id > %s AND job = %s "
                            "ORDER BY id DESC LIMIT 1", (top - window, job))
            if row is not None:
                found[job] = (row[0], row[1], row[2])
        return found

    def max_id(self) -> int:
        return int(self._one("SELECT coalesce(max(id), 0) FROM {s}.runs")[0])

    def data_version(self, db: psycopg.Connection[Any]) -> tuple[Any, ...]:
        """What moves when the store changes: the highest run id, the latest lease renewal (a
        serving supervisor's status write, about once a second) and the rows written into the
        runs, attempts and steps by the statistics (a cancel or a retry with no supervisor)."""
        row = db.execute(self._q(
            "SELECT (SELECT coalesce(max(id), 0) FROM {s}.runs), (SELECT max(beat) FROM {s}.incarnations), "
            "(SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname IN ('runs', 'attempts', 'steps'))"), (self.schema,)).fetchone()
        return tuple(row) if row is not None else ()

    # -- the runs page ----------------------------------------------------------------------

    def id_at(self, moment: float) -> int:
        lo, hi = 1, self.max_id() + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._one("SELECT id, created_at FROM {s}.runs WHERE id >= %s ORDER BY id LIMIT 1", (mid,))
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
        where: list[str] = ["id BETWEEN %s AND %s"]
        args: list[Any] = []
        for clause, value in (("status = %s", status), ("job = %s", job), ("created_at >= %s", since),
                              ("created_at < %s", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        upward = after is not None and before is None
        order = "ASC" if upward else "DESC"
        rows: list[RunRow] = []
        searched_to: int | None = None
        if lo <= hi:
            if status in LIVE and live_ids is not None:
                rows = self._among(live_ids(hi + 1, lo - 1), where, args, lo, hi, limit + 1, upward)
            elif status is None and job is None:
                sql = f"SELECT {LIST_COLUMNS} FROM {{s}}.runs WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT %s"
                rows = [RunRow(*r) for r in self._all(sql, (lo, hi, *args, limit + 1))]
            else:
                rows, searched_to = self._scan(where, args, lo, hi, limit + 1, upward)
        more = len(rows) > limit
        rows = rows[:limit]
        if upward:
            rows.reverse()
            top_older: int = rows[-1].id if rows else lo
            newer = (rows[0].id if rows else hi) if (more or searched_to is not None) else None
            if searched_to is not None and not more:
                newer = searched_to - 1
            return RunPage(rows, older=top_older, newer=newer, searched_to=searched_to)
        older: int | None = rows[-1].id if more and rows else None
        if searched_to is not None and not more:
            older = searched_to
        newer = None
        if before is not None:
            newer = rows[0].id if rows else before - 1
        return RunPage(rows, older=older, newer=newer, searched_to=searched_to)

    def _among(self, candidates: list[int], where: list[str], args: list[Any], lo: int, hi: int, want: int,
               upward: bool) -> list[RunRow]:
        if upward:
            candidates = candidates[::-1]
        sql = (f"SELECT {LIST_COLUMNS} FROM {{s}}.runs WHERE id = ANY(%s::bigint[]) AND {' AND '.join(where)} "
               f"ORDER BY id {'ASC' if upward else 'DESC'} LIMIT %s")
        found: list[RunRow] = []
        for start in range(0, len(candidates), 2000):
            chunk = candidates[start:start + 2000]
            found.extend(RunRow(*r) for r in self._all(sql, (chunk, lo, hi, *args, want - len(found))))
            if len(found) >= want:
                break
        return found

    def _scan(self, where: list[str], args: list[Any], lo: int, hi: int, want: int,
              upward: bool) -> tuple[list[RunRow], int | None]:
        sql = (f"SELECT {LIST_COLUMNS} FROM {{s}}.runs WHERE {' AND '.join(where)} "
               f"ORDER BY id {'ASC' if upward else 'DESC'} LIMIT %s")
        found: list[RunRow] = []
        deadline = time.perf_counter() + queries.SCAN_BUDGET * 2  # a round trip per window
        while lo <= hi and len(found) < want:
            if upward:
                start, end = lo, min(hi, lo + queries.SCAN_WINDOW - 1)
                lo = end + 1
            else:
                start, end = max(lo, hi - queries.SCAN_WINDOW + 1), hi
                hi = start - 1
            found.extend(RunRow(*r) for r in self._all(sql, (start, end, *args, want - len(found))))
            if time.perf_counter() > deadline and len(found) < want and lo <= hi:
                return found, (lo if upward else hi + 1)
        return found, None

    # -- one run ----------------------------------------------------------------------------

    def detail(self, run_id: int) -> Detail | None:
        cap = TEXT_CAP
        row = self._one(
            "SELECT id, job, status, priority, attempts, free_attempts, max_attempts, timeout, created_at, "
            "scheduled_at, started_at, finished_at, error_type, message, progress, progress_message, metadata, "
            "version, key, worker_pid, peak_rss, rerun_of, parent_id, tenant, wait, current_step, "
            "substr(input, 1, %s), length(input), "
            "substr(output, 1, %s), length(output), substr(traceback, 1, %s), length(traceback) "
            "FROM {s}.runs WHERE id = %s", (cap, cap, cap, run_id))
        if row is None:
            return None
        keys = ("id", "job", "status", "priority", "attempts", "free_attempts", "max_attempts", "timeout",
                "created_at", "scheduled_at", "started_at", "finished_at", "error_type", "message", "progress",
                "progress_message", "metadata", "version", "key", "worker_pid", "peak_rss", "rerun_of")
        run = dict(zip(keys, row[:22], strict=True))
        queries.durable_facts(run, row[22:26])
        run["input"], run["output"], run["traceback"] = row[26], row[28], row[30]
        sizes = {"input": row[27] or 0, "output": row[29] or 0, "traceback": row[31] or 0}
        attempt_keys = ("number", "started_at", "finished_at", "outcome", "error_type", "message", "traceback",
                        "worker_pid", "exit_code", "signal", "peak_rss")
        attempts = [dict(zip(attempt_keys, a, strict=True)) for a in self._all(
            "SELECT number, started_at, finished_at, outcome, error_type, message, substr(traceback, 1, %s), "
            "worker_pid, exit_code, signal, peak_rss FROM {s}.attempts WHERE run_id = %s ORDER BY number LIMIT 200",
            (cap, run_id))]
        if run["status"] == "succeeded" and (not attempts or attempts[-1]["number"] != run["attempts"]):
            # a succeeded attempt has no row of its own: the run's row describes it (see PostgresStore.get)
            attempts.append({"number": run["attempts"], "started_at": run["started_at"],
                             "finished_at": run["finished_at"], "outcome": "succeeded", "error_type": None,
                             "message": None, "traceback": None, "worker_pid": run["worker_pid"],
                             "exit_code": None, "signal": None, "peak_rss": run["peak_rss"]})
        steps = [(name, value, size) for name, value, size in self._all(
            "SELECT name, substr(value, 1, %s), length(value) FROM {s}.steps WHERE run_id = %s "
            "ORDER BY position IS NULL, position, name LIMIT 200",
            (cap, run_id))]
        reruns = [(r[0], r[1]) for r in self._all(
            "SELECT id, status FROM {s}.runs WHERE rerun_of = %s ORDER BY id LIMIT 50", (run_id,))]
        children = [(r[0], r[1], r[2]) for r in self._all(
            "SELECT id, job, status FROM {s}.runs WHERE parent_id = %s ORDER BY id LIMIT %s",
            (run_id, queries.CHILDREN_SHOWN))]
        return Detail(run, attempts, steps, reruns, sizes, children)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
