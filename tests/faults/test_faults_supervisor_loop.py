"""Faults of the supervisor's own loop, each a row: concurrent submitters, a turn that breaks, a
run that kills its supervisor, a user's callable that raises, cancels from another process,
runs submitted by name, a shutdown as serving starts, and limits that spin.

Every row uses real worker processes and a real SQLite file; the autouse `no_loop_errors`
fixture (conftest) fails a row during which a supervisor's loop reported an exception.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import live_descendants, run_script, script_env, wait_until, write_script
from pydantic import BaseModel

from actors import (
    Client,
    Context,
    Retry,
    RunFailed,
    RunStatus,
    Supervisor,
    SupervisorCrashed,
    job,
)


class Num(BaseModel):
    n: int
    log: str = ""


def _note(path: str, line: str) -> None:
    """Append one line atomically (O_APPEND, one write), from any process."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(timeout="10s")
def record(num: Num, ctx: Context) -> int:
    _note(num.log, f"{ctx.run_id} {ctx.attempt} {os.getpid()}")
    return num.n


@job(timeout="10s", retry=Retry(attempts=3, backoff=lambda n: "soon"))
def bad_backoff(num: Num) -> int:
    raise RuntimeError("fails, then asks its backoff")


@job(timeout="10s", retry=Retry(attempts=3, backoff=lambda n: 1 / 0))
def raising_backoff(num: Num) -> int:
    raise RuntimeError("fails, then asks its backoff")


@job(timeout="10s")
def short(num: Num) -> int:
    time.sleep(0.02)
    return num.n


@job(timeout="10s", version=2, min_version=2)
def versioned(num: Num) -> int:
    return num.n


@job(timeout="10s", unique=True)
def only_one(num: Num) -> int:
    time.sleep(0.3)
    return num.n


@job(timeout="10s", concurrency=1, rate="50/s")
def one_at_a_time(num: Num) -> int:
    time.sleep(0.3)
    return num.n


@job(timeout="10s", rate="25/s")
def rated(num: Num) -> int:
    return num.n


def _executions(log: Path) -> Counter[int]:
    if not log.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in log.read_text().splitlines())


# -- 1. concurrent submitters -------------------------------------------------------------------

CLIENT = """
import random, sys, time
from actors import Client

store, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
client = Client(store=store)
ids = []
for i in range(300):
    if i % 50 == 0:
        ids += [h.id for h in client.submit_many("record", [{"n": i, "log": log} for _ in range(25)])]
    else:
        ids.append(client.submit("record", {"n": i, "log": log}).id)
    if i % 7 == 0:
        client.handle(rng.choice(ids)).cancel()
print(len(ids), flush=True)
"""


