"""The dashboard on a PostgreSQL store, over HTTP: a schema a real supervisor (a subprocess,
`PostgresStore(dsn, schema=...)`) filled, then the overview, the runs page (filters, keyset
pages), a run, the jobs, a cancel and a retry, an unknown run, that the dashboard's own
connection cannot write, and `actors dashboard --store postgresql://...` serving in a
subprocess. Needs a server: ACTORS_TEST_POSTGRES (`eval "$(.ci/postgres start)"`)."""

from __future__ import annotations

import html
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
httpx = pytest.importorskip("httpx")
psycopg = pytest.importorskip("psycopg")

from conftest import run_script, script_env, start_script, wait_until  # noqa: E402
from dashboard_support import FILL  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from actors import Client, StoreError  # noqa: E402
from actors.dashboard import create_app, queries  # noqa: E402
from actors.dashboard.pg_queries import PostgresReader, parse_url  # noqa: E402
from actors.stores.postgres import PostgresStore  # noqa: E402

BASE = "http://127.0.0.1"
PG_FILL = FILL.replace("from actors import Supervisor, job, Context",
                       "from actors import Supervisor, job, Context\nfrom actors.stores.postgres import PostgresStore") \
              .replace("store=sys.argv[1]", "store=PostgresStore(sys.argv[1], schema=sys.argv[2])")
assert "PostgresStore(sys.argv[1], schema=sys.argv[2])" in PG_FILL


