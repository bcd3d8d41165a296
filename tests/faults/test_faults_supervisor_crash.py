"""The supervisor itself dies by `kill -9`: its workers follow it, a restart on the same store
finishes every run (at-least-once, the interrupted attempts on record), and the serving lock
keeps two supervisors off one store file (invariants 1, 3 and 7).

Supervisors run in scripts (subprocesses) so that the test can SIGKILL them.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest
from conftest import live_descendants, run_script, start_script, wait_until, workers_of

from actors import Client, Outcome, RunStatus, StoreLocked, Supervisor

BATCH = """
import os, sys, time
from pydantic import BaseModel
from actors import Supervisor, job

class Item(BaseModel):
    n: int

@job(timeout="10s")
def slow(item: Item) -> int:
    time.sleep(0.1)
    return item.n

if __name__ == "__main__":
    store, mode = sys.argv[1], sys.argv[2]
    sup = Supervisor([slow], workers=2, store=store, kill_grace=0.5)
    if mode == "first":
        sup.submit_many(slow, [{"n": n} for n in range(40)])
    print("serving", os.getpid(), flush=True)
    sup.serve(until="drained")
    sup.close()
    print("drained", flush=True)
"""


def _gone(proc: psutil.Process) -> bool:
    """Not running any more. A zombie counts as gone here: its parent (the killed supervisor's
    fork server) is dead too, so reaping it is init's business, not the library's."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _count(client: Client, status: RunStatus) -> int:
    return len(client.runs(status=status, limit=1000))


@pytest.mark.timeout(60)
def test_kill_9_of_supervisor_loses_no_run_and_leaves_no_worker(db: str, tmp_path: Path) -> None:
    first = start_script(tmp_path, BATCH, db, "first")
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line.startswith("serving"), (line, first.stderr.read() if first.poll() is not None else "")
        client = Client(store=db)
        wait_until(lambda: _count(client, RunStatus.SUCCEEDED) >= 6, timeout=20, what="a few runs to succeed")
        workers = wait_until(lambda: workers_of(first.pid) if len(workers_of(first.pid)) == 2 else None,
                             timeout=5, what="two live workers")
        tree = live_descendants(first.pid)  # workers, fork server, anything else it started
        assert {w.pid for w in workers} <= {p.pid for p in tree}
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)

    wait_until(lambda: all(_gone(p) for p in tree), timeout=2,
               what="the dead supervisor's workers and fork server to exit: "
                    + ", ".join(f"{p.pid} {p.name()}" for p in tree if not _gone(p)))

    running_at_kill = {r.id for r in client.runs(status=RunStatus.RUNNING, limit=1000)}
    succeeded_before = {r.id for r in client.runs(status=RunStatus.SUCCEEDED, limit=1000)}
    assert 6 <= len(succeeded_before) < 40, "the kill came too late to test anything"
    assert running_at_kill, "no run was running at the kill"

    restart = run_script(tmp_path, BATCH, db, "restart", timeout=40)
    assert restart.returncode == 0, restart.stderr
    assert "drained" in restart.stdout
    assert "recovered" in restart.stderr, restart.stderr  # the restart says what it found

    runs = client.runs(limit=1000)
    client_runs = {r.id: client.run(r.id) for r in runs}
    client.close()
    assert len(client_runs) == 40
    assert sorted(r.status for r in client_runs.values()) == [RunStatus.SUCCEEDED] * 40
    assert sorted(r.result for r in client_runs.values()) == list(range(40))
    for run_id in running_at_kill:
        outcomes = [a.outcome for a in client_runs[run_id].attempt_log]
        assert outcomes[:-1] == [Outcome.INTERRUPTED] * (len(outcomes) - 1) and len(outcomes) >= 2, (run_id, outcomes)
        assert outcomes[-1] is Outcome.SUCCEEDED
    for run_id in succeeded_before:
        assert [a.outcome for a in client_runs[run_id].attempt_log] == [Outcome.SUCCEEDED], run_id
    assert live_descendants() == []


