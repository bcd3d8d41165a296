"""Pool restart policy: the first death restarts at once, quick repeated deaths back off
exponentially up to 30 s, and a worker that lived a healthy period resets the count."""

from __future__ import annotations

import time
from typing import Any

from actors.supervisor.pool import HEALTHY_AFTER, Pool, WorkerSlot


class FakeLoop:
    def __init__(self) -> None:
        self.later: list[float] = []

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append(delay)


def make_pool() -> tuple[Pool, FakeLoop, list[WorkerSlot]]:
    loop = FakeLoop()
    pool = Pool(loop, 1, b"", lambda *a: None, lambda *a: None, lambda *a: None, 2.0, 1 << 20)  # type: ignore[arg-type]
    spawned: list[WorkerSlot] = []
    pool.spawn = spawned.append  # type: ignore[method-assign]
    return pool, loop, spawned


def test_quick_deaths_back_off_exponentially_up_to_30_seconds():
    pool, loop, spawned = make_pool()
    slot = pool.slots[0]
    slot.spawned_at = time.monotonic()
    delays = [pool.schedule_restart(slot, crashed=True) for _ in range(12)]
    assert delays[0] == 0.0 and len(spawned) == 1  # the first restart is immediate
    assert delays[1:6] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert delays[-1] == 30.0 and max(delays) == 30.0
    assert loop.later == delays[1:]
    pool.close()


def test_a_healthy_period_resets_the_backoff_and_expected_exits_restart_at_once():
    pool, loop, spawned = make_pool()
    slot = pool.slots[0]
    slot.spawned_at = time.monotonic()
    for _ in range(5):
        pool.schedule_restart(slot, crashed=True)
    slot.spawned_at = time.monotonic() - HEALTHY_AFTER - 1  # this worker lived long enough
    assert pool.schedule_restart(slot, crashed=True) == 0.0
    assert pool.schedule_restart(slot, crashed=False) == 0.0  # recycled or killed on purpose
    pool.close()
