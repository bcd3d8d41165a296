"""PostgreSQL store: one queue that several supervisors, on several hosts, serve together.

`PostgresStore("postgresql://...", schema="actors", lease=30.0)`, or `store="postgresql://..."`
anywhere a store is given (`pip install 'actors[postgres]'`: psycopg 3). The same contract as
SQLite and memory (`base.py`); what differs is who may serve:

- Serving is not exclusive. `acquire()` (a supervisor's `serve()`) inserts an *incarnation*
  row; the supervisor's status write (about once a second, `Changes.status`) renews its lease
  (`incarnations.beat = now()`, the database clock: never a host's). `served()` says whether a
  live incarnation exists.
- Claims are one conditional statement (`FOR UPDATE SKIP LOCKED`: two supervisors reaching
  for one run never wait on each other, one of them loses the claim and drops it) that counts
  the attempt and writes the owner incarnation. Every finishing write (success, failure,
  unclaim, step, progress) is fenced by (run id, attempt, still running, owner incarnation): a
  supervisor whose runs were rescued while it was frozen or cut off cannot overwrite them; its
  late results are rejected and logged.
- Rescue: runs `running` under an incarnation that stopped, or whose lease is older than
  `lease` seconds, go back to the queue with the attempt recorded `interrupted` (charged when
  the attempt before was interrupted too, as in SQLite), in batches of `rescue_batch`, by
  whichever supervisor looks first: at start (`recover`) and with every status write while
  serving. A rescued run gets `rescued_at`; `load_ready(after_id)` also returns the waiting
  runs rescued since the previous call (with a margin for transactions still committing), so
  supervisors whose scan pointer is past them pick them up.
- `LISTEN/NOTIFY` is a hint; the poll is the truth. Writes that make runs ready (`insert`, a
  cancel, a rescue or an unclaim in `commit`) send `NOTIFY actors_<schema>` in their own
  transaction, so it is delivered on commit only. A serving store (after `acquire`) LISTENs
  on a connection of its own; `changed()` is True when a notification came, else at most once
  per `SLOW_POLL` seconds, when the poll (`load_ready` past the scan pointer, on a partial index
  of waiting runs) looks anyway: a lost notification (a connection that broke, a NOTIFY of
  another version) delays a run by that much, never strands it. `notify=False` (or
  `?notify=false` in the URL) is for PgBouncer in transaction mode, where a LISTEN does not
  stay on one server connection: no LISTEN, no NOTIFY, and `changed()` True at every call.
- `unique` and `key` hold across hosts through unique indexes (a live-only partial one for
  `unique_key`); a cron tick's run carries the key "cron:<tick>", so it runs once. A run
  submitted by name is adopted (its version and unique key) by every supervisor that loads it;
  that write skips a row another transaction holds (SKIP LOCKED) rather than wait for it.
- Limits (`concurrency`, `Limit(n, key=...)`, `rate`) are enforced in the database
  across supervisors as well as by each: see `postgres_limits.py`.
- One connection per store, guarded by a lock (the supervisor's loop thread and submitting
  threads take turns, as with SQLite). A connection lost (the server restarted, the backend
  was terminated, the network broke) is opened again, with backoff (`RECONNECT`: 50 ms
  doubling to 5 s, a log line per failed try) for up to `reconnect` seconds, and the work
  whose connection broke is done again on the new one (`_run` says when that is safe). Only
  past that, or on any other database error, does the error reach the caller: a store error in
  a turn stops that supervisor (as with SQLite), and its runs are rescued by the others after
  the lease. While it reconnects the supervisor's loop waits (signals are handled after).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the PostgreSQL store needs psycopg 3: pip install 'actors[postgres]'") from exc

from ..errors import StoreError
from ..retry import Retry, compute_backoff
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
from .base import DUPLICATE, Changes, Finish, Pending, interrupted_message, success_as_finish
from .postgres_durable import BY_POSITION, DurablePostgres, wait_of
from .postgres_limits import (
    _CLAIM_AGAIN_SPARING,
    _CLAIM_SPARING,
    LimitedPostgres,
    StoreLimit,
    limits_of,
)
from .postgres_schema import VERSION, migrate
from .postgres_sql import (
    _ADOPT,
    _ADOPT_MANY,
    _ATTEMPT,
    _BEAT,
    _BEGIN,
    _CANCEL,
    _CANCEL_DUPLICATE,
    _CLAIM,
    _CLAIM_AGAIN,
    _CLEAR_WORKERS,
    _DEBOUNCE,
    _DUPLICATE_ADOPT,
    _END,
    _FINISH,
    _INSERT,
    _INSERT_MANY,
    _KEYED,
    _LIVE_INCARNATION,
    _PROGRESS,
    _PURGE,
    _READY_PAGE,
    _READY_RESCUED,
    _REQUEUE,
    _RESCUE,
    _RUN_COLUMNS,
    _SERVED,
    _SET_CRON,
    _STEP,
    _STOP,
    _SUCCEED,
    _TAKE_KEY,
    _UNCLAIM,
    _UNIQUE_LIVE,
    _WORKER,
)

log = logging.getLogger("actors")

RESCUE_MARGIN = 10.0  # seconds: a rescue committed this long after it began is still seen by load_ready
SLOW_POLL = 1.0  # seconds between polls of a store that LISTENs (notifications wake it between them)
RECONNECT = Retry(base=0.05, cap=5.0)  # the backoff between tries to reach the server again
_T = TypeVar("_T")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LEASE = 30.0  # seconds: the default lease (see `PostgresStore`)


def _describe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "a PostgreSQL database"
    return (f"postgresql://{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', 5432)}/"
            f"{parts.get('dbname', '')}")


def url_options(dsn: str) -> tuple[str, dict[str, Any]]:
    """A URL's query parameters of ours (libpq refuses names it does not know) and the URL
    without them: `schema` (a name), `lease` (seconds > 0), `notify` (true/false), as
    {name: value} of those it names; a ValueError that names a bad one. A DSN that is not a
    URL ("host=... dbname=...") names none."""
    base, mark, query = dsn.partition("?")
    if not mark or not dsn.startswith(("postgresql://", "postgres://")):
        return dsn, {}
    kept: list[str] = []
    options: dict[str, Any] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "notify":
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"invalid notify={value!r} in the store URL: expected true or false")
            options["notify"] = _BOOLEANS[value.lower()]
        elif name == "schema":
            options["schema"] = _schema_name(value)
        elif name == "lease":
            options["lease"] = _lease(value, "in the store URL")
        else:
            kept.append(pair)
    return base + ("?" + "&".join(kept) if kept else ""), options


_BOOLEANS = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}


def _schema_name(schema: Any) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}: lower-case letters, digits and _ only")
    return schema


def _lease(value: Any, where: str = "") -> float:
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = float("nan")
    if not lease > 0 or lease == float("inf"):
        raise ValueError(f"invalid lease {value!r}{' ' + where if where else ''}: expected a positive number of seconds")
    return lease


def _first_line(exc: BaseException) -> str:
    """An error's message on one line, for a log line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lost(db: psycopg.Connection[Any] | None, exc: psycopg.Error) -> bool:
    """Whether `exc` means the connection is gone (or could not be opened), rather than that
    the database refused the work: only then may the work be done again on a new one."""
    return isinstance(exc, psycopg.OperationalError) and (db is None or db.closed or db.broken)


