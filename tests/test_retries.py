"""Retries through real runs: fixed backoff, retry_on classes and predicates, on_timeout, the
supervisor's default policy, and a waiting retry that survives a restart of its supervisor.

Real worker processes on a real SQLite store; the durability test runs its supervisors in
scripts (subprocesses) so that it can signal them. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import run_script, start_script, wait_until
from semantics_jobs import EARLY, Task, attempts_of, floats, lines, note, task

from actors import Client, Context, Retry, RunFailed, RunStatus, RunTimedOut, Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- jobs: retries -------------------------------------------------------------------------------


@job(retry=Retry(attempts=3, backoff="fixed", base="50ms"))
def flaky_fixed(t: Task, ctx: Context) -> int:
    note(t.dir, "fixed.txt", f"{ctx.attempt} {time.time()!r}")
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=Retry(attempts=3, backoff="immediate", retry_on=(KeyError,)))
def picky(t: Task, ctx: Context) -> int:
    note(t.dir, f"picky-{t.tag}.txt", str(ctx.attempt))
    if ctx.attempt == 1:
        raise KeyError("missing") if t.tag == "key" else ValueError("bad value")
    return ctx.attempt


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "transient" in str(exc)


@job(retry=Retry(attempts=3, backoff="immediate", retry_on=is_transient))
def judged(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError(f"{t.tag} failure")
    return ctx.attempt


@job(timeout="300ms", retry=Retry(attempts=3, backoff="immediate", on_timeout=False))
def hangs_no_timeout_retry(t: Task) -> None:
    time.sleep(30)


@job(timeout="1500ms", retry=Retry(attempts=2, backoff="immediate"))  # room for a replacement worker's start
def hangs_once(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        time.sleep(30)
    return ctx.attempt


@job
def no_policy(t: Task, ctx: Context) -> int:
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=1)
def own_policy(t: Task, ctx: Context) -> int:
    raise RuntimeError(f"attempt {ctx.attempt} fails")


@job
def no_policy_value_error(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise ValueError("not retryable under the supervisor's default")
    return ctx.attempt


# == retries through real runs ====================================================================


def test_fixed_backoff_retries_twice_then_succeeds_with_gaps_of_at_least_the_base(db: str, tmp_path: Path):
    sup = Supervisor([flaky_fixed], workers=1, store=db)
    handle = sup.submit(flaky_fixed, task(tmp_path))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == 3
    record = sup.run(handle.id, attempts=True)
    assert record.status is RunStatus.SUCCEEDED
    assert record.attempts == 3
    assert attempts_of(record) == ["failed", "failed", "succeeded"]
    assert [a.number for a in record.attempt_log] == [1, 2, 3]
    assert [a.error_type for a in record.attempt_log[:2]] == ["RuntimeError", "RuntimeError"]
    starts = [a.started_at for a in record.attempt_log]
    assert all(later - earlier >= 0.045 for earlier, later in zip(starts, starts[1:], strict=False)), starts
    # and as the job itself saw it
    seen = lines(tmp_path / "fixed.txt")
    assert [line.split()[0] for line in seen] == ["1", "2", "3"]
    times = floats(tmp_path / "fixed.txt")
    assert all(later - earlier >= 0.045 for earlier, later in zip(times, times[1:], strict=False)), times
    sup.close()


def test_retry_on_exception_classes_retries_those_and_fails_others_at_once(db: str, tmp_path: Path):
    sup = Supervisor([picky], workers=2, store=db)
    retried = sup.submit(picky, task(tmp_path, "key"))
    refused = sup.submit(picky, task(tmp_path, "value"))
    sup.serve(until="drained")
    assert retried.result(timeout=5) == 2
    assert attempts_of(sup.run(retried.id)) == ["failed", "succeeded"]
    with pytest.raises(RunFailed) as info:
        refused.result(timeout=5)
    assert info.value.error_type == "ValueError"
    record = sup.run(refused.id)
    assert record.status is RunStatus.FAILED
    assert record.attempts == 1 and attempts_of(record) == ["failed"]
    assert lines(tmp_path / "picky-value.txt") == ["1"]
    sup.close()


def test_retry_on_a_predicate_decides_per_exception(db: str, tmp_path: Path):
    sup = Supervisor([judged], workers=2, store=db)
    transient = sup.submit(judged, task(tmp_path, "transient"))
    permanent = sup.submit(judged, task(tmp_path, "permanent"))
    sup.serve(until="drained")
    assert transient.result(timeout=5) == 2
    with pytest.raises(RunFailed, match="permanent failure"):
        permanent.result(timeout=5)
    assert sup.run(permanent.id).attempts == 1
    sup.close()


def test_on_timeout_false_ends_a_timed_out_run_at_once_while_the_default_retries_it(db: str, tmp_path: Path):
    sup = Supervisor([hangs_no_timeout_retry, hangs_once], workers=2, store=db, kill_grace="200ms")
    final = sup.submit(hangs_no_timeout_retry, task(tmp_path))
    retried = sup.submit(hangs_once, task(tmp_path))
    started = time.monotonic()
    sup.serve(until="drained")
    assert time.monotonic() - started < 10
    with pytest.raises(RunTimedOut):
        final.result(timeout=5)
    record = sup.run(final.id)
    assert record.status is RunStatus.TIMED_OUT
    assert record.attempts == 1 and attempts_of(record) == ["timed_out"]
    assert retried.result(timeout=5) == 2
    assert attempts_of(sup.run(retried.id)) == ["timed_out", "succeeded"]
    sup.close()


def test_the_supervisors_default_retry_applies_to_jobs_that_set_none(db: str, tmp_path: Path):
    sup = Supervisor([no_policy, own_policy], workers=2, store=db, retry=Retry(attempts=3, backoff="immediate"))
    defaulted = sup.submit(no_policy, task(tmp_path))
    own = sup.submit(own_policy, task(tmp_path))
    sup.serve(until="drained")
    assert defaulted.result(timeout=5) == 3
    record = sup.run(defaulted.id)
    assert record.max_attempts == 3 and attempts_of(record) == ["failed", "failed", "succeeded"]
    with pytest.raises(RunFailed):
        own.result(timeout=5)
    assert sup.run(own.id).attempts == 1  # the job's own policy (one attempt) wins
    sup.close()


def test_without_a_supervisor_default_a_job_without_retry_runs_once(db: str, tmp_path: Path):
    sup = Supervisor([no_policy], workers=1, store=db)
    handle = sup.submit(no_policy, task(tmp_path))
    sup.serve(until="drained")
    with pytest.raises(RunFailed):
        handle.result(timeout=5)
    assert sup.run(handle.id).attempts == 1
    sup.close()


def test_the_supervisors_default_retry_on_is_honoured_for_jobs_that_set_none(db: str, tmp_path: Path):
    sup = Supervisor([no_policy_value_error], workers=1, store=db,
                     retry=Retry(attempts=3, backoff="immediate", retry_on=(KeyError,)))
    handle = sup.submit(no_policy_value_error, task(tmp_path))
    sup.serve(until="drained")
    record = sup.run(handle.id)
    sup.close()
    assert record.status is RunStatus.FAILED, f"a ValueError was retried: {attempts_of(record)}"
    assert record.attempts == 1


RETRY_SCRIPT = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Retry, Supervisor, job

class Task(BaseModel):
    dir: str

@job(retry=Retry(attempts=2, backoff="fixed", base="3s"))
def slow_retry(t: Task, ctx: Context) -> int:
    with open(os.path.join(t.dir, "attempts.txt"), "a") as f:
        f.write(f"{ctx.attempt} {time.time()!r}\\n")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt

if __name__ == "__main__":
    sup = Supervisor([slow_retry], workers=1, store="runs.db")
    if sys.argv[1] == "first":
        handle = sup.submit(slow_retry, {"dir": os.getcwd()})
        print("submitted", handle.id, flush=True)
        sup.serve()
    else:
        sup.serve(until="drained")
    sup.close()
    print("served", sys.argv[1], flush=True)
"""


