"""Event listeners (no process): a callback receives the run's record, and "cancelled" only for
a run that is cancelled (a claim lost to another supervisor of a shared store is not)."""

from __future__ import annotations

from actors import MemoryStore, RunStatus
from actors.run import NewRun
from actors.supervisor.notify import Listeners


def test_cancelled_reaches_listeners_only_for_a_run_that_is_cancelled() -> None:
    store = MemoryStore()
    (run_id, _), = store.insert([NewRun("job", "1", 0, None, None, 0.0, 1)], 1.0)
    seen: list[tuple[int, RunStatus]] = []
    listeners = Listeners()
    listeners.add("cancelled", lambda record: seen.append((record.id, record.status)))
    listeners.emit("cancelled", run_id, store.get)  # still queued: claimed elsewhere, not cancelled
    assert seen == []
    assert store.cancel_queued(run_id, 2.0)
    listeners.emit("cancelled", run_id, store.get)
    assert seen == [(run_id, RunStatus.CANCELLED)]
