"""The PostgreSQL store's part in durable execution, as `sqlite_durable.py` is SQLite's:
suspended attempts, waiting runs, records with positions, children's outcomes and events.

A mixin of `PostgresStore` (its `_all`, `_run` and `_q`). The writes of a turn go in the
turn's transaction (`_wake_runs` before the claims, `_durable_writes` after the finishes), each
conditional on the state it moves from, so a commit applied again after a lost COMMIT does
nothing the second time. A suspension is fenced by its owner, like every finishing write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Changes, Event, Pending, Waiting

if TYPE_CHECKING:
    import psycopg

BY_POSITION = "ORDER BY position IS NULL, position, name"
_WAKE = ("UPDATE {s}.runs SET status = 'queued', wait = NULL, scheduled_at = %s "
         "WHERE id = ANY(%s::bigint[]) AND status = 'waiting'")
_SUSPEND = ("UPDATE {s}.runs SET status = 'waiting', wait = %(wait)s, scheduled_at = coalesce(%(wake)s, scheduled_at), "
            "free_attempts = free_attempts + 1, progress = NULL WHERE id = %(id)s AND attempts = %(attempt)s "
            "AND status = 'running' AND owner IS NOT DISTINCT FROM %(owner)s RETURNING id")
_SUSPENDED_ATTEMPT = ("INSERT INTO {s}.attempts (run_id, number, started_at, finished_at, outcome, worker_pid, peak_rss) "
                      "VALUES (%s, %s, %s, %s, 'suspended', %s, %s) ON CONFLICT (run_id, number) DO NOTHING")
_WAITING_COLUMNS = ("id, job, input, priority, attempts, free_attempts, max_attempts, timeout, scheduled_at, status, "
                    "version, wait, tenant")


class DurablePostgres:
    """Durable execution's statements, for `PostgresStore`."""

    notify: bool
    _notify_sql: Any

    if TYPE_CHECKING:
        def _all(self, statement: str, args: Any = None) -> list[Any]: ...
        def _run(self, work: Callable[[psycopg.Connection[Any]], Any], *,
                 again: Callable[[psycopg.Connection[Any]], Any] | None = None, transaction: bool = True,
                 verb: str = "write") -> Any: ...
        def _q(self, statement: str) -> str: ...

    def _wake_runs(self, db: psycopg.Connection[Any], changes: Changes, now: float) -> None:
        if changes.wakes:
            db.execute(self._q(_WAKE), (now, changes.wakes))

    def _durable_writes(self, db: psycopg.Connection[Any], changes: Changes, owner: int | None) -> None:
        for s in changes.suspends:
            if db.execute(self._q(_SUSPEND), {"wait": s.wait, "wake": s.wake_at, "id": s.run_id, "attempt": s.attempt,
                                              "owner": owner}).fetchone():
                db.execute(self._q(_SUSPENDED_ATTEMPT), (s.run_id, s.attempt, s.started_at, s.finished_at,
                                                         s.worker_pid, s.peak_rss))
        if changes.current_steps:
            with db.cursor() as cursor:
                cursor.executemany(self._q("UPDATE {s}.runs SET current_step = %s WHERE id = %s AND status = 'running'"),
                                   [(name, run_id) for run_id, name in changes.current_steps])
        if changes.handled_events:
            db.execute(self._q("UPDATE {s}.events SET handled = true WHERE id = ANY(%s::bigint[])"),
                       (changes.handled_events,))

    def positions(self, run_id: int) -> dict[str, int]:
        return dict(self._all("SELECT name, position FROM {s}.steps WHERE run_id = %s AND position IS NOT NULL",
                              (run_id,)))

    def load_waiting(self, after_id: int = 0, limit: int | None = None) -> list[Waiting]:
        rows = self._all(f"SELECT {_WAITING_COLUMNS} FROM {{s}}.runs WHERE status = 'waiting' AND id > %s ORDER BY id "
                         "LIMIT %s", (after_id, limit))
        return [Waiting(Pending._make((*row[:11], False, row[12])), row[11] or "{}") for row in rows]

    def outcomes(self, run_ids: list[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        if not run_ids:
            return {}
        rows = self._all("SELECT id, status, output, error_type, message FROM {s}.runs WHERE id = ANY(%s::bigint[]) "
                         "AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled')", (run_ids,))
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}

    def emit(self, name: str, payload: str, now: float) -> int:
        """(See `Store.emit`.) Not done again after a lost COMMIT: it could store the event twice."""
        def insert(db: psycopg.Connection[Any]) -> int:
            row = db.execute(self._q("INSERT INTO {s}.events (name, payload, created_at) VALUES (%s, %s, %s) "
                                     "RETURNING id"), (name, payload, now)).fetchone()
            assert row is not None
            if getattr(self, "notify", False):
                db.execute(self._notify_sql)
            return int(row[0])

        return self._run(insert)

    def new_events(self, after_id: int, limit: int = 1000) -> list[Event]:
        rows = self._all("SELECT id, name, payload, created_at FROM {s}.events WHERE NOT handled AND id > %s "
                         "ORDER BY id LIMIT %s", (after_id, limit))
        return [Event(*row) for row in rows]

    def find_events(self, name: str, run_id: int, exclude: list[int], limit: int = 1000) -> list[Event]:
        rows = self._all("SELECT id, name, payload, created_at FROM {s}.events WHERE name = %s AND created_at >= "
                         "(SELECT created_at FROM {s}.runs WHERE id = %s) AND NOT (id = ANY(%s::bigint[])) "
                         "ORDER BY id LIMIT %s", (name, run_id, exclude, limit))
        return [Event(*row) for row in rows]

    def purge_events(self, older_than: float) -> int:
        def purge(db: psycopg.Connection[Any]) -> int:
            return db.execute(self._q("DELETE FROM {s}.events WHERE created_at < %s"), (older_than,)).rowcount

        return int(self._run(purge, again=purge))


def wait_of(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None