def test_a_waiting_retry_is_durable_across_a_restart_and_keeps_its_due_time(tmp_path: Path, db: str):
    first = start_script(tmp_path, RETRY_SCRIPT, "first")
    try:
        with Client(store=db, create=True) as client:  # the script may not have made it yet
            record = wait_until(lambda: next(iter(client.runs(status="retrying")), None), timeout=20,
                                what="the run to wait for its retry")
            assert record.scheduled_at > time.time() + 0.5, "the retry is not stored with a future due time"
            due = record.scheduled_at
            first.send_signal(signal.SIGTERM)
            out, err = first.communicate(timeout=20)
            assert first.returncode == 0, err
            assert "served first" in out
            after_stop = client.run(record.id)
            assert after_stop.status is RunStatus.RETRYING
            assert after_stop.scheduled_at == pytest.approx(due)
            assert lines(tmp_path / "attempts.txt")[0].startswith("1 ")
            assert len(lines(tmp_path / "attempts.txt")) == 1
            restarted_at = time.time()
            second = run_script(tmp_path, RETRY_SCRIPT, "second", timeout=30)
            assert second.returncode == 0, second.stderr
            done = client.run(record.id)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == 2
    assert attempts_of(done) == ["failed", "succeeded"]
    attempt_two = floats(tmp_path / "attempts.txt")[1]
    assert restarted_at < due, "the restart came after the due time: the test proves less than it should"
    assert attempt_two >= due - EARLY, f"attempt 2 ran {due - attempt_two:.3f} s before its due time"
    assert done.attempt_log[1].started_at >= due - EARLY
