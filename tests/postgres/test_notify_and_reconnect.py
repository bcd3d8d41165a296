"""LISTEN/NOTIFY as a hint with the slow poll as the truth, and reconnecting with backoff: a
serving store woken by a Client's notification, found by the poll without one, `notify=False`
for PgBouncer, and supervisors that ride out terminated connections and a server restart
without losing a run or executing one twice.

The restart test starts a PostgreSQL server of its own (initdb + pg_ctl in a temporary
directory, as `.ci/postgres` does, as the user `actors-ci` when we are root), so that stopping
it touches nobody else's tests. The others use $ACTORS_TEST_POSTGRES and terminate only the
connections whose `application_name` is the test's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import script_env, wait_until

from actors import Client
from actors.errors import StoreError
from actors.run import NewRun, RunStatus
from actors.stores import Changes, postgres
from actors.stores.postgres import PostgresStore

pytestmark = pytest.mark.timeout(120)

SUPERVISOR = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Supervisor, job
from actors.stores.postgres import PostgresStore

LOG = sys.argv[3]


class Task(BaseModel):
    n: int
    seconds: float = 0.0


@job(retry=None)
def slow(t: Task, ctx: Context) -> int:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"start {ctx.run_id} {ctx.attempt} {os.getpid()}\\n".encode())
    time.sleep(t.seconds)
    os.write(fd, f"end {ctx.run_id} {ctx.attempt} {os.getpid()}\\n".encode())
    os.close(fd)
    return t.n


if __name__ == "__main__":
    dsn, schema = sys.argv[1], sys.argv[2]
    store = dsn if schema == "-" else PostgresStore(dsn, schema=schema)
    sup = Supervisor([slow], workers=2, store=store, poll_interval=0.02)
    print("serving", os.getpid(), flush=True)
    sup.serve()
    sup.close()
"""


@pytest.fixture
def stores() -> Iterator[list[PostgresStore]]:
    made: list[PostgresStore] = []
    yield made
    for store in made:
        store.close()


@pytest.fixture
def supervisors() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Supervisor processes started by the test; any still running is killed after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def serve(started: list[subprocess.Popen[bytes]], tmp_path: Path, dsn: str, schema: str) -> subprocess.Popen[bytes]:
    """A supervisor process (2 workers, the `slow` job) serving `dsn` (schema "-": the URL as given)."""
    script = tmp_path / "serve.py"
    script.write_text(SUPERVISOR)
    out = open(tmp_path / "supervisor.log", "wb")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen([sys.executable, str(script), dsn, schema, str(tmp_path / "runs.log")], stdout=out,
                            stderr=subprocess.STDOUT, env=script_env(), cwd=tmp_path)
    out.close()
    started.append(proc)
    wait_until(lambda: "serving" in (tmp_path / "supervisor.log").read_text() or proc.poll() is not None,
               timeout=30, what="the supervisor to start")
    assert proc.poll() is None, (tmp_path / "supervisor.log").read_text()
    return proc


def executions(tmp_path: Path, what: str = "start") -> Counter[int]:
    """How many times each run's job started (or ended), from the jobs' own log."""
    path = tmp_path / "runs.log"
    text = path.read_text() if path.exists() else ""
    return Counter(int(fields[1]) for fields in (line.split() for line in text.splitlines()) if fields[0] == what)


def named(dsn: str, application_name: str) -> str:
    """`dsn` with an application_name of the test's own, so it terminates only its connections."""
    return psycopg.conninfo.make_conninfo(dsn, application_name=application_name)


def backends(dsn: str, application_name: str) -> list[tuple[str, str]]:
    """(application_name, last query) of the connections whose name starts with `application_name`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT application_name, query FROM pg_stat_activity WHERE application_name LIKE %s",
                            (application_name + "%",)).fetchall()


def terminate(dsn: str, application_name: str) -> int:
    """Terminate the connections whose name starts with `application_name`; how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                            (application_name + "%",)).fetchall()
    return len(rows)