GUARDED = """
import fcntl, os, sys, time
from pydantic import BaseModel
from actors import Context, Supervisor, job

class Item(BaseModel):
    n: int

@job(timeout="20s")
def exclusive(item: Item, ctx: Context) -> int:
    # Two executions of one run at the same time would meet on this lock.
    here = os.path.dirname(os.path.abspath(__file__))
    fd = os.open(os.path.join(here, f"run-{ctx.run_id}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(os.path.join(here, "overlaps.txt"), "a") as f:
            f.write(f"run {ctx.run_id} attempt {ctx.attempt} pid {os.getpid()}\\n")
    with open(os.path.join(here, "started.txt"), "a") as f:
        f.write(f"{ctx.run_id} {ctx.attempt} {os.getpid()}\\n")
    time.sleep(0.6)
    return item.n

if __name__ == "__main__":
    store, mode = sys.argv[1], sys.argv[2]
    sup = Supervisor([exclusive], workers=2, store=store, kill_grace=0.5)
    if mode == "first":
        sup.submit_many(exclusive, [{"n": n} for n in range(6)])
    print("serving", os.getpid(), flush=True)
    sup.serve(until="drained")
    sup.close()
    print("drained", flush=True)
"""


@pytest.mark.timeout(60)
def test_second_supervisor_on_one_store_is_refused_until_the_first_dies(db: str, tmp_path: Path) -> None:
    first = start_script(tmp_path, GUARDED, db, "first")
    started = tmp_path / "started.txt"
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line.startswith("serving"), line
        wait_until(lambda: started.exists() and len(started.read_text().splitlines()) >= 2, timeout=20,
                   what="the first supervisor to start two runs")

        with pytest.raises(StoreLocked) as refused:
            Supervisor([], store=db).serve()
        assert str(first.pid) in str(refused.value), "the error should name the supervisor holding the store"
        # A refused supervisor changed nothing: the first one's runs are still its own.
        client = Client(store=db)
        assert len(client.runs(status=RunStatus.RUNNING)) >= 1
        assert first.poll() is None

        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)

    # At once, without waiting for the dead supervisor's workers: the lock is free.
    second = run_script(tmp_path, GUARDED, db, "restart", timeout=40)
    assert second.returncode == 0, second.stderr
    assert "drained" in second.stdout

    records = [client.run(r.id) for r in client.runs(limit=100)]
    client.close()
    assert len(records) == 6
    assert all(r.status is RunStatus.SUCCEEDED for r in records), records
    assert any(a.outcome is Outcome.INTERRUPTED for r in records for a in r.attempt_log)
    overlaps = tmp_path / "overlaps.txt"
    assert not overlaps.exists(), "a run executed twice at the same time:\n" + overlaps.read_text()

    # And a supervisor in this process can open the store now that nobody serves it.
    Supervisor([], store=db).close()
    assert live_descendants() == []


SUBMITTERS = """
import sys, threading, time
from actors import Supervisor, job

@job
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    sup = Supervisor([nap], workers=1, store=sys.argv[1])
    lock = threading.Lock()

    def submit_forever():
        while True:
            run_id = sup.submit(nap, 0.5).id
            with lock:  # printed only once submit() has returned
                print(run_id, flush=True)

    for _ in range(4):
        threading.Thread(target=submit_forever, daemon=True).start()
    if sys.argv[2] == "serving":
        sup.serve()
    else:
        threading.Event().wait()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["serving", "not-serving"])
def test_every_run_whose_submit_returned_is_in_the_store_after_a_kill_9(db: str, tmp_path: Path, mode: str) -> None:
    """Invariant 1 with concurrent submitters: kill -9 the process right after submits returned;
    every run id it printed is stored."""
    script = start_script(tmp_path, SUBMITTERS, db, mode)
    printed: list[int] = []
    try:
        assert script.stdout is not None
        while len(printed) < 200:
            line = script.stdout.readline()
            assert line, script.stderr.read() if script.stderr else "no output"
            printed.append(int(line))
        script.send_signal(signal.SIGKILL)
        script.wait(10)
    finally:
        if script.poll() is None:
            script.kill()
        script.communicate(timeout=10)
    client = Client(store=db)
    missing = [run_id for run_id in printed if client.get(run_id) is None]
    assert missing == [], f"{len(missing)} runs whose submit() returned are not in the store"
