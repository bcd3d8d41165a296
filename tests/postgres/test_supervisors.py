"""Several supervisors, in processes of their own, serving one PostgreSQL database: no run lost,
none executed twice, a killed supervisor's runs rescued by another after the lease, and a
frozen supervisor's late results fenced off.

Each job appends a line per execution to a file opened with O_APPEND (one write each, so lines
of several processes never mix); the tests count the lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import script_env, wait_until

from actors import Client
from actors.run import Outcome, RunStatus
from actors.stores.postgres import PostgresStore

pytestmark = pytest.mark.timeout(120)

SUPERVISOR = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Supervisor, job
from actors.stores.postgres import PostgresStore

LOG = sys.argv[4]


class Task(BaseModel):
    n: int
    seconds: float = 0.0


def note(*fields):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (" ".join(str(f) for f in fields) + "\\n").encode())
    finally:
        os.close(fd)


@job(retry=None)
def noop(t: Task, ctx: Context) -> int:
    note("ran", ctx.run_id, ctx.attempt, os.getpid())
    return t.n


@job
def slow(t: Task, ctx: Context) -> int:
    note("start", ctx.run_id, ctx.attempt, os.getpid(), time.time())
    time.sleep(t.seconds)
    note("end", ctx.run_id, ctx.attempt, os.getpid(), time.time())
    return ctx.attempt


if __name__ == "__main__":
    dsn, schema, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = PostgresStore(dsn, schema=schema, lease=lease)
    sup = Supervisor([noop, slow], workers=2, store=store, poll_interval=0.02)
    print("serving", os.getpid(), flush=True)
    sup.serve()
    sup.close()
"""


@pytest.fixture
def supervisors(tmp_path: Path, postgres_dsn: str, postgres_schema: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start supervisors with `start(lease)`; every one still running is killed after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)


