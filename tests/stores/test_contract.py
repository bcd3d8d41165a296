"""The Store contract (actors/stores/base.py), one suite run against every store.

Each test names a behaviour the supervisor and clients rely on; the `store` fixture gives a
MemoryStore, an SQLiteStore (a fresh file) and a PostgresStore (a fresh schema on the server
named by $ACTORS_TEST_POSTGRES; see tests/conftest.py). A few SQLite-only properties (another
connection's commits, the file mode, reopening) follow at the end.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import MemoryStore, SQLiteStore, Store
from actors.run import NewRun, Outcome, RunStatus
from actors.stores import Changes, Finish, open_store
from actors.stores.base import SCHEMA_VERSION

NOW = 1_000.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store
    if request.param == "postgres":  # a schema of this test's own on $ACTORS_TEST_POSTGRES
        from actors.stores.postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_dsn"), schema=request.getfixturevalue("postgres_schema"))
    else:
        made = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "runs.db")
    yield made
    made.close()


def new(job: str = "thumbnail", input: str = '{"x": 1}', **options) -> NewRun:
    return NewRun(job, input, **options)


def ids(stored: list[tuple[int, bool]]) -> list[int]:
    assert all(created for _, created in stored)
    return [run_id for run_id, _ in stored]


def insert(store: Store, count: int = 1, **options) -> list[int]:
    return ids(store.insert([new(input=f'{{"x": {i}}}', **options) for i in range(count)], NOW))


def claim(store: Store, run_id: int, attempt: int = 1, now: float = NOW + 1) -> set[int]:
    return store.commit(Changes(claims=[(run_id, attempt)]), now)


def finish(run_id: int, attempt: int = 1, status: str = "succeeded", outcome: str | None = None, **fields) -> Finish:
    defaults = dict(started_at=NOW + 1, finished_at=NOW + 2)
    defaults.update(fields)
    return Finish(run_id, attempt, status, outcome or status, **defaults)


def snapshot(store: Store, run_id: int):
    record = store.get(run_id, attempts=True)
    assert record is not None
    return record


def test_a_store_satisfies_the_protocol(store: Store):
    assert isinstance(store, Store)


# -- insert ---------------------------------------------------------------------------------


def test_insert_returns_increasing_ids_in_order_and_stores_queued_runs(store: Store):
    first = ids(store.insert([new(input='{"x": 1}'), new(job="other", input='{"x": 2}', priority=5, max_attempts=3,
                                                         timeout=2.5, version=3)], NOW))
    second = insert(store, 2)
    assert len(first) == 2 and len(second) == 2
    assert first + second == sorted(first + second) and len(set(first + second)) == 4
    a, b = store.get(first[0]), store.get(first[1])
    assert (a.job, a.status, a.input, a.attempts, a.priority) == ("thumbnail", RunStatus.QUEUED, '{"x": 1}', 0, 0)
    assert (a.created_at, a.scheduled_at, a.started_at, a.finished_at, a.output) == (NOW, NOW, None, None, None)
    assert (b.job, b.priority, b.max_attempts, b.timeout, b.version) == ("other", 5, 3, 2.5, 3)
    assert a.version == 1


def test_insert_keeps_a_future_schedule(store: Store):
    (run_id,) = ids(store.insert([new(scheduled_at=NOW + 60)], NOW))
    assert store.get(run_id).scheduled_at == NOW + 60


def test_get_of_an_unknown_run_is_none(store: Store):
    assert store.get(12345) is None
    assert store.get(12345, attempts=True) is None


# -- idempotency keys and unique keys ----------------------------------------------------------


def test_a_key_makes_insert_idempotent_for_the_stores_lifetime(store: Store):
    (first, created), (same, again) = store.insert([new(key="k1"), new(key="k1", input='{"x": 9}')], NOW)
    assert (created, again, same) == (True, False, first)
    claim(store, first, 1)
    store.commit(Changes(finishes=[finish(first, 1, output="1")]), NOW + 2)
    assert store.insert([new(key="k1")], NOW + 3) == [(first, False)]  # finished runs still hold their key
    (other, created), = store.insert([new(job="other", key="k1")], NOW + 3)  # keys are per job
    assert created and other != first
    assert store.get(first).key == "k1" and store.get(first).input == '{"x": 1}'
    assert len(store.runs(limit=100)) == 2


def test_a_unique_key_allows_one_live_run_per_key(store: Store):
    (first, _), = store.insert([new(unique_key="u")], NOW)
    assert store.insert([new(unique_key="u")], NOW) == [(first, False)]
    (other_key, created), = store.insert([new(unique_key="v")], NOW)
    assert created and other_key != first
    claim(store, first, 1)
    assert store.insert([new(unique_key="u")], NOW) == [(first, False)]  # running is live
    store.commit(Changes(finishes=[finish(first, 1, output="1")]), NOW + 2)
    (later, created), = store.insert([new(unique_key="u")], NOW + 3)  # no live run with the key any more
    assert created and later not in (first, other_key)


# -- reruns: a new run takes over the key of one that ended without success --------------------

GAVE_UP = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})  # what rerun="failed" asks


def end(store: Store, run_id: int, status: str) -> None:
    """End a keyed run in `status`: failed or timed_out after one attempt (with a step), cancelled
    before it started, succeeded with output "1"."""
    if status == "cancelled":
        assert store.cancel_queued(run_id, NOW)
        return
    claim(store, run_id, 1)
    store.commit(Changes(steps=[(run_id, "decode", '"pixels"', 0)]), NOW + 1)
    fields = {"output": "1"} if status == "succeeded" else {"error_type": "OSError", "message": "missing"}
    store.commit(Changes(finishes=[finish(run_id, 1, status, **fields)]), NOW + 2)


@pytest.mark.parametrize("status", ["failed", "timed_out", "cancelled"])
def test_a_rerun_of_an_ended_run_is_a_new_run_that_takes_its_key_and_leaves_its_history(store: Store, status: str):
    (first, _), = store.insert([new(key="k1")], NOW)
    end(store, first, status)
    before = snapshot(store, first)
    assert store.insert([new(key="k1")], NOW + 3) == [(first, False)]  # not asked: the ended run comes back
    (second, created), = store.insert([new(key="k1", input='{"x": 2}', rerun=GAVE_UP)], NOW + 3)
    assert created and second > first
    rerun = snapshot(store, second)
    assert (rerun.status, rerun.key, rerun.rerun_of, rerun.input, rerun.attempts) == (
        RunStatus.QUEUED, "k1", first, '{"x": 2}', 0)
    assert (rerun.attempt_log, rerun.steps, rerun.error_type, rerun.finished_at) == ([], {}, None, None)
    old = snapshot(store, first)
    assert (old.key, old.rerun_of) == (None, None)  # the key moved; everything else is as it was
    old.key = before.key
    assert old == before
    assert [r.id for r in store.load_ready()] == [second]  # a new queued run, for the supervisor to pick up
    assert store.insert([new(key="k1")], NOW + 4) == [(second, False)]  # the key names the new run now
    assert store.insert([new(key="k1", rerun=GAVE_UP)], NOW + 4) == [(second, False)]  # live: no rerun


def test_reruns_chain_back_through_the_runs_a_key_named(store: Store):
    (first, _), = store.insert([new(key="k1")], NOW)
    end(store, first, "failed")
    (second, _), = store.insert([new(key="k1", rerun=GAVE_UP)], NOW + 3)
    end(store, second, "timed_out")
    (third, created), = store.insert([new(key="k1", rerun=GAVE_UP)], NOW + 4)
    assert created
    assert [store.get(i).rerun_of for i in (third, second, first)] == [second, first, None]
    assert [store.get(i).key for i in (first, second, third)] == [None, None, "k1"]
    end(store, third, "succeeded")
    assert store.insert([new(key="k1", rerun=GAVE_UP)], NOW + 5) == [(third, False)]  # succeeded: never rerun
    assert len(store.runs(limit=100)) == 3


@pytest.mark.parametrize("state", ["queued", "running", "retrying", "succeeded"])
def test_a_rerun_never_replaces_a_live_or_succeeded_run(store: Store, state: str):
    (run_id, _), = store.insert([new(key="k1", max_attempts=3)], NOW)
    if state in ("running", "retrying"):
        claim(store, run_id, 1)
    if state == "retrying":
        store.commit(Changes(finishes=[finish(run_id, 1, "retrying", "failed", retry_at=NOW + 5)]), NOW + 2)
    if state == "succeeded":
        end(store, run_id, "succeeded")
    before = snapshot(store, run_id)
    # live statuses asked for are ignored: only an ended run is ever rerun
    everything_but_success = frozenset(RunStatus) - {RunStatus.SUCCEEDED}
    assert store.insert([new(key="k1", rerun=everything_but_success)], NOW + 3) == [(run_id, False)]
    assert snapshot(store, run_id) == before
    assert len(store.runs(limit=100)) == 1


def test_a_rerun_asked_twice_in_one_batch_makes_one_new_run(store: Store):
    (first, _), (other, _) = store.insert([new(key="k1"), new(key="k2")], NOW)
    end(store, first, "failed")
    stored = store.insert([new(key="k1", rerun=GAVE_UP), new(key="k1", rerun=GAVE_UP), new(key="k2", rerun=GAVE_UP),
                           new(key="k3", rerun=GAVE_UP)], NOW + 3)
    (second, created), again, kept, (fresh, made) = stored
    assert created and again == (second, False) and kept == (other, False) and made
    assert store.get(second).rerun_of == first and store.get(fresh).rerun_of is None
    assert store.insert([new(job="other", key="k1", rerun=GAVE_UP)], NOW + 3)[0][1]  # keys are per job


def test_a_rerun_whose_unique_key_is_live_gives_the_live_run_and_leaves_the_key(store: Store):
    (first, _), = store.insert([new(key="k1", unique_key="u")], NOW)
    end(store, first, "failed")
    (live, _), = store.insert([new(unique_key="u")], NOW + 3)
    assert store.insert([new(key="k1", unique_key="u", rerun=GAVE_UP)], NOW + 3) == [(live, False)]
    assert store.get(first).key == "k1"  # nothing was rerun, so the key stays where it was
    store.cancel_queued(live, NOW + 4)
    (second, created), = store.insert([new(key="k1", unique_key="u", rerun=GAVE_UP)], NOW + 4)
    assert created and store.get(second).rerun_of == first


# -- claims ---------------------------------------------------------------------------------


def test_a_claim_makes_a_run_running_and_counts_the_attempt(store: Store):
    (run_id,) = insert(store)
    assert claim(store, run_id, 1, now=NOW + 1) == set()
    record = snapshot(store, run_id)
    assert (record.status, record.attempts, record.started_at) == (RunStatus.RUNNING, 1, NOW + 1)
    assert record.attempt_log == []


def test_a_claim_of_a_cancelled_or_unknown_run_is_lost_and_changes_nothing(store: Store):
    run_id, other = insert(store, 2)
    assert store.cancel_queued(run_id, NOW)
    lost = store.commit(Changes(claims=[(run_id, 1), (other, 1), (999, 1)]), NOW + 1)
    assert lost == {run_id, 999}
    assert store.get(run_id).status is RunStatus.CANCELLED
    assert store.get(run_id).attempts == 0
    assert store.get(other).status is RunStatus.RUNNING


def test_a_claim_of_a_running_run_is_lost(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    assert claim(store, run_id, 2) == {run_id}
    assert snapshot(store, run_id).attempts == 1


def test_a_retrying_run_can_be_claimed_again(store: Store):
    (run_id,) = insert(store, max_attempts=3)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, "retrying", "failed", retry_at=NOW + 5)]), NOW + 2)
    assert claim(store, run_id, 2, now=NOW + 6) == set()
    assert (store.get(run_id).status, store.get(run_id).attempts) == (RunStatus.RUNNING, 2)


# -- finishes -------------------------------------------------------------------------------


def test_a_success_stores_the_output_and_the_attempt(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, output="42", worker_pid=77, peak_rss=1024)]), NOW + 2)
    record = snapshot(store, run_id)
    assert (record.status, record.output, record.result, record.finished_at) == (RunStatus.SUCCEEDED, "42", 42, NOW + 2)
    assert record.error_type is None
    (attempt,) = record.attempt_log
    assert (attempt.number, attempt.outcome, attempt.started_at, attempt.finished_at) == (1, Outcome.SUCCEEDED,
                                                                                        NOW + 1, NOW + 2)
    assert (attempt.worker_pid, attempt.peak_rss) == (77, 1024)


def test_a_failure_stores_error_type_message_and_traceback_on_run_and_attempt(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, "failed", error_type="ValueError", message="bad",
                                          traceback="Traceback: ...", exit_code=3, signal=None)]), NOW + 2)
    record = snapshot(store, run_id)
    assert (record.status, record.error_type, record.message, record.traceback) == (
        RunStatus.FAILED, "ValueError", "bad", "Traceback: ...")
    (attempt,) = record.attempt_log
    assert (attempt.outcome, attempt.error_type, attempt.message, attempt.traceback, attempt.exit_code) == (
        Outcome.FAILED, "ValueError", "bad", "Traceback: ...", 3)


@pytest.mark.parametrize(("status", "outcome"), [("timed_out", "timed_out"), ("failed", "crashed"),
                                                 ("failed", "memory_exceeded"), ("cancelled", "cancelled")])
def test_every_terminal_outcome_is_stored(store: Store, status: str, outcome: str):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, status, outcome, signal=9)]), NOW + 2)
    record = snapshot(store, run_id)
    assert record.status == status
    assert record.attempt_log[0].outcome == outcome
    assert record.attempt_log[0].signal == 9


def test_a_retrying_finish_schedules_the_run_and_keeps_it_ready(store: Store):
    (run_id,) = insert(store, max_attempts=3)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, "retrying", "failed", error_type="E", retry_at=NOW + 5)]),
                 NOW + 2)
    record = snapshot(store, run_id)
    assert (record.status, record.scheduled_at, record.finished_at) == (RunStatus.RETRYING, NOW + 5, None)
    assert [a.outcome for a in record.attempt_log] == [Outcome.FAILED]
    (ready,) = store.load_ready()
    assert (ready.id, ready.status, ready.attempts, ready.scheduled_at) == (run_id, "retrying", 1, NOW + 5)


def test_an_uncharged_finish_counts_a_free_attempt(store: Store):
    (run_id,) = insert(store, max_attempts=2)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, "queued", "interrupted", retry_at=NOW + 2, charged=False)]),
                 NOW + 2)
    (ready,) = store.load_ready()
    assert (ready.status, ready.attempts, ready.free_attempts) == ("queued", 1, 1)
    assert snapshot(store, run_id).attempt_log[0].outcome is Outcome.INTERRUPTED


# -- conditional finishing writes: a finish that lost its race changes nothing -------------------

def stale(run_id: int, attempt: int, kind: str) -> Finish:
    """A finishing write that lost its race: a success or a failure, a little later."""
    if kind == "success":
        return finish(run_id, attempt, output="1", finished_at=NOW + 9, worker_pid=99, peak_rss=99)
    return finish(run_id, attempt, "failed", error_type="Late", message="late", finished_at=NOW + 9, worker_pid=99)


@pytest.mark.parametrize("kind", ["success", "failure"])
def test_a_finish_for_a_wrong_attempt_changes_nothing(store: Store, kind: str):
    (run_id,) = insert(store, max_attempts=3)
    claim(store, run_id, 1)
    before = snapshot(store, run_id)
    store.commit(Changes(finishes=[stale(run_id, 2, kind), stale(run_id, 0, kind)]), NOW + 9)
    assert snapshot(store, run_id) == before


@pytest.mark.parametrize("kind", ["success", "failure"])
def test_a_late_result_after_a_timeout_changes_nothing(store: Store, kind: str):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, "timed_out", error_type="RunTimedOut", message="killed")]),
                 NOW + 2)
    before = snapshot(store, run_id)
    store.commit(Changes(finishes=[stale(run_id, 1, kind)]), NOW + 9)
    after = snapshot(store, run_id)
    assert after == before
    assert after.attempt_log[0].outcome is Outcome.TIMED_OUT


@pytest.mark.parametrize("kind", ["success", "failure"])
@pytest.mark.parametrize("state", ["queued", "cancelled", "failed", "retrying", "succeeded"])
def test_a_finish_for_a_run_that_is_not_running_changes_nothing(store: Store, state: str, kind: str):
    (run_id,) = insert(store, max_attempts=3)
    if state == "cancelled":
        store.cancel_queued(run_id, NOW)
    elif state == "failed":
        store.commit(Changes(ends=[(run_id, "failed", "JobNotFound", "no such job")]), NOW)
    elif state == "retrying":
        claim(store, run_id, 1)
        store.commit(Changes(finishes=[finish(run_id, 1, "retrying", "failed", retry_at=NOW + 5)]), NOW + 2)
    elif state == "succeeded":
        claim(store, run_id, 1)
        store.commit(Changes(finishes=[finish(run_id, 1, output="0")]), NOW + 2)
    before = snapshot(store, run_id)
    store.commit(Changes(finishes=[stale(run_id, before.attempts or 1, kind)]), NOW + 9)
    assert snapshot(store, run_id) == before


def test_a_finish_that_loses_does_not_stop_the_others_in_its_batch(store: Store):
    run_id, other = insert(store, 2)
    claim(store, other, 1)
    store.commit(Changes(finishes=[finish(run_id, 1, output="1"), finish(other, 1, output="2")]), NOW + 2)
    assert store.get(run_id).status is RunStatus.QUEUED
    assert store.get(other).status is RunStatus.SUCCEEDED


# -- unclaims, requeues, cancels, ends --------------------------------------------------------


def test_an_unclaim_puts_a_never_started_run_back_as_if_never_claimed(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(unclaims=[(run_id, 1)]), NOW + 2)
    record = snapshot(store, run_id)
    assert (record.status, record.attempts, record.attempt_log) == (RunStatus.QUEUED, 0, [])


def test_an_unclaim_for_a_wrong_attempt_or_a_finished_run_changes_nothing(store: Store):
    run_id, done = insert(store, 2)
    claim(store, run_id, 1)
    claim(store, done, 1)
    store.commit(Changes(finishes=[finish(done, 1, output="1")]), NOW + 2)
    store.commit(Changes(unclaims=[(run_id, 2), (done, 1)]), NOW + 3)
    assert (store.get(run_id).status, store.get(run_id).attempts) == (RunStatus.RUNNING, 1)
    assert (store.get(done).status, store.get(done).attempts) == (RunStatus.SUCCEEDED, 1)


def test_a_requeue_moves_only_retrying_runs_to_queued(store: Store):
    retrying, running, queued = insert(store, 3, max_attempts=3)
    claim(store, retrying, 1)
    claim(store, running, 1)
    store.commit(Changes(finishes=[finish(retrying, 1, "retrying", "failed", retry_at=NOW + 5)]), NOW + 2)
    store.commit(Changes(requeues=[retrying, running, queued]), NOW + 6)
    assert [store.get(i).status for i in (retrying, running, queued)] == [
        RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.QUEUED]
    assert store.get(retrying).attempts == 1


def test_cancel_queued_ends_queued_and_retrying_runs_only(store: Store):
    queued, retrying, running, succeeded = insert(store, 4, max_attempts=3)
    for run_id in (retrying, running, succeeded):
        claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(retrying, 1, "retrying", "failed", retry_at=NOW + 5),
                                   finish(succeeded, 1, output="1")]), NOW + 2)
    assert [store.cancel_queued(i, NOW + 3) for i in (queued, retrying, running, succeeded)] == [
        True, True, False, False]
    for run_id in (queued, retrying):
        record = store.get(run_id)
        assert (record.status, record.error_type, record.finished_at) == (RunStatus.CANCELLED, "RunCancelled", NOW + 3)
    assert store.get(running).status is RunStatus.RUNNING
    assert store.get(succeeded).status is RunStatus.SUCCEEDED


def test_cancel_queued_says_whether_the_run_was_still_waiting(store: Store):
    run_id, running = insert(store, 2)
    claim(store, running, 1)
    assert store.cancel_queued(run_id, NOW + 1) is True
    assert store.cancel_queued(run_id, NOW + 2) is False
    assert store.cancel_queued(running, NOW + 2) is False
    assert store.cancel_queued(999, NOW + 2) is False
    assert store.get(run_id).finished_at == NOW + 1
    assert store.get(running).status is RunStatus.RUNNING


def test_an_end_finishes_a_waiting_run_with_its_reason_and_spares_running_ones(store: Store):
    queued, retrying, running = insert(store, 3, max_attempts=2)
    claim(store, retrying, 1)
    claim(store, running, 1)
    store.commit(Changes(finishes=[finish(retrying, 1, "retrying", "failed", retry_at=NOW + 5)]), NOW + 2)
    store.commit(Changes(ends=[(queued, "failed", "JobNotFound", "job 'x' is not registered"),
                               (retrying, "cancelled", "RunCancelled", "gone"),
                               (running, "failed", "JobNotFound", "nope")]), NOW + 3)
    record = store.get(queued)
    assert (record.status, record.error_type, record.message, record.finished_at) == (
        RunStatus.FAILED, "JobNotFound", "job 'x' is not registered", NOW + 3)
    assert (store.get(retrying).status, store.get(retrying).message) == (RunStatus.CANCELLED, "gone")
    assert store.get(running).status is RunStatus.RUNNING


def test_one_commit_applies_every_kind_of_change(store: Store):
    a, b, c, d, e = insert(store, 5, max_attempts=2)
    for run_id in (b, c, d):
        claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(d, 1, "retrying", "failed", retry_at=NOW + 2)]), NOW + 2)
    lost = store.commit(Changes(claims=[(a, 1)], finishes=[finish(b, 1, output="1")], unclaims=[(c, 1)],
                                requeues=[d], ends=[(e, "failed", "E", "m")]), NOW + 3)
    assert lost == set()
    assert [store.get(i).status for i in (a, b, c, d, e)] == [
        RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.FAILED]


def test_empty_changes_are_falsy():
    assert not Changes()
    assert Changes(requeues=[1])


# -- recover, load_ready --------------------------------------------------------------------


def test_recover_requeues_running_runs_with_an_interrupted_uncharged_attempt(store: Store):
    running, queued = insert(store, 2, max_attempts=2)
    claim(store, running, 1)
    assert store.recover(NOW + 10) == 1
    record = snapshot(store, running)
    assert (record.status, record.attempts) == (RunStatus.QUEUED, 1)
    (attempt,) = record.attempt_log
    assert (attempt.number, attempt.outcome, attempt.finished_at) == (1, Outcome.INTERRUPTED, NOW + 10)
    ready = {r.id: r for r in store.load_ready()}
    assert ready[running].free_attempts == 1
    assert store.get(queued).status is RunStatus.QUEUED
    assert store.recover(NOW + 11) == 0


def test_recover_with_nothing_running_changes_nothing(store: Store):
    (run_id,) = insert(store)
    assert store.recover(NOW) == 0
    assert store.get(run_id).status is RunStatus.QUEUED


def test_load_ready_gives_queued_and_retrying_runs_after_an_id_in_id_order(store: Store):
    ids = insert(store, 6, max_attempts=2, priority=3, timeout=1.5)
    claim(store, ids[1], 1)  # running: not ready
    claim(store, ids[2], 1)
    store.commit(Changes(finishes=[finish(ids[2], 1, "retrying", "failed", retry_at=NOW + 9)]), NOW + 2)
    store.cancel_queued(ids[3], NOW)
    claim(store, ids[4], 1)
    store.commit(Changes(finishes=[finish(ids[4], 1, output="1")]), NOW + 2)
    ready = store.load_ready()
    assert [r.id for r in ready] == [ids[0], ids[2], ids[5]]
    first = ready[0]
    assert (first.job, first.input, first.priority, first.attempts, first.free_attempts, first.max_attempts,
            first.timeout, first.scheduled_at, first.status, first.version) == (
        "thumbnail", '{"x": 0}', 3, 0, 0, 2, 1.5, NOW, "queued", 1)
    assert [r.id for r in store.load_ready(after_id=ids[2])] == [ids[5]]
    assert store.load_ready(after_id=ids[5]) == []


# -- steps, progress, cron ------------------------------------------------------------------


def test_completed_steps_are_stored_per_run(store: Store):
    run_id, other = insert(store, 2)
    claim(store, run_id, 1)
    store.commit(Changes(steps=[(run_id, "decode", '{"w": 3}', 0), (run_id, "resize", "[1, 2]", 1)]), NOW + 2)
    assert store.steps(run_id) == {"decode": '{"w": 3}', "resize": "[1, 2]"}
    assert store.steps(other) == {}
    assert snapshot(store, run_id).steps == {"decode": {"w": 3}, "resize": [1, 2]}


def test_progress_and_metadata_of_a_running_run_are_stored_and_merged(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(progress=[(run_id, 0.5, "decoded", '{"a": 1}')]), NOW + 2)
    store.commit(Changes(progress=[(run_id, None, None, '{"b": 2}')]), NOW + 3)
    record = store.get(run_id)
    assert (record.progress, record.progress_message, record.metadata) == (0.5, "decoded", {"a": 1, "b": 2})


def test_the_last_cron_tick_is_remembered_per_job(store: Store):
    assert store.cron_last("nightly") is None
    store.set_cron("nightly", NOW)
    store.set_cron("nightly", NOW + 60)
    store.set_cron("hourly", NOW + 1)
    assert (store.cron_last("nightly"), store.cron_last("hourly")) == (NOW + 60, NOW + 1)


# -- reading: runs, counts, changed ------------------------------------------------------------


def test_runs_lists_newest_first_with_filters_limit_and_offset(store: Store):
    a = insert(store, 3)
    b = ids(store.insert([new(job="other") for _ in range(2)], NOW))
    claim(store, a[0], 1)
    assert [r.id for r in store.runs()] == [*reversed(b), *reversed(a)]
    assert [r.id for r in store.runs(job="other")] == list(reversed(b))
    assert [r.id for r in store.runs(status="running")] == [a[0]]
    assert [r.id for r in store.runs(status=RunStatus.QUEUED, job="thumbnail")] == [a[2], a[1]]
    assert [r.id for r in store.runs(limit=2)] == list(reversed(b))
    assert [r.id for r in store.runs(limit=2, offset=3)] == [a[1], a[0]]
    assert store.runs(job="nobody") == []
    assert all(isinstance(r.status, RunStatus) for r in store.runs())


def test_runs_rejects_an_unknown_status(store: Store):
    with pytest.raises(ValueError):
        store.runs(status="sleeping")


def test_counts_per_job_and_status(store: Store):
    a = insert(store, 3)
    store.insert([new(job="other")], NOW)
    claim(store, a[0], 1)
    store.cancel_queued(a[1], NOW)
    assert store.counts() == {"thumbnail": {"running": 1, "cancelled": 1, "queued": 1}, "other": {"queued": 1}}


def test_a_stores_own_writes_do_not_count_as_changed(store: Store):
    if type(store).__name__ == "PostgresStore":
        pytest.skip("PostgresStore.changed() is a hint (its own NOTIFYs wake it too) and a slow poll")
    store.changed()
    (run_id,) = insert(store)
    claim(store, run_id)
    assert store.changed() is False


def test_reads_return_copies_not_live_state(store: Store):
    (run_id,) = insert(store)
    record = store.get(run_id)
    record.status = RunStatus.FAILED
    assert store.get(run_id).status is RunStatus.QUEUED


# -- SQLite only ------------------------------------------------------------------------------


def test_sqlite_changed_sees_commits_of_another_connection_once(tmp_path: Path):
    path = tmp_path / "runs.db"
    serving, client = SQLiteStore(path, lock=True), SQLiteStore(path)
    try:
        assert serving.changed() is False
        (run_id,) = insert(client)
        assert serving.changed() is True
        assert serving.changed() is False
        assert [r.id for r in serving.load_ready()] == [run_id]
        client.cancel_queued(run_id, NOW)
        assert serving.changed() is True
    finally:
        serving.close()
        client.close()


def test_sqlite_runs_survive_reopening_the_file(tmp_path: Path):
    path = tmp_path / "runs.db"
    first = SQLiteStore(path)
    (run_id,) = insert(first)
    claim(first, run_id)
    first.commit(Changes(finishes=[finish(run_id, 1, output='{"ok": true}')]), NOW + 2)
    first.close()
    again = SQLiteStore(path)
    try:
        record = again.get(run_id, attempts=True)
        assert (record.status, record.result, len(record.attempt_log)) == (RunStatus.SUCCEEDED, {"ok": True}, 1)
    finally:
        again.close()


def test_sqlite_a_version_1_store_is_upgraded_when_opened_and_keeps_its_runs(tmp_path: Path):
    path = tmp_path / "runs.db"
    first = SQLiteStore(path)
    (run_id, _), = first.insert([new(key="k1")], NOW)
    end(first, run_id, "failed")
    first.close()
    old = sqlite3.connect(path)  # as version 1 made it: no rerun_of (nor the index on it)
    old.execute("DROP INDEX runs_rerun")
    old.execute("ALTER TABLE runs DROP COLUMN rerun_of")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    again = SQLiteStore(path)
    try:
        assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        record = again.get(run_id, attempts=True)
        assert (record.status, record.key, record.rerun_of, len(record.attempt_log)) == (RunStatus.FAILED, "k1", None, 1)
        (second, created), = again.insert([new(key="k1", rerun=GAVE_UP)], NOW + 3)
        assert created and again.get(second).rerun_of == run_id
    finally:
        again.close()


def test_sqlite_store_file_is_private(tmp_path: Path):
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_open_store_picks_the_implementation(tmp_path: Path):
    assert isinstance(open_store(":memory:", lock=False), MemoryStore)
    sqlite = open_store(str(tmp_path / "a.db"), lock=False)
    assert isinstance(sqlite, SQLiteStore)
    sqlite.close()
    memory = MemoryStore()
    assert open_store(memory, lock=False) is memory
    with pytest.raises(TypeError):
        open_store(42, lock=False)  # type: ignore[arg-type]


def test_recorded_jobs_read_back_and_a_later_record_replaces_its_names_only(store: Store) -> None:
    from actors.run import JobInfo

    store.record_jobs([JobInfo("thumb", 1, None, None, {"timeout": 30.0}, NOW),
                       JobInfo("nightly", 2, 1, "0 3 * * *", {"priority": 2}, NOW)])
    store.record_jobs([JobInfo("thumb", 3, 2, None, {"timeout": 10.0}, NOW + 1)])
    assert store.jobs() == [JobInfo("nightly", 2, 1, "0 3 * * *", {"priority": 2}, NOW),
                            JobInfo("thumb", 3, 2, None, {"timeout": 10.0}, NOW + 1)]
