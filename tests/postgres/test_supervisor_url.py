"""`Supervisor(store="postgresql://...")`, `Client` and handles on a PostgreSQL store, in one
process (the default schema "actors", dropped after)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from semantics_jobs import double, task

from actors import Client, RunStatus, Supervisor
from actors.stores.postgres import PostgresStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(postgres_dsn: str) -> Iterator[str]:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "actors" CASCADE')
    yield postgres_dsn
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "actors" CASCADE')


def test_a_supervisor_and_a_client_on_a_postgres_url_run_and_read_runs(url: str, tmp_path):
    sup = Supervisor([double], workers=2, store=url)
    try:
        assert isinstance(sup.store, PostgresStore)
        handles = [sup.submit(double, task(tmp_path, n=i)) for i in range(10)]
        with Client(url) as client:
            by_name = client.submit("double", {"dir": str(tmp_path), "n": 21})  # stored by name, adopted
            assert client.serving() is False
            assert sup.serve(until="drained") == "drained"
            assert [h.result(timeout=10) for h in handles] == [2 * i for i in range(10)]
            assert by_name.result(timeout=10) == 42
            assert client.get(by_name.id).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
            assert client.serving() is False  # the session ended: its incarnation stopped
            assert sup.store.supervisor_info().stopped_at is not None  # type: ignore[union-attr]
    finally:
        sup.close()
