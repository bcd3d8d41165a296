"""Reading results as a person: short reprs of runs, attempts and handles, datetimes beside the
epoch floats, and the effective timeout stored with each run.

The summaries' rules are checked on records made here (a fixed `now`); the reprs and times of
real runs come from a real Supervisor on a real SQLite file, and a Client reading it.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from actors import Attempt, Client, Outcome, RunRecord, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)

SHORT = 120  # characters: the most a repr may take


class Page(BaseModel):
    text: str


@job(timeout="30s")
def thumbnail(page: Page) -> int:
    return len(page.text)


@job
def explode(page: Page) -> int:
    raise ValueError(page.text)


# -- the one-line summary, on records made here -------------------------------------------------

NOW = 1_800_000_000.0


def record(status: RunStatus, **fields) -> RunRecord:
    defaults = {"created_at": NOW - 50, "scheduled_at": NOW - 50, "max_attempts": 4}
    return RunRecord(42, "thumbnail", status, '{"text": "' + "x" * 5000 + '"}', **{**defaults, **fields})


@pytest.mark.parametrize(("fields", "line"), [
    ({"status": RunStatus.QUEUED}, "42 thumbnail queued attempts=0/4 queued 50s ago"),
    ({"status": RunStatus.QUEUED, "scheduled_at": NOW + 300}, "42 thumbnail queued attempts=0/4 due in 5m"),
    ({"status": RunStatus.RUNNING, "attempts": 1, "started_at": NOW - 2.5, "progress": 0.5},
     "42 thumbnail running attempts=1/4 50% started 2.5s ago"),
    ({"status": RunStatus.RETRYING, "attempts": 1, "scheduled_at": NOW + 2, "error_type": "ValueError"},
     "42 thumbnail retrying attempts=1/4 ValueError retry in 2.0s"),
    ({"status": RunStatus.SUCCEEDED, "attempts": 1, "finished_at": NOW - 3}, "42 thumbnail succeeded attempts=1/4 finished 3.0s ago"),
    ({"status": RunStatus.FAILED, "attempts": 4, "finished_at": NOW - 7200, "error_type": "KeyError"},
     "42 thumbnail failed attempts=4/4 KeyError finished 2h ago"),
    ({"status": RunStatus.TIMED_OUT, "attempts": 4, "finished_at": NOW - 3 * 86400, "error_type": "RunTimedOut"},
     "42 thumbnail timed_out attempts=4/4 finished 3d ago"),
    ({"status": RunStatus.CANCELLED, "finished_at": NOW - 42, "error_type": "RunCancelled"},
     "42 thumbnail cancelled attempts=0/4 finished 42s ago"),
    ({"status": RunStatus.CANCELLED, "finished_at": NOW - 1, "error_type": "DuplicateRun"},
     "42 thumbnail cancelled attempts=0/4 DuplicateRun finished 1.0s ago"),
    ({"status": RunStatus.QUEUED, "max_attempts": None}, "42 thumbnail queued attempts=0 queued 50s ago"),
], ids=["queued", "delayed", "running", "retrying", "succeeded", "failed", "timed-out", "cancelled", "duplicate",
        "by-name"])
def test_a_run_summary_says_status_attempts_and_age_in_one_line(fields, line):
    run = record(**fields)
    assert run.summary(now=NOW) == line
    assert len(repr(run)) < SHORT and repr(run).startswith("<Run 42 thumbnail ")


def test_long_names_are_clipped_so_the_repr_stays_short():
    run = RunRecord(7, "a.very.long.module.path.to_a_job_with_a_long_name_indeed", RunStatus.FAILED, "{}",
                    attempts=3, max_attempts=3, finished_at=time.time(),
                    error_type="some.package.errors.AnUnusuallyLongExceptionClassName")
    assert len(repr(run)) < SHORT, repr(run)
    assert "failed attempts=3/3" in repr(run) and "ExceptionClassName finished" in repr(run)  # the class name kept


def test_an_attempt_repr_is_short_and_leaves_the_traceback_out():
    attempt = Attempt(2, NOW - 1.25, NOW, Outcome.FAILED, "ValueError", "bad", "Traceback ...\n" * 200, 4242)
    assert repr(attempt) == "<Attempt 2 failed ValueError 1.2s pid=4242>"
    assert repr(Attempt(3, NOW)) == "<Attempt 3 running>"
    assert attempt.started == datetime.fromtimestamp(NOW - 1.25, UTC)
    assert attempt.finished == datetime.fromtimestamp(NOW, UTC) and Attempt(3, NOW).finished is None


# -- real runs -----------------------------------------------------------------------------------


def assert_utc(moment: datetime | None, epoch: float | None) -> None:
    assert moment is not None and epoch is not None
    assert moment.tzinfo is UTC and moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert moment.timestamp() == pytest.approx(epoch, abs=1e-6)


def test_reprs_of_real_runs_are_short_and_say_status_job_and_attempts(db: str):
    with Supervisor([thumbnail, explode], workers=1, store=db) as sup:
        ok = sup.submit(thumbnail, {"text": "t" * 20_000})  # a big input stays out of the repr
        bad = sup.submit(explode, {"text": "no"})
        assert re.fullmatch(rf"<Handle {ok.id} thumbnail queued attempts=0/1 queued \d+\.\ds ago>", repr(ok)), repr(ok)
        sup.serve(until="drained")
        later = sup.submit(thumbnail, {"text": "later"}, delay="1h")
        ran, failed, waiting = sup.run(ok.id), sup.run(bad.id), sup.run(later.id)
        handles = {h: repr(h) for h in (ok, bad, later)}
    assert re.fullmatch(rf"<Run {ok.id} thumbnail succeeded attempts=1/1 finished \d+\.\ds ago>", repr(ran)), repr(ran)
    assert re.fullmatch(rf"<Run {bad.id} explode failed attempts=1/1 ValueError finished \d+\.\ds ago>",
                        repr(failed)), repr(failed)
    assert re.fullmatch(rf"<Run {later.id} thumbnail queued attempts=0/1 due in (59|60)m>", repr(waiting)), repr(waiting)
    assert re.fullmatch(r"<Attempt 1 succeeded \d+\.\ds( pid=\d+)?>", repr(ran.attempt_log[0])), ran.attempt_log
    assert handles[ok].startswith(f"<Handle {ok.id} thumbnail succeeded attempts=1/1 finished ")
    assert handles[bad].startswith(f"<Handle {bad.id} explode failed attempts=1/1 ValueError")
    for text in [*handles.values(), repr(ran), repr(failed), repr(waiting), repr(ran.attempt_log)]:
        assert len(text) < SHORT, text
    with Client(store=db) as client:  # knows no jobs: the name comes from the store, not "?"
        seen = repr(client.handle(bad.id))
        assert seen.startswith(f"<Handle {bad.id} explode failed attempts=1/1 ValueError") and "?" not in seen
    assert "(store unreadable" in repr(ok)  # its supervisor is closed: said, not raised


def test_a_run_s_times_read_as_aware_utc_datetimes_matching_the_floats(db: str):
    with Supervisor([thumbnail], workers=1, store=db) as sup:
        handle = sup.submit(thumbnail, {"text": "abc"})
        queued = sup.run(handle.id)
        assert queued.started is None and queued.finished is None
        sup.serve(until="drained")
        done = sup.run(handle.id)
    assert_utc(done.created, done.created_at)
    assert_utc(done.scheduled, done.scheduled_at)
    assert_utc(done.started, done.started_at)
    assert_utc(done.finished, done.finished_at)
    attempt = done.attempt_log[0]
    assert_utc(attempt.started, attempt.started_at)
    assert_utc(attempt.finished, attempt.finished_at)
    assert done.created <= done.started <= done.finished <= datetime.now(UTC)  # type: ignore[operator]


def test_the_stored_timeout_is_the_job_s_unless_the_submit_gave_one(db: str):
    with Supervisor([thumbnail, explode], workers=1, store=db) as sup:
        assert sup.run(sup.submit(thumbnail, {"text": "a"}).id).timeout == 30.0
        assert sup.run(sup.submit(thumbnail, {"text": "b"}, timeout="5s").id).timeout == 5.0
        assert sup.run(sup.submit(explode, {"text": "c"}).id).timeout is None  # a job without one
    with Client(store=db) as client:
        assert client.run(client.submit(thumbnail, {"text": "d"}).id).timeout == 30.0
        # by name, the job unknown here: the serving supervisor's job decides when it runs
        assert client.run(client.submit("thumbnail", {"text": "e"}).id).timeout is None


def test_a_step_record_reads_each_kind_of_durable_record():
    from actors import StepRecord

    assert StepRecord.of("resize", 3) == StepRecord("step", "resize", 3)
    assert StepRecord.of("resize", 3, {"failures": 2, "error": "OSError: x"}) == StepRecord(
        "step", "resize", 3, 2, "OSError: x")
    assert StepRecord.of("sleep:nap", {"until": 1.0}).kind == "sleep"
    assert StepRecord.of("sleep:nap", {"until": 1.0}).name == "nap"
    assert StepRecord.of("run:thumb#3", {"run": 9})[:2] == ("child", "thumb")
    assert StepRecord.of("wait#4", {"until": None})[:2] == ("wait", "")
    assert StepRecord.of("event:approved#5", {})[:2] == ("event", "approved")
    assert StepRecord.of("wait#x", 1).kind == "step"  # a step the user named so


def test_waiting_for_reads_each_kind_of_wait():
    base = dict(id=1, job="j", input="{}", status=RunStatus.WAITING)
    assert RunRecord(**base, wait={"until": 0.0}).waiting_for == "sleeping until 1970-01-01T00:00:00Z"
    assert RunRecord(**base, wait={"runs": [4], "until": None}).waiting_for == "waiting for run 4"
    assert RunRecord(**base, wait={"event": "go", "match": {}, "until": None}).waiting_for == "waiting for event 'go'"
    assert RunRecord(**{**base, "status": RunStatus.QUEUED}, wait={"until": 0.0}).waiting_for is None
    assert RunRecord(**base, steps={"run:a#0": {"run": 7}, "x": 1, "run:b#2": {"run": 8}}).children == [7, 8]
