"""The Store contract's durable-execution part, against every store (the `store` fixture of
test_contract.py: memory, SQLite, PostgreSQL): a suspended attempt makes the run `waiting`
with its wait and is free; a wake queues it again; records keep their positions; children's
outcomes; the current step; events stored, handled, found for a run and purged."""

# ruff: noqa: F811 - the tests take the `store` fixture imported from test_contract
from __future__ import annotations

import json

from test_contract import NOW, claim, finish, insert, snapshot, store  # noqa: F401 - store is the fixture

from actors import Store
from actors.run import Outcome, RunStatus
from actors.stores import Changes
from actors.stores.base import Suspension


def suspend(store: Store, run_id: int, attempt: int, wait: dict, wake_at: float | None = None) -> None:
    store.commit(Changes(suspends=[Suspension(run_id, attempt, NOW + 1, NOW + 2, json.dumps(wait), wake_at, 4321,
                                              None)]), NOW + 2)


def test_a_suspended_attempt_makes_the_run_waiting_with_its_wait_and_is_not_charged(store: Store):
    run_id, other = insert(store, 2, max_attempts=1)
    claim(store, run_id, 1)
    suspend(store, run_id, 1, {"until": NOW + 60}, wake_at=NOW + 60)
    record = snapshot(store, run_id)
    assert record.status is RunStatus.WAITING and record.wait == {"until": NOW + 60}
    assert [(a.number, a.outcome, a.worker_pid) for a in record.attempt_log] == [(1, Outcome.SUSPENDED, 4321)]
    assert record.scheduled_at == NOW + 60
    (waiting,) = store.load_waiting()
    assert waiting.pending.id == run_id and json.loads(waiting.wait) == {"until": NOW + 60}
    assert store.load_waiting(after_id=run_id) == []
    assert [p.id for p in store.load_ready()] == [other]  # a waiting run is not ready
    store.commit(Changes(wakes=[run_id], claims=[(run_id, 2)]), NOW + 61)  # woken and claimed in one turn
    assert snapshot(store, run_id).status is RunStatus.RUNNING
    store.commit(Changes(finishes=[finish(run_id, 2, started_at=NOW + 61, finished_at=NOW + 62)]), NOW + 62)
    done = snapshot(store, run_id)
    assert done.status is RunStatus.SUCCEEDED and done.attempts == 2  # the suspended attempt was free


def test_a_suspension_of_an_attempt_that_is_not_running_changes_nothing(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    suspend(store, run_id, 2, {"until": NOW})  # a stale attempt number
    assert snapshot(store, run_id).status is RunStatus.RUNNING
    assert store.load_waiting() == []


def test_records_keep_their_positions_and_come_back_in_their_order(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(steps=[(run_id, "zeta", "1", 0), (run_id, "sleep:nap", '{"until": 5}', 1),
                                (run_id, "alpha", "2", 2)]), NOW + 2)
    assert list(store.steps(run_id)) == ["zeta", "sleep:nap", "alpha"]
    assert store.positions(run_id) == {"zeta": 0, "sleep:nap": 1, "alpha": 2}


def test_outcomes_are_given_for_ended_runs_only(store: Store):
    ok, failed, live = insert(store, 3)
    for run_id in (ok, failed, live):
        claim(store, run_id, 1)
    store.commit(Changes(finishes=[finish(ok, output='{"v": 1}'),
                                   finish(failed, status="failed", error_type="ValueError", message="bad")]), NOW + 2)
    outcomes = store.outcomes([ok, failed, live, 999_999])
    assert outcomes == {ok: ("succeeded", '{"v": 1}', None, None), failed: ("failed", None, "ValueError", "bad")}
    assert store.outcomes([]) == {}


def test_the_current_step_of_a_running_run_is_stored(store: Store):
    (run_id,) = insert(store)
    claim(store, run_id, 1)
    store.commit(Changes(current_steps=[(run_id, "resize")]), NOW + 2)
    assert snapshot(store, run_id).current_step == "resize"


def test_events_are_stored_in_order_found_for_a_run_handled_once_and_purged(store: Store):
    early = store.emit("approved", '{"n": 0}', NOW - 10)  # before the run was created
    (run_id,) = insert(store)
    first = store.emit("approved", '{"n": 1}', NOW + 1)
    other = store.emit("uploaded", '{"path": "a.jpg"}', NOW + 2)
    second = store.emit("approved", '{"n": 2}', NOW + 3)
    assert early < first < other < second
    assert [e.id for e in store.find_events("approved", run_id, [])] == [first, second]
    assert [e.id for e in store.find_events("approved", run_id, [first])] == [second]
    found = store.find_events("approved", run_id, [])[0]
    assert (found.name, json.loads(found.payload), found.created_at) == ("approved", {"n": 1}, NOW + 1)
    assert [e.id for e in store.new_events(0)] == [early, first, other, second]
    store.commit(Changes(handled_events=[early, other]), NOW + 4)
    assert [e.id for e in store.new_events(0)] == [first, second]
    assert [e.id for e in store.new_events(first)] == [second]
    assert store.purge_events(NOW) == 1  # the early one
    assert [e.id for e in store.find_events("approved", run_id, [])] == [first, second]


# -- debounce (`NewRun.debounce`: see Store.insert) ------------------------------------------------------


def test_a_debounced_submit_replaces_the_queued_runs_input_and_pushes_it_back(store: Store):
    from test_contract import new

    (first, created), = store.insert([new(input='{"x": 1}', key="k", debounce=True, scheduled_at=NOW + 5)], NOW)
    assert created
    (again, created), = store.insert([new(input='{"x": 2}', key="k", debounce=True, scheduled_at=NOW + 6,
                                          priority=3, tenant="acme", metadata='{"why": "later"}')], NOW + 1)
    assert (again, created) == (first, False)
    record = snapshot(store, first)
    assert (record.input, record.scheduled_at, record.priority, record.tenant) == ('{"x": 2}', NOW + 6, 3, "acme")
    assert record.metadata == {"why": "later"}
    other, created = store.insert([new(input='{"x": 3}', key="other", debounce=True, scheduled_at=NOW + 6)],
                                  NOW + 1)[0]
    assert created and other != first


def test_a_debounced_submit_after_its_run_is_due_or_started_makes_a_new_run_that_takes_the_key(store: Store):
    from test_contract import new

    (first, _), = store.insert([new(input='{"x": 1}', key="k", debounce=True, scheduled_at=NOW + 5)], NOW)
    claim(store, first, 1, now=NOW + 5)
    (second, created), = store.insert([new(input='{"x": 2}', key="k", debounce=True, scheduled_at=NOW + 10)],
                                      NOW + 6)
    assert created and second != first
    assert snapshot(store, first).input == '{"x": 1}'  # the started run keeps its input, and loses the key
    assert (snapshot(store, first).key, snapshot(store, second).key) == (None, "k")
    (due, _), = store.insert([new(input='{"x": 3}', key="j", debounce=True, scheduled_at=NOW + 7)], NOW + 6)
    (later, created), = store.insert([new(input='{"x": 4}', key="j", debounce=True, scheduled_at=NOW + 20)],
                                     NOW + 8)  # `due` is due by now: a new burst
    assert created and later != due and snapshot(store, due).input == '{"x": 3}'
