"""Group commit in the SQLite store: `insert` calls from threads that wait for the connection
are stored together by the next one to get it, in one transaction, and each call still gets
exactly its own ids and its own error. The test holds the connection (as a committing loop or
submitter would) while the calls pile up, then lets go."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import SQLiteStore
from actors.errors import StoreError
from actors.run import NewRun

NOW = 1_000.0


def pile_up(store: SQLiteStore, calls: list[list[NewRun]]) -> dict[int, Any]:
    """Run each call to `insert` on its own thread while the connection is held, let go once
    all of them wait, and return what each returned or raised."""
    results: dict[int, Any] = {}

    def call(index: int) -> None:
        try:
            results[index] = store.insert(calls[index], NOW)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    with store._mutex:  # someone is writing
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(store._group) < len(calls):
            assert time.monotonic() < deadline, "the calls did not queue up"
            time.sleep(0.001)
        assert results == {}  # nobody returns before its runs are committed
    for thread in threads:
        thread.join(10)
    return results


@pytest.fixture
def traced(tmp_path: Path):
    store = SQLiteStore(tmp_path / "runs.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    yield store, statements
    store.close()


def test_calls_that_wait_for_the_connection_are_committed_in_one_transaction(traced):
    store, statements = traced
    calls = [[NewRun("thumb", f'{{"x": {i}}}'), NewRun("thumb", f'{{"x": {i + 100}}}')] for i in range(8)]
    results = pile_up(store, calls)
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sorted(run_id for stored in results.values() for run_id, _ in stored) == list(range(1, 17))
    for index, stored in results.items():  # each call got the ids of its own runs, in its order
        assert [store.get(run_id).input for run_id, _ in stored] == [f'{{"x": {index}}}', f'{{"x": {index + 100}}}']


def test_a_call_that_fails_in_a_group_fails_alone(traced):
    store, _ = traced
    bad = NewRun(None, '{"x": 0}')  # type: ignore[arg-type]  # NOT NULL: the whole transaction fails
    calls = [[NewRun("thumb", '{"x": 1}')], [bad], [NewRun("thumb", '{"x": 2}')]]
    results = pile_up(store, calls)
    assert isinstance(results[1], StoreError)
    assert [store.get(results[i][0][0]).input for i in (0, 2)] == ['{"x": 1}', '{"x": 2}']


def test_one_key_submitted_twice_in_a_group_makes_one_run(traced):
    store, _ = traced
    results = pile_up(store, [[NewRun("thumb", '{"x": 1}', key="k")], [NewRun("thumb", '{"x": 2}', key="k")]])
    (first, first_created), (second, second_created) = results[0][0], results[1][0]
    assert first == second and sorted([first_created, second_created]) == [False, True]