def start(started: list[subprocess.Popen[bytes]], tmp_path: Path, dsn: str, schema: str, lease: float,
          name: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "serve_pg.py"
    if not script.exists():  # written once: rewriting it while another supervisor starts could hand that one a void
        script.write_text(SUPERVISOR)
    out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen([sys.executable, str(script), dsn, schema, str(lease), str(tmp_path / "runs.log")],
                            stdout=out, stderr=subprocess.STDOUT, env=script_env(), cwd=tmp_path)
    out.close()
    started.append(proc)
    return proc


def lines(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "runs.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_two_supervisors_run_500_runs_each_once_and_lose_none(tmp_path, supervisors, postgres_dsn, postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    handles = client.submit_many("noop", [{"n": i} for i in range(500)])
    a = start(supervisors, tmp_path, postgres_dsn, postgres_schema, 30.0, "a")
    b = start(supervisors, tmp_path, postgres_dsn, postgres_schema, 30.0, "b")
    wait_until(lambda: store.counts().get("noop", {}).get("succeeded") == 500, timeout=90,
               what="500 runs to succeed")
    stop(a)
    stop(b)
    ran = [fields for fields in lines(tmp_path) if fields[0] == "ran"]
    per_run = Counter(int(fields[1]) for fields in ran)
    assert sorted(per_run) == sorted(h.id for h in handles)  # none lost
    assert max(per_run.values()) == 1  # none executed twice
    assert {fields[2] for fields in ran} == {"1"}
    assert sorted(client.get(h.id).result for h in handles) == list(range(500))  # type: ignore[union-attr]
    workers = {fields[3] for fields in ran}
    assert len(workers) >= 2  # both supervisors took part (2 workers each)
    for name in ("a", "b"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
    client.close()


def running_of(store: PostgresStore, incarnation_pid: int) -> list[int]:
    """Ids of the runs that the supervisor with this pid holds running."""
    rows = store._all("SELECT r.id FROM {s}.runs AS r JOIN {s}.incarnations AS i ON i.id = r.owner "
                      "WHERE r.status = 'running' AND i.pid = %s ORDER BY r.id", (incarnation_pid,))
    return [row[0] for row in rows]


def test_a_killed_supervisors_runs_are_rescued_by_another_after_the_lease(
        tmp_path, supervisors, postgres_dsn, postgres_schema):
    lease = 2.0
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    handles = client.submit_many("slow", [{"n": i, "seconds": 1.5} for i in range(12)])
    victim = start(supervisors, tmp_path, postgres_dsn, postgres_schema, lease, "victim")
    held = wait_until(lambda: len(running_of(store, victim.pid)) == 2 and running_of(store, victim.pid),
                      timeout=30, what="the first supervisor to run two runs")
    victim_workers = [p.pid for p in psutil.Process(victim.pid).children(recursive=True)]
    survivor = start(supervisors, tmp_path, postgres_dsn, postgres_schema, lease, "survivor")
    wait_until(lambda: store.served() and "serving" in (tmp_path / "survivor.log").read_text(), timeout=30,
               what="the second supervisor to serve")
    time.sleep(0.3)
    held = running_of(store, victim.pid)
    assert held, "the first supervisor had finished its runs before it was killed"
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait(10)

    def rescued() -> bool:
        return all(client.get(run_id).attempts >= 1 and any(  # type: ignore[union-attr]
            a.outcome is Outcome.INTERRUPTED for a in client.get(run_id, attempts=True).attempt_log)  # type: ignore[union-attr]
            for run_id in held)

    wait_until(rescued, timeout=lease + 10, interval=0.05, what="the killed supervisor's runs to be rescued")
    took = time.time() - killed_at
    assert took <= lease + 2.0, f"rescued {took:.2f} s after the kill (lease {lease} s)"
    # its workers died with it: they exit on their own once their supervisor is gone
    wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                               for pid in victim_workers), timeout=10, what="the killed supervisor's workers to exit")
    wait_until(lambda: store.counts().get("slow", {}).get("succeeded") == 12, timeout=60, what="every run to succeed")
    stop(survivor)
    for run_id in held:
        record = client.get(run_id, attempts=True)
        assert record is not None and record.status is RunStatus.SUCCEEDED
        assert [a.outcome for a in record.attempt_log] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
        assert record.attempt_log[0].number == 1 and record.result == 2  # its second attempt ran it to the end
    ends = Counter(int(fields[1]) for fields in lines(tmp_path) if fields[0] == "end")
    assert sorted(ends) == sorted(h.id for h in handles) and max(ends.values()) == 1  # each ran to its end once
    client.close()


def test_a_frozen_supervisors_late_result_is_rejected_by_the_fence(tmp_path, supervisors, postgres_dsn,
                                                                    postgres_schema):
    lease = 2.0
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    (handle,) = client.submit_many("slow", [{"n": 0, "seconds": 2.5}])
    frozen = start(supervisors, tmp_path, postgres_dsn, postgres_schema, lease, "frozen")
    wait_until(lambda: running_of(store, frozen.pid) == [handle.id], timeout=30, what="the run to start")
    os.kill(frozen.pid, signal.SIGSTOP)  # its worker runs on and reports into a pipe nobody reads
    other = start(supervisors, tmp_path, postgres_dsn, postgres_schema, lease, "other")
    wait_until(lambda: any(a.outcome is Outcome.INTERRUPTED  # type: ignore[union-attr]
                           for a in client.get(handle.id, attempts=True).attempt_log),
               timeout=lease + 15, what="the frozen supervisor's run to be rescued")
    wait_until(lambda: client.get(handle.id).attempts == 2, timeout=15, what="the rescuer to run it")  # type: ignore[union-attr]
    wait_until(lambda: any(f[:3] == ["end", str(handle.id), "1"] for f in lines(tmp_path)), timeout=15,
               what="the frozen supervisor's worker to finish attempt 1")
    os.kill(frozen.pid, signal.SIGCONT)  # it reads its worker's result for attempt 1 and tries to store it
    wait_until(lambda: "rejected 1 late result" in (tmp_path / "frozen.log").read_text(), timeout=15,
               what="the frozen supervisor to log its rejected result")
    assert "lease had lapsed" in (tmp_path / "frozen.log").read_text()
    wait_until(lambda: client.get(handle.id).status is RunStatus.SUCCEEDED, timeout=30,  # type: ignore[union-attr]
               what="the rescued run to succeed")
    record = client.get(handle.id, attempts=True)
    assert record is not None
    assert record.result == 2  # attempt 2's result; attempt 1's came late and lost
    assert [a.outcome for a in record.attempt_log] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
    stop(frozen)
    stop(other)
    client.close()
