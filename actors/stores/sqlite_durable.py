"""The SQLite store's part in durable execution: suspended attempts, waiting runs, records
with positions, children's outcomes and events (see `actors.context` and `actors.events`).

A mixin of `SQLiteStore` (it uses its connection, mutex and write transactions), kept apart
so that the store's hot path reads in one file and this in another.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..run import describe_wait
from .base import Event, Pending, Suspension, Waiting

if TYPE_CHECKING:
    import threading

# the records of a run in the order of their positions (records stored before positions existed last)
_BY_POSITION = "ORDER BY position IS NULL, position, name"
_WAITING_COLUMNS = ("id, job, coalesce(input, (SELECT l.input FROM large_inputs AS l WHERE l.run_id = runs.id)), "
                    "priority, attempts, free_attempts, max_attempts, timeout, scheduled_at, status, version, wait, tenant")


class DurableSQLite:
    """Durable execution's statements, for `SQLiteStore`."""

    _db: sqlite3.Connection
    _mutex: threading.RLock
    path: str

    if TYPE_CHECKING:
        def _write(self) -> Any: ...

    def _suspend(self, suspends: list[Suspension]) -> None:
        """running -> waiting, in the caller's transaction: the attempt is recorded `suspended`
        and is free (not charged), as the run's wait says why it waits."""
        db = self._db
        for s in suspends:
            cursor = db.execute(
                "UPDATE runs SET status='waiting', wait=?, scheduled_at=coalesce(?, scheduled_at), "
                "free_attempts=free_attempts+1, progress=NULL WHERE id=? AND attempts=? AND status='running'",
                (s.wait, s.wake_at, s.run_id, s.attempt))
            if cursor.rowcount:
                db.execute("INSERT OR REPLACE INTO attempts (run_id, number, started_at, finished_at, outcome, "
                           "worker_pid, peak_rss, message) VALUES (?, ?, ?, ?, 'suspended', ?, ?, ?)",
                           (s.run_id, s.attempt, s.started_at, s.finished_at, s.worker_pid, s.peak_rss,
                            _reason(s.wait)))

    def positions(self, run_id: int) -> dict[str, int]:
        with self._mutex:
            return dict(self._db.execute("SELECT name, position FROM steps WHERE run_id=? AND position IS NOT NULL",
                                         (run_id,)).fetchall())

    def load_waiting(self, after_id: int = 0, limit: int | None = None) -> list[Waiting]:
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {_WAITING_COLUMNS} FROM runs WHERE status='waiting' AND id > ? ORDER BY id LIMIT ?",
                (after_id, -1 if limit is None else limit)).fetchall()
        return [Waiting(Pending._make((*row[:11], False, row[12])), row[11] or "{}") for row in rows]

    def outcomes(self, run_ids: list[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        if not run_ids:
            return {}
        with self._mutex:
            rows = self._db.execute(
                "SELECT id, status, output, error_type, message FROM runs WHERE id IN (SELECT value FROM json_each(?)) "
                "AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled')", (json.dumps(run_ids),)).fetchall()
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}

    def emit(self, name: str, payload: str, now: float) -> int:
        with self._write():
            event_id = self._db.execute("INSERT INTO events (name, payload, created_at) VALUES (?, ?, ?)",
                                        (name, payload, now)).lastrowid
        assert event_id is not None
        return event_id

    def new_events(self, after_id: int, limit: int = 1000) -> list[Event]:
        with self._mutex:
            try:
                rows = self._db.execute("SELECT id, name, payload, created_at FROM events WHERE handled=0 AND id > ? "
                                        "ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read store {self.path}: {exc}") from exc
        return [Event(*row) for row in rows]

    def find_events(self, name: str, run_id: int, exclude: list[int], limit: int = 1000) -> list[Event]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT id, name, payload, created_at FROM events WHERE name=? AND created_at >= "
                "(SELECT created_at FROM runs WHERE id=?) AND id NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY id LIMIT ?", (name, run_id, json.dumps(exclude), limit)).fetchall()
        return [Event(*row) for row in rows]

    def purge_events(self, older_than: float) -> int:
        with self._write():
            return self._db.execute("DELETE FROM events WHERE created_at < ?", (older_than,)).rowcount


def _reason(wait: str) -> str:
    """What a run waits for, in words, for its attempt log."""
    try:
        return describe_wait(json.loads(wait))
    except (ValueError, TypeError, AttributeError):
        return "waiting"
