"""Pool restart policy: the first death restarts at once, quick repeated deaths back off
exponentially up to 30 s, and a worker that lived a healthy period resets the count. The same
policy holds for fork servers found dead or stopped, and psutil tells a stopped one apart."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from actors.supervisor.pool import HEALTHY_AFTER, RESTART_BACKOFF, Pool, WorkerSlot
from actors.supervisor.processes import ForkServers
from actors.supervisor.processes import process_state as _state


class FakeLoop:
    def __init__(self) -> None:
        self.later: list[float] = []

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append(delay)


def make_pool() -> tuple[Pool, FakeLoop, list[WorkerSlot]]:
    loop = FakeLoop()
    pool = Pool(loop, 1, ForkServers(HEALTHY_AFTER, RESTART_BACKOFF), lambda *a: None, lambda *a: None, lambda *a: None, 2.0, 1 << 20,  # type: ignore[arg-type]
                on_ready=lambda *a: None, on_orphaned=lambda *a: None)
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


def test_fork_servers_lost_in_quick_succession_back_off_and_spawns_wait_for_the_new_one():
    pool, loop, _ = make_pool()
    slot = pool.slots[0]
    # pids that are no fork server of ours: losing them kills nothing, it only counts
    holds = []
    for fake in range(10**7, 10**7 + 4):
        pool._lose_server(fake, "died")
        holds.append(round(pool.servers.hold - time.monotonic(), 1))
    assert holds[0] <= 0.0 and holds[1:] == [0.1, 0.2, 0.4]  # the first replacement is immediate
    pool._lose_server(10**7, "died")  # the same server seen again (one EOF per worker) counts once
    assert pool.servers.failures == 4
    assert pool._defer(slot) and 0.3 < loop.later[-1] <= 0.4  # a spawn now waits for the backoff
    pool.servers.since = time.monotonic() - HEALTHY_AFTER - 1  # the last server lived long enough
    pool._lose_server(10**7 + 10, "is stopped")
    assert pool.servers.failures == 1
    pool.close()


@pytest.mark.timeout(10)
def test_a_stopped_process_reads_as_stopped_and_a_dead_one_as_gone():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        assert _state(pid) == "running"
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _state(pid) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(pid) == "stopped"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(pid) != "gone" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(pid) == "gone"  # a zombie is gone
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert _state(pid) == "gone"