@pytest.mark.timeout(120)
def test_concurrent_submitters_and_cancels_run_each_run_exactly_once(db: str, tmp_path: Path) -> None:
    """Item 1: four threads (single submits and batches) and two processes submit while a fifth
    thread cancels at random; every run enters the queue once, runs at most once, ends once."""
    log = str(tmp_path / "executions.log")
    sup = Supervisor([record], workers=2, store=db)
    serving = threading.Thread(target=sup.serve, name="serve")
    handles: list = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop_cancelling = threading.Event()

    def submit(seed: int) -> None:
        try:
            for i in range(300):
                if i % 40 == 0:
                    got = sup.submit_many(record, [{"n": i, "log": log} for _ in range(20)])
                else:
                    got = [sup.submit(record, {"n": i, "log": log})]
                with lock:
                    handles.extend(got)
        except BaseException as exc:
            errors.append(exc)

    def cancel() -> None:
        rng = random.Random(7)
        while not stop_cancelling.is_set():
            with lock:
                victim = rng.choice(handles) if handles else None
            if victim is not None:
                sup.cancel(victim.id)
            time.sleep(0.002)

    serving.start()
    path = write_script(tmp_path, CLIENT, name="client.py")
    clients = [subprocess.Popen([sys.executable, str(path), db, log, str(seed)], stdout=subprocess.PIPE, text=True,
                                env=script_env(), cwd=tmp_path) for seed in (1, 2)]
    threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(4)]
    canceller = threading.Thread(target=cancel)
    for thread in [*threads, canceller]:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop_cancelling.set()
    canceller.join(10)
    client_counts = [int(proc.communicate(timeout=60)[0]) for proc in clients]
    assert not errors, errors
    assert [proc.returncode for proc in clients] == [0, 0]
    expected = len(handles) + sum(client_counts)
    assert expected > 2000

    def all_ended() -> bool:
        counts = sup.store.counts().get("record", {})
        return sum(counts.values()) == expected and not any(counts.get(s) for s in ("queued", "running", "retrying"))

    wait_until(all_ended, timeout=60, interval=0.05, what="every run to end")
    sup.shutdown(timeout=30)
    serving.join(30)
    assert not serving.is_alive()
    records = sup.runs(limit=10 * expected)
    sup.close()

    executions = _executions(Path(log))
    assert len(records) == expected
    assert {r.status for r in records} <= {RunStatus.SUCCEEDED, RunStatus.CANCELLED}
    twice = {run_id: n for run_id, n in executions.items() if n > 1}
    assert not twice, f"runs executed more than once: {twice}"
    for r in records:
        if r.status is RunStatus.SUCCEEDED:
            assert executions[r.id] == 1 and r.attempts == 1, r
    assert sum(r.status is RunStatus.CANCELLED for r in records) > 0
    assert live_descendants() == []


# -- 2. a turn that breaks ------------------------------------------------------------------------

BREAKING = """
import sys, time
from pydantic import BaseModel
from actors import Supervisor, SQLiteStore, job

class Num(BaseModel):
    n: int

@job(timeout="10s")
def slow(num: Num) -> int:
    time.sleep(0.02)
    return num.n

class BreaksOnce(SQLiteStore):
    \"\"\"A real SQLite store whose third commit with results raises what no store error is.\"\"\"
    seen = 0
    def commit(self, changes, now):
        if changes.successes:
            BreaksOnce.seen += 1
            if BreaksOnce.seen == 3:
                raise UnicodeEncodeError("utf-8", "\\ud800", 0, 1, "surrogates not allowed")
        return super().commit(changes, now)

if __name__ == "__main__":
    path, mode = sys.argv[1], sys.argv[2]
    store = BreaksOnce(path, lock=True) if mode == "breaking" else path
    sup = Supervisor([slow], workers=2, store=store)
    if mode == "breaking":
        sup.submit_many(slow, [{"n": n} for n in range(40)])
    sup.serve(until="drained")
    print("drained", flush=True)
"""


@pytest.mark.timeout(60)
def test_a_turn_that_raises_stops_the_supervisor_clearly_and_a_restart_finishes_every_run(db: str,
                                                                                         tmp_path: Path) -> None:
    """Item 2: an exception other than StoreError in a turn never loses the turn silently: serve()
    raises SupervisorCrashed (a non-zero exit), and a restart finishes every run."""
    broken = run_script(tmp_path, BREAKING, db, "breaking")
    assert broken.returncode != 0
    assert "SupervisorCrashed" in broken.stderr and "UnicodeEncodeError" in broken.stderr, broken.stderr
    assert "drained" not in broken.stdout
    again = run_script(tmp_path, BREAKING, db, "again")
    assert again.returncode == 0, again.stderr
    with Client(store=db) as client:
        records = client.runs(limit=100)
    assert len(records) == 40
    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 40
    assert sorted(r.result for r in records) == list(range(40))


