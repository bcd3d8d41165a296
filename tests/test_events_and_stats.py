"""Watching runs: the events a supervisor delivers (in order, whatever a callback raises; for
cancelled runs too; unknown names refused), and inspecting the store with runs(), run(), stats().

Real worker processes on a real SQLite store. Shared models, helpers and jobs: semantics_jobs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from semantics_jobs import Task, cooperative, double, lines, serving, stamp, task

from actors import (
    Client,
    Context,
    Outcome,
    Retry,
    RunCancelled,
    RunRecord,
    RunStatus,
    Supervisor,
    job,
)

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


@job
def explode(t: Task) -> int:
    raise ValueError(f"cannot handle {t.n}")


@job(retry=Retry(attempts=2, backoff="immediate"))
def fails_once(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@job(timeout="300ms")
def overstays(t: Task) -> None:
    time.sleep(30)


@job
def with_step(t: Task, ctx: Context) -> int:
    return ctx.step("load", lambda: {"k": t.n})["k"]


# == events =======================================================================================


def _recorder(sup: Supervisor) -> list[tuple[str, int, RunStatus]]:
    events: list[tuple[str, int, RunStatus]] = []
    for name in ("submitted", "started", "succeeded", "failed", "retrying", "timed_out", "cancelled"):
        sup.on(name, lambda record, name=name: events.append((name, record.id, record.status)))
    return events


def test_events_deliver_run_records_in_order_and_a_raising_callback_changes_nothing(db: str, tmp_path: Path):
    sup = Supervisor([double, explode, fails_once, overstays], workers=2, store=db, kill_grace="200ms")
    records: list[Any] = []

    def boom(record: RunRecord) -> None:
        records.append(record)
        raise RuntimeError("a callback that raises")

    sup.on("succeeded", boom)  # registered first: the recorder still hears every event after it
    sup.on("started", boom)
    events = _recorder(sup)
    ok = sup.submit(double, task(tmp_path, n=2))
    bad = sup.submit(explode, task(tmp_path, n=3))
    flaky = sup.submit(fails_once, task(tmp_path))
    slow = sup.submit(overstays, task(tmp_path))
    more = sup.submit_many(double, [task(tmp_path, n=i) for i in range(5)])
    sup.serve(until="drained")
    assert ok.result(timeout=5) == 4 and [h.result(timeout=5) for h in more] == [0, 2, 4, 6, 8]
    assert all(isinstance(r, RunRecord) for r in records)
    for _, _, status in events:
        assert isinstance(status, RunStatus)

    def of(run_id: int) -> list[tuple[str, RunStatus]]:
        return [(name, status) for name, rid, status in events if rid == run_id]

    q, r = RunStatus.QUEUED, RunStatus.RUNNING
    assert of(ok.id) == [("submitted", q), ("started", r), ("succeeded", RunStatus.SUCCEEDED)]
    assert of(bad.id) == [("submitted", q), ("started", r), ("failed", RunStatus.FAILED)]
    assert of(flaky.id) == [("submitted", q), ("started", r), ("retrying", RunStatus.RETRYING), ("started", r),
                            ("succeeded", RunStatus.SUCCEEDED)]
    assert of(slow.id) == [("submitted", q), ("started", r), ("timed_out", RunStatus.TIMED_OUT)]
    for handle in more:
        assert [name for name, _ in of(handle.id)] == ["submitted", "started", "succeeded"]
    sup.close()


def test_a_cancelled_running_run_emits_cancelled(db: str, tmp_path: Path):
    sup = Supervisor([cooperative], workers=1, store=db, kill_grace="5s")
    events = _recorder(sup)
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        handle.cancel()
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        wait_until(lambda: any(name == "cancelled" for name, _, _ in events), what="the cancelled event")
    assert [(name, status) for name, rid, status in events if rid == handle.id] == [
        ("submitted", RunStatus.QUEUED), ("started", RunStatus.RUNNING), ("cancelled", RunStatus.CANCELLED)]


def test_a_cancelled_queued_run_emits_cancelled(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    events = _recorder(sup)
    with serving(sup):
        handle = sup.submit(stamp, task(tmp_path), delay="5s")
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=5)
        assert sup.submit(stamp, task(tmp_path)).result(timeout=10) > 0  # a later loop turn has passed
    assert [name for name, rid, _ in events if rid == handle.id] == ["submitted", "cancelled"]


def test_an_unknown_event_name_raises_value_error(db: str):
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(ValueError, match="finished"):
        sup.on("finished", lambda record: None)
    with pytest.raises(TypeError):
        sup.on("succeeded", "not callable")  # type: ignore[arg-type]
    sup.close()


# == inspection ===================================================================================


def test_runs_run_and_stats_inspect_the_store(db: str, tmp_path: Path):
    sup = Supervisor([double, explode, with_step], workers=2, store=db)
    oks = sup.submit_many(double, [task(tmp_path, n=i) for i in range(5)])
    bads = sup.submit_many(explode, [task(tmp_path, n=i) for i in range(3)])
    stepped = sup.submit(with_step, task(tmp_path, n=9))
    sup.serve(until="drained")
    ok_ids = [h.id for h in oks]
    newest_first = sorted(ok_ids, reverse=True)
    assert [r.id for r in sup.runs(status="succeeded", job="double")] == newest_first
    assert [r.id for r in sup.runs(status=RunStatus.SUCCEEDED, job="double", limit=2, offset=1)] == newest_first[1:3]
    assert [r.id for r in sup.runs(status="failed")] == sorted((h.id for h in bads), reverse=True)
    assert sup.runs(status="running") == []
    assert len(sup.runs()) == 9 and len(sup.runs(limit=4)) == 4
    assert {r.job for r in sup.runs(job="explode")} == {"explode"}
    with Client(store=db) as client:
        assert [r.id for r in client.runs(status="succeeded", job="double", limit=2, offset=1)] == newest_first[1:3]
        assert [r.id for r in client.runs(job="explode")] == sorted((h.id for h in bads), reverse=True)
        assert client.run(stepped.id).steps == {"load": {"k": 9}}
    record = sup.run(stepped.id, attempts=True)
    assert record.result == 9
    assert record.steps == {"load": {"k": 9}}
    assert len(record.attempt_log) == 1
    attempt = record.attempt_log[0]
    assert attempt.number == 1 and attempt.outcome is Outcome.SUCCEEDED
    assert attempt.worker_pid and attempt.worker_pid != os.getpid()
    assert attempt.started_at <= attempt.finished_at
    failed = sup.run(bads[0].id)
    assert failed.attempt_log[0].error_type == "ValueError" and "cannot handle 0" in failed.attempt_log[0].message
    stats = sup.stats()
    assert stats["jobs"] == {"double": {"succeeded": 5}, "explode": {"failed": 3}, "with_step": {"succeeded": 1}}
    assert stats["queued"] == 0 and stats["live"] == 0
    sup.close()
