"""Runs waiting for a worker: the ready queue, and how many runs each worker is sent ahead.

Ready runs are ordered by (priority, id): higher priority first, first-in first-out within one
priority (ids grow with submission).

The window: each worker is kept about `TARGET_AHEAD` seconds of estimated work ahead, so it
never idles while the supervisor does bookkeeping, and several runs travel in one pipe message.
A job's run time is estimated from the durations workers report (an exponential moving
average). A job with no estimate yet, or whose runs are long, gets one run at a time, which
keeps load balanced for CPU-bound work. A worker is topped up when half its window is free.
"""

from __future__ import annotations

import heapq
from typing import Any

from ..job import Job

TARGET_AHEAD = 0.005  # seconds of estimated work queued in each worker
MAX_WINDOW = 256  # runs in flight per worker at most
MIN_ESTIMATE = 10e-6  # floor of a run's estimated cost: the pipe and bookkeeping overhead


class Ticket:
    """A live run as the supervisor holds it in memory."""

    __slots__ = (
        "id", "job", "input", "priority", "attempts", "free", "max_attempts", "timeout", "soft_timeout",
        "claimed_at", "estimate", "waiting",
    )

    def __init__(self, run_id: int, job: Job[Any, Any], input: str, priority: int, attempts: int, free: int,
                 max_attempts: int, timeout: float | None) -> None:
        self.id = run_id
        self.job = job
        self.input = input
        self.priority = priority
        self.attempts = attempts  # claimed so far; the running attempt's number while it runs
        self.free = free  # attempts that were interrupted, not charged
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.soft_timeout = job.soft_timeout
        self.claimed_at = 0.0
        self.estimate = 0.0
        self.waiting: Any = None  # the timer of a delayed or retrying run

    @property
    def charged(self) -> int:
        return self.attempts - self.free

    def __repr__(self) -> str:
        return f"<Ticket run={self.id} {self.job.name} attempt={self.attempts}>"


class ReadyQueue:
    """Tickets ready to run, highest priority first, then oldest first."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Ticket]] = []

    def push(self, ticket: Ticket) -> None:
        heapq.heappush(self._heap, (-ticket.priority, ticket.id, ticket))

    def pop(self) -> Ticket:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)


class Estimates:
    """Per-job moving average of run duration, in seconds."""

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def observe(self, job: str, seconds: float) -> None:
        old = self._seconds.get(job)
        self._seconds[job] = seconds if old is None else old * 0.8 + seconds * 0.2

    def cost(self, job: str) -> float:
        """Estimated seconds one run will occupy a worker; unknown jobs count as a full window."""
        seconds = self._seconds.get(job)
        return TARGET_AHEAD if seconds is None else max(seconds, MIN_ESTIMATE)