@pytest.mark.loop_errors
def test_an_exception_escaping_a_loop_callback_stops_serving_and_is_reported(db: str, no_loop_errors) -> None:
    """Item 9: whatever escapes a callback of the loop reaches the exception handler, which stops
    the supervisor (and the test suite's fixture sees it)."""
    sup = Supervisor([short], workers=1, store=db)
    sup.submit(short, {"n": 1}, delay="30s")  # keeps serve(until="drained") from returning on its own

    def explode() -> None:
        raise LookupError("a broken timer")

    sup.on("submitted", lambda record: None)
    threading.Timer(0.5, lambda: sup._serving.loop.call_soon_threadsafe(explode)).start()
    with pytest.raises(SupervisorCrashed, match="LookupError: a broken timer"):
        sup.serve(until="drained")
    sup.close()
    assert [r.getMessage() for r in no_loop_errors.records]
    assert live_descendants() == []


# -- 3. a run that kills its supervisor ------------------------------------------------------------

KILLER = """
import os, signal, sys, time
from pydantic import BaseModel
from actors import Retry, Supervisor, job

class Target(BaseModel):
    pass

@job(timeout="10s", retry=Retry(attempts=2), priority=10)
def kill_supervisor(target: Target) -> int:
    os.kill(int(os.environ["SUPERVISOR_PID"]), signal.SIGKILL)  # whichever supervisor serves it now
    time.sleep(5)
    return 1

@job(timeout="10s")
def after(target: Target) -> int:
    return 2

if __name__ == "__main__":
    store, first = sys.argv[1], sys.argv[2] == "first"
    os.environ["SUPERVISOR_PID"] = str(os.getpid())  # workers inherit it
    sup = Supervisor([kill_supervisor, after], workers=1, store=store, kill_grace=0.2)
    if first:
        sup.submit(kill_supervisor, {})
        sup.submit(after, {})
    sup.serve(until="drained")
    print("drained", flush=True)
"""


@pytest.mark.timeout(90)
def test_a_run_that_kills_its_supervisor_runs_out_of_attempts(db: str, tmp_path: Path) -> None:
    """Item 3: an interrupted attempt is free once in a row, then charged: Retry(attempts=2) gives
    a run that SIGKILLs its supervisor at most three tries, and the run queued behind it runs."""
    starts = []
    for n in range(8):
        done = run_script(tmp_path, KILLER, db, "first" if n == 0 else "again", timeout=60)
        starts.append(done.returncode)
        if done.returncode == 0:
            break
    assert starts == [-signal.SIGKILL] * 3 + [0], starts
    with Client(store=db) as client:
        poison, after = sorted(client.runs(limit=10), key=lambda r: r.id)
        poison = client.run(poison.id)
    assert poison.status is RunStatus.FAILED and poison.error_type == "Interrupted", poison
    assert [a.outcome.value for a in poison.attempt_log] == ["interrupted"] * 3
    assert "charged" in (poison.attempt_log[1].message or "")
    assert after.status is RunStatus.SUCCEEDED and after.result == 2


# -- 10. a user's callable that raises --------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [bad_backoff, raising_backoff], ids=["backoff-not-a-duration", "backoff-raises"])
def test_a_backoff_that_raises_fails_its_run_instead_of_stranding_it(bad, db: str) -> None:
    """Item 10: a backoff callable evaluated in the supervisor fails that run, saying why."""
    sup = Supervisor([bad, short], workers=1, store=db)
    handle = sup.submit(bad, {"n": 1})
    good = sup.submit(short, {"n": 2})
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as raised:
        handle.result(timeout=5)
    assert good.result(timeout=5) == 2
    record = sup.run(handle.id)
    sup.close()
    assert record.status is RunStatus.FAILED and record.attempts == 1
    assert "fails, then asks its backoff" in raised.value.message
    assert "not retried: its retry policy's backoff raised" in raised.value.message


# -- 11. cancels from another process ---------------------------------------------------------------

