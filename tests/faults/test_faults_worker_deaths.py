"""Workers that die: killed from outside, poison runs that kill every worker they touch, and
workers recycled on purpose. The dead worker's run is settled by its policy; nothing else is
lost, and the slot is refilled (invariants 3, 4 and 6)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import live_descendants, workers_of
from pydantic import BaseModel

from actors import Context, Outcome, Retry, RunStatus, Supervisor, job


class Marker(BaseModel):
    pid_file: str


class Num(BaseModel):
    n: int


@job(timeout="20s", retry=Retry(attempts=3, backoff="immediate"))
def killed_once(marker: Marker, ctx: Context) -> int:
    """Attempt 1 announces its pid and waits to be killed from outside; attempt 2 succeeds."""
    if ctx.attempt == 1:
        tmp = marker.pid_file + ".tmp"
        Path(tmp).write_text(str(os.getpid()))
        os.replace(tmp, marker.pid_file)
        time.sleep(15)
        return -1
    return ctx.attempt


@job(timeout="10s", retry=Retry(attempts=3, backoff="immediate"))
def poison(_: Num) -> int:
    os._exit(1)


@job(timeout="10s")
def square(num: Num) -> int:
    return num.n * num.n


@job(timeout="10s")
def whoami(num: Num) -> int:
    return os.getpid()


def _kill_when_announced(pid_file: Path, seen: dict[str, object]) -> None:
    deadline = time.monotonic() + 15
    while not pid_file.exists():
        if time.monotonic() > deadline:
            seen["error"] = "the job never wrote its pid"
            return
        time.sleep(0.01)
    pid = int(pid_file.read_text())
    seen["pid"] = pid
    seen["was_worker"] = pid in {p.pid for p in workers_of()}
    os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(30)
def test_worker_killed_from_outside_is_retried_and_succeeds(db: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    sup = Supervisor([killed_once, square], workers=2, store=db, kill_grace=0.5)
    seen: dict[str, object] = {}
    killer = threading.Thread(target=_kill_when_announced, args=(pid_file, seen), daemon=True)
    try:
        handle = sup.submit(killed_once, {"pid_file": str(pid_file)})
        good = sup.submit_many(square, [{"n": n} for n in range(20)])
        killer.start()
        sup.serve(until="drained")
        killer.join(5)
        record = sup.run(handle.id)
        good_records = [sup.run(h.id) for h in good]
    finally:
        sup.close()

    assert "error" not in seen, seen
    assert seen["was_worker"], f"pid {seen['pid']} was not one of the supervisor's workers"
    assert record.status is RunStatus.SUCCEEDED, record
    assert record.result == 2
    assert record.attempts == 2
    first, second = record.attempt_log
    assert first.outcome is Outcome.CRASHED, first
    assert first.signal == signal.SIGKILL, first
    assert first.worker_pid == seen["pid"]
    assert "SIGKILL" in (first.message or ""), first
    assert second.outcome is Outcome.SUCCEEDED, second
    assert second.worker_pid != seen["pid"]
    assert [r.status for r in good_records] == [RunStatus.SUCCEEDED] * 20
    assert [r.result for r in good_records] == [n * n for n in range(20)]
    assert live_descendants() == []


@pytest.mark.timeout(30)
def test_poison_run_fails_after_exactly_its_attempts_while_good_runs_succeed(db: str) -> None:
    sup = Supervisor([poison, square], workers=2, store=db, kill_grace=0.5)
    try:
        first_half = sup.submit_many(square, [{"n": n} for n in range(50)])
        bad = sup.submit(poison, {"n": 0})
        second_half = sup.submit_many(square, [{"n": n} for n in range(50, 100)])
        started = time.monotonic()
        sup.serve(until="drained")
        elapsed = time.monotonic() - started
        record = sup.run(bad.id)
        good_records = [sup.run(h.id) for h in first_half + second_half]
    finally:
        sup.close()

    assert record.status is RunStatus.FAILED, record
    assert record.attempts == 3, record
    assert [a.number for a in record.attempt_log] == [1, 2, 3]
    assert all(a.outcome is Outcome.CRASHED and a.exit_code == 1 for a in record.attempt_log), record.attempt_log
    assert len({a.worker_pid for a in record.attempt_log}) == 3, "each attempt needs a worker of its own"
    assert record.error_type == "WorkerCrashed"
    assert "exited with code 1" in (record.message or "")
    assert [r.status for r in good_records] == [RunStatus.SUCCEEDED] * 100
    assert [r.result for r in good_records] == [n * n for n in range(100)]
    assert all(r.attempts == 1 for r in good_records), "a good run was charged an attempt it did not use"
    assert elapsed < 15, f"three crashes and 100 tiny runs took {elapsed:.1f} s"
    assert live_descendants() == []


@pytest.mark.timeout(30)
def test_max_runs_per_worker_recycles_workers_without_losing_runs(db: str) -> None:
    sup = Supervisor([whoami], workers=2, store=db, kill_grace=0.5, max_runs_per_worker=5)
    try:
        handles = sup.submit_many(whoami, [{"n": n} for n in range(50)])
        sup.serve(until="drained")
        records = [sup.run(h.id) for h in handles]
    finally:
        sup.close()

    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 50
    assert all(len(r.attempt_log) == 1 for r in records), "a recycled worker's run needed another attempt"
    pids = Counter(r.attempt_log[0].worker_pid for r in records)
    assert len(pids) > 2, pids
    assert max(pids.values()) <= 5, f"a worker ran more than max_runs_per_worker runs: {pids}"
    assert len(pids) >= 10, pids
    # The pid the run saw is the pid the attempt log names.
    assert all(r.result == r.attempt_log[0].worker_pid for r in records)
    assert live_descendants() == []


def _broken_setup() -> None:
    raise ImportError("no module named 'pretend_model'")


@job(timeout="10s", setup=_broken_setup, retry=Retry(attempts=2, backoff="immediate"))
def needs_model(num: Num) -> int:
    return num.n


@pytest.mark.timeout(60)
def test_a_failing_worker_setup_backs_off_and_the_runs_say_why(db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every worker dies in its setup: restarts back off instead of spinning, and each run ends
    failed with the setup's error after its attempts, instead of waiting forever."""
    sup = Supervisor([needs_model], workers=1, store=db)
    try:
        handles = sup.submit_many(needs_model, [{"n": n} for n in range(3)])
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="actors"):
            sup.serve(until="drained")
        elapsed = time.monotonic() - started
        records = [sup.run(h.id) for h in handles]
    finally:
        sup.close()
    for record in records:
        assert record.status is RunStatus.FAILED
        assert record.error_type == "WorkerSetupFailed"
        assert "ImportError" in record.message and "pretend_model" in record.message
        assert [a.outcome for a in record.attempt_log] == [Outcome.CRASHED, Outcome.CRASHED]
        assert "_broken_setup" in (record.attempt_log[-1].traceback or "")
    # six quick deaths of one slot: 0, 0.1, 0.2, 0.4, 0.8 s of backoff at least between them
    delays = [float(r.getMessage().split(" restarts in ")[1].split(" s")[0])
              for r in caplog.records if " restarts in " in r.getMessage()]
    assert delays and delays == sorted(delays) and max(delays) >= 0.4, delays
    assert elapsed >= 1.0, f"six setup failures took only {elapsed:.2f} s: the slot spins"
