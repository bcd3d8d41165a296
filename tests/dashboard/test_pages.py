"""Every route of the dashboard over HTTP, against a store a real supervisor filled: pages,
filters and keyset pages, bad input as clear 400/403/404 pages, actions with CSRF, the token,
the Host check, the event stream, and that reading never writes the store."""

from __future__ import annotations

import hashlib
import html
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
httpx = pytest.importorskip("httpx")

from conftest import start_script, wait_until  # noqa: E402
from dashboard_support import fill_store, serving  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from actors import Client, StoreError  # noqa: E402
from actors.dashboard import app as app_module  # noqa: E402
from actors.dashboard import counts as counts_module  # noqa: E402
from actors.dashboard import create_app, queries, serve  # noqa: E402

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill_store(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture
def store(filled: str, tmp_path: Path) -> str:
    """A private copy of the filled store, for tests that act on it."""
    path = str(tmp_path / "copy.db")
    with sqlite3.connect(filled) as source, sqlite3.connect(path) as target:
        source.backup(target)
    os.chmod(path, 0o600)
    return path


def ready(app) -> TestClient:
    """A client of `app` once its background count of ended runs is done."""
    wait_until(lambda: app.state.dashboard.counts.read().ready, timeout=10, what="the first count")
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def web(filled: str) -> TestClient:
    return ready(create_app(filled))


def ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="run-(\d+)"', page)]


def run_ids(path: str, **where: str) -> list[int]:
    sql = "SELECT id FROM runs" + (" WHERE " + " AND ".join(f"{k}=?" for k in where) if where else "") + " ORDER BY id DESC"
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute(sql, tuple(where.values()))]


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def assert_clean_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    text = html.unescape(response.text)
    assert "Traceback" not in text and 'File "' not in text
    assert f"{status} ·" in text
    for word in words:
        assert word in text, (word, text[:2000])


# -- pages ---------------------------------------------------------------------------------


def test_overview_counts_runs_per_job_and_status_from_the_store(web: TestClient, filled: str) -> None:
    page = web.get("/")
    assert page.status_code == 200
    with sqlite3.connect(filled) as db:
        expected = db.execute("SELECT job, status, count(*) FROM runs GROUP BY 1, 2").fetchall()
    for job, status, count in expected:
        row = re.search(rf'<tr data-job="{job}">(.*?)</tr>', page.text, re.S)
        assert row, job
        cell = re.search(rf'data-status="{status}"><a [^>]*>([\d,]+)</a>', row.group(1))
        assert cell and int(cell.group(1).replace(",", "")) == count, (job, status, count)
    assert 'id="queue-depth">1<' in page.text  # the client's queued run
    assert "Succeeded per minute" in page.text and "<rect" in page.text
    assert "ValueError" in page.text  # recent failures
    assert "server-timing" in page.headers


def test_overview_shows_the_supervisor_as_the_store_records_it(web: TestClient, filled: str) -> None:
    with sqlite3.connect(filled) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        row = db.execute("SELECT pid, stopped_at FROM supervisor").fetchone() if "supervisor" in tables else None
    state = re.search(r'id="supervisor-state">([^<]+)<', web.get("/").text)
    assert state
    if row is None:
        assert state.group(1) == "never served"
    else:
        assert state.group(1) == ("stopped" if row[1] is not None else "silent")
        assert f"pid {row[0]}" in web.get("/").text


def test_runs_page_lists_newest_first_and_filters_by_status_and_job(web: TestClient, filled: str) -> None:
    assert ids(web.get("/runs").text) == run_ids(filled)[:50]
    assert ids(web.get("/runs?status=failed").text) == run_ids(filled, status="failed")
    assert len(run_ids(filled, status="failed")) == 2
    assert ids(web.get("/runs?status=queued").text) == run_ids(filled, status="queued") != []
    assert ids(web.get("/runs?status=timed_out&job=slow").text) == run_ids(filled, status="timed_out", job="slow") != []
    assert ids(web.get("/runs?job=nobody").text) == []