def insert(store: PostgresStore) -> int:
    return store.insert([NewRun("job", "{}")], time.time())[0][0]


# -- LISTEN/NOTIFY --------------------------------------------------------------------------


def test_a_client_insert_wakes_a_serving_store_through_its_notification(stores, postgres_dsn, postgres_schema,
                                                                        monkeypatch):
    monkeypatch.setattr(postgres, "SLOW_POLL", 60.0)  # so a True below can only be the notification
    serving = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores.append(serving)
    serving.acquire()
    assert serving.changed() is True  # the first look after LISTEN polls: runs stored before it
    assert serving.changed() is False
    with Client(PostgresStore(postgres_dsn, schema=postgres_schema)) as client:
        handle = client.submit("job", {"x": 1})
        wait_until(serving.changed, timeout=10, what="the notification of the insert")
        assert [p.id for p in serving.load_ready()] == [handle.id]
        assert serving.changed() is False
        assert client.cancel(handle.id) is True
        wait_until(serving.changed, timeout=10, what="the notification of the cancel")


def test_a_run_stored_without_a_notification_is_found_by_the_slow_poll(stores, postgres_dsn, postgres_schema,
                                                                       monkeypatch):
    monkeypatch.setattr(postgres, "SLOW_POLL", 0.3)
    serving = PostgresStore(postgres_dsn, schema=postgres_schema)
    quiet = PostgresStore(postgres_dsn, schema=postgres_schema, notify=False)  # sends no NOTIFY
    stores += [serving, quiet]
    serving.acquire()
    serving.changed()
    run_id = insert(quiet)
    began = time.monotonic()
    wait_until(serving.changed, timeout=10, what="the slow poll")
    assert time.monotonic() - began < 5
    assert run_id in [p.id for p in serving.load_ready()]


def test_the_listening_connection_is_opened_again_after_it_was_terminated(stores, postgres_dsn, postgres_schema,
                                                                          monkeypatch):
    monkeypatch.setattr(postgres, "SLOW_POLL", 0.2)
    name = f"t-listen-{uuid.uuid4().hex[:8]}"
    serving = PostgresStore(named(postgres_dsn, name), schema=postgres_schema)
    other = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores += [serving, other]
    serving.acquire()
    assert (f"{name}-listen", f'LISTEN "actors_{postgres_schema}"') in backends(postgres_dsn, name)
    assert terminate(postgres_dsn, f"{name}-listen") == 1
    wait_until(lambda: serving.changed() and any(app == f"{name}-listen" for app, _ in backends(postgres_dsn, name)),
               timeout=10, what="the store to LISTEN again")
    monkeypatch.setattr(postgres, "SLOW_POLL", 60.0)
    while serving.changed():  # what the lost connection may have missed is polled first
        pass
    run_id = insert(other)
    wait_until(serving.changed, timeout=10, what="a notification on the new connection")
    assert run_id in [p.id for p in serving.load_ready()]


def test_with_notify_false_nothing_listens_and_the_poll_finds_the_runs(stores, postgres_dsn, postgres_schema):
    name = f"t-quiet-{uuid.uuid4().hex[:8]}"
    url = postgres_dsn + ("&" if "?" in postgres_dsn else "?") + f"notify=false&application_name={name}"
    serving = PostgresStore(url, schema=postgres_schema)
    other = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores += [serving, other]
    assert serving.notify is False and "notify" not in serving.dsn
    serving.acquire()
    assert serving._all("SELECT pg_listening_channels()") == []  # the store's own connection listens to nothing
    assert [app for app, _ in backends(postgres_dsn, name)] == [name]  # and there is no other
    assert not any(query.startswith("LISTEN") for _, query in backends(postgres_dsn, name))
    run_id = insert(other)
    assert serving.changed() is True  # polling only: every call
    assert [p.id for p in serving.load_ready()] == [run_id]
    assert serving.changed() is True


