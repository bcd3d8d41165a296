"""Cancelling runs: a cooperative running run stops soon and stores no output, an uncooperative
one is killed after `kill_grace`, and queued or delayed runs are cancelled at once, never run.

Real worker processes on a real SQLite store. Shared models, helpers and jobs: semantics_jobs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from conftest import wait_until
from semantics_jobs import Task, attempts_of, cooperative, double, lines, note, serving, stamp, task

from actors import RunCancelled, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


@job
def stubborn(t: Task) -> str:
    note(t.dir, "stubborn.txt", str(os.getpid()))
    time.sleep(60)
    return "never"


# == cancellation =================================================================================


def test_cancelling_a_cooperative_running_run_ends_it_cancelled_soon(db: str, tmp_path: Path):
    sup = Supervisor([cooperative, double], workers=1, store=db, kill_grace="10s")
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        asked = time.monotonic()
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        assert time.monotonic() - asked < 5, "the run was killed, not stopped cooperatively"
        assert lines(tmp_path / "coop.txt") == ["started", "returned"]
        record = sup.run(handle.id)
        assert record.status is RunStatus.CANCELLED
        assert attempts_of(record) == ["cancelled"]
        assert sup.submit(double, task(tmp_path, n=4)).result(timeout=10) == 8


def test_a_cancelled_run_that_returned_anyway_stores_no_output(db: str, tmp_path: Path):
    sup = Supervisor([cooperative], workers=1, store=db, kill_grace="10s")
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        handle.cancel()
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        record = sup.run(handle.id)
    assert record.status is RunStatus.CANCELLED
    assert record.output is None, f"a cancelled run stored the output {record.output!r}"


def test_cancelling_an_uncooperative_run_kills_it_after_kill_grace(db: str, tmp_path: Path):
    sup = Supervisor([stubborn, double], workers=1, store=db, kill_grace="300ms")
    with serving(sup):
        handle = sup.submit(stubborn, task(tmp_path))
        pid = int(wait_until(lambda: lines(tmp_path / "stubborn.txt"), what="the run to start")[0])
        asked = time.monotonic()
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        assert time.monotonic() - asked < 5
        record = sup.run(handle.id)
        assert record.status is RunStatus.CANCELLED
        assert attempts_of(record) == ["cancelled"]
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   what="the worker to be killed")
        assert sup.submit(double, task(tmp_path, n=5)).result(timeout=10) == 10  # a new worker serves


def test_cancelling_a_queued_run_is_immediate_and_it_never_runs(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    doomed = sup.submit(stamp, task(tmp_path, "doomed"))
    kept = sup.submit(stamp, task(tmp_path, "kept"))
    assert doomed.cancel() is True
    assert doomed.status() is RunStatus.CANCELLED
    with pytest.raises(RunCancelled):
        doomed.result(timeout=1)
    sup.serve(until="drained")
    assert kept.result(timeout=5) > 0
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["kept"]
    assert doomed.cancel() is False  # no longer live
    assert kept.cancel() is False
    record = sup.run(doomed.id)
    assert record.status is RunStatus.CANCELLED and record.attempt_log == []
    sup.close()


def test_cancelling_a_delayed_run_while_serving_is_immediate(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    with serving(sup):
        handle = sup.submit(stamp, task(tmp_path, "later"), delay="2s")
        assert handle.cancel() is True
        assert handle.status() is RunStatus.CANCELLED
        with pytest.raises(RunCancelled):
            handle.result(timeout=1)
        assert sup.submit(stamp, task(tmp_path, "now")).result(timeout=10) > 0
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["now"]
