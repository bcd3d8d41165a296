"""What runs in the worker around a job: `before_run` / `after_run` hooks around each attempt, and
per-worker `setup` (once per worker, again in a replacement, not counted in a run's timeout).

Real worker processes on a real SQLite store. Hooks and setup have no input, so they report to
the directory in $ACTORS_SEMANTICS_DIR. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from semantics_jobs import Task, lines, note, serving, task

from actors import Context, RunFailed, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)

ENV_DIR = "ACTORS_SEMANTICS_DIR"


# -- jobs ----------------------------------------------------------------------------------------


def hook_before(ctx: Context) -> None:
    note(os.environ[ENV_DIR], "hooks.txt", f"before {ctx.run_id} {ctx.attempt} {os.getpid()}")


def hook_after(ctx: Context, error: BaseException | None) -> None:
    kind = type(error).__name__ if error is not None else "None"
    note(os.environ[ENV_DIR], "hooks.txt", f"after {ctx.run_id} {ctx.attempt} {os.getpid()} {kind}")


@job(before_run=hook_before, after_run=hook_after)
def hooked(t: Task, ctx: Context) -> int:
    note(t.dir, "hooks.txt", f"body {ctx.run_id} {ctx.attempt} {os.getpid()}")
    if t.tag == "fail":
        raise ValueError("the body fails")
    return t.n


def make_resource() -> dict[str, Any]:
    note(os.environ[ENV_DIR], "setup.txt", str(os.getpid()))
    return {"pid": os.getpid(), "token": "R"}


def slow_setup() -> str:
    time.sleep(0.8)
    return "loaded"


@job(timeout="400ms", setup=slow_setup)
def after_slow_setup(t: Task, ctx: Context) -> str:
    return ctx.resource


@job(setup=make_resource)
def use_resource(t: Task, ctx: Context) -> dict[str, Any]:
    return {"resource": ctx.resource, "pid": os.getpid()}


# == hooks and per-worker setup ===================================================================


def test_before_and_after_run_hooks_run_in_the_worker_around_each_attempt(db: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([hooked], workers=1, store=db)
    good = sup.submit(hooked, task(tmp_path, "ok", n=5))
    bad = sup.submit(hooked, task(tmp_path, "fail"))
    sup.serve(until="drained")
    assert good.result(timeout=5) == 5
    with pytest.raises(RunFailed):
        bad.result(timeout=5)
    seen = [line.split() for line in lines(tmp_path / "hooks.txt")]
    pid = seen[0][3]
    assert pid != str(os.getpid())
    assert seen == [
        ["before", str(good.id), "1", pid], ["body", str(good.id), "1", pid], ["after", str(good.id), "1", pid, "None"],
        ["before", str(bad.id), "1", pid], ["body", str(bad.id), "1", pid],
        ["after", str(bad.id), "1", pid, "ValueError"],
    ]
    sup.close()


def test_setup_runs_once_per_worker_and_is_the_contexts_resource(db: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([use_resource], workers=2, store=db)
    handles = sup.submit_many(use_resource, [task(tmp_path, n=i) for i in range(12)])
    sup.serve(until="drained")
    results = [h.result(timeout=5) for h in handles]
    setups = lines(tmp_path / "setup.txt")
    assert len(setups) == len(set(setups)) == 2, setups  # once per worker process
    for result in results:
        assert result["resource"] == {"pid": result["pid"], "token": "R"}
        assert str(result["pid"]) in setups
    sup.close()


def test_setup_runs_again_in_a_replacement_worker(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([use_resource], workers=1, store=db)
    with serving(sup):
        before = sup.submit(use_resource, task(tmp_path)).result(timeout=10)
        old_pid = before["pid"]
        assert lines(tmp_path / "setup.txt") == [str(old_pid)]
        os.kill(old_pid, signal.SIGKILL)
        setups = wait_until(lambda: len(lines(tmp_path / "setup.txt")) == 2 and lines(tmp_path / "setup.txt"),
                            what="the replacement worker's setup")
        new_pid = int(setups[1])
        assert new_pid != old_pid
        after = sup.submit(use_resource, task(tmp_path)).result(timeout=10)
        assert after == {"resource": {"pid": new_pid, "token": "R"}, "pid": new_pid}
    assert lines(tmp_path / "setup.txt") == [str(old_pid), str(new_pid)]


def test_a_runs_timeout_does_not_count_the_workers_setup(db: str, tmp_path: Path):
    sup = Supervisor([after_slow_setup], workers=1, store=db)
    handle = sup.submit(after_slow_setup, task(tmp_path))
    sup.serve(until="drained")
    record = sup.run(handle.id)
    sup.close()
    assert record.status is RunStatus.SUCCEEDED, f"{record.status}: {record.message}"
    assert record.result == "loaded"