def url_of(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


@pytest.fixture(scope="module")
def filled(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A schema a real supervisor served to the end (dashboard_support.fill_store's runs), then
    two `ok` runs submitted by a Client with no supervisor, one cancelled; its URL."""
    schema = f"t_dashboard_{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("dashboard_pg")
    try:
        result = run_script(tmp, PG_FILL, postgres_dsn, schema, timeout=90)
        assert result.returncode == 0, result.stderr
        assert "drained" in result.stdout
        with Client(PostgresStore(postgres_dsn, schema=schema)) as client:
            client.submit("ok", 100)
            client.cancel(client.submit("ok", 101).id)
        yield url_of(postgres_dsn, schema)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def ready(app) -> TestClient:
    wait_until(lambda: app.state.dashboard.counts.read().ready, timeout=10, what="the first count")
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def web(filled: str) -> TestClient:
    return ready(create_app(filled))


def sql(url: str, statement: str, *args: object) -> list[tuple]:
    dsn, schema, _ = parse_url(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(statement.replace("{s}", f'"{schema}"'), args).fetchall()]


def run_ids(url: str, **where: str) -> list[int]:
    clause = " WHERE " + " AND ".join(f"{k} = %s" for k in where) if where else ""
    return [r[0] for r in sql(url, "SELECT id FROM {s}.runs" + clause + " ORDER BY id DESC", *where.values())]


def ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="run-(\d+)"', page)]


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


# -- pages ---------------------------------------------------------------------------------


def test_overview_counts_runs_per_job_and_status_and_names_the_store(web: TestClient, filled: str) -> None:
    page = web.get("/")
    assert page.status_code == 200
    expected = sql(filled, "SELECT job, status, count(*) FROM {s}.runs GROUP BY 1, 2")
    assert sum(n for _, _, n in expected) == 36  # 30 ok, 2 boom, slow, stepper, and the two a Client submitted
    for job, status, count in expected:
        row = re.search(rf'<tr data-job="{job}">(.*?)</tr>', page.text, re.S)
        assert row, job
        cell = re.search(rf'data-status="{status}"><a [^>]*>([\d,]+)</a>', row.group(1))
        assert cell and int(cell.group(1).replace(",", "")) == count, (job, status, count)
    assert 'id="queue-depth">1<' in page.text  # the client's queued run
    assert "ValueError" in page.text  # recent failures
    _, schema, _ = parse_url(filled)
    assert f"(schema {schema})" in page.text
    # the supervisor stopped when drained: its incarnation says so
    state = re.search(r'id="supervisor-state">([^<]+)<', page.text)
    assert state and state.group(1) == "stopped"
    assert "No workers" in page.text


def test_runs_filters(web: TestClient, filled: str) -> None:
    assert ids(web.get("/runs?limit=500").text) == run_ids(filled) != []
    assert ids(web.get("/runs?status=queued").text) == run_ids(filled, status="queued") != []
    assert ids(web.get("/runs?status=failed").text) == run_ids(filled, status="failed") != []
    assert ids(web.get("/runs?status=timed_out&job=slow").text) == run_ids(filled, status="timed_out", job="slow") != []
    assert ids(web.get("/runs?job=nobody").text) == []
    assert ids(web.get("/runs?since=1h&limit=500").text) == run_ids(filled)
    assert ids(web.get("/runs?until=2001-01-01").text) == []


def test_runs_pages_are_keyset_pages_that_cover_every_run_once(web: TestClient, filled: str) -> None:
    expected = run_ids(filled, job="ok", status="succeeded")
    assert len(expected) == 30
    seen: list[int] = []
    url = "/runs?job=ok&status=succeeded&limit=7"
    for _ in range(20):
        page = web.get(url)
        assert page.status_code == 200 and "offset" not in url
        seen += ids(page.text)
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        if not older:
            break
        url = html.unescape(older.group(1))
    assert seen == expected
    second = web.get(f"/runs?job=ok&status=succeeded&limit=7&before={expected[6]}")
    assert ids(second.text) == expected[7:14]
    newer = re.search(r'id="newer" href="([^"]+)"', second.text)
    assert newer
    assert ids(web.get(html.unescape(newer.group(1))).text) == expected[:7]
    # the primary key alone, paged
    everything = run_ids(filled)
    first = web.get("/runs?limit=5").text
    assert ids(first) == everything[:5]
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older and ids(web.get(html.unescape(older.group(1))).text) == everything[5:10]


def test_a_filter_scans_in_windows_and_says_how_far(filled: str, monkeypatch) -> None:
    monkeypatch.setattr(queries, "SCAN_WINDOW", 5)
    monkeypatch.setattr(queries, "SCAN_BUDGET", 0.0)  # one window per page
    web = ready(create_app(filled))
    found: list[int] = []
    url = "/runs?job=boom"
    said = False
    for _ in range(40):
        page = web.get(url)
        found += ids(page.text)
        said = said or "Searched runs down to #" in page.text
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        if not older:
            break
        url = html.unescape(older.group(1))
    assert found == run_ids(filled, job="boom") and said


def test_run_page_shows_a_failure_and_a_run_with_steps(web: TestClient, filled: str) -> None:
    run_id = run_ids(filled, job="boom")[-1]
    text = html.unescape(web.get(f"/runs/{run_id}").text)
    traceback = re.search(r'<pre class="traceback" id="traceback">(.*?)</pre>', text, re.S)
    assert traceback and "ValueError: boom 1: the pixels are wrong" in traceback.group(1)
    assert 'class="attempt" data-outcome="failed"' in text and 'id="retry"' in text
    (stepper,) = run_ids(filled, job="stepper")
    text = html.unescape(web.get(f"/runs/{stepper}").text)
    assert "decode" in text and '"pages": 3' in text and "half way" in text
    assert re.search(r'id="input">3</pre>', text) and re.search(r'id="output">3</pre>', text)
    assert 'data-outcome="succeeded"' in text
    (slow,) = run_ids(filled, job="slow")
    assert 'data-outcome="timed_out"' in web.get(f"/runs/{slow}").text


def test_an_unknown_run_is_a_404_page(web: TestClient) -> None:
    page = web.get("/runs/999999")
    assert page.status_code == 404 and "There is no run 999999" in html.unescape(page.text)
    assert "Traceback" not in page.text


def test_jobs_page_lists_every_job_with_what_the_supervisor_recorded(web: TestClient) -> None:
    page = html.unescape(web.get("/jobs").text)
    for job in ("ok", "boom", "slow", "stepper", "nightly"):
        assert f'data-job="{job}"' in page
    row = page[page.index('data-job="nightly"'):]
    row = row[:row.index("</tr>")]
    assert "0 3 * * *" in row and "timeout=5.0" in row and 'class="run-now"' in row


def test_the_event_stream_notices_a_new_run(filled: str) -> None:
    reader = PostgresReader(filled)
    db = reader.fresh()
    try:
        before = reader.data_version(db)
        assert reader.data_version(db) == before
        with Client(PostgresStore(reader.dsn, schema=reader.schema)) as client:
            client.submit("ok", 7)
        assert reader.data_version(db) != before
    finally:
        db.close()
        reader.close()


# -- read-only -----------------------------------------------------------------------------


def test_the_dashboards_connection_cannot_write(web: TestClient, filled: str) -> None:
    reader = web.app.state.dashboard.reader
    assert reader.db.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.db.execute(reader._q("UPDATE {s}.runs SET priority = 99"))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        reader.db.execute(reader._q("CREATE TABLE {s}.intruder (x int)"))
    fresh = reader.fresh()  # the event stream's: the same
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            fresh.execute(reader._q("DELETE FROM {s}.runs"))
    finally:
        fresh.close()
    assert sql(filled, "SELECT count(*) FROM {s}.runs WHERE priority = 99") == [(0,)]
    assert web.get("/").status_code == 200  # and the reader still works after the refusals


def test_a_schema_that_is_not_a_store_is_refused(postgres_dsn: str, postgres_schema: str) -> None:
    with pytest.raises(StoreError, match="not an actors store"):
        create_app(url_of(postgres_dsn, postgres_schema))
    assert sql(url_of(postgres_dsn, postgres_schema),
               "SELECT count(*) FROM pg_namespace WHERE nspname = %s", postgres_schema) == [(0,)]  # nothing made
    with pytest.raises(ValueError, match="invalid schema name"):
        create_app(url_of(postgres_dsn, "Bad-Name"))


# -- actions -------------------------------------------------------------------------------


def test_cancel_from_the_page_cancels_a_queued_run(web: TestClient, filled: str) -> None:
    dsn, schema, _ = parse_url(filled)
    with Client(PostgresStore(dsn, schema=schema)) as client:
        run_id = client.submit("ok", 55).id
    page = web.get(f"/runs/{run_id}")
    assert 'id="cancel"' in page.text
    response = web.post(f"/runs/{run_id}/cancel", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{run_id}?note=cancelled"
    assert sql(filled, "SELECT status FROM {s}.runs WHERE id = %s", run_id) == [("cancelled",)]
    assert "Cancelled." in web.get(response.headers["location"]).text
    assert web.post(f"/runs/{run_id}/cancel", data={}).status_code == 403  # no CSRF token


def test_retry_from_the_page_makes_a_new_run_of_the_failed_one(web: TestClient, filled: str) -> None:
    old = run_ids(filled, job="boom", status="failed")[0]
    page = web.get(f"/runs/{old}")
    response = web.post(f"/runs/{old}/retry", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    found = re.fullmatch(r"/runs/(\d+)\?note=retried", response.headers["location"])
    assert found
    new = int(found.group(1))
    assert sql(filled, "SELECT job, status, input, rerun_of FROM {s}.runs WHERE id = %s", new) == \
        [("boom", "queued", "2", old)]
    assert f'id="rerun-of">#{old}<' in web.get(f"/runs/{new}").text
    assert f'href="/runs/{new}"' in web.get(f"/runs/{old}").text


# -- serving: live supervisors and the command ---------------------------------------------


def test_two_supervisors_serving_show_as_two_with_their_workers(filled: str, tmp_path: Path) -> None:
    dsn, schema, _ = parse_url(filled)
    code = """
        import sys
        from actors import Supervisor, job
        from actors.stores.postgres import PostgresStore

        @job
        def ok(x: int) -> int:
            return x * 2

        if __name__ == "__main__":
            Supervisor([ok], workers=1, store=PostgresStore(sys.argv[1], schema=sys.argv[2])).serve()
    """
    procs = [start_script(tmp_path, code, dsn, schema) for _ in range(2)]
    try:
        web = ready(create_app(filled))

        def both() -> str | None:
            text = web.get("/").text
            return text if 'id="serving-count">2 supervisors serving' in text and \
                text.count('class="worker"') == 2 else None

        text = wait_until(both, timeout=30, interval=0.2, what="two supervisors serving")
        state = re.search(r'id="supervisor-state">([^<]+)<', text)
        assert state and state.group(1) == "serving"
        assert text.count('class="incarnation"') == 2
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    web = ready(create_app(filled))
    state = re.search(r'id="supervisor-state">([^<]+)<', web.get("/").text)
    assert state and state.group(1) == "stopped"


def test_the_dashboard_command_serves_a_postgres_store(filled: str, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "actors", "dashboard", "--store", filled, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
                            cwd=tmp_path)
    try:
        def overview() -> httpx.Response | None:
            if proc.poll() is not None:
                pytest.fail(f"actors dashboard exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            except httpx.TransportError:
                return None

        response = wait_until(overview, timeout=30, interval=0.2, what="the dashboard command serving")
        assert response.status_code == 200
        assert 'data-job="ok"' in response.text or "Counting the runs" in response.text
        _, schema, _ = parse_url(filled)
        assert f"(schema {schema})" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/runs/999999", timeout=5).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        time.sleep(0)
