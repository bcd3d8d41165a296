"""What the PostgreSQL store adds to the contract (tests/stores/test_contract.py runs that one):
its versioned schema, serving that is not exclusive, leases by the database clock, the rescue,
the fence, and keys that hold between connections racing each other.

Each test gets a schema of its own on $ACTORS_TEST_POSTGRES (tests/conftest.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from actors import Client
from actors.errors import StoreError
from actors.run import NewRun, Outcome, RunStatus, SupervisorInfo
from actors.stores import Changes, Finish, open_store
from actors.stores.postgres import PostgresStore
from actors.stores.postgres_schema import VERSION, migrate

pytestmark = pytest.mark.timeout(60)
NOW = 1_000.0


@pytest.fixture
def stores(postgres_dsn: str, postgres_schema: str) -> Iterator[list[PostgresStore]]:
    """Stores opened on one schema (as several supervisors would); closed after the test."""
    made: list[PostgresStore] = []
    yield made
    for store in made:
        store.close()


def open_(stores: list[PostgresStore], dsn: str, schema: str, **options) -> PostgresStore:
    store = PostgresStore(dsn, schema=schema, **options)
    stores.append(store)
    return store


def insert(store: PostgresStore, count: int = 1, **options) -> list[int]:
    return [run_id for run_id, _ in store.insert([NewRun("job", f'{{"x": {i}}}', **options) for i in range(count)],
                                                 NOW)]


def status(info_pid: int = 1) -> tuple[SupervisorInfo, list]:
    now = time.time()
    return SupervisorInfo(info_pid, "host", now, now, 1, 0, {}, None), []


# -- the schema -------------------------------------------------------------------------------


def test_the_schema_is_created_in_its_own_schema_with_its_version(stores, postgres_dsn, postgres_schema):
    open_(stores, postgres_dsn, postgres_schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                                 (postgres_schema,))}
        (version,), = conn.execute(f'SELECT version FROM "{postgres_schema}".schema_version').fetchall()
    assert {"runs", "attempts", "steps", "cron", "incarnations", "workers", "schema_version"} <= tables
    assert version == VERSION


def test_a_newer_schema_is_refused_and_left_untouched(stores, postgres_dsn, postgres_schema):
    open_(stores, postgres_dsn, postgres_schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'UPDATE "{postgres_schema}".schema_version SET version = %s', (VERSION + 1,))
    with pytest.raises(StoreError, match=f"newer than this actors \\({VERSION}\\)"):
        PostgresStore(postgres_dsn, schema=postgres_schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert conn.execute(f'SELECT version FROM "{postgres_schema}".schema_version').fetchone() == (VERSION + 1,)


def test_a_version_1_schema_is_migrated_when_opened_and_keeps_its_runs(stores, postgres_dsn, postgres_schema):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        migrate(conn, postgres_schema, f'"{postgres_schema}"', upto=1)
        conn.execute(f'INSERT INTO "{postgres_schema}".runs (job, status, input, created_at, scheduled_at) '
                     "VALUES ('job', 'queued', '{}', 1, 1)")
        assert conn.execute(f'SELECT version FROM "{postgres_schema}".schema_version').fetchone() == (1,)
    store = open_(stores, postgres_dsn, postgres_schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert conn.execute(f'SELECT version FROM "{postgres_schema}".schema_version').fetchone() == (VERSION,)
    (ready,) = store.load_ready()
    assert (ready.job, ready.status) == ("job", "queued")
    store.commit(Changes(claims=[(ready.id, 1)]), NOW)
    assert store.recover(NOW + 1) == 1  # the rescue needs version 2's column


def test_a_schema_with_tables_of_its_own_is_refused(stores, postgres_dsn, postgres_schema):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
        conn.execute(f'CREATE TABLE "{postgres_schema}".invoices (id int)')
    with pytest.raises(StoreError, match="not an actors store"):
        PostgresStore(postgres_dsn, schema=postgres_schema)


def test_an_unreachable_server_is_a_clear_store_error():
    with pytest.raises(StoreError, match="cannot connect to store postgresql://nobody@127.0.0.1:1/"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/db")


def test_import_actors_does_not_import_psycopg():
    code = "import sys, actors; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


def test_open_store_and_client_take_a_postgres_url(postgres_dsn: str):
    url = postgres_dsn.replace("postgresql://", "postgres://", 1)
    try:
        store = open_store(url)
        assert isinstance(store, PostgresStore) and store.schema == "actors"
        (run_id, _), = store.insert([NewRun("job", "{}")], NOW)
        store.close()
        client = Client(postgres_dsn)
        assert client.get(run_id).status is RunStatus.QUEUED  # type: ignore[union-attr]
        assert client.serving() is False
        client.close()
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "actors" CASCADE')


# -- serving: incarnations, leases, the rescue, the fence --------------------------------------


def test_serving_is_not_exclusive_and_served_means_a_live_incarnation(stores, postgres_dsn, postgres_schema):
    a, b = open_(stores, postgres_dsn, postgres_schema), open_(stores, postgres_dsn, postgres_schema)
    client = open_(stores, postgres_dsn, postgres_schema)
    assert client.served() is False
    a.acquire()
    b.acquire()  # a second supervisor serves the same database
    assert a.incarnation != b.incarnation
    assert client.served() is True
    a.release()
    assert client.served() is True
    b.release()
    assert client.served() is False


def test_a_lapsed_lease_makes_a_supervisors_runs_rescued_and_its_late_results_rejected(
        stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema, lease=1.0)
    b = open_(stores, postgres_dsn, postgres_schema, lease=1.0)
    a.acquire()
    b.acquire()
    first, second = insert(a, 2, max_attempts=3)
    assert a.commit(Changes(claims=[(first, 1), (second, 1)]), NOW + 1) == set()
    assert b.recover(NOW + 2) == 0  # a's lease is fresh: nothing to rescue
    time.sleep(1.3)
    b.commit(Changes(status=status()), NOW + 3)  # b's heartbeat; a beat none for over its lease
    for run_id in (first, second):
        record = b.get(run_id, attempts=True)
        assert (record.status, record.attempts) == (RunStatus.QUEUED, 1)
        (attempt,) = record.attempt_log
        assert (attempt.number, attempt.outcome, attempt.finished_at) == (1, Outcome.INTERRUPTED, NOW + 3)
    # b has scanned past them already: load_ready still offers the rescued runs
    assert {r.id for r in b.load_ready(after_id=second)} == {first, second}
    assert {r.id: r.free_attempts for r in b.load_ready(after_id=second)} == {first: 1, second: 1}
    assert b.commit(Changes(claims=[(first, 2)]), NOW + 4) == set()
    # a wakes up: its late results lose, whatever they say
    a.commit(Changes(successes=[(first, 1, "1", NOW + 1, 11, None), (second, 1, "1", NOW + 1, 11, None)],
                     steps=[(first, "late", "1", 0)], progress=[(first, 0.9, "late", None)]), NOW + 5)
    a.commit(Changes(finishes=[Finish(first, 2, "failed", "failed", NOW + 1, NOW + 5, error_type="Late")]), NOW + 5)
    assert a.rejected == 3
    assert (b.get(first).status, b.get(first).attempts, b.get(first).progress) == (RunStatus.RUNNING, 2, None)
    assert b.get(second).status is RunStatus.QUEUED
    assert b.steps(first) == {}
    b.commit(Changes(successes=[(first, 2, "4", NOW + 4, 22, None)]), NOW + 6)
    record = b.get(first, attempts=True)
    assert (record.status, record.output) == (RunStatus.SUCCEEDED, "4")
    assert [a.outcome for a in record.attempt_log] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]


def test_a_stopped_supervisors_runs_are_rescued_at_once(stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema)
    b = open_(stores, postgres_dsn, postgres_schema)
    a.acquire()
    (run_id,) = insert(a)
    a.commit(Changes(claims=[(run_id, 1)]), NOW + 1)
    b.acquire()
    assert b.recover(NOW + 2) == 0
    a.release()  # a stopped with a run left running (a forced stop, say): no lease to wait for
    assert b.recover(NOW + 3) == 1
    assert b.get(run_id).status is RunStatus.QUEUED


def test_a_live_supervisor_never_rescues_its_own_runs(stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema, lease=0.5)
    a.acquire()
    (run_id,) = insert(a)
    a.commit(Changes(claims=[(run_id, 1)]), NOW + 1)
    time.sleep(0.7)  # its own lease lapsed (frozen): it beats again, and keeps its run
    a.commit(Changes(status=status()), NOW + 2)
    assert a.recover(NOW + 3) == 0
    assert a.get(run_id).status is RunStatus.RUNNING


def test_the_rescue_goes_in_batches(stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema)
    b = open_(stores, postgres_dsn, postgres_schema, rescue_batch=3)
    a.acquire()
    ids = insert(a, 7)
    a.commit(Changes(claims=[(i, 1) for i in ids]), NOW + 1)
    a.release()
    b.acquire()
    b.commit(Changes(status=status()), NOW + 2)  # one batch per status write
    assert b.counts()["job"] == {"queued": 3, "running": 4}
    assert b.recover(NOW + 3) == 4  # recover takes every batch
    assert b.counts()["job"] == {"queued": 7}


def test_a_run_claimed_by_two_supervisors_at_once_goes_to_one(stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema)
    b = open_(stores, postgres_dsn, postgres_schema)
    a.acquire()
    b.acquire()
    ids = insert(a, 200)
    lost: dict[str, set[int]] = {}
    barrier = threading.Barrier(2)

    def claim(name: str, store: PostgresStore) -> None:
        barrier.wait()
        lost[name] = store.commit(Changes(claims=[(i, 1) for i in ids]), NOW + 1)

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    won_a, won_b = set(ids) - lost["a"], set(ids) - lost["b"]
    assert won_a.isdisjoint(won_b) and won_a | won_b == set(ids)
    assert a.counts()["job"] == {"running": 200}


@pytest.mark.parametrize("kind", ["key", "unique_key"])
def test_a_key_gives_one_run_when_hosts_submit_it_at_once(stores, postgres_dsn, postgres_schema, kind):
    clients = [open_(stores, postgres_dsn, postgres_schema) for _ in range(6)]
    barrier = threading.Barrier(len(clients))
    got: list[tuple[int, bool]] = []

    def submit(store: PostgresStore) -> None:
        barrier.wait()
        for i in range(20):
            got.extend(store.insert([NewRun("job", "{}", **{kind: f"k{i}"})], NOW))

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == 6 * 20
    assert sum(created for _, created in got) == 20
    assert len({run_id for run_id, _ in got}) == 20
    assert clients[0].counts() == {"job": {"queued": 20}}


def test_workers_and_supervisor_info_come_from_live_incarnations(stores, postgres_dsn, postgres_schema):
    from actors.run import WorkerInfo

    a = open_(stores, postgres_dsn, postgres_schema)
    assert a.supervisor_info() is None
    a.acquire()
    info, _ = status(info_pid=4242)
    a.commit(Changes(status=(info, [WorkerInfo(0, 99, None, None, None, None, NOW, 0, NOW)])), NOW)
    assert a.supervisor_info().pid == 4242  # type: ignore[union-attr]
    assert [w.pid for w in a.workers()] == [99]
    a.release()
    assert a.workers() == []
    assert a.supervisor_info().stopped_at is not None  # type: ignore[union-attr]


def test_cron_ticks_only_move_forward(stores, postgres_dsn, postgres_schema):
    a = open_(stores, postgres_dsn, postgres_schema)
    a.set_cron("nightly", NOW + 60)
    a.set_cron("nightly", NOW)  # a slower supervisor writing an older tick
    assert a.cron_last("nightly") == NOW + 60


def test_a_url_names_the_schema_lease_and_notify_and_a_keyword_may_not_contradict_it(postgres_dsn, postgres_schema):
    from actors.stores.postgres import url_options

    assert url_options(f"{postgres_dsn}?schema={postgres_schema}&lease=5&notify=false&sslmode=disable") == (
        f"{postgres_dsn}?sslmode=disable", {"schema": postgres_schema, "lease": 5.0, "notify": False})
    assert url_options("host=x dbname=y") == ("host=x dbname=y", {})
    store = PostgresStore(f"{postgres_dsn}?schema={postgres_schema}&lease=5")
    try:
        assert (store.schema, store.lease, store.notify) == (postgres_schema, 5.0, True)
        with Client(f"{postgres_dsn}?schema={postgres_schema}") as client:  # a URL is all the command has
            assert client.store.schema == postgres_schema  # type: ignore[attr-defined]
    finally:
        store.close()
    for bad, words in ((f"{postgres_dsn}?schema=Bad-Name", "invalid schema name 'Bad-Name'"),
                       (f"{postgres_dsn}?lease=-1", "invalid lease '-1' in the store URL"),
                       (f"{postgres_dsn}?notify=maybe", "invalid notify='maybe'")):
        with pytest.raises(ValueError, match=re.escape(words)):
            PostgresStore(bad)
    with pytest.raises(ValueError, match="schema given twice"):
        PostgresStore(f"{postgres_dsn}?schema={postgres_schema}", schema="other")