@pytest.mark.timeout(30)
def test_runs_cancelled_by_another_process_do_not_strand_the_runs_behind_them(db: str) -> None:
    """Item 11: a claim lost to another process's cancel schedules the next dispatch, and fires
    `on("cancelled")`."""
    sup = Supervisor([short], workers=2, store=db)
    cancelled: list[int] = []
    sup.on("cancelled", lambda record: cancelled.append(record.id))
    sup.submit_many(short, [{"n": n} for n in range(4)])
    later = sup.submit_many(short, [{"n": n} for n in range(4, 10)], delay="1s")

    def cancel_two() -> None:
        with Client(store=db) as client:
            for h in later[:2]:
                assert client.handle(h.id).cancel()

    threading.Timer(0.5, cancel_two).start()
    started = time.monotonic()
    sup.serve(until="drained")
    elapsed = time.monotonic() - started
    statuses = [sup.run(h.id).status for h in later]
    sup.close()
    assert statuses == [RunStatus.CANCELLED] * 2 + [RunStatus.SUCCEEDED] * 4
    assert sorted(cancelled) == sorted(h.id for h in later[:2])
    assert elapsed < 10


# -- 12. runs submitted by name ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_run_submitted_by_name_takes_the_serving_jobs_version_and_unique_key(db: str) -> None:
    """Item 12: a Client that knows only a job's name stores a run of the job's current version
    (so min_version does not cancel it) and with its unique key (a live duplicate is cancelled)."""
    sup = Supervisor([versioned, only_one], workers=2, store=db)
    with Client(store=db) as client:
        by_name = client.submit("versioned", {"n": 5})
        first, second = client.submit("only_one", {"n": 1}), client.submit("only_one", {"n": 1})
    sup.serve(until="drained")
    versioned_record, first_record, second_record = (sup.run(h.id) for h in (by_name, first, second))
    again = sup.submit(only_one, {"n": 1})  # the first ended: a new live run is allowed
    assert again.id not in (first.id, second.id)
    sup.close()
    assert versioned_record.status is RunStatus.SUCCEEDED and versioned_record.version == 2, versioned_record
    assert first_record.status is RunStatus.SUCCEEDED and first_record.version == 1
    assert second_record.status is RunStatus.CANCELLED and second_record.error_type == "DuplicateRun", second_record


# -- 13. a shutdown as serving starts -----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_shutdown_from_another_thread_as_serve_starts_is_honoured(db: str) -> None:
    """Item 13: shutdown() called at the moment serve() has made its loop but is not serving yet."""
    for _ in range(5):
        sup = Supervisor([short], workers=1, store=db)
        serving = threading.Thread(target=sup.serve)
        serving.start()
        wait_until(lambda sup=sup: sup._serving.loop is not None, timeout=10, interval=0.0001, what="serve() to start")
        sup.shutdown(timeout=20)
        serving.join(20)
        assert not serving.is_alive(), "serve() went on serving after shutdown()"
        sup.close()
    assert live_descendants() == []


# -- 14, 15 and 9. limits ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_full_concurrency_limit_does_not_spin_the_loop(db: str) -> None:
    """Item 14: a run refused by `concurrency` is woken by a release, not by a rate timer that
    fires at once: five runs of 0.3 s take a few dozen loop turns, not thousands."""
    sup = Supervisor([one_at_a_time], workers=2, store=db)
    sup.submit_many(one_at_a_time, [{"n": n} for n in range(5)])
    sup.serve(until="drained")
    turns = sup.stats()["turns"]
    sup.close()
    assert turns < 200, f"{turns} loop turns for 5 runs"


@pytest.mark.timeout(30)
def test_a_rate_limited_backlog_starts_at_most_n_per_window_and_serves_without_loop_errors(db: str) -> None:
    """Items 15 and 9: 80 runs at 25/s start at most 25 in any second (no burst after idling),
    and the loop's many timers (poll, rate, more than 64 of them) raise nothing."""
    sup = Supervisor([rated], workers=2, store=db)
    handles = sup.submit_many(rated, [{"n": n} for n in range(80)])
    sup.serve(until="drained")
    starts = sorted(sup.run(h.id).attempt_log[0].started_at for h in handles)
    sup.close()
    busiest = max(sum(1 for u in starts if t <= u < t + 0.95) for t in starts)
    assert busiest <= 25, f"{busiest} starts within one second at 25/s"
    assert starts[-1] - starts[0] >= 2.9