def test_runs_pages_are_keyset_pages_that_cover_every_run_once(web: TestClient, filled: str) -> None:
    expected = run_ids(filled, job="ok", status="succeeded")
    seen: list[int] = []
    url = "/runs?job=ok&status=succeeded&limit=7"
    pages = 0
    while url:
        page = web.get(url)
        assert page.status_code == 200
        assert "offset" not in url
        seen += ids(page.text)
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        url = html.unescape(older.group(1)) if older else ""
        pages += 1
        assert pages < 20
    assert seen == expected and len(expected) == 30
    # and back up: the page above the second one is the first one
    second = web.get(f"/runs?job=ok&status=succeeded&limit=7&before={expected[6]}")
    assert ids(second.text) == expected[7:14]
    newer = re.search(r'id="newer" href="([^"]+)"', second.text)
    assert newer
    assert ids(web.get(html.unescape(newer.group(1))).text) == expected[:7]


def test_a_filter_without_an_index_searches_in_slices_and_says_how_far(filled: str, monkeypatch) -> None:
    monkeypatch.setattr(queries, "SCAN_WINDOW", 5)
    monkeypatch.setattr(queries, "SCAN_BUDGET", 0.0)  # one window per page
    web = ready(create_app(filled))
    found: list[int] = []
    url = "/runs?job=boom"
    for _ in range(40):
        page = web.get(url)
        found += ids(page.text)
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        if not older:
            break
        assert "Searched runs down to #" in page.text or ids(page.text)
        url = html.unescape(older.group(1))
    assert found == run_ids(filled, job="boom")


def test_time_filters(web: TestClient, filled: str) -> None:
    everything = run_ids(filled)
    assert ids(web.get("/runs?since=1h&limit=500").text) == everything
    assert ids(web.get("/runs?until=2001-01-01").text) == []
    assert ids(web.get("/runs?since=2001-01-01T00:00&limit=500").text) == everything
    assert ids(web.get("/runs?since=2999-01-01T00:00:00%2B00:00").text) == []


