"""What a run records as it goes: `ctx.step` (skipped on a retry, surviving a kill -9 of the
supervisor, one name once), progress and metadata visible while running, and `ctx.log` records
that carry the run id, job and attempt.

Real worker processes on a real SQLite store; the durability test runs its supervisors in
scripts (subprocesses) so that it can `kill -9` them. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import live_descendants, run_script, start_script, wait_until
from semantics_jobs import Task, attempts_of, lines, note, serving, task

from actors import Client, Context, Retry, RunFailed, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)


def wait_for_file(path: str, seconds: float = 30.0) -> bool:
    """Inside a job: wait for the test to create a marker file (bounded, so nothing hangs)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- jobs: steps, progress, logs -----------------------------------------------------------------


def _first_stage(directory: str) -> dict[str, Any]:
    note(directory, "first-calls.txt", str(os.getpid()))
    return {"value": 41, "items": (1, 2)}


def _second_stage(directory: str) -> int:
    note(directory, "second-calls.txt", str(os.getpid()))
    return 1


@job(retry=Retry(attempts=2, backoff="immediate"))
def staged(t: Task, ctx: Context) -> dict[str, Any]:
    first = ctx.step("first", lambda: _first_stage(t.dir))
    if ctx.attempt == 1:
        raise RuntimeError("fails after the first step")
    second = ctx.step("second", lambda: _second_stage(t.dir))
    return {"total": first["value"] + second, "items_type": type(first["items"]).__name__, "attempt": ctx.attempt}


@job
def step_twice(t: Task, ctx: Context) -> int:
    ctx.step("dup-step", lambda: 1)
    ctx.step("dup-step", lambda: 2)
    return 0


@job
def reporter(t: Task, ctx: Context) -> str:
    ctx.progress(0.5, "halfway")
    ctx.metadata(stage="resize", pages=3)
    ctx.metadata(pages=4)
    note(t.dir, "reporter.txt", "reported")
    return "done" if wait_for_file(os.path.join(t.dir, "go")) else "gave up"


@job(retry=Retry(attempts=2, backoff="immediate"))
def chatty(t: Task, ctx: Context) -> str:
    logger = logging.getLogger("actors.job")
    handler = logging.FileHandler(os.path.join(t.dir, "log.txt"))
    handler.setFormatter(logging.Formatter("%(run_id)s|%(job)s|%(attempt)s|%(levelname)s|%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ctx.log.info("working on %s", t.tag)
    finally:
        logger.removeHandler(handler)
        handler.close()
    if ctx.attempt == 1:
        raise RuntimeError("log again on attempt 2")
    return "ok"


# == ctx.step ======================================================================================


def test_a_retry_skips_completed_steps_and_gets_their_stored_values(db: str, tmp_path: Path):
    sup = Supervisor([staged], workers=1, store=db)
    handle = sup.submit(staged, task(tmp_path))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == {"total": 42, "items_type": "list", "attempt": 2}
    assert len(lines(tmp_path / "first-calls.txt")) == 1, "the first step ran again on the retry"
    assert len(lines(tmp_path / "second-calls.txt")) == 1
    record = sup.run(handle.id, attempts=True)
    assert attempts_of(record) == ["failed", "succeeded"]
    assert record.steps == {"first": {"value": 41, "items": [1, 2]}, "second": 1}
    sup.close()


def test_a_step_name_used_twice_fails_the_run_naming_the_step(db: str, tmp_path: Path):
    sup = Supervisor([step_twice], workers=1, store=db)
    handle = sup.submit(step_twice, task(tmp_path))
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=5)
    assert info.value.error_type == "ValueError"
    assert "dup-step" in (info.value.message or "")
    sup.close()


STEPS_SCRIPT = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Retry, Supervisor, job

class Task(BaseModel):
    dir: str

def first_stage(directory):
    with open(os.path.join(directory, "first-calls.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return {"value": 42}

@job(retry=Retry(attempts=2, backoff="immediate"))
def durable_steps(t: Task, ctx: Context) -> dict:
    first = ctx.step("first", lambda: first_stage(t.dir))
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(t.dir, "go")) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = ctx.step("second", lambda: ctx.attempt)
    return {"first": first, "second": second, "attempt": ctx.attempt}

if __name__ == "__main__":
    sup = Supervisor([durable_steps], workers=1, store="runs.db")
    if sys.argv[1] == "first":
        handle = sup.submit(durable_steps, {"dir": os.getcwd()})
        print("submitted", handle.id, flush=True)
        sup.serve()
    else:
        sup.serve(until="drained")
    sup.close()
"""


def test_completed_steps_survive_a_kill_9_of_the_supervisor(tmp_path: Path, db: str):
    first = start_script(tmp_path, STEPS_SCRIPT, "first")
    try:
        with Client(store=db, create=True) as client:  # the script may not have made it yet
            wait_until(lambda: client.runs(status="running") and client.run(1).steps, timeout=20,
                       what="the first step to be stored")
            assert client.run(1).steps == {"first": {"value": 42}}
            children = live_descendants(first.pid)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            _, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, f"processes outlived their supervisor: {alive}"
            (tmp_path / "go").touch()
            second = run_script(tmp_path, STEPS_SCRIPT, "second", timeout=30)
            assert second.returncode == 0, second.stderr
            record = client.run(1)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert record.status is RunStatus.SUCCEEDED
    assert record.result == {"first": {"value": 42}, "second": 2, "attempt": 2}
    assert attempts_of(record) == ["interrupted", "succeeded"]
    assert len(lines(tmp_path / "first-calls.txt")) == 1, "the first step ran again after the restart"


# == progress, metadata, logs ======================================================================


def test_progress_and_metadata_are_visible_while_the_run_is_running(db: str, tmp_path: Path):
    sup = Supervisor([reporter], workers=1, store=db)
    with serving(sup):
        handle = sup.submit(reporter, task(tmp_path))
        record = wait_until(lambda: (r := sup.run(handle.id)).metadata.get("pages") == 4 and r, timeout=15,
                            what="progress and metadata to be stored")
        assert record.status is RunStatus.RUNNING
        assert record.progress == 0.5 and record.progress_message == "halfway"
        assert record.metadata == {"stage": "resize", "pages": 4}
        with Client(store=db) as client:
            seen = client.run(handle.id)
            assert seen.status is RunStatus.RUNNING
            assert (seen.progress, seen.progress_message, seen.metadata) == (0.5, "halfway",
                                                                              {"stage": "resize", "pages": 4})
        assert handle.status() is RunStatus.RUNNING
        assert handle.progress() == (0.5, "halfway")
        (tmp_path / "go").touch()
        assert handle.result(timeout=15) == "done"


def test_ctx_log_records_carry_run_id_job_and_attempt(db: str, tmp_path: Path):
    sup = Supervisor([chatty], workers=1, store=db)
    handle = sup.submit(chatty, task(tmp_path, "page-7"))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == "ok"
    assert lines(tmp_path / "log.txt") == [
        f"{handle.id}|chatty|1|INFO|working on page-7",
        f"{handle.id}|chatty|2|INFO|working on page-7",
    ]
    sup.close()
