"""Submitting the same work twice: `unique=True` jobs return the live run, and an idempotency
`key` returns the same run for the store's lifetime.

Real worker processes on a real SQLite store. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from semantics_jobs import Task, task

from actors import Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


@job(unique=True)
def uniq(t: Task) -> int:
    return t.n


@job
def keyed(t: Task) -> int:
    return t.n


# == unique runs and idempotency keys ===============================================================


def test_unique_returns_the_live_run_and_a_new_one_once_it_finished(db: str, tmp_path: Path):
    sup = Supervisor([uniq], workers=1, store=db)
    one = sup.submit(uniq, task(tmp_path, n=1))
    same = sup.submit(uniq, {"dir": str(tmp_path), "n": 1})
    other = sup.submit(uniq, task(tmp_path, n=2))
    assert same.id == one.id
    assert other.id != one.id
    sup.serve(until="drained")
    assert one.result(timeout=5) == 1 and other.result(timeout=5) == 2
    later = sup.submit(uniq, task(tmp_path, n=1))
    assert later.id not in (one.id, other.id)
    sup.serve(until="drained")
    assert later.result(timeout=5) == 1
    assert len(sup.runs(job="uniq")) == 3
    sup.close()


def test_a_key_returns_the_same_handle_for_the_stores_lifetime(db: str, tmp_path: Path):
    sup = Supervisor([keyed], workers=1, store=db)
    first = sup.submit(keyed, task(tmp_path, n=1), key="abc")
    again = sup.submit(keyed, task(tmp_path, n=2), key="abc")
    other = sup.submit(keyed, task(tmp_path, n=3), key="xyz")
    assert again.id == first.id and other.id != first.id
    sup.serve(until="drained")
    assert first.result(timeout=5) == 1
    after = sup.submit(keyed, task(tmp_path, n=4), key="abc")
    assert after.id == first.id and after.result(timeout=5) == 1
    assert sup.run(first.id).key == "abc"
    sup.close()
    reopened = Supervisor([keyed], workers=1, store=db)
    assert reopened.submit(keyed, task(tmp_path, n=5), key="abc").id == first.id
    assert len(reopened.runs(job="keyed")) == 2
    reopened.close()
