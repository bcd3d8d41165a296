"""Runs waiting for a worker: the ready queue, and how many runs each worker is sent ahead.

Ready runs are ordered by (priority, scheduled_at, id): higher priority first, then the one due
first (a retry is due when its backoff ends), first-in first-out among equals.

The window: each worker is kept about `TARGET_AHEAD` seconds of estimated work ahead, so it
never idles while the supervisor does bookkeeping, and several runs travel in one pipe message.
A job's run time is estimated from the durations workers report (an exponential moving
average). A job with no estimate yet, or whose runs are long, gets one run at a time, which
keeps load balanced for CPU-bound work. A worker is topped up when half its window is free.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..job import Job
from ..retry import Retry
from ..run import Outcome

if TYPE_CHECKING:
    import asyncio

TARGET_AHEAD = 0.005  # seconds of estimated work queued in each worker
MAX_WINDOW = 256  # runs in flight per worker at most
MIN_ESTIMATE = 10e-6  # floor of a run's estimated cost: the pipe and bookkeeping overhead


NO_LINE: Any = object()  # a ticket whose `Limits` line is not computed yet


class Ticket:
    """A live run as the supervisor holds it in memory."""

    __slots__ = (
        "id", "job", "input", "priority", "attempts", "free", "max_attempts", "timeout", "soft_timeout",
        "claimed_at", "estimate", "waiting", "scheduled_at", "version", "steps", "cancelling", "ready", "retrying",
        "interrupted", "positions", "wait", "tenant", "line",
    )

    def __init__(self, run_id: int, job: Job[Any, Any], input: str, priority: int, attempts: int, free: int,
                 max_attempts: int, timeout: float | None, scheduled_at: float = 0.0, version: int = 1) -> None:
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
        self.waiting: asyncio.TimerHandle | None = None  # the timer of a delayed or retrying run
        self.retrying = False  # stored as `retrying`: becoming due writes it back to `queued`
        self.scheduled_at = scheduled_at  # epoch seconds before which it must not start
        self.version = version
        self.steps: dict[str, str] | None = None  # completed ctx.step values, for a later attempt
        self.cancelling = False  # a cancel was requested while it was with a worker
        self.ready = False  # in the ready queue now (never twice)
        self.interrupted = False  # its last attempt was interrupted: another one in a row is charged
        self.positions: dict[str, int] | None = None  # each record's position in the run (see `Context`)
        self.wait: dict[str, Any] | None = None  # what it waits for while `waiting` (see `waits.py`)
        self.tenant: str | None = None  # as given at submit (a `Limit(n, key="tenant")` limits by it)
        self.line: Any = NO_LINE  # its line in `Limits` (job name, or (name, key)), computed once

    @property
    def charged(self) -> int:
        return self.attempts - self.free

    def __repr__(self) -> str:
        return f"<Ticket run={self.id} {self.job.name} attempt={self.attempts}>"


class Policy(NamedTuple):
    """A job's effective options, resolved once: its retry (or the supervisor's default)."""

    retry: Retry
    timeout: float | None

    @property
    def attempts(self) -> int:
        return self.retry.attempts


class Window:
    """What the tracker knows of one worker: its pid, whether it is ready, the runs sent to it in
    execution order (the head is the one it runs now), and what was decided about it."""

    __slots__ = ("index", "pid", "ready", "inflight", "ahead", "runs_done", "head_started", "deadline", "kill",
                 "peak_memory", "retiring", "stop_sent")

    def __init__(self, index: int) -> None:
        self.index = index
        self.attach(0)

    def attach(self, pid: int) -> None:
        """A new worker process took this place: it holds nothing yet."""
        self.pid = pid
        self.ready = False
        self.inflight: deque[Ticket] = deque()
        self.ahead = 0.0  # estimated seconds of work in inflight
        self.runs_done = 0
        self.head_started = 0.0
        self.deadline: Any = None  # the timer of the head's timeout or cancel grace
        self.kill: tuple[Ticket, Outcome, str] | None = None  # the run we killed the worker for, and why
        self.peak_memory = 0
        self.retiring = False  # no new runs: it is being recycled or stopped
        self.stop_sent = False


class ReadyQueue:
    """Tickets ready to run: highest priority first, then earliest due, then oldest.

    Most tickets arrive in order (new runs, in submission order), so each priority has a FIFO
    line taking them in O(1); a ticket that arrives out of order (a retry due earlier than the
    line's tail, say) goes to a heap beside the lines, and `pop` takes the better of the two heads.
    """

    __slots__ = ("_lines", "_priorities", "_heap", "_size")

    def __init__(self) -> None:
        self._lines: dict[int, deque[Ticket]] = {}
        self._priorities: list[int] = []  # those with a line, highest first
        self._heap: list[tuple[int, float, int, Ticket]] = []
        self._size = 0

    def push(self, ticket: Ticket) -> None:
        if ticket.ready:
            return
        ticket.ready = True
        self._size += 1
        line = self._lines.get(ticket.priority)
        if line is None:
            line = self._lines[ticket.priority] = deque()
            self._priorities = sorted(self._lines, reverse=True)
        if line:
            tail = line[-1]
            if (tail.scheduled_at, tail.id) > (ticket.scheduled_at, ticket.id):
                heapq.heappush(self._heap, (-ticket.priority, ticket.scheduled_at, ticket.id, ticket))
                return
        line.append(ticket)

    def pop(self) -> Ticket:
        line = None
        for priority in self._priorities:
            if self._lines[priority]:
                line = self._lines[priority]
                break
        heap = self._heap
        if line is None or (heap and heap[0][:3] < (-line[0].priority, line[0].scheduled_at, line[0].id)):
            ticket = heapq.heappop(heap)[3]
        else:
            ticket = line.popleft()
        ticket.ready = False
        self._size -= 1
        return ticket

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0


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


class Limits:
    """Per-job `concurrency` (also per key, `Limit(n, key=...)`) and `rate`: which ready runs
    may start now.

    A run that may not start is parked in its line (in order) instead of going back to the
    ready queue, so other jobs' runs flow past a limited job's backlog at no cost. A line is the
    job's name, or (name, key) for a job whose concurrency is a `Limit` with a key: each key
    has its own line and its own count of running runs, so one key's backlog never holds up
    another key's runs. A ticket's line is computed once (`line_of`), the first time it is
    offered; a key function that raises makes that run fail (`admit` says "error"). The head of
    a line is woken only when the limit that refused it can change: a finishing run of its line
    for `concurrency` (`release`), the moment the window admits another start for `rate`
    (`wake_in`; rate is per job, so every line of the job is woken then: `heads`).

    `rate="N/period"` means at most N starts in any window of that period (a sliding window of
    the last N start times), never a burst above N: after an idle minute, `rate="5/s"` still
    starts 5 runs in the first second, not more. `throttle=` is the same limit.

    Lines and counts of keys that hold nothing are dropped, so many keys cost nothing once idle.
    """

    def __init__(self) -> None:
        self.running: defaultdict[Any, int] = defaultdict(int)  # line -> its runs with a worker
        self.parked: dict[str, dict[Any, deque[Ticket]]] = {}  # job -> line -> parked tickets, in order
        self._starts: dict[str, deque[float]] = {}  # job -> monotonic times of its last N starts
        self.errors: dict[int, str] = {}  # run id -> why its key could not be computed

    @staticmethod
    def line_of(ticket: Ticket) -> Any:
        """The ticket's line: its job's name, or (name, key) for a keyed `Limit` (ValueError
        naming the job when the key function raises)."""
        line = ticket.line
        if line is NO_LINE:
            job = ticket.job
            if job.concurrency_key is None:
                line = job.name
            else:
                line = (job.name, job.limit_key(ticket.input, ticket.tenant))
            ticket.line = line
        return line

    def admit(self, ticket: Ticket, now: float) -> str | None:
        """None if the ticket may start now (it is counted); else which limit refused it,
        "concurrency", "rate" or "line" (earlier runs of its line wait), and it is parked; or
        "error" when its key cannot be computed (the reason in `errors`; not parked)."""
        job = ticket.job
        try:
            key = self.line_of(ticket)
        except ValueError as exc:
            self.errors[ticket.id] = str(exc)
            return "error"
        lines = self.parked.get(job.name)
        line = lines.get(key) if lines else None
        if line and line[0] is not ticket:
            line.append(ticket)  # keep the line's order: earlier runs go first
            return "line"
        if job.concurrency is not None and self.running[key] >= job.concurrency:
            self._park(ticket, key)
            return "concurrency"
        if job.rate_limit is not None and self.wake_in(job, now) > 0.0:
            self._park(ticket, key)
            return "rate"
        if job.rate_limit is not None:
            count, _ = job.rate_limit
            starts = self._starts.setdefault(job.name, deque(maxlen=max(1, int(count))))
            starts.append(now)
        if line and line[0] is ticket:
            line.popleft()
            if not line:
                self._drop(job.name, key)
        self.running[key] += 1
        return None

    def defer(self, ticket: Ticket) -> None:
        """A run admitted here whose claim the store refused (its own count of the limit, across
        supervisors): it is not counted nor started after all, and waits at the head of its line."""
        key = ticket.line
        running = self.running.get(key, 0)
        if running > 1:
            self.running[key] = running - 1
        else:
            self.running.pop(key, None)
        starts = self._starts.get(ticket.job.name)
        if starts:
            starts.pop()  # the latest: a start of this turn
        self.parked.setdefault(ticket.job.name, {}).setdefault(key, deque()).appendleft(ticket)

    def _park(self, ticket: Ticket, key: Any) -> None:
        line = self.parked.setdefault(ticket.job.name, {}).setdefault(key, deque())
        if not line or line[0] is not ticket:
            line.append(ticket)

    def _drop(self, name: str, key: Any) -> None:
        lines = self.parked.get(name)
        if lines is not None:
            lines.pop(key, None)
            if not lines:
                del self.parked[name]

    def wake_in(self, job: Job[Any, Any], now: float) -> float:
        """Seconds until the job's rate allows another start (0 if it does now)."""
        if job.rate_limit is None:
            return 0.0
        count, period = job.rate_limit
        starts = self._starts.get(job.name)
        if starts is None or len(starts) < max(1, int(count)):
            return 0.0
        # the window holds N starts: the next may go once the oldest is a period old
        return max(0.0, starts[0] + period * max(1, int(count)) / count - now)

    def release(self, ticket: Ticket) -> Ticket | None:
        """A run left its worker; the head of its line if it may now try."""
        key = ticket.line
        if key is NO_LINE:  # never admitted here (a ticket of a limit added while it ran)
            return None
        running = self.running.get(key, 0)
        if running > 1:
            self.running[key] = running - 1
        else:
            self.running.pop(key, None)
        return self.head_of(ticket)

    def discard(self, ticket: Ticket) -> None:
        """Forget a parked ticket (it was cancelled)."""
        name, key = ticket.job.name, ticket.line
        line = self.parked.get(name, {}).get(key)
        if line and ticket in line:
            line.remove(ticket)
            if not line:
                self._drop(name, key)

    def head_of(self, ticket: Ticket) -> Ticket | None:
        """The head of the ticket's line, if any ticket is parked there."""
        line = self.parked.get(ticket.job.name, {}).get(ticket.line)
        return line[0] if line else None

    def heads(self, name: str) -> list[Ticket]:
        """The head of each line of job `name` (one, for a job without a keyed limit)."""
        return [line[0] for line in self.parked.get(name, {}).values() if line]

    def head(self, name: str) -> Ticket | None:
        """The head of the first line of job `name`, if any."""
        heads = self.heads(name)
        return heads[0] if heads else None

    def __len__(self) -> int:
        return sum(len(line) for lines in self.parked.values() for line in lines.values())


def key_text(key: Any) -> str:
    """A `Limit` key function's value as text, the same in every process for the same input
    (`Changes.claim_keys`): JSON with sorted keys; sets sorted, other values by their repr."""
    return json.dumps(key, sort_keys=True, default=_key_part)


def _key_part(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):  # its repr's order changes with the hash seed
        return sorted(value, key=key_text)
    return repr(value)


def fill(window: Window, ready: ReadyQueue, live: dict[int, Ticket], limits: Limits, estimates: Estimates,
         claims: list[tuple[int, int]], max_runs: int | None, now: float,
         rate_refused: Callable[[Job[Any, Any]], None],
         key_failed: Callable[[Ticket, str], None] | None = None,
         claim_keys: dict[int, str] | None = None) -> list[Ticket]:
    """Claim ready runs for one worker while its window has room (see the module docstring); the
    batch to send it. Each claim counts an attempt and is recorded in `claims`, and, for a job
    whose `Limit` key is a function, its key in `claim_keys` (`key_text`: a shared store counts
    it); a run refused by its job's limits is parked there, and `rate_refused(job)` is told when
    the rate refused it; `key_failed(ticket, reason)` when its `Limit` key could not be computed
    (it is not claimed)."""
    inflight = window.inflight
    if window.retiring or inflight and (not window.ready or window.ahead >= TARGET_AHEAD / 2):
        return []
    room = MAX_WINDOW - len(inflight)
    if max_runs is not None:
        room = min(room, max_runs - window.runs_done - len(inflight))
    batch: list[Ticket] = []
    cost = estimates.cost
    while ready and room > 0 and (not inflight or window.ahead < TARGET_AHEAD):
        ticket = ready.pop()
        if ticket.id not in live:
            continue  # cancelled while queued
        if ticket.job.limited:
            if refused := limits.admit(ticket, time.monotonic()):
                if refused == "rate":  # a concurrency refusal waits for a release instead
                    rate_refused(ticket.job)
                elif refused == "error" and key_failed is not None:
                    key_failed(ticket, limits.errors.pop(ticket.id, "its Limit key could not be computed"))
                continue
            if claim_keys is not None and callable(ticket.job.concurrency_key):
                claim_keys[ticket.id] = key_text(ticket.line[1])
        ticket.attempts += 1
        ticket.claimed_at = now
        ticket.estimate = cost(ticket.job.name)
        window.ahead += ticket.estimate
        inflight.append(ticket)
        claims.append((ticket.id, ticket.attempts))
        batch.append(ticket)
        room -= 1
    return batch