def test_run_page_shows_a_failure_with_its_traceback_and_attempts(web: TestClient, filled: str) -> None:
    run_id = run_ids(filled, job="boom")[-1]
    page = web.get(f"/runs/{run_id}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    traceback = re.search(r'<pre class="traceback" id="traceback">(.*?)</pre>', text, re.S)
    assert traceback and "ValueError: boom 1: the pixels are wrong" in traceback.group(1)
    assert 'class="attempt" data-outcome="failed"' in text
    assert 'id="retry"' in text and 'id="cancel"' not in text


def test_run_page_shows_steps_progress_metadata_input_and_output(web: TestClient, filled: str) -> None:
    (run_id,) = run_ids(filled, job="stepper")
    text = html.unescape(web.get(f"/runs/{run_id}").text)
    assert "decode" in text and '"pages": 3' in text
    assert "half way" in text and 'id="metadata"' in text
    assert re.search(r'id="input">3</pre>', text) and re.search(r'id="output">3</pre>', text)
    assert 'data-outcome="succeeded"' in text


def test_run_page_of_a_timed_out_and_a_queued_run(web: TestClient, filled: str) -> None:
    (slow,) = run_ids(filled, job="slow")
    assert 'data-outcome="timed_out"' in web.get(f"/runs/{slow}").text
    (queued,) = run_ids(filled, status="queued")
    text = web.get(f"/runs/{queued}").text
    assert 'id="cancel"' in text and 'id="retry"' not in text and "Not started yet" in text


def test_jobs_page_lists_every_job(web: TestClient) -> None:
    page = web.get("/jobs")
    assert page.status_code == 200
    for job in ("ok", "boom", "slow", "stepper"):
        assert f'data-job="{job}"' in page.text


def test_jobs_page_shows_what_the_supervisor_recorded_and_the_next_cron_fire(web: TestClient) -> None:
    from croniter import croniter

    page = html.unescape(web.get("/jobs").text)
    row = page[page.index('data-job="nightly"'):]
    row = row[:row.index("</tr>")]
    assert "0 3 * * *" in row and "timeout=5.0" in row and "priority=2" in row
    fire = time.strftime("%Y-%m-%d %H:%M", time.gmtime(croniter("0 3 * * *", time.time()).get_next(float)))
    assert fire in row, row
    assert 'class="run-now"' in row
    ok_row = page[page.index('data-job="ok"'):]
    assert 'class="run-now"' not in ok_row[:ok_row.index("</tr>")]  # no schedule: no run-now


def test_run_now_from_the_jobs_page_queues_a_run_recorded_as_such(store: str) -> None:
    web = ready(create_app(store))
    csrf = csrf_of(web.get("/jobs").text)
    response = web.post("/jobs/nightly/run-now", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    new = int(re.fullmatch(r"/runs/(\d+)\?note=run-now", response.headers["location"]).group(1))
    with sqlite3.connect(store) as db:
        job, status, key = db.execute("SELECT job, status, key FROM runs WHERE id=?", (new,)).fetchone()
    assert (job, status) == ("nightly", "queued") and key.startswith("run-now:")
    assert_clean_error(web.post("/jobs/nightly/run-now", data={}), 403, "CSRF")
    assert_clean_error(web.post("/jobs/nope/run-now", data={"csrf": csrf}), 404, "no job")
    assert_clean_error(web.post("/jobs/ok/run-now", data={"csrf": csrf}), 409, "no cron schedule")


def test_static_script_is_served_from_the_package(web: TestClient) -> None:
    script = web.get("/static/dashboard.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert web.get("/static/dashboard.css").status_code == 200
    assert "://" not in script.text  # nothing fetched from elsewhere
    assert web.get("/static/nothing.js").status_code == 404


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "status", "words"), [
    ("/runs/999999", 404, ["There is no run 999999"]),
    ("/runs/abc", 404, ["There is no run 'abc'"]),
    ("/runs/0", 404, ["There is no run"]),
    ("/nowhere", 404, ["Nothing here"]),
    ("/runs?status=done", 400, ["status: 'done' is not one of"]),
    ("/runs?since=soon", 400, ["since: 'soon' is neither"]),
    ("/runs?until=2026-13-45", 400, ["until:"]),
    ("/runs?before=-3", 400, ["before: '-3' is not a positive whole number"]),
    ("/runs?after=x1", 400, ["after:"]),
    ("/runs?limit=0", 400, ["limit:"]),
    ("/runs?limit=5000", 400, ["at most 500"]),
    ("/runs?job=%01bad", 400, ["job: not a job name"]),
    ("/runs/1/cancel", 405, []),
])
def test_bad_requests_get_a_clear_page_never_a_traceback(web: TestClient, url: str, status: int, words: list[str]) -> None:
    assert_clean_error(web.get(url), status, *words)


def test_a_page_that_fails_inside_says_so_without_a_traceback(filled: str, monkeypatch) -> None:
    app = create_app(filled)
    web = TestClient(app, base_url=BASE, raise_server_exceptions=False)

    def broken(run_id: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app.state.dashboard.reader, "detail", broken)
    assert_clean_error(web.get("/runs/1"), 500, "The store could not be read", "OperationalError")


def test_create_app_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        create_app(str(tmp_path / "missing.db"))
    text = tmp_path / "notes.txt"
    text.write_text("not a database " * 20)
    with pytest.raises(StoreError, match="not an actors store"):
        create_app(str(text))
    assert text.read_text() == "not a database " * 20
    with pytest.raises(ValueError, match="not a path"):
        create_app("redis://localhost/runs")
    with pytest.raises(StoreError, match="cannot connect to store"):  # a PostgreSQL store, but no server there
        create_app("postgresql://127.0.0.1:1/runs?connect_timeout=2")
    with pytest.raises(ValueError, match="empty dashboard token"):
        create_app(str(tmp_path / "missing.db"), token="")


# -- reading never writes --------------------------------------------------------------------


def test_reading_every_page_leaves_the_store_byte_identical(store: str) -> None:
    def digest() -> tuple[str, ...]:
        # a missing -wal and an empty one are the same (a reader of a WAL file may create it empty)
        return tuple(hashlib.sha256(Path(p).read_bytes() if os.path.exists(p) else b"").hexdigest()
                     for p in (store, store + "-wal"))

    before = digest()
    web = ready(create_app(store))
    run_id = run_ids(store)[0]
    for url in ["/", "/runs", "/runs?status=failed", "/runs?job=ok&limit=3", f"/runs/{run_id}", "/jobs", "/runs/99999"]:
        web.get(url)
    assert digest() == before


def test_ended_counts_stay_exact_as_runs_end_and_the_watermark_moves(store: str) -> None:
    app = create_app(store)
    ready(app)
    counts = app.state.dashboard.counts

    def truth() -> dict[tuple[str, str], int]:
        with sqlite3.connect(store) as db:
            return {(j, s): n for j, s, n in db.execute(
                "SELECT job, status, count(*) FROM runs WHERE finished_at IS NOT NULL GROUP BY 1, 2")}

    with Client(store) as client:
        for handle in client.submit_many("ok", [1, 2, 3]):
            client.cancel(handle.id)
    assert counts.read().ended == truth()
    assert counts.read(now=time.time() + 120).ended == truth()  # the cancels now lie below the watermark
    assert counts.read(now=time.time() + 240).ended == truth()  # and are not counted twice


# -- actions -----------------------------------------------------------------------------------


def test_cancel_from_the_page_cancels_a_queued_run(store: str) -> None:
    web = ready(create_app(store))
    (run_id,) = run_ids(store, status="queued")
    page = web.get(f"/runs/{run_id}")
    response = web.post(f"/runs/{run_id}/cancel", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{run_id}?note=cancelled"
    assert run_ids(store, status="cancelled").count(run_id) == 1
    assert "Cancelled." in web.get(response.headers["location"]).text


def test_retry_from_the_page_makes_a_new_run_of_the_failed_one(store: str) -> None:
    web = ready(create_app(store))
    old = run_ids(store, job="boom")[0]
    page = web.get(f"/runs/{old}")
    response = web.post(f"/runs/{old}/retry", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    new = int(re.fullmatch(r"/runs/(\d+)\?note=retried", response.headers["location"]).group(1))
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT job, status, input, rerun_of FROM runs WHERE id=?", (new,)).fetchone() == \
            ("boom", "queued", "2", old)
    assert f'id="rerun-of">#{old}<' in web.get(f"/runs/{new}").text
    assert f'href="/runs/{new}"' in web.get(f"/runs/{old}").text


def test_retry_of_a_succeeded_run_is_a_conflict_page(store: str) -> None:
    web = ready(create_app(store))
    done = run_ids(store, status="succeeded")[0]
    csrf = csrf_of(web.get(f"/runs/{run_ids(store, job='boom')[0]}").text)
    assert_clean_error(web.post(f"/runs/{done}/retry", data={"csrf": csrf}), 409, f"Could not retry run {done}")


def test_actions_need_the_csrf_token_and_the_same_origin(store: str) -> None:
    web = ready(create_app(store))
    (run_id,) = run_ids(store, status="queued")
    csrf = csrf_of(web.get(f"/runs/{run_id}").text)
    assert_clean_error(web.post(f"/runs/{run_id}/cancel", data={}), 403, "CSRF")
    assert_clean_error(web.post(f"/runs/{run_id}/cancel", data={"csrf": "0" * 64}), 403, "CSRF")
    assert_clean_error(web.post(f"/runs/{run_id}/cancel", data={"csrf": csrf}, headers={"origin": "http://evil.example"}),
                       403, "Cross-site")
    fresh = TestClient(web.app, base_url=BASE)  # another browser: its own cookie, so this token is not its
    assert_clean_error(fresh.post(f"/runs/{run_id}/cancel", data={"csrf": csrf}), 403, "CSRF")
    assert run_ids(store, status="queued") == [run_id]
    assert_clean_error(web.post("/runs/424242/cancel", data={"csrf": csrf}), 404, "no run 424242")
    assert_clean_error(web.post(f"/runs/{run_id}/explode", data={"csrf": csrf}), 404)


# -- the token and the Host --------------------------------------------------------------------


def test_with_a_token_every_request_needs_it(filled: str) -> None:
    app = create_app(filled, token="s3cret-token")
    web = TestClient(app, base_url=BASE)
    assert_clean_error(web.get("/"), 403, "needs its token")
    assert 'name="token"' in web.get("/").text
    assert_clean_error(web.get("/runs?token=wrong"), 403, "Wrong token")
    assert_clean_error(web.get("/", headers={"authorization": "Bearer nope"}), 403)
    assert_clean_error(web.get("/static/dashboard.js"), 403)
    assert web.get("/", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    assert web.get("/jobs", headers={"x-actors-token": "s3cret-token"}).status_code == 200
    login = web.get("/runs?status=failed&token=s3cret-token", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/runs?status=failed"
    assert "s3cret-token" not in login.headers["set-cookie"]
    assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Strict" in login.headers["set-cookie"]
    assert web.get("/runs?status=failed").status_code == 200  # the cookie now
    other = TestClient(app, base_url="http://dashboard.example:8787")  # any Host, with the token
    assert other.get("/", headers={"authorization": "Bearer s3cret-token"}).status_code == 200


def test_without_a_token_only_loopback_host_names_are_served(web: TestClient) -> None:
    assert web.get("/", headers={"host": "localhost:8787"}).status_code == 200
    assert web.get("/", headers={"host": "[::1]:8787"}).status_code == 200
    assert_clean_error(web.get("/", headers={"host": "rebind.example:8787"}), 421, "127.0.0.1 and localhost only")


def test_serve_refuses_a_reachable_address_without_a_token(filled: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ACTORS_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ValueError, match="needs a token"):
        serve(filled, host="0.0.0.0")
    with pytest.raises(ValueError, match="needs a token"):
        serve(filled, host="192.168.1.7", port=1)
    # with the variable set, the address is accepted and it gets as far as the store
    monkeypatch.setenv("ACTORS_DASHBOARD_TOKEN", "from-the-environment")
    with pytest.raises(StoreError, match="does not exist"):
        serve(str(tmp_path / "missing.db"), host="0.0.0.0")


def test_security_headers_on_every_page(web: TestClient) -> None:
    for url in ("/", "/runs/999999"):
        headers = web.get(url).headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"


# -- live updates ------------------------------------------------------------------------------


def test_event_stream_sends_a_change_when_the_store_changes(store: str) -> None:
    with serving(create_app(store)) as server, httpx.Client(base_url=server.url, timeout=10) as http, \
            http.stream("GET", "/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: hello"
        with Client(store) as client:
            client.submit("ok", 7)
        started = time.monotonic()
        assert next(line for line in lines if line.startswith("event:")) == "event: change"
        assert time.monotonic() - started < 5


def test_counts_catch_up_when_there_are_more_live_runs_than_a_page_checks(store: str, monkeypatch) -> None:
    monkeypatch.setattr(counts_module, "LIVE_CHECKED", 4)
    with Client(store) as client:
        handles = client.submit_many("ok", list(range(10)))
        app = create_app(store)
        ready(app)
        counts = app.state.dashboard.counts
        tally = counts.read()
        assert tally.live_total == 11 and tally.unchecked == 7  # 10 new and the fixture's queued one
        assert tally.live == {("ok", "queued"): 11}
        assert "7 live runs beyond the oldest 4" in html.unescape(TestClient(app, base_url=BASE).get("/").text)
        for handle in handles[-6:]:  # the newest: beyond the oldest ones each page checks
            assert client.cancel(handle.id)
    with sqlite3.connect(store) as db:
        truth = {(j, s): n for j, s, n in db.execute(
            "SELECT job, status, count(*) FROM runs WHERE finished_at IS NOT NULL GROUP BY 1, 2")}
    reads = 0
    while reads < 20:  # the moving window reaches every live run within a few pages
        reads += 1
        tally = counts.read()
        if tally.ended == truth:
            break
    assert tally.ended == truth and tally.live_total == 5 and tally.unchecked >= 1
    assert reads <= 10, reads


def test_a_killed_supervisor_reads_as_silent_and_its_runs_stay_readable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "HEARTBEAT_STALE", 1.0)
    store = str(tmp_path / "runs.db")
    with Client(store, create=True) as client:
        done = client.submit("ok", 1)
    supervisor = start_script(tmp_path, """
        import sys
        from actors import Supervisor, job

        @job
        def ok(x: int) -> int:
            return x * 2

        if __name__ == "__main__":
            Supervisor([ok], workers=1, store=sys.argv[1]).serve()
        """, store)
    try:
        web = ready(create_app(store))

        def state() -> str:
            found = re.search(r'id="supervisor-state">([^<]+)<', web.get("/").text)
            return found.group(1) if found else ""

        wait_until(lambda: state() == "serving", timeout=20, what="the supervisor serving")
        with Client(store) as client:
            assert client.handle(done.id).result(timeout=20) == 2
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        wait_until(lambda: state() == "silent", timeout=10, what="the supervisor read as silent")
        assert 'data-outcome="succeeded"' in web.get(f"/runs/{done.id}").text
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