def test_a_supervisor_serving_a_url_with_notify_false_runs_a_clients_run(tmp_path, supervisors, postgres_dsn):
    database = f"t_notify_{uuid.uuid4().hex[:8]}"  # the URL's store is schema "actors": a database of our own
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        parts = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
        url = f"postgresql://{parts.get('user', '')}@{parts['host']}:{parts.get('port', 5432)}/{database}?notify=false"
        serve(supervisors, tmp_path, url, "-")
        with Client(url) as client:
            handle = client.submit("slow", {"n": 7})
            assert handle.result(timeout=30) == 7
        assert "Traceback" not in (tmp_path / "supervisor.log").read_text()
        supervisors[0].send_signal(signal.SIGTERM)
        supervisors[0].wait(30)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# -- reconnecting ---------------------------------------------------------------------------


def test_a_serving_supervisor_survives_its_connections_being_terminated_mid_run(tmp_path, supervisors,
                                                                               postgres_dsn, postgres_schema):
    name = f"t-drop-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    handles = client.submit_many("slow", [{"n": i, "seconds": 0.2} for i in range(20)])
    sup = serve(supervisors, tmp_path, named(postgres_dsn, name), postgres_schema)
    for done in (2, 8, 14):  # three times, while runs are running
        wait_until(lambda done=done: store.counts().get("slow", {}).get("succeeded", 0) >= done, timeout=30,
                   what=f"{done} runs to succeed")
        assert terminate(postgres_dsn, name) >= 1
    wait_until(lambda: store.counts().get("slow", {}).get("succeeded") == 20, timeout=60,
               what="every run to succeed")
    assert sup.poll() is None  # it served on
    starts = executions(tmp_path)
    assert sorted(starts) == sorted(h.id for h in handles) and max(starts.values()) == 1  # none twice, none lost
    for h in handles:
        record = client.get(h.id, attempts=True)
        assert record is not None and record.status is RunStatus.SUCCEEDED and record.attempts == 1
    log = (tmp_path / "supervisor.log").read_text()
    assert "lost the connection to store" in log and "Traceback" not in log
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    client.close()


def kill_at_commit(store: PostgresStore, method: str, monkeypatch) -> None:
    """Make the connection of `store` break at the next COMMIT of `method`'s work: its backend
    is terminated after the work ran, so the COMMIT fails and its outcome is unknown to us."""
    real = getattr(store, method)
    calls = []

    def work(db, *args, **kwargs):
        result = real(db, *args, **kwargs)
        if not calls:
            calls.append(db.info.backend_pid)
            with psycopg.connect(store.dsn, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (db.info.backend_pid,))
        return result

    monkeypatch.setattr(store, method, work)


def test_a_commit_whose_connection_broke_at_commit_is_applied_again_and_claims_once(
        stores, postgres_dsn, postgres_schema, monkeypatch, caplog):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores.append(store)
    store.acquire()
    run_id = insert(store)
    kill_at_commit(store, "_apply", monkeypatch)
    assert store.commit(Changes(claims=[(run_id, 1)]), time.time()) == set()  # won, on the second connection
    assert "lost the connection to store" in caplog.text
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.RUNNING and record.attempts == 1


def test_changes_applied_twice_claim_and_finish_once(stores, postgres_dsn, postgres_schema):
    """What a lost COMMIT that did commit leads to: the same changes applied again."""
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores.append(store)
    store.acquire()
    run_id, other_id = insert(store), insert(store)
    claims = Changes(claims=[(run_id, 1), (other_id, 1)])
    assert store.commit(claims, time.time()) == set()
    with store._tx() as db:  # the replay: both claims are ours already
        assert store._apply(db, claims, time.time(), store.incarnation, again=True)[0] == set()
        assert store._apply(db, claims, time.time(), store.incarnation, again=False)[0] == {run_id, other_id}
    now = time.time()
    done = Changes(successes=[(run_id, 1, "1", now, None, None)])
    store.commit(done, now)
    with store._tx() as db:
        lost, refused, _, _ = store._apply(db, done, now, store.incarnation, again=True)
    assert (lost, refused) == (set(), [])  # refused by the fence (written already), logged, not counted
    assert store.get(run_id).status is RunStatus.SUCCEEDED and store.rejected == 0  # type: ignore[union-attr]


