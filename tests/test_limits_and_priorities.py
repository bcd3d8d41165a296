"""Which run goes next: priorities (FIFO within one priority), a concurrency limit that does not
hold up other jobs, and a rate limit that spaces out starts.

Real worker processes on a real SQLite store. Shared models and helpers: semantics_jobs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from semantics_jobs import Task, floats, lines, note, task

from actors import Priority, Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- jobs ----------------------------------------------------------------------------------------


@job
def append_tag(t: Task) -> None:
    note(t.dir, "order.txt", t.tag)


@job(priority=Priority.HIGH)
def urgent_tag(t: Task) -> None:
    note(t.dir, "order.txt", t.tag)


@job(concurrency=1)
def solo(t: Task) -> None:
    start = time.time()
    time.sleep(0.2)
    note(t.dir, "solo.txt", f"{start!r} {time.time()!r}")


@job
def free(t: Task) -> None:
    note(t.dir, "free.txt", f"{time.time()!r}")


@job(rate="5/s")
def rated(t: Task) -> None:
    note(t.dir, "rated.txt", f"{time.time()!r}")


# == priority ===================================================================================


def test_priorities_order_runs_and_fifo_holds_within_one_priority(db: str, tmp_path: Path):
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.CRITICAL
    sup = Supervisor([append_tag, urgent_tag], workers=1, store=db)
    plan = [("a0", Priority.LOW), ("a1", None), ("a2", Priority.HIGH), ("a3", Priority.CRITICAL),
            ("a4", Priority.NORMAL), ("a5", Priority.LOW), ("a6", Priority.HIGH), ("a7", 7), ("a8", None)]
    handles = {}
    for tag, prio in plan:
        handles[tag] = sup.submit(append_tag, task(tmp_path, tag), priority=prio)
    handles["u0"] = sup.submit(urgent_tag, task(tmp_path, "u0"))  # the job's default: HIGH
    handles["u1"] = sup.submit(urgent_tag, task(tmp_path, "u1"), priority=Priority.LOW)  # per submit wins
    assert handles["u0"].record().priority == Priority.HIGH
    assert handles["u1"].record().priority == Priority.LOW
    assert handles["a1"].record().priority == Priority.NORMAL
    sup.serve(until="drained")
    expected = ["a3", "a2", "a6", "u0", "a7", "a1", "a4", "a8", "a0", "a5", "u1"]
    assert lines(tmp_path / "order.txt") == expected
    sup.close()


def test_fifo_within_one_priority_over_many_runs(db: str, tmp_path: Path):
    sup = Supervisor([append_tag], workers=1, store=db)
    for i in range(30):
        sup.submit(append_tag, task(tmp_path, f"r{i:02d}"))
    sup.submit_many(append_tag, [task(tmp_path, f"s{i:02d}") for i in range(30)])
    sup.serve(until="drained")
    assert lines(tmp_path / "order.txt") == [f"r{i:02d}" for i in range(30)] + [f"s{i:02d}" for i in range(30)]
    sup.close()


# == concurrency and rate limits ==================================================================


def test_concurrency_one_never_overlaps_while_other_jobs_flow_past_its_backlog(db: str, tmp_path: Path):
    sup = Supervisor([solo, free], workers=2, store=db)
    sup.submit_many(solo, [task(tmp_path, f"s{i}") for i in range(4)])
    sup.submit_many(free, [task(tmp_path, f"f{i}") for i in range(8)])
    sup.serve(until="drained")
    spans = sorted(tuple(map(float, line.split())) for line in lines(tmp_path / "solo.txt"))
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.002, f"runs of a concurrency=1 job overlapped: {spans}"
    frees = floats(tmp_path / "free.txt")
    assert len(frees) == 8
    assert max(frees) < spans[-1][0], "the other job's runs waited behind the limited job's backlog"
    assert sup.stats()["jobs"] == {"solo": {"succeeded": 4}, "free": {"succeeded": 8}}
    sup.close()


def test_a_rate_limit_spaces_out_starts(db: str, tmp_path: Path):
    sup = Supervisor([rated], workers=2, store=db)
    handles = sup.submit_many(rated, [task(tmp_path, str(i)) for i in range(10)])
    sup.serve(until="drained")
    assert len(lines(tmp_path / "rated.txt")) == 10
    # the limiter controls when runs are handed out (an attempt starts when it is claimed); inside
    # the workers the first starts also wait for the workers to boot
    starts = sorted(sup.run(h.id).attempt_log[0].started_at for h in handles)
    # at most 5 starts in any window of a second (a little under, for the two clocks' skew)
    busiest = max(sum(1 for u in starts if t <= u < t + 0.95) for t in starts)
    assert busiest == 5, f"{busiest} of 10 runs at 5/s started within one second: {starts}"
    assert 0.95 <= starts[-1] - starts[0] < 6
    sup.close()