class PostgresStore(DurablePostgres, LimitedPostgres):
    """A `Store` in a PostgreSQL schema that several supervisors may serve at once.

    - `dsn`: a libpq connection string or URL ("postgresql://user@host:5432/db"); a URL may
      also say `?schema=NAME`, `?lease=SECONDS` and `?notify=false` (what `--store` of the
      command and the dashboard can pass): a keyword that says otherwise is a ValueError.
    - `schema`: the PostgreSQL schema holding the tables ("actors"), created where missing.
    - `lease`: seconds after its last heartbeat that a supervisor's runs may be rescued by
      another (30; the heartbeat comes about once a second).
    - `rescue_batch`: runs rescued per statement (500).
    - `notify`: send and LISTEN for wake-ups (True); False, or `?notify=false` in a URL, for
      PgBouncer in transaction mode: then the serving supervisor polls at every `changed()`.
    - `reconnect`: seconds a lost connection is tried again, with backoff, before the
      operation fails with StoreError (60; 0: at once). The first connection is never retried:
      a wrong address fails at once.
    - The connections' `application_name` is the DSN's if it names one, else "actors" (the
      listening one's gets "-listen" added): `pg_stat_activity` tells them apart.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, lease: float | None = None, rescue_batch: int = 500,
                 notify: bool = True, reconnect: float = 60.0) -> None:
        dsn, in_url = url_options(dsn)
        for name, given in (("schema", schema), ("lease", lease)):
            if given is not None and name in in_url and in_url[name] != given:
                raise ValueError(f"{name} given twice: {given!r} and {in_url[name]!r} in the store URL")
        schema = _schema_name(schema if schema is not None else in_url.get("schema", "actors"))
        lease = _lease(lease) if lease is not None else in_url.get("lease", LEASE)
        self.notify = notify and in_url.get("notify") is not False
        self.reconnect = float(reconnect)
        self.dsn = dsn
        self.schema = schema
        self.lease = float(lease)
        self.rescue_batch = rescue_batch
        self.where = f"{_describe(dsn)} (schema {schema})"
        self.path = self.where  # what messages and the command name the store by (no password)
        self._quoted = f'"{schema}"'
        self._sql: dict[str, str] = {}
        self._mutex = threading.RLock()
        self._db: psycopg.Connection[Any] | None = None
        self._incarnation: int | None = None
        self._seen_at: Any = None  # the database time of the last load_ready (see `_READY_RESCUED`)
        self.rejected = 0  # finishing writes refused by the fence (late results of rescued attempts)
        self._limits: dict[str, StoreLimit] = {}  # the limited jobs this store's supervisor serves (`record_jobs`)
        self.deferred = 0  # claims refused by a limit (other supervisors held its allowance)
        try:
            named = psycopg.conninfo.conninfo_to_dict(dsn).get("application_name")
        except psycopg.Error:
            named = None
        self.application_name = str(named or "actors")
        channel = f"actors_{schema}"[:63]  # an identifier's length at most
        self._notify_sql = f'NOTIFY "{channel}"'
        self._listen_sql = f'LISTEN "{channel}"'
        self._listener: psycopg.Connection[Any] | None = None  # serving with notify: the LISTENing connection
        self._listen_tried = 0.0  # monotonic time of the last try to LISTEN
        self._listens = 0  # LISTENing connections opened so far
        self._polled_at = 0.0  # monotonic time `changed()` last said "poll"
        with self._mutex:
            try:
                migrate(self._connect(), schema, self._quoted)
            except psycopg.Error as exc:
                what = "connect to" if self._db is None else "use"
                raise StoreError(f"cannot {what} store {self.where}: {exc}") from exc

    # -- connection and transactions ------------------------------------------------------------

    def _q(self, statement: str) -> str:
        """A statement with the schema filled in (cached)."""
        text = self._sql.get(statement)
        if text is None:
            text = self._sql[statement] = statement.replace("{s}", self._quoted).replace("{{", "{").replace("}}", "}")
        return text

    def _connect(self) -> psycopg.Connection[Any]:
        """The store's connection, opened (once: `_run` tries again) where it is missing or broke."""
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()
        self._db = None
        self._db = db = psycopg.connect(self.dsn, autocommit=True, application_name=self.application_name,
                                        connect_timeout=10)
        return db

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T], *,
             again: Callable[[psycopg.Connection[Any]], _T] | None = None, transaction: bool = True,
             verb: str = "write") -> _T:
        """`work(db)` in one transaction (or in autocommit) under the store's lock, done again on
        a new connection while the connection is lost, with backoff (`RECONNECT`), for up to
        `reconnect` seconds; then, or on any other database error, a StoreError.

        Whether doing it again is safe depends on where the connection broke. Before COMMIT was
        sent the transaction rolled back and nothing of it was written: `work` is done again.
        During COMMIT (or during a statement in autocommit) it may or may not have been
        written, and we cannot know: `again` is done then, work that is right in both cases
        (`work` itself for a read or for idempotent writes; for `commit`, the same changes
        with a claim that also counts the runs the lost COMMIT claimed). Without `again` (an
        insert: a second one would store the runs twice) the error is raised.
        """
        failures = 0
        began = deadline = time.monotonic()
        deadline += self.reconnect
        with self._mutex:
            while True:
                db: psycopg.Connection[Any] | None = None
                unsure = not transaction  # whether the work may have been written
                try:
                    db = self._connect()
                    if transaction:
                        with db.transaction():
                            result = work(db)
                            unsure = True  # COMMIT is sent on leaving the block
                    else:
                        result = work(db)
                except psycopg.Error as exc:
                    failures += 1
                    delay = compute_backoff(RECONNECT, failures - 1) if failures > 1 else 0.0
                    redo = again if unsure else work
                    if not _lost(db, exc) or redo is None or time.monotonic() + delay > deadline:
                        what = "connect to" if db is None else verb
                        raise StoreError(f"cannot {what} store {self.where}: {exc}") from exc
                    work = redo
                    log.warning("%s store %s (%s); trying again in %.2f s",
                                "cannot connect to" if db is None else "lost the connection to", self.where,
                                _first_line(exc), delay)
                    time.sleep(delay)
                    continue
                if failures:
                    log.warning("reconnected to store %s after %.1f s", self.where, time.monotonic() - began)
                return result

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again (with backoff, `_run`) where it was lost."""
        return self._run(lambda db: db, again=lambda db: db, transaction=False)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction under the store's lock; database errors become StoreError. The
        connection is opened again (`_run`) where it was lost, but the block is not done again."""
        with self._mutex:
            db = self._live()
            try:
                with db.transaction():
                    yield db
            except psycopg.Error as exc:
                raise StoreError(f"cannot write store {self.where}: {exc}") from exc

    def _all(self, statement: str, args: Any = None) -> list[Any]:
        """Rows of one read (autocommit: a statement is its own snapshot), done again after the
        connection was lost."""
        def read(db: psycopg.Connection[Any]) -> list[Any]:
            return db.execute(self._q(statement), args).fetchall()

        return self._run(read, again=read, transaction=False, verb="read")

    # -- serving: incarnations and leases -------------------------------------------------------

    def check_writable(self) -> None:
        """StoreError now if this role cannot write the runs (a no-row UPDATE, rolled back)."""
        with self._mutex:
            db = self._live()
            try:
                with db.transaction(force_rollback=True):
                    db.execute(self._q("UPDATE {s}.runs SET status = status WHERE id < 0"))
            except psycopg.Error as exc:
                raise StoreError(f"cannot use store {self.where}: {exc}") from exc

    def acquire(self) -> None:
        """Begin an incarnation (a serve session): not exclusive, other supervisors may serve too.
        With `notify`, LISTEN first, so that nothing committed after the session reads the queue
        goes unheard."""
        if self.notify and self._listener is None:
            self._listen()
        if self._incarnation is None:
            self._begin()

    def _begin(self) -> None:
        """A new incarnation. Done again after a lost COMMIT: one that committed unheard is an
        orphan row that owns no run and whose lease lapses."""
        now = time.time()

        def begin(db: psycopg.Connection[Any]) -> int:
            row = db.execute(self._q(_BEGIN), (os.getpid(), socket.gethostname(), now, now)).fetchone()
            assert row is not None
            return int(row[0])

        self._incarnation = self._run(begin, again=begin)

    def release(self) -> None:
        """End the incarnation: whatever it still held running is rescued by the next look."""
        with self._mutex:
            self._unlisten()
            incarnation, self._incarnation = self._incarnation, None
            if incarnation is not None:
                def stop(db: psycopg.Connection[Any]) -> None:
                    db.execute(self._q(_STOP), (time.time(), incarnation))
                    db.execute(self._q(_CLEAR_WORKERS), (incarnation,))

                self._run(stop, again=stop)

    def _listen(self) -> None:
        """Open the LISTENing connection (autocommit: a notification is delivered between
        transactions only); on failure log it and poll until a later `changed()` tries again."""
        self._listen_tried = time.monotonic()
        self._polled_at = 0.0  # what was committed while nobody listened is found by a poll now
        listener = None
        try:
            listener = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10,
                                       application_name=f"{self.application_name}-listen")
            listener.execute(self._listen_sql)
        except psycopg.Error as exc:
            if listener is not None:
                listener.close()
            log.warning("cannot LISTEN on store %s (%s): polling meanwhile", self.where, _first_line(exc))
            return
        self._listener = listener
        self._listens += 1  # a new generation for `wake_socket`

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    def wake_socket(self, watching: int = 0) -> tuple[int, int] | None:
        """(generation, a duplicate of the LISTENing connection's socket) for a loop to watch:
        readable, it calls `changed()` at once instead of at its next poll. The loop owns the
        duplicate (closes it), so the store may close its connection whenever; a new
        connection has a new generation (from 1). When `watching` is the current generation,
        (watching, -1): the caller's duplicate is still the one. None while nothing LISTENs."""
        with self._mutex:
            listener = self._listener
            if listener is None or listener.closed or listener.broken or self._incarnation is None:
                return None  # (without an incarnation `changed()` would not drain it: a hot loop)
            if watching == self._listens:
                return watching, -1
            try:
                return self._listens, os.dup(listener.fileno())
            except (OSError, psycopg.Error):
                return None

    @property
    def incarnation(self) -> int | None:
        """The id of this store's serve session, while one is open."""
        return self._incarnation

    def served(self) -> bool:
        """Whether some supervisor serves this store: a live incarnation (lease not lapsed)."""
        return bool(self._all(_SERVED, {"lease": self.lease})[0][0])

    def _rescue(self, db: psycopg.Connection[Any], now: float) -> list[int]:
        """One batch of the rescue, inside the caller's transaction; the ids queued again."""
        rows = db.execute(self._q(_RESCUE), {
            "me": self._incarnation or 0, "lease": self.lease, "batch": self.rescue_batch, "now": now,
            "again": interrupted_message(True), "first": interrupted_message(False),
        }).fetchall()
        return [row[0] for row in rows]

    # -- the Store contract ---------------------------------------------------------------------

    def insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        """(See `Store.insert`.) Not done again after a lost COMMIT (`_run`): the runs might be
        stored twice; the caller gets the StoreError and may look for them (by key)."""
        if not runs:
            return []
        return self._run(lambda db: self._insert(db, runs, now))

    def _insert(self, db: psycopg.Connection[Any], runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        # children are keyed; a batch with tenants or metadata goes row by row (the batch statement has neither)
        if not any(r.key or r.unique_key or r.parent_id or (len(runs) > 1 and (r.tenant or r.metadata)) for r in runs):
            if len(runs) == 1:
                r = runs[0]
                row = db.execute(self._q(_INSERT + "RETURNING id"), (
                    r.job, r.input, r.priority, r.max_attempts, r.timeout, now, r.scheduled_at or now, r.version,
                    None, None, r.rerun_of, r.parent_id, r.tenant, r.metadata)).fetchone()
                assert row is not None
                made = [(row[0], True)]
            else:
                rows = db.execute(self._q(_INSERT_MANY), (
                    now, [r.job for r in runs], [r.input for r in runs], [r.priority for r in runs],
                    [r.max_attempts for r in runs], [r.timeout for r in runs],
                    [r.scheduled_at or now for r in runs], [r.version for r in runs],
                    [r.rerun_of for r in runs])).fetchall()
                # ids are drawn in the rows' order, so their order is the rows' order
                made = [(run_id, True) for run_id in sorted(row[0] for row in rows)]
        else:
            made = [self._insert_one(db, run, now) for run in runs]
        if self.notify and any(created for _, created in made):
            db.execute(self._notify_sql)
        return made

    def _insert_one(self, db: psycopg.Connection[Any], run: NewRun, now: float) -> tuple[int, bool]:
        """A keyed or unique run, inside the batch's transaction. The unique indexes decide
        between hosts: an insert that meets one (ON CONFLICT DO NOTHING, after the other
        transaction committed) looks again for the run that holds the key."""
        for _ in range(10):
            replaced: int | None = None
            if run.key is not None:
                keyed = db.execute(self._q(_KEYED), (run.job, run.key)).fetchone()
                if keyed is not None and run.debounce:
                    if db.execute(self._q(_DEBOUNCE), (run.input, run.scheduled_at, run.priority, run.timeout,
                                                       run.metadata, run.tenant, keyed[0], now)).rowcount:
                        return keyed[0], False
                    replaced = keyed[0]  # due, started or ended: a new burst, a new run takes the key
                elif keyed is not None:
                    if not (run.rerun and RunStatus(keyed[1]) in run.rerun & TERMINAL):
                        return keyed[0], False
                    replaced = keyed[0]  # a rerun (see `Store.insert`)
            if run.unique_key is not None:
                live = db.execute(self._q(_UNIQUE_LIVE), (run.job, run.unique_key)).fetchone()
                if live is not None:
                    return live[0], False
            made: int | None = None
            with db.transaction():  # a savepoint: a lost race leaves the key where it was
                if replaced is not None and not db.execute(self._q(_TAKE_KEY), (replaced, run.key)).rowcount:
                    raise psycopg.Rollback()  # another rerun took the key first: look again
                row = db.execute(self._q(_INSERT + "ON CONFLICT DO NOTHING RETURNING id"), (
                    run.job, run.input, run.priority, run.max_attempts, run.timeout, now, run.scheduled_at or now,
                    run.version, run.key, run.unique_key,
                    replaced if replaced is not None and not run.debounce else run.rerun_of,
                    run.parent_id, run.tenant, run.metadata)).fetchone()
                if row is None:
                    raise psycopg.Rollback()  # a key or live unique key taken meanwhile: look again
                made = row[0]
            if made is not None:
                return made, True
        raise StoreError(f"cannot write store {self.where}: the key of a {run.job!r} run kept changing hands")

    def steps(self, run_id: int) -> dict[str, str]:
        return dict(self._all(f"SELECT name, value FROM {{s}}.steps WHERE run_id = %s {BY_POSITION}", (run_id,)))

    def commit(self, changes: Changes, now: float) -> set[int]:
        """(See `Store.commit`.) Done again on a new connection after the connection was lost
        (`_run`): before COMMIT the transaction rolled back, so the same changes apply as they
        would have; after a lost COMMIT they may be written already, and they are made so that
        applying them twice is right. Every write but the claim is conditional on the state it
        moves from (the fence, `status IN (...)`) or an upsert, so the second time it does
        nothing; the claim counts the runs the lost COMMIT claimed for us as won
        (`_CLAIM_AGAIN`), so none is left running with no worker. What the fence refuses then is
        logged as possibly our own writes."""
        if changes.status is not None and self._incarnation is None:
            self._begin()  # a status write is a serve session's: give it an incarnation
        owner = self._incarnation
        lost, refused, rescued, deferred = self._run(
            lambda db: self._apply(db, changes, now, owner, again=False),
            again=lambda db: self._apply(db, changes, now, owner, again=True))
        if deferred:
            changes.deferred = deferred
            self.deferred += len(deferred)
        self._rejected(refused)
        if rescued:
            log.warning("rescued %d run(s) of supervisor(s) whose lease lapsed (%.0f s): queued again, their "
                        "attempt recorded interrupted", len(rescued), self.lease)
        return lost

    def _apply(self, db: psycopg.Connection[Any], changes: Changes, now: float, owner: int | None,
               again: bool) -> tuple[set[int], list[Finish], list[int], set[int]]:
        """One turn's changes in the caller's transaction (`again`: after a lost COMMIT): the
        claims lost, the finishing writes the fence refused, the runs rescued, and the lost
        claims that a limit refused (`_claim_limited`)."""
        lost: set[int] = set()
        refused: list[Finish] = []
        rescued: list[int] = []
        limited: dict[int, str] = {}  # run id -> its limited job, for the claims still to make
        self._wake_runs(db, changes, now)  # before the claims: a run woken in this turn may be claimed in it
        plain = [(run_id, version) for run_id, version, unique_key in changes.adopts if unique_key is None]
        if plain:  # a batch submitted by name (a Client's): one statement, not one per run
            db.execute(self._q(_ADOPT_MANY), ([a[0] for a in plain], [a[1] for a in plain]))
        for run_id, version, unique_key in changes.adopts:
            if unique_key is not None:
                self._adopt(db, run_id, version, unique_key, now)
        if changes.claims:
            claim = {"ids": [c[0] for c in changes.claims], "attempts": [c[1] for c in changes.claims],
                     "now": now, "owner": owner}
            if not self._limits:  # the hot path: no limit to count
                won = db.execute(self._q(_CLAIM_AGAIN if again else _CLAIM), claim).fetchall()
            else:
                claim["limited"] = list(self._limits)
                rows = db.execute(self._q(_CLAIM_AGAIN_SPARING if again else _CLAIM_SPARING), claim).fetchall()
                won = [row for row in rows if row[1] is None]
                limited = {row[0]: row[1] for row in rows if row[1] is not None}
            lost = {c[0] for c in changes.claims} - {row[0] for row in won}
        if changes.unclaims:
            db.execute(self._q(_UNCLAIM), {"ids": [u[0] for u in changes.unclaims],
                                           "attempts": [u[1] for u in changes.unclaims], "owner": owner})
        if changes.successes:
            s = changes.successes
            kept = db.execute(self._q(_SUCCEED), {
                "ids": [x[0] for x in s], "attempts": [x[1] for x in s], "outputs": [x[2] for x in s],
                "pids": [x[4] for x in s], "rss": [x[5] for x in s], "now": now, "owner": owner}).fetchall()
            if len(kept) != len(s):
                accepted = {row[0] for row in kept}
                refused += [success_as_finish(x, now) for x in s if x[0] not in accepted]
        refused += [f for f in changes.finishes if not self._finish(db, f, owner)]
        if changes.requeues:
            db.execute(self._q(_REQUEUE), (changes.requeues,))
        if changes.ends:
            with db.cursor() as cursor:
                cursor.executemany(self._q(_END), [(status, now, kind, message, run_id)
                                                   for run_id, status, kind, message in changes.ends])
        if changes.steps:
            with db.cursor() as cursor:
                cursor.executemany(self._q(_STEP), [{"id": run_id, "name": name, "value": value, "position": position,
                                                     "owner": owner} for run_id, name, value, position in changes.steps])
        self._durable_writes(db, changes, owner)
        if changes.progress:
            with db.cursor() as cursor:
                cursor.executemany(self._q(_PROGRESS), [
                    {"id": run_id, "fraction": fraction, "message": message, "metadata": metadata, "owner": owner}
                    for run_id, fraction, message, metadata in changes.progress])
        if changes.status is not None:
            rescued = self._beat(db, changes.status, now)
        deferred: set[int] = set()
        if limited:  # last: the runs this turn ended (and any rescued) no longer count, and the locks are held briefly
            granted = self._claim_limited(db, changes.claims, limited, changes.claim_keys, now, owner)
            lost -= granted
            deferred = set(limited) - granted
        if self.notify and (rescued or changes.unclaims):  # runs waiting again: other supervisors may take them
            db.execute(self._notify_sql)
        if again and refused:
            log.warning("a commit whose COMMIT was lost was applied again: %d finishing write(s) refused "
                        "(written by that COMMIT already, or no longer this supervisor's)", len(refused))
            refused = []
        return lost, refused, rescued, deferred

    def _adopt(self, db: psycopg.Connection[Any], run_id: int, version: int, unique_key: str, now: float) -> None:
        """A run of a `unique` job submitted by name takes the serving job's version and unique
        key; one whose key is live already (here, or taken by another host at this moment) is a
        duplicate. (Runs without a unique key are adopted together: `_ADOPT_MANY`.)"""
        if not db.execute(self._q(_DUPLICATE_ADOPT), {"id": run_id, "key": unique_key}).fetchone():
            try:
                with db.transaction():
                    db.execute(self._q(_ADOPT), (version, unique_key, run_id))
                return
            except pg_errors.UniqueViolation:
                pass
        db.execute(self._q(_CANCEL_DUPLICATE), (now, DUPLICATE, run_id))

    def _finish(self, db: psycopg.Connection[Any], f: Finish, owner: int | None) -> bool:
        """One fenced ending (the rare path: failures, retries, big outputs); whether it won."""
        row = db.execute(self._q(_FINISH), {
            "status": f.status, "output": f.output, "finished_at": None if f.retry_at else f.finished_at,
            "error_type": f.error_type, "message": f.message, "traceback": f.traceback, "retry_at": f.retry_at,
            "free": 0 if f.charged else 1, "id": f.run_id, "attempt": f.attempt, "owner": owner}).fetchone()
        if row is None:
            return False
        db.execute(self._q(_ATTEMPT), (f.run_id, f.attempt, f.started_at, f.finished_at, f.outcome, f.error_type,
                                       f.message, f.traceback, f.worker_pid, f.exit_code, f.signal, f.peak_rss))
        return True

    def _rejected(self, finishes: list[Finish]) -> None:
        """Finishing writes the fence refused. With no incarnation (nothing serves here), a
        refusal is the ordinary lost race with a timeout or a cancel; while serving, a result
        for an attempt that was rescued from us is logged."""
        if not finishes:
            return
        self.rejected += len(finishes)
        if self._incarnation is not None:
            log.warning("rejected %d late result(s) (runs %s): their attempts are no longer this supervisor's "
                        "(ended meanwhile, or rescued by another supervisor after this one's lease lapsed)",
                        len(finishes), ", ".join(str(f.run_id) for f in finishes[:10]))

    def _beat(self, db: psycopg.Connection[Any], status: tuple[SupervisorInfo, list[WorkerInfo]],
              now: float) -> list[int]:
        """Renew the lease, write the supervisor's state and its workers, then rescue a batch."""
        info, workers = status
        incarnation = self._incarnation
        row = db.execute(self._q(_BEAT), {
            "pid": info.pid, "host": info.host, "started_at": info.started_at, "heartbeat_at": info.heartbeat_at,
            "workers": info.workers, "restarts": info.restarts, "kills": json.dumps(info.kills),
            "stopped_at": info.stopped_at, "id": incarnation, "lease": self.lease}).fetchone()
        if row is not None and row[0]:
            log.warning("this supervisor's lease had lapsed (no heartbeat for over %.0f s: frozen or cut off); "
                        "other supervisors may have rescued its runs, whose late results will be rejected",
                        self.lease)
        db.execute(self._q(_CLEAR_WORKERS), (incarnation,))
        if workers:
            with db.cursor() as cursor:
                cursor.executemany(self._q(_WORKER), [(incarnation, *w) for w in workers])
        if info.stopped_at is not None:
            return []
        return self._rescue(db, now)

    def recover(self, now: float) -> int:
        """Rescue every run whose owner is no live incarnation (see the module docstring)."""
        total = 0
        while True:
            rescued = self._run(lambda db: self._rescue(db, now), again=lambda db: self._rescue(db, now))
            total += len(rescued)
            if len(rescued) < self.rescue_batch:
                return total

    def load_ready(self, after_id: int = 0, limit: int | None = None) -> list[Pending]:
        """Waiting runs past `after_id` in id order (at most `limit`), after the waiting runs at
        or below it that were rescued since the previous call (see the module docstring)."""
        def read(db: psycopg.Connection[Any]) -> tuple[Any, list[Any]]:
            seen = db.execute("SELECT now()").fetchone()
            assert seen is not None
            rescued: list[Any] = []
            if after_id > 0:  # with no call before: every rescued run still waiting
                since = None if self._seen_at is None else self._seen_at - _seconds(RESCUE_MARGIN)
                rescued = db.execute(self._q(_READY_RESCUED), (since, after_id)).fetchall()
            return seen[0], rescued + db.execute(self._q(_READY_PAGE), (after_id, limit)).fetchall()

        self._seen_at, rows = self._run(read, again=read, verb="read")
        return [Pending(*row) for row in rows]

    def changed(self) -> bool:
        """Whether to poll now (`load_ready` past the scan pointer). With a LISTENing connection:
        when notifications came (drained without waiting), else once per `SLOW_POLL` seconds,
        the truth that a lost notification cannot stall. Without one (`notify=False`, not
        serving, or the connection broke: notifications may have been missed): at every call,
        trying to LISTEN again once per `SLOW_POLL` while serving."""
        if not self.notify or self._incarnation is None:
            return True
        with self._mutex:
            now = time.monotonic()
            listener = self._listener
            if listener is None or listener.closed or listener.broken:
                self._unlisten()
                if now - self._listen_tried >= SLOW_POLL:
                    self._listen()
                return True
            try:
                notified = any(True for _ in listener.notifies(timeout=0))
            except psycopg.Error as exc:
                log.warning("lost the LISTENing connection to store %s (%s): polling until it is back",
                            self.where, _first_line(exc))
                self._unlisten()
                return True
            if notified or now - self._polled_at >= SLOW_POLL:
                self._polled_at = now
                return True
            return False

    # -- reading --------------------------------------------------------------------------------

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        with self._mutex:
            rows = self._all(f"SELECT {_RUN_COLUMNS}, worker_pid, peak_rss FROM {{s}}.runs WHERE id = %s", (run_id,))
            if not rows:
                return None
            record = _record(rows[0][:-2])
            if attempts:
                log_rows = self._all("SELECT number, started_at, finished_at, outcome, error_type, message, traceback, "
                                     "worker_pid, exit_code, signal, peak_rss FROM {s}.attempts WHERE run_id = %s "
                                     "ORDER BY number", (run_id,))
                record.attempt_log = [Attempt(a[0], a[1], a[2], Outcome(a[3]) if a[3] else None, *a[4:])
                                      for a in log_rows]
                if record.status is RunStatus.SUCCEEDED and (not log_rows or log_rows[-1][0] != record.attempts):
                    pid, rss = rows[0][-2:]
                    record.attempt_log.append(Attempt(record.attempts, record.started_at or 0.0, record.finished_at,
                                                      Outcome.SUCCEEDED, worker_pid=pid, peak_rss=rss))
                record.steps = {name: json.loads(value) for name, value in
                                self._all(f"SELECT name, value FROM {{s}}.steps WHERE run_id = %s {BY_POSITION}",
                                          (run_id,))}
        return record

    def runs(
        self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50, offset: int = 0,
        since: float | None = None, tenant: str | None = None,
    ) -> list[RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("created_at >= %s")
            args.append(since)
        if status is not None:
            where.append("status = %s")
            args.append(str(RunStatus(status)))
        if job is not None:
            where.append("job = %s")
            args.append(job)
        if tenant is not None:
            where.append("tenant = %s")
            args.append(tenant)
        sql = f"SELECT {_RUN_COLUMNS} FROM {{s}}.runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s OFFSET %s"
        return [_record(row) for row in self._all(sql, (*args, limit, offset))]

    def cancel_queued(self, run_id: int, now: float) -> bool:
        """(See `Store.cancel_queued`.) Not done again after a lost COMMIT: its answer would be
        wrong (False for a run that the lost COMMIT did cancel)."""
        def cancel(db: psycopg.Connection[Any]) -> bool:
            cancelled = db.execute(self._q(_CANCEL), (now, run_id)).rowcount == 1
            if cancelled and self.notify:  # a supervisor holding it queued drops it at once
                db.execute(self._notify_sql)
            return cancelled

        return self._run(cancel)

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for job, status, count in self._all("SELECT job, status, count(*) FROM {s}.runs GROUP BY job, status"):
            result.setdefault(job, {})[status] = count
        return result

    def version_counts(self) -> dict[str, dict[int, int]]:
        """{job: {version: stored runs}} (`actors jobs`)."""
        result: dict[str, dict[int, int]] = {}
        for job, version, count in self._all("SELECT job, version, count(*) FROM {s}.runs GROUP BY job, version"):
            result.setdefault(job, {})[version] = count
        return result

    def workers(self) -> list[WorkerInfo]:
        """The workers of every live supervisor, by incarnation and slot."""
        rows = self._all(
            "SELECT w.slot, w.pid, w.run_id, w.job, w.busy_since, w.rss, w.started_at, w.restarts, w.updated_at "
            f"FROM {{s}}.workers AS w JOIN {{s}}.incarnations AS i ON i.id = w.incarnation WHERE {_LIVE_INCARNATION} "
            "ORDER BY w.incarnation, w.slot", {"lease": self.lease})
        return [WorkerInfo(*row) for row in rows]

    def supervisor_info(self) -> SupervisorInfo | None:
        """A live supervisor if one serves (the latest to beat), else the last that served."""
        rows = self._all(
            "SELECT pid, host, started_at, heartbeat_at, workers, restarts, kills, stopped_at FROM {s}.incarnations "
            f"AS i ORDER BY ({_LIVE_INCARNATION}) DESC, i.beat DESC LIMIT 1", {"lease": self.lease})
        if not rows:
            return None
        row = rows[0]
        return SupervisorInfo(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])

    def finished_runs(self, since: float) -> list[tuple[str, str, float | None, float]]:
        """(job, status, started_at, finished_at) of the runs that ended since `since` (a scan)."""
        return [tuple(row) for row in self._all(
            "SELECT job, status, started_at, finished_at FROM {s}.runs WHERE finished_at >= %s "
            "AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled')", (since,))]

    def purge(self, older_than: float, statuses: frozenset[str], batch: int = 500) -> int:
        wanted = sorted(str(RunStatus(s)) for s in statuses if RunStatus(s).is_terminal)
        if not wanted:
            return 0
        total = 0
        def purge(db: psycopg.Connection[Any]) -> int:
            row = db.execute(self._q(_PURGE), (wanted, older_than, batch)).fetchone()
            return row[0] if row else 0

        while True:
            count = self._run(purge, again=purge)  # one short transaction per batch
            total += count
            if count < batch:
                return total

    def cron_last(self, job: str) -> float | None:
        rows = self._all("SELECT last_tick FROM {s}.cron WHERE job = %s", (job,))
        return rows[0][0] if rows else None

    def record_jobs(self, jobs: list[JobInfo]) -> None:
        """(See `Store.record_jobs`.) The limits of these jobs (`concurrency`, `rate`) are the
        ones this store enforces across supervisors from now on (see the module docstring)."""
        limits = limits_of(jobs)

        def record(db: psycopg.Connection[Any]) -> None:
            for j in jobs:
                db.execute(self._q(
                    "INSERT INTO {s}.jobs (name, version, min_version, cron, options, recorded_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, "
                    "min_version = EXCLUDED.min_version, cron = EXCLUDED.cron, options = EXCLUDED.options, "
                    "recorded_at = EXCLUDED.recorded_at"),
                    (j.name, j.version, j.min_version, j.cron, json.dumps(j.options), j.recorded_at))

        self._run(record, again=record)
        self._limits = limits

    def jobs(self) -> list[JobInfo]:
        rows = self._all("SELECT name, version, min_version, cron, options, recorded_at FROM {s}.jobs ORDER BY name")
        return [JobInfo(name, version, low, cron, json.loads(options), at) for name, version, low, cron, options, at
                in rows]

    def set_cron(self, job: str, tick: float) -> None:
        def write(db: psycopg.Connection[Any]) -> None:
            db.execute(self._q(_SET_CRON), (job, tick))

        self._run(write, again=write)

    def close(self) -> None:
        with self._mutex:
            try:
                if self._incarnation is not None and self._db is not None and not self._db.broken:
                    with contextlib.suppress(StoreError):
                        self.release()
            finally:
                self._incarnation = None
                self._unlisten()
                if self._db is not None:
                    self._db.close()
                    self._db = None


def _seconds(value: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=value)


def _record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(row[0], row[1], RunStatus(row[2]), *row[3:18], json.loads(row[18]) if row[18] else {},  # type: ignore[call-arg]
                     *row[19:24], wait_of(row[24]), row[25])


__all__ = ["VERSION", "PostgresStore"]