def test_an_insert_whose_commit_was_lost_is_not_done_again(stores, postgres_dsn, postgres_schema, monkeypatch):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    stores.append(store)
    kill_at_commit(store, "_insert", monkeypatch)
    with pytest.raises(StoreError, match="cannot write store"):
        store.insert([NewRun("job", "{}")], time.time())
    assert store.counts() == {}  # here it was not stored (the backend died before COMMIT); never twice
    assert len(store.insert([NewRun("job", "{}")], time.time())) == 1  # the store works on


# -- a server of the test's own, restarted ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A throwaway PostgreSQL server in a temporary directory (see `.ci/postgres`)."""

    def __init__(self) -> None:
        found = shutil.which("pg_ctl")
        bindirs = [str(Path(found).parent)] if found else sorted(
            (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), key=lambda p: int(p.split("/")[-2]))
        if not bindirs:
            pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to start a server of the test's own")
        self.bin = Path(bindirs[-1])
        self.root = Path(tempfile.mkdtemp(prefix="actors-pg-restart-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.data.mkdir()
        self.as_user: list[str] = []
        if os.getuid() == 0:  # the server refuses to run as root
            self.as_user = ["runuser", "-u", "actors-ci", "--"]
            shutil.chown(self.root, "actors-ci")
            shutil.chown(self.data, "actors-ci")
        self.port = _free_port()
        self.dsn = f"postgresql://actors@127.0.0.1:{self.port}/postgres"
        self._do("initdb", "-D", str(self.data), "-U", "actors", "--auth=trust", "-E", "UTF8", "--no-locale")

    def _do(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._do("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                 f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._do("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    try:
        made.start()
        yield made
    finally:
        made.remove()


def test_a_supervisor_rides_out_a_server_restart_and_runs_every_run_once(tmp_path, supervisors, server):
    store = PostgresStore(server.dsn, schema="actors")
    client = Client(store)
    handles = client.submit_many("slow", [{"n": i, "seconds": 0.15} for i in range(30)])
    sup = serve(supervisors, tmp_path, server.dsn, "actors")
    wait_until(lambda: store.counts().get("slow", {}).get("succeeded", 0) >= 4, timeout=30,
               what="some runs to succeed")
    process = psutil.Process(sup.pid)
    server.stop("immediate")  # mid-run: runs are running, commits are in flight
    cpu_before = sum(process.cpu_times()[:2])
    log_before = (tmp_path / "supervisor.log").read_text().count("cannot connect to store")
    time.sleep(4.0)  # the outage (not a wait for a result)
    cpu_down = sum(process.cpu_times()[:2]) - cpu_before
    tries = (tmp_path / "supervisor.log").read_text().count("cannot connect to store") - log_before
    server.start()
    wait_until(lambda: store.counts().get("slow", {}).get("succeeded") == 30, timeout=60,
               what="every run to succeed after the restart")
    assert sup.poll() is None  # it served on
    assert cpu_down < 0.5, f"the supervisor used {cpu_down:.2f} s of CPU in 4 s with the server down"
    assert 2 <= tries <= 15, f"{tries} connection attempts in 4 s: no backoff?"  # 0, 50 ms, ... doubling
    starts, ends = executions(tmp_path), executions(tmp_path, "end")
    assert sorted(starts) == sorted(h.id for h in handles) and max(starts.values()) == 1  # each once
    assert ends == starts
    assert sorted(client.get(h.id).result for h in handles) == list(range(30))  # type: ignore[union-attr]
    log = (tmp_path / "supervisor.log").read_text()
    assert "reconnected to store" in log and "Traceback" not in log
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    client.close()
