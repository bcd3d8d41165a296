"""The SQLite store's file: its schema, our mark on it, and the read-only look taken at a path
before anything is created or changed there.

Other people's files are left alone: ours carry `PRAGMA application_id` 0x41435452 ("ACTR"),
set with the schema in one transaction. A path is inspected read-only first (the 100-byte
header, then SQLite in `mode=ro`, `immutable` where no -wal exists, so no -shm appears); a
non-empty file that is not ours is refused with a StoreError and stays byte-identical.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from ..errors import StoreError
from .base import SCHEMA_VERSION

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,  -- NULL when it is in large_inputs
    output TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    free_attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER,
    timeout REAL,
    created_at REAL NOT NULL,
    scheduled_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error_type TEXT,
    message TEXT,
    traceback TEXT,
    progress REAL,
    progress_message TEXT,
    metadata TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    key TEXT,
    unique_key TEXT,
    worker_pid INTEGER,  -- of the succeeded attempt, which has no row in attempts
    peak_rss INTEGER,
    rerun_of INTEGER,  -- the run this one reruns: it held the key before (version 2)
    -- version 5: durable execution and tenants
    parent_id INTEGER,  -- the run that invoked or dispatched this one
    tenant TEXT,  -- given at submit: filterable, a limit's key
    wait TEXT,  -- JSON: what a waiting run waits for (a time, runs, an event)
    current_step TEXT  -- the step the running attempt is in
);
-- a key names one run at a time: a rerun takes it from the run it reruns (key set NULL there)
CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs(job, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_unique ON runs(job, unique_key) WHERE unique_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS large_inputs (
    run_id INTEGER PRIMARY KEY,
    input TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    position INTEGER,  -- version 5: the record's place in the run (steps, sleeps, invokes, waits)
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
-- version 5: events (`emit`), kept EVENT_DAYS days, `handled` once a serving supervisor started
-- their triggered runs and matched them against the waits it holds
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    handled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_name ON events(name, id);
CREATE INDEX IF NOT EXISTS events_unhandled ON events(id) WHERE handled = 0;
CREATE TABLE IF NOT EXISTS cron (
    job TEXT PRIMARY KEY,
    last_tick REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    started_at REAL,
    finished_at REAL,
    outcome TEXT,
    error_type TEXT,
    message TEXT,
    traceback TEXT,
    worker_pid INTEGER,
    exit_code INTEGER,
    signal INTEGER,
    peak_rss INTEGER,
    PRIMARY KEY (run_id, number)
) WITHOUT ROWID;
-- version 3: what serves this store, written by the serving supervisor about once a second
-- (one row: the latest supervisor), and its workers (one row per slot, none once it stopped)
CREATE TABLE IF NOT EXISTS supervisor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    workers INTEGER NOT NULL,
    restarts INTEGER NOT NULL,
    kills TEXT NOT NULL,  -- JSON, reason: count
    stopped_at REAL
);
-- version 4: the jobs the supervisor that last served each name declared (written at each serve())
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    min_version INTEGER,
    cron TEXT,
    options TEXT NOT NULL,  -- JSON: Job.options()
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    slot INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    run_id INTEGER,
    job TEXT,
    busy_since REAL,
    rss INTEGER,
    started_at REAL NOT NULL,
    restarts INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""

# Columns later schema versions added to tables an older store already has: (table, column, type).
ADDED_COLUMNS = (("runs", "rerun_of", "INTEGER"),  # version 2
                 ("runs", "parent_id", "INTEGER"), ("runs", "tenant", "TEXT"), ("runs", "wait", "TEXT"),
                 ("runs", "current_step", "TEXT"), ("steps", "position", "INTEGER"))  # version 5
# Indexes on added columns, made after them: the runs a retry made of a run, for the dashboard
# (only retries enter it: no cost on the hot path).
ADDED_INDEXES = ("CREATE INDEX IF NOT EXISTS runs_rerun ON runs(rerun_of) WHERE rerun_of IS NOT NULL",
                 # version 5: waiting runs (read when serving starts), children, tenants: only rows
                 # that have one enter each, so the hot path of plain runs pays nothing
                 "CREATE INDEX IF NOT EXISTS runs_waiting ON runs(id) WHERE status = 'waiting'",
                 "CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent_id) WHERE parent_id IS NOT NULL",
                 "CREATE INDEX IF NOT EXISTS runs_tenant ON runs(tenant, id) WHERE tenant IS NOT NULL")


def upgrade(db: sqlite3.Connection) -> None:
    """Bring a store's schema to SCHEMA_VERSION, inside the caller's write transaction: the
    tables and indexes SCHEMA creates where missing, then the columns added since."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    for table, column, kind in ADDED_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in ADDED_INDEXES:
        db.execute(statement)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


# Our mark in the file header ("ACTR"), set with the schema. Stores made before the mark have
# application_id 0: they are recognised by their schema (version 1, our tables) and stamped.
APPLICATION_ID = 0x41435452
_UNMARKED_VERSION = 1
_OUR_TABLES = {"runs", "attempts", "steps"}
_OUR_RUN_COLUMNS = {"job", "status", "input", "attempts", "scheduled_at"}


def not_ours(path: str, why: str) -> StoreError:
    return StoreError(f"{path} is not an actors store ({why}); it was left untouched")


def newer(path: str, version: int) -> StoreError:
    return StoreError(f"store {path} has schema version {version}, newer than this actors ({SCHEMA_VERSION}); "
                      "it was left untouched")


def inspect(path: str) -> None:
    """Raise StoreError unless `path` is missing, empty or one of our stores; reads only."""
    if os.path.isdir(path):
        raise StoreError(f"store {path} is a directory, not an SQLite file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"cannot create store {path}: directory {directory} does not exist")
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from exc
    if not header:
        return  # an empty file is made ours
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise not_ours(path, "not a database: it has no SQLite header")
    mark, version = int.from_bytes(header[68:72], "big"), int.from_bytes(header[60:64], "big")
    tables: set[str] = set()
    columns: set[str] = set()
    if mark != APPLICATION_ID:
        mark, version, tables, columns = read_marks(path)
    if mark == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise newer(path, version)
        return
    if mark == 0 and version == 0 and not tables:
        return  # an SQLite file with nothing in it
    ours = tables >= _OUR_TABLES and columns >= _OUR_RUN_COLUMNS
    if mark == 0 and _UNMARKED_VERSION <= version <= SCHEMA_VERSION and ours:
        return  # made before the mark (version 1; a later one unmarked by hand): stamped when opened
    if mark != 0:
        raise not_ours(path, f"an SQLite database with application_id {mark}")
    raise not_ours(path, f"an SQLite database with tables of its own: {', '.join(sorted(tables)) or 'none'}")


def read_marks(path: str) -> tuple[int, int, set[str], set[str]]:
    """application_id, user_version, table names and the columns of `runs`, asked of SQLite
    read-only: the header may be older than pages in a -wal file. With no -wal to read,
    `immutable` also keeps SQLite from taking locks or creating a -shm beside the file."""
    query = "mode=ro" if os.path.exists(path + "-wal") else "mode=ro&immutable=1"
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}", uri=True)
        try:
            mark = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {row[0] for row in db.execute("SELECT name FROM pragma_table_info('runs')")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot use store {path}: {exc}; it was left untouched") from exc
    return mark, version, tables, columns


def create(path: str) -> None:
    """Create a missing store file, private to its owner (0600)."""
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot create store {path}: {exc.strerror} (is its directory writable?)") from exc
