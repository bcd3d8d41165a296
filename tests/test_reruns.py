"""Reruns after a fix: `submit(..., key=k, rerun="failed")` runs again a run under key `k` that
ended failed, timed out or cancelled, as a new run that takes the key over; the old run keeps
its attempt history. Without `rerun`, or for a run that succeeded or is still live, the key
gives back its run and nothing runs.

Real worker processes on a real SQLite store (the store contract tests cover both stores).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from semantics_jobs import Task, lines, note, serving, task

from actors import Client, Outcome, RunFailed, RunStatus, Supervisor, job
from actors.submission import RERUN, new_runs

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


@job
def fragile(t: Task) -> int:
    """Fails until the test "fixes" it by creating the file `fixed`; notes every execution."""
    note(t.dir, "ran", str(t.n))
    if not (Path(t.dir) / "fixed").exists():
        raise OSError(f"{t.dir}/fixed is missing")
    return t.n


# == reruns on a serving supervisor ==================================================================


def test_a_failed_run_is_rerun_under_its_key_after_a_fix_and_keeps_its_history(db: str, tmp_path: Path):
    ran = tmp_path / "ran"
    sup = Supervisor([fragile], workers=1, store=db)
    first = sup.submit(fragile, task(tmp_path, n=7), key="img-1")
    sup.serve(until="drained")
    assert first.status() is RunStatus.FAILED
    with pytest.raises(RunFailed):
        first.result(timeout=5)

    (tmp_path / "fixed").touch()  # the fix
    same = sup.submit(fragile, task(tmp_path, n=7), key="img-1")  # no rerun asked: the failed run comes back
    assert same.id == first.id and same.status() is RunStatus.FAILED
    sup.serve(until="drained")
    assert lines(ran) == ["7"]  # nothing ran

    second = sup.submit(fragile, task(tmp_path, n=7), key="img-1", rerun="failed")
    assert second.id != first.id and second.status() is RunStatus.QUEUED
    sup.serve(until="drained")
    assert second.result(timeout=5) == 7
    assert lines(ran) == ["7", "7"]

    new = sup.run(second.id)
    assert (new.status, new.key, new.rerun_of, new.attempts) == (RunStatus.SUCCEEDED, "img-1", first.id, 1)
    old = sup.run(first.id)  # its history is still there
    assert (old.status, old.key, old.error_type) == (RunStatus.FAILED, None, "OSError")
    assert [a.outcome for a in old.attempt_log] == [Outcome.FAILED]
    assert "fixed is missing" in (old.attempt_log[0].message or "")
    assert first.status() is RunStatus.FAILED  # a handle on the old run still tells its end

    again = sup.submit(fragile, task(tmp_path, n=7), key="img-1", rerun="failed")  # succeeded: never rerun
    assert again.id == second.id
    sup.serve(until="drained")
    assert lines(ran) == ["7", "7"]
    assert len(sup.runs(job="fragile")) == 2
    sup.close()


def test_a_rerun_is_picked_up_by_a_serving_supervisor_from_submit_and_from_a_client(db: str, tmp_path: Path):
    sup = Supervisor([fragile], workers=1, store=db)
    failed = sup.submit_many(fragile, [task(tmp_path, n=1), task(tmp_path, n=2)], keys=["a", "b"])
    sup.serve(until="drained")
    assert [h.status() for h in failed] == [RunStatus.FAILED, RunStatus.FAILED]
    (tmp_path / "fixed").touch()
    with serving(sup):
        mine = sup.submit(fragile, task(tmp_path, n=1), key="a", rerun="failed")  # the supervisor's own path
        with Client(store=db, jobs=[fragile]) as client:
            theirs = client.submit_many(fragile, [task(tmp_path, n=2)], keys=["b"], rerun="failed")[0]  # polled
            assert mine.result(timeout=20) == 1
            assert theirs.result(timeout=20) == 2
            assert client.run(theirs.id).rerun_of == failed[1].id
    assert {mine.id, theirs.id}.isdisjoint(h.id for h in failed)
    assert sorted(lines(tmp_path / "ran")) == ["1", "1", "2", "2"]


def test_a_rerun_of_a_cancelled_run_runs_it(db: str, tmp_path: Path):
    (tmp_path / "fixed").touch()
    sup = Supervisor([fragile], workers=1, store=db)
    first = sup.submit(fragile, task(tmp_path, n=3), key="c", delay="1h")
    assert first.cancel()
    assert sup.submit(fragile, task(tmp_path, n=3), key="c").id == first.id
    second = sup.submit(fragile, task(tmp_path, n=3), key="c", rerun="failed")
    sup.serve(until="drained")
    assert second.result(timeout=5) == 3 and first.status() is RunStatus.CANCELLED
    sup.close()


# == the option --------------------------------------------------------------------------------------


def test_rerun_takes_never_or_failed_and_names_them_when_it_is_anything_else():
    assert set(RERUN) == {"never", "failed"}
    for bad in ("always", "FAILED", "timed-out", True, 1):
        with pytest.raises(ValueError, match="expected one of 'never', 'failed'"):
            new_runs("fragile", [{}], time.time(), default_attempts=None, keys=["k"], rerun=bad)  # type: ignore[arg-type]


def test_rerun_needs_keys_and_is_set_on_each_keyed_row():
    now = time.time()
    with pytest.raises(ValueError, match="idempotency key"):
        new_runs("fragile", [{}], now, default_attempts=None, rerun="failed")
    assert new_runs("fragile", [{}], now, default_attempts=None, rerun="never")[0].rerun is None  # never: no key needed
    rows = new_runs("fragile", [{}, {}], now, default_attempts=None, keys=["a", "b"], rerun="failed")
    assert [r.rerun for r in rows] == [frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})] * 2
    assert all(r.rerun is None for r in new_runs("fragile", [{}], now, default_attempts=None, keys=["a"]))
