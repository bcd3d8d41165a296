"""Limits on what a run may be: `min_version` cancels runs submitted under an older version of
the job, and a result over `max_result_size` fails that run only.

Real worker processes on a real SQLite store. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from semantics_jobs import Task, lines, note, task

from actors import Context, RunCancelled, RunFailed, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


def _versioned(t: Task, ctx: Context) -> int:
    note(t.dir, "versioned.txt", f"{t.tag} {ctx.run_id}")
    return t.n


versioned_v1 = job(name="versioned", version=1)(_versioned)
versioned_v2 = job(name="versioned", version=2, min_version=2)(_versioned)


@job
def big(t: Task) -> str:
    return "x" * t.n


# == versions ====================================================================================


def test_versions_are_stored_and_min_version_cancels_older_runs(db: str, tmp_path: Path):
    old = Supervisor([versioned_v1], workers=1, store=db)
    stale = old.submit(versioned_v1, task(tmp_path, "old", n=1))
    assert stale.record().version == 1
    old.close()
    new = Supervisor([versioned_v2], workers=1, store=db)
    fresh = new.submit(versioned_v2, task(tmp_path, "new", n=2))
    assert fresh.record().version == 2
    new.serve(until="drained")
    assert fresh.result(timeout=5) == 2
    with pytest.raises(RunCancelled):
        new.handle(stale.id).result(timeout=5)
    record = new.run(stale.id)
    assert record.status is RunStatus.CANCELLED
    assert record.error_type and record.message and "min_version" in record.message
    assert [line.split()[0] for line in lines(tmp_path / "versioned.txt")] == ["new"]
    new.close()


# == result size ==================================================================================


def test_a_result_over_max_result_size_fails_that_run_only(db: str, tmp_path: Path):
    sup = Supervisor([big], workers=1, store=db, max_result_size="1MB")
    huge = sup.submit(big, task(tmp_path, n=2_000_000))
    small = [sup.submit(big, task(tmp_path, n=i)) for i in (1, 10, 100)]
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as info:
        huge.result(timeout=5)
    assert info.value.error_type == "ResultTooLarge"
    assert sup.run(huge.id).output is None
    assert [h.result(timeout=5) for h in small] == ["x", "x" * 10, "x" * 100]
    sup.close()
