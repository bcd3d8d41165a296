"""When a run is due: `delay` and `at`, serving until delayed runs are drained, a delayed run that
survives a restart, and cron jobs (catch-up of missed ticks, never twice, malformed expressions).

Real worker processes on a real SQLite store. Shared models, helpers and `stamp`: semantics_jobs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_until
from pydantic import BaseModel
from semantics_jobs import EARLY, lines, serving, stamp, task

from actors import Client, Context, RunStatus, SQLiteStore, Supervisor, job

pytestmark = pytest.mark.timeout(60)


# -- models and jobs -----------------------------------------------------------------------------


class Tick(BaseModel):
    label: str = "tick"


class NoDefaults(BaseModel):
    label: str


@job(cron="* * * * *")
def every_minute(tick: Tick, ctx: Context) -> str:
    return f"{tick.label} {ctx.run_id}"


# == delayed runs =================================================================================


def test_delay_and_at_hold_a_run_until_it_is_due(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    with serving(sup):
        submitted = time.time()
        delayed = sup.submit(stamp, task(tmp_path, "delayed"), delay="300ms")
        at = datetime.now(UTC) + timedelta(milliseconds=500)
        timed = sup.submit(stamp, task(tmp_path, "at"), at=at)
        now = sup.submit(stamp, task(tmp_path, "now"))
        assert delayed.record().scheduled_at == pytest.approx(submitted + 0.3, abs=0.05)
        assert timed.record().scheduled_at == pytest.approx(at.timestamp(), abs=0.001)
        assert now.result(timeout=10) < delayed.result(timeout=10)  # not held (no wall-clock bound: 2 busy cores)
        assert delayed.result(timeout=10) >= submitted + 0.3 - EARLY
        assert delayed.result() >= delayed.record().scheduled_at - EARLY
        assert timed.result(timeout=10) >= at.timestamp() - EARLY
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["now", "delayed", "at"]
    with pytest.raises(ValueError):
        sup.submit(stamp, task(tmp_path), delay="1s", at=at)
    with pytest.raises(ValueError, match="soon"):
        sup.submit(stamp, task(tmp_path), delay="soon")


def test_serve_until_drained_waits_for_delayed_runs(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    handle = sup.submit(stamp, task(tmp_path, "delayed"), delay="400ms")
    due = handle.record().scheduled_at
    sup.serve(until="drained")
    assert handle.status() is RunStatus.SUCCEEDED
    assert handle.result() >= due - EARLY
    sup.close()


def test_due_runs_of_one_priority_go_in_order_of_their_due_time(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    delayed = sup.submit(stamp, task(tmp_path, "delayed"), delay="200ms")  # lower id, due later
    sup.submit(stamp, task(tmp_path, "plain"))
    wait_until(lambda: time.time() > delayed.record().scheduled_at + 0.05, what="both runs to be due")
    sup.serve(until="drained")
    sup.close()
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["plain", "delayed"]


def test_a_delayed_run_is_durable_across_a_restart_and_not_run_before_its_time(db: str, tmp_path: Path):
    first = Supervisor([stamp], workers=1, store=db)
    with serving(first):
        warmup = first.submit(stamp, task(tmp_path, "warmup"))
        assert warmup.result(timeout=10) > 0
        delayed = first.submit(stamp, task(tmp_path, "delayed"), delay="2s")
        due = delayed.record().scheduled_at
    # the first supervisor is stopped: the run waits in the store, not run yet
    with Client(store=db) as client:
        record = client.run(delayed.id)
        assert record.status is RunStatus.QUEUED and record.scheduled_at == pytest.approx(due)
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["warmup"]
    assert time.time() < due, "the restart came after the due time: the test proves less than it should"
    second = Supervisor([stamp], workers=1, store=db)
    second.serve(until="drained")
    record = second.run(delayed.id)
    assert record.status is RunStatus.SUCCEEDED
    assert second.handle(delayed.id).result() >= due - EARLY
    assert record.attempt_log[0].started_at >= due - EARLY
    second.close()


# == cron ========================================================================================


def _minute(t: float) -> float:
    return t // 60 * 60


def test_cron_catch_up_submits_one_run_for_missed_ticks_and_never_twice(db: str):
    if time.time() % 60 > 50:  # keep the whole test inside one cron minute
        wait_until(lambda: time.time() % 60 < 50, timeout=12, interval=0.1, what="a fresh minute")
    store = SQLiteStore(db)
    store.set_cron("every_minute", time.time() - 600)  # ten missed ticks
    store.close()
    before = time.time()
    sup = Supervisor([every_minute], workers=1, store=db)
    sup.serve(until="drained")
    after = time.time()
    runs = sup.runs(job="every_minute")
    assert len(runs) == 1, [(r.id, r.key) for r in runs]
    tick = _minute(before)
    assert _minute(after) == tick
    assert runs[0].key == f"cron:{tick:.0f}"
    assert runs[0].status is RunStatus.SUCCEEDED
    assert runs[0].result == f"tick {runs[0].id}"
    assert sup.store.cron_last("every_minute") == pytest.approx(tick)
    sup.close()

    # a second start in the same minute submits nothing more
    again = Supervisor([every_minute], workers=1, store=db)
    again.serve(until="drained")
    assert [r.id for r in again.runs(job="every_minute")] == [runs[0].id]
    again.close()

    # even told that the tick is still due, the key "cron:<tick>" keeps it from running twice
    store = SQLiteStore(db)
    store.set_cron("every_minute", time.time() - 600)
    store.close()
    third = Supervisor([every_minute], workers=1, store=db)
    third.serve(until="drained")
    assert [r.id for r in third.runs(job="every_minute")] == [runs[0].id]
    third.close()
    assert _minute(time.time()) == tick, "the minute changed during the test"


def test_the_first_serve_of_a_cron_job_starts_from_now_without_a_run(db: str):
    sup = Supervisor([every_minute], workers=1, store=db)
    before = time.time()
    sup.serve(until="drained")
    assert sup.runs(job="every_minute") == [] or _minute(time.time()) != _minute(before)
    last = sup.store.cron_last("every_minute")
    assert last is not None and before - 1 <= last <= time.time()
    sup.close()


def test_a_malformed_cron_expression_raises_value_error_naming_it():
    def fn(tick: Tick) -> None: ...

    for bad in ("not a cron", "61 * * * *", "* * *"):
        with pytest.raises(ValueError, match="cron") as info:
            job(cron=bad)(fn)
        assert bad in str(info.value)


def test_a_cron_job_whose_model_lacks_defaults_raises_value_error():
    def fn(value: NoDefaults) -> None: ...

    with pytest.raises(ValueError, match="default"):
        job(cron="* * * * *")(fn)
