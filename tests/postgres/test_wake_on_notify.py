"""A serving supervisor on PostgreSQL wakes on its LISTENing socket: a run a Client stores starts
at once, not at the next poll; after the listening connection is terminated the loop falls back
to the poll without spinning on the dead socket, and then follows the new connection."""

from __future__ import annotations

import os
import threading
import time

import psutil
import psycopg
import pytest
from conftest import wait_until
from semantics_jobs import double, task

from actors import Client, Supervisor
from actors.stores.postgres import PostgresStore

pytestmark = pytest.mark.timeout(90)
POLL = 5.0  # seconds between the supervisor's polls: a run that waited for one took that long


def listening(store: PostgresStore) -> bool:
    found = store.wake_socket()
    if found is None:
        return False
    os.close(found[1])  # the caller owns the duplicate
    return True


def terminate_listener(dsn: str, name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                (f"{name}-listen",)).fetchall())


def test_a_client_run_starts_without_waiting_for_the_poll_and_the_loop_follows_a_new_listener(
        tmp_path, postgres_dsn, postgres_schema):
    name = f"wake-{postgres_schema}"[:50]
    store = PostgresStore(psycopg.conninfo.make_conninfo(postgres_dsn, application_name=name), schema=postgres_schema)
    sup = Supervisor([double], workers=1, store=store, poll_interval=POLL)
    served = threading.Thread(target=sup.serve)
    served.start()
    try:
        with Client(PostgresStore(postgres_dsn, schema=postgres_schema)) as client:
            wait_until(lambda: listening(store), timeout=30, what="the store LISTENing")
            time.sleep(0.1)  # let the loop's first look at the socket pass (the poll comes only after POLL)
            began = time.monotonic()
            assert client.submit("double", task(tmp_path, n=1)).result(timeout=POLL / 2) == 2
            assert time.monotonic() - began < POLL / 2, "the run waited for the poll"

            cpu = psutil.Process().cpu_times()
            assert terminate_listener(postgres_dsn, name) == 1
            wait_until(lambda: not listening(store), timeout=10, what="the loop to notice the lost listener")
            assert client.submit("double", task(tmp_path, n=2)).result(timeout=3 * POLL) == 4  # by the poll
            wait_until(lambda: listening(store), timeout=3 * POLL, what="a new listener")
            spent = sum(psutil.Process().cpu_times()[:2]) - sum(cpu[:2])
            assert spent < POLL, f"{spent:.1f} s of CPU while the listener was down: a hot loop"

            time.sleep(0.1)
            began = time.monotonic()
            assert client.submit("double", task(tmp_path, n=3)).result(timeout=POLL / 2) == 6
            assert time.monotonic() - began < POLL / 2, "the new listener's socket is not watched"
    finally:
        sup.shutdown()
        served.join(30)
        sup.close()
