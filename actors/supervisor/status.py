"""What the serving supervisor tells the store about itself: its heartbeat, its workers (pid,
current run, RSS, restarts) and kills by reason, sampled about once a second and written with
a turn's commit (`Changes.status`), for readers in other processes (`actors stats`, `actors
watch`, the dashboard) that must answer without asking the live workers."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ..run import SupervisorInfo, WorkerInfo

if TYPE_CHECKING:
    from .pool import Pool
    from .tracker import Tracker

INTERVAL = 1.0  # seconds between samples


class StatusBoard:
    """One serve session's facts about its workers, and samples of them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.session_started = 0.0
        self.spawns = [0] * workers  # worker processes started per slot, this session
        self.spawned_at = [0.0] * workers  # epoch seconds

    def begin(self) -> None:
        self.session_started = time.time()
        self.spawns = [0] * self.workers

    def spawned(self, slot: int) -> None:
        self.spawns[slot] += 1
        self.spawned_at[slot] = time.time()

    def sample(self, pool: Pool | None, tracker: Tracker, metrics: Any, stopped: bool = False
               ) -> tuple[SupervisorInfo, list[WorkerInfo]]:
        """The supervisor and its workers now (none once stopped: `stopped_at` says so)."""
        now = time.time()
        restarts = [max(n - 1, 0) for n in self.spawns]
        workers: list[WorkerInfo] = []
        if not stopped and pool is not None:
            import psutil

            for slot in pool.slots:
                if slot.exited or not slot.pid:
                    continue
                window = tracker.windows[slot.index]
                head = window.inflight[0] if window.inflight and window.ready else None
                try:
                    rss: int | None = psutil.Process(slot.pid).memory_info().rss
                except (psutil.Error, OSError):
                    rss = None
                workers.append(WorkerInfo(slot.index, slot.pid, head.id if head else None,
                                          head.job.name if head else None, head.claimed_at if head else None, rss,
                                          self.spawned_at[slot.index], restarts[slot.index], now))
        info = SupervisorInfo(os.getpid(), _hostname(), self.session_started, now, self.workers,
                              sum(restarts), dict(tracker.kills), now if stopped else None)
        if metrics is not None:
            metrics.sampled(info, tracker)
        return info, workers


def _hostname() -> str:
    import socket

    return socket.gethostname()
