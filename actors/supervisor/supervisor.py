"""The Supervisor: wires the store, the ready queue, the pool, timers and signals on one loop.

Data flow (one process, one uvloop event loop, one thread touching run state):

    submit() ──► store.insert (durable) ──► Ticket ──► ReadyQueue
    Client (other process) ──► store ──► poll (data_version, 50 ms) ──┘
    ReadyQueue ──► _tick: claim (attempt += 1) ──► store.commit ──► Assign ──► worker pipe
    worker pipe ──► Pool reader ──► Done / Failed ──► Finish ──► _tick: store.commit ──► waiters
    worker exit ──► Pool sentinel ──► crashed / timed_out / ... ──► retry timer or terminal

Group commit: readers and timers only record changes; `_tick`, scheduled once per loop turn,
commits everything of that turn in one transaction and only then acts on it (sends runs to
workers, wakes waiters, arms retry timers). So every state change is durable before anything
depends on it.

The pieces it wires: `dispatch.py` (tickets, the ready queue, windows, limits), `pool.py`
(worker processes and pipes), `outcomes.py` (what follows an attempt), `notify.py` (listeners
and waiting threads), `cron.py` (schedules), `shutdown.py` (signals), and a `Store`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import dill
import uvloop

from ..client import Handle
from ..durations import Duration, optional_duration, parse_duration, parse_size
from ..errors import DuplicateJob, JobNotFound, RunNotFound, StoreError, SupervisorCrashed
from ..job import Job
from ..protocol import Assign, Cancel, Done, Failed, Progress, Ready, SetupFailed, StepDone, Stop
from ..retry import NO_RETRY, Retry
from ..run import NewRun, Outcome, RunRecord, RunStatus
from ..stores import Changes, Finish, Store, open_store
from ..stores.base import BY_NAME
from .cron import CronTicks
from .dispatch import MAX_WINDOW, TARGET_AHEAD, Estimates, Limits, ReadyQueue, Ticket
from .notify import Listeners, Waiters
from .outcomes import ERROR_TYPES, PolicyFailed, describe_death, settle, signal_name
from .pool import Pool, WorkerSlot, tree_rss
from .shutdown import SignalGuard

log = logging.getLogger("actors")
Out = TypeVar("Out")



class Supervisor:
    """Owns the queue, the store and the worker pool. See the module docstring for the flow.

    - `jobs`: the `@job` functions this supervisor may run (names must be unique).
    - `workers`: worker processes (default: CPU count).
    - `store`: a path to an SQLite file (default "actors.db"), ":memory:", or a `Store`.
    - `durability`: "normal" (survives any process crash) or "full" (also power loss).
    - `retry`: the policy for jobs that set none (default: no retry).
    - `kill_grace`: seconds between SIGTERM and SIGKILL when a worker is killed (default 2 s).
    - `grace`: how long a graceful shutdown waits for running runs (default 30 s).
    - `max_memory`: RSS limit of a worker and its descendants ("2GB"), sampled every 250 ms.
    - `max_runs_per_worker`: replace a worker after this many runs (leak protection).
    - `poll_interval`: how often runs submitted by other processes are looked for (50 ms).
    - `max_result_size`: the largest output (JSON bytes) a run may return ("64MB"); a larger
      one fails that run with `ResultTooLarge`. Pass paths for large images, not pixels.
    """

    def __init__(
        self,
        jobs: Iterable[Job[Any, Any]],
        *,
        workers: int | None = None,
        store: Store | str | os.PathLike[str] = "actors.db",
        durability: str = "normal",
        retry: Retry | None = None,
        kill_grace: Duration = 2.0,
        grace: Duration = 30.0,
        max_memory: int | str | None = None,
        max_runs_per_worker: int | None = None,
        poll_interval: Duration = 0.05,
        max_result_size: int | str = "64MB",
    ) -> None:
        self.jobs: dict[str, Job[Any, Any]] = {}
        for item in jobs:
            if not isinstance(item, Job):
                raise TypeError(f"not a job: {item!r} (decorate it with @actors.job)")
            if item.name in self.jobs:
                raise DuplicateJob(f"two jobs are named {item.name!r}: give one of them @job(name=...)")
            _check_importable(item)
            self.jobs[item.name] = item
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"invalid workers {workers!r}: expected an int >= 1")
        if max_runs_per_worker is not None and (not isinstance(max_runs_per_worker, int) or max_runs_per_worker < 1):
            raise ValueError(f"invalid max_runs_per_worker {max_runs_per_worker!r}: expected an int >= 1")
        self.default_retry = retry or NO_RETRY
        self.kill_grace = parse_duration(kill_grace, what="kill_grace")
        self.grace = parse_duration(grace, what="grace")
        self.max_memory = parse_size(max_memory) if max_memory is not None else None
        self.max_runs_per_worker = max_runs_per_worker
        self.poll_interval = parse_duration(poll_interval, what="poll_interval")
        self.max_result_size = parse_size(max_result_size)
        self.store = open_store(store, lock=True, durability=durability)
        self._tickets: dict[int, Ticket] = {}  # every live run known here: queued, waiting or running
        self._ready = ReadyQueue()
        self._estimates = Estimates()
        self._changes = Changes()
        self._after: list[tuple[Ticket, RunStatus, float | None]] = []  # to act on once committed
        self._waiters = Waiters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pool: Pool | None = None
        self._tick_pending = False
        self._inbox: deque[list[Ticket]] = deque()  # tickets submitted from other threads
        self._inbox_armed = False
        self._state = "idle"  # idle -> starting -> serving -> draining (graceful) / forcing -> stopped
        # Guards what threads other than the loop's touch: the start of serve() (so a shutdown()
        # from another thread at that moment is not lost) and submits while no loop runs.
        self._serving_lock = threading.RLock()
        self._stop_request: bool | None = None  # a shutdown(graceful) asked for while starting
        self._until: str | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._exit_code = 0
        self._signals = SignalGuard()
        self._signal_count = 0
        self._timers: list[tuple[float, asyncio.TimerHandle]] = []  # (due on the loop's clock, handle)
        self._unarmed: list[Ticket] = []  # tickets waiting for a time while no loop runs
        self._finished_serving = threading.Event()
        self._scanned = 0
        self._fatal: BaseException | None = None
        self._started_at = time.monotonic()
        self._completed = 0
        self._turns = 0  # loop turns that ran (a loop that spins shows here)
        self._limits = Limits()
        self._rate_timers: dict[str, asyncio.TimerHandle] = {}
        self._listeners = Listeners()
        self._cron = CronTicks([j for j in self.jobs.values() if j.cron], self.store, self._submit_tick,
                               lambda: self._state == "serving", self._later)

        try:
            recovered = self.store.recover(time.time())
            if recovered:
                log.warning("recovered %d run(s) left running by a supervisor that died; they are queued again",
                            recovered)
            self._load(self.store.load_ready(0))
        except BaseException:
            self.store.close()  # a refused store keeps no lock
            raise

    # -- submitting -----------------------------------------------------------------------------

    def _resolve(self, job: Job[Any, Out] | str) -> Job[Any, Out]:
        name = job if isinstance(job, str) else getattr(job, "name", None)
        found = self.jobs.get(name) if isinstance(name, str) else None
        if found is None:
            raise JobNotFound(f"job {name or job!r} is not registered with this supervisor (known: {sorted(self.jobs)})")
        return found

    def submit(self, job: Job[Any, Out] | str, input: Any, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None) -> Handle[Out]:
        """Validate the input and store a queued run; durable when this returns.

        `delay` / `at` hold the run until then (durably). `key` is an idempotency key: while a
        run with that key is in the store, submitting it again returns that run's handle. A job
        with `unique=` does the same while its run is queued or running.
        """
        return self.submit_many(job, [input], priority=priority, timeout=timeout, delay=delay, at=at,
                                keys=None if key is None else [key])[0]

    def submit_many(self, job: Job[Any, Out] | str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None) -> list[Handle[Out]]:
        """Like submit, for a batch stored in one transaction (all or nothing)."""
        found = self._resolve(job)
        run_timeout = optional_duration(timeout, what="timeout")
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            raise TypeError(f"priority must be an int, got {priority!r}")
        now = time.time()
        scheduled = _scheduled_at(now, delay, at)
        prio = found.priority if priority is None else priority
        attempts = (found.retry or self.default_retry).attempts
        validate, unique_key = found.validate_input, found.unique_key
        rows = [NewRun(found.name, text, prio, attempts, run_timeout, scheduled, found.version, None, unique_key(text))
                for text in map(validate, inputs)]
        if keys is not None:
            if len(keys) != len(rows):
                raise ValueError(f"{len(keys)} keys for {len(rows)} inputs")
            for row, run_key in zip(rows, keys, strict=True):
                row.key = run_key
        return self._store_runs(found, rows)

    def _store_runs(self, found: Job[Any, Out], rows: list[NewRun]) -> list[Handle[Out]]:
        if not rows:
            return []
        now = time.time()
        stored = self.store.insert(rows, now)
        effective_timeout = rows[0].timeout if rows[0].timeout is not None else found.timeout
        tickets = [Ticket(run_id, found, row.input, row.priority, 0, 0, row.max_attempts or 1, effective_timeout,
                          row.scheduled_at or now, row.version)
                   for (run_id, created), row in zip(stored, rows, strict=True) if created]
        if tickets:
            self._hand_over(tickets)
        store = self.store
        return [Handle(store, run_id, found, self) for run_id, _ in stored]

    def _foreign_loop(self) -> asyncio.AbstractEventLoop | None:
        """The serving loop if it belongs to another thread (running or about to run), else None."""
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident() or loop.is_closed():
            return None
        return loop

    def _hand_to_loop(self, fn: Any, *args: Any) -> None:
        """Run fn on the loop's thread: now if we are on it or none serves, else soon."""
        loop = self._foreign_loop()
        if loop is None:
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile: nobody else touches the state now
            fn(*args)

    def _hand_over(self, tickets: list[Ticket]) -> None:
        """Queue new tickets from any thread. Other threads drop them in an inbox and wake the
        loop once for however many arrive before it looks (fewer wake-ups, bigger batches)."""
        loop = self._foreign_loop()
        if loop is None:
            with self._serving_lock:  # no loop yet: submitting threads take turns, and serve() waits
                loop = self._foreign_loop()
                if loop is None:
                    self._enqueue(tickets)
                    return
        self._inbox.append(tickets)
        if not self._inbox_armed:
            self._inbox_armed = True
            try:
                loop.call_soon_threadsafe(self._take_inbox)
            except RuntimeError:
                self._take_inbox()

    def _take_inbox(self) -> None:
        """Queue what other threads submitted. A poll of the store may have brought a run in
        first (it reads every committed row): a run known here, or one the poll already scanned
        past (so it was loaded, and maybe has ended, or was no longer queued), is not queued again."""
        self._inbox_armed = False  # first disarm, then drain: a later append re-arms
        inbox = self._inbox
        while inbox:
            scanned = self._scanned
            self._enqueue([t for t in inbox.popleft() if t.id > scanned])

    def _load(self, rows: Iterable[Any]) -> None:
        """Tickets for stored queued/retrying runs (at start, and those other processes added)."""
        tickets = []
        for row in rows:
            self._scanned = max(self._scanned, row.id)
            if row.id in self._tickets:
                continue
            found = self.jobs.get(row.job)
            if found is None:
                self._changes.ends.append((row.id, RunStatus.FAILED, "JobNotFound",
                                           f"job {row.job!r} is not registered with the supervisor serving this store"))
                continue
            attempts = row.max_attempts or (found.retry or self.default_retry).attempts
            timeout = row.timeout if row.timeout is not None else found.timeout
            version = row.version
            if version == BY_NAME:  # submitted by name elsewhere: it is a run of the job served here
                version = found.version
                try:
                    unique_key = found.unique_key(row.input)
                except Exception as exc:  # an invalid input (validated only in the worker) or unique= raised
                    unique_key = None
                    log.warning("run %d: no unique key (%s: %s); the worker validates its input", row.id,
                                type(exc).__name__, exc)
                self._changes.adopts.append((row.id, version, unique_key))
            ticket = Ticket(row.id, found, row.input, row.priority, row.attempts, row.free_attempts, attempts, timeout,
                            row.scheduled_at, version)
            if row.attempts:
                ticket.steps = self.store.steps(row.id) or None
            ticket.retrying = row.status == RunStatus.RETRYING
            ticket.interrupted = row.interrupted
            if row.attempts and ticket.charged >= attempts:  # recover() charged a second interruption
                self._changes.ends.append((row.id, RunStatus.FAILED, "Interrupted",
                                           f"attempt {row.attempts} was interrupted like the one before it (its "
                                           "supervisor died during both) and no attempt is left"))
                continue
            tickets.append(ticket)
        self._enqueue(tickets)

    def _enqueue(self, tickets: list[Ticket]) -> None:
        """Make runs live here: each stored run enters exactly once, whatever path brought it."""
        now = time.time()
        known = self._tickets
        for ticket in tickets:
            if ticket.id in known:
                continue
            known[ticket.id] = ticket
            job = ticket.job
            if job.min_version is not None and ticket.version < job.min_version:
                self._changes.ends.append((ticket.id, RunStatus.CANCELLED, "StaleVersion",
                                           f"run of job version {ticket.version}, below min_version {job.min_version}"))
                self._after.append((ticket, RunStatus.CANCELLED, None))
                continue
            if ticket.scheduled_at > now + 0.0005:
                self._wait_until(ticket, ticket.scheduled_at)
            else:
                self._due(ticket)
            if ticket.attempts == 0:
                self._emit("submitted", ticket)
        self._schedule_tick()

    def _wait_until(self, ticket: Ticket, when: float) -> None:
        """Hold a ticket until `when` (epoch seconds), then queue it; armed when serving starts."""
        ticket.scheduled_at = when
        if self._loop is not None:
            ticket.waiting = self._loop.call_later(max(0.0, when - time.time()), self._due, ticket)
        else:
            self._unarmed.append(ticket)

    def _due(self, ticket: Ticket) -> None:
        ticket.waiting = None
        if ticket.retrying:  # its backoff is over: retrying -> queued, in this turn's transaction
            ticket.retrying = False
            self._changes.requeues.append(ticket.id)
        self._ready.push(ticket)
        self._schedule_tick()

    def _later(self, delay: float, fn: Any, *args: Any) -> asyncio.TimerHandle:
        """A timer that serve() cancels when it ends (the list forgets timers that fired). The
        due time is kept beside the handle: uvloop returns a plain `Handle`, without `when()`,
        for a delay <= 0."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        handle = loop.call_later(delay, fn, *args)
        timers = self._timers
        if len(timers) > 64:
            timers[:] = [(due, t) for due, t in timers if due > now and not t.cancelled()]
        timers.append((now + delay, handle))
        return handle

    # -- the loop turn ------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        if not self._tick_pending and self._loop is not None:
            self._tick_pending = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        """Once per loop turn: dispatch, commit the turn's changes in one transaction, act."""
        self._tick_pending = False
        self._turns += 1
        sends = self._dispatch() if self._state == "serving" else []
        changes, self._changes = self._changes, Changes()
        lost: set[int] = set()
        if changes:
            try:
                lost = self.store.commit(changes, time.time())
            except StoreError as exc:
                self._die(exc)
                return
        pool = self._pool
        if lost:
            self._schedule_tick()  # the workers those claims were for have room again
        for slot, batch in sends:
            if lost:
                batch = self._drop_lost(slot, batch, lost)
                if not batch:
                    continue
            if slot.inflight and slot.inflight[0] is batch[0]:
                self._start_head(slot)
            assert pool is not None
            pool.send(slot, Assign([(t.id, t.attempts, t.job.name, t.input, t.soft_timeout, t.steps) for t in batch]))
            if self._listeners:
                for ticket in batch:
                    self._emit("started", ticket)
        after, self._after = self._after, []
        for ticket, status, retry_at in after:
            if status is RunStatus.RETRYING:
                ticket.retrying = True
                self._wait_until(ticket, retry_at or 0.0)
            elif status is RunStatus.QUEUED:
                self._ready.push(ticket)
                self._schedule_tick()
            else:
                self._tickets.pop(ticket.id, None)
                self._completed += 1
                self._notify(ticket.id)
            if self._listeners:
                self._emit(status.value, ticket)
        self._check_progress()

    def _dispatch(self) -> list[tuple[WorkerSlot, list[Ticket]]]:
        """Claim ready runs for workers with room in their window."""
        ready = self._ready
        if not ready or self._pool is None:
            return []
        sends = []
        claims = self._changes.claims
        now = time.time()
        cost = self._estimates.cost
        limit = self.max_runs_per_worker
        for slot in self._pool.slots:
            if not ready:
                break
            if slot.exited or slot.terminating or slot.retiring:
                continue
            inflight = slot.inflight
            if inflight and (not slot.ready or slot.ahead >= TARGET_AHEAD / 2):
                continue
            room = MAX_WINDOW - len(inflight)
            if limit is not None:
                room = min(room, limit - slot.runs_done - len(inflight))
            batch = []
            while ready and room > 0 and (not inflight or slot.ahead < TARGET_AHEAD):
                ticket = ready.pop()
                if ticket.id not in self._tickets:
                    continue  # cancelled while queued
                if ticket.job.limited and (refused := self._limits.admit(ticket, time.monotonic())):
                    if refused == "rate":  # a concurrency refusal waits for a release instead
                        self._when_admissible(ticket.job)
                    continue
                ticket.attempts += 1
                ticket.claimed_at = now
                ticket.estimate = cost(ticket.job.name)
                slot.ahead += ticket.estimate
                inflight.append(ticket)
                claims.append((ticket.id, ticket.attempts))
                batch.append(ticket)
                room -= 1
            if batch:
                sends.append((slot, batch))
        return sends

    def _when_admissible(self, job: Job[Any, Any]) -> None:
        """A rate-limited job's line moves again when its window admits another start."""
        if self._loop is None or job.name in self._rate_timers:
            return
        delay = self._limits.wake_in(job, time.monotonic())
        self._rate_timers[job.name] = self._later(delay, self._unpark, job.name)

    def _unpark(self, name: str) -> None:
        self._rate_timers.pop(name, None)
        head = self._limits.head(name)
        if head is not None:
            self._ready.push(head)
            self._schedule_tick()

    def _released(self, ticket: Ticket) -> None:
        """A run left its worker: a limited job's next parked run may try again."""
        if ticket.job.limited:
            head = self._limits.release(ticket)
            if head is not None and ticket.job.name not in self._rate_timers:
                self._ready.push(head)

    def _drop_lost(self, slot: WorkerSlot, batch: list[Ticket], lost: set[int]) -> list[Ticket]:
        """Claims the store refused (cancelled meanwhile by another process): forget them."""
        kept = []
        for ticket in batch:
            if ticket.id in lost:
                slot.inflight.remove(ticket)
                slot.ahead -= ticket.estimate
                self._released(ticket)
                self._tickets.pop(ticket.id, None)
                self._emit("cancelled", ticket)
                self._notify(ticket.id)
            else:
                kept.append(ticket)
        return kept

    def _start_head(self, slot: WorkerSlot) -> None:
        """The oldest unreported run of a worker is the one it executes now: time it."""
        if slot.deadline is not None:
            slot.deadline.cancel()
            slot.deadline = None
        if not slot.inflight:
            return
        head = slot.inflight[0]
        slot.head_started = time.monotonic()
        if self._loop is None or not slot.ready:
            return  # a starting worker's fork and setup are not the run's time: armed on Ready
        delay = self.kill_grace if head.cancelling else head.timeout
        if delay is not None:
            slot.deadline = self._loop.call_later(delay, self._on_deadline, slot, head)

    # -- results ----------------------------------------------------------------------------

    def _on_message(self, slot: WorkerSlot, message: Any) -> None:
        kind = type(message)
        if kind is Done or kind is Failed:
            inflight = slot.inflight
            if not inflight or inflight[0].id != message.run_id or inflight[0].attempts != message.attempt:
                slot.note = f"the worker reported run {message.run_id} out of order"
                assert self._pool is not None
                self._pool.terminate(slot)
                return
            ticket = inflight.popleft()
            slot.ahead -= ticket.estimate
            slot.runs_done += 1
            self._estimates.observe(ticket.job.name, message.seconds)
            if kind is Done and not ticket.cancelling:  # the hot path, kept lean
                self._released(ticket)
                self._changes.successes.append(
                    (ticket.id, ticket.attempts, message.output, ticket.claimed_at, slot.pid, message.peak_rss))
                self._after.append((ticket, RunStatus.SUCCEEDED, None))
            elif kind is Done:
                self._finish(ticket, Outcome.SUCCEEDED, slot, output=message.output, peak_rss=message.peak_rss)
            else:
                self._finish(ticket, Outcome.FAILED, slot, retryable=message.retryable, error_type=message.error_type,
                             message=message.message, traceback=message.traceback, peak_rss=message.peak_rss)
            self._start_head(slot)
            if self.max_runs_per_worker is not None and slot.runs_done >= self.max_runs_per_worker:
                self._retire(slot)
            self._schedule_tick()
        elif kind is Progress or kind is StepDone:
            inflight = slot.inflight
            if not inflight or inflight[0].id != message.run_id or inflight[0].attempts != message.attempt:
                return  # about a run this worker no longer holds
            if kind is StepDone:
                ticket = inflight[0]
                if ticket.steps is None:
                    ticket.steps = {}
                ticket.steps[message.name] = message.value
                self._changes.steps.append((message.run_id, message.name, message.value))
            else:
                self._changes.progress.append((message.run_id, message.fraction, message.message, message.metadata))
            self._schedule_tick()
        elif kind is Ready:
            slot.ready = True
            self._start_head(slot)
            self._schedule_tick()
        elif kind is SetupFailed:
            slot.setup_error = (message.error_type, message.message, message.traceback)

    def _finish(self, ticket: Ticket, outcome: Outcome, slot: WorkerSlot | None, *, retryable: bool = True,
                output: str | None = None, error_type: str | None = None, message: str | None = None,
                traceback: str | None = None, exit_code: int | None = None, signal: int | None = None,
                peak_rss: int | None = None) -> None:
        """Record the end of a ticket's current attempt and decide what follows."""
        now = time.time()
        self._released(ticket)
        if ticket.cancelling and outcome is not Outcome.INTERRUPTED:  # the cancel was accepted first
            outcome, output = Outcome.CANCELLED, None
            error_type = "RunCancelled"
            message = message or "cancelled while running"
        interrupted = outcome is Outcome.INTERRUPTED
        charged = not interrupted or ticket.interrupted  # free once in a row, then charged
        ticket.interrupted = interrupted
        if not charged:
            ticket.free += 1
        try:
            status, retry_at = settle(outcome, ticket.job.retry or self.default_retry, retryable, ticket.charged,
                                      ticket.max_attempts, now)
        except PolicyFailed as exc:  # the user's backoff raised: fail the run, saying both why
            status, retry_at = RunStatus.FAILED, None
            message = f"{message} (not retried: {exc})" if message else f"not retried: {exc}"
        self._changes.finishes.append(Finish(
            ticket.id, ticket.attempts, status.value, outcome.value, ticket.claimed_at, now, output, error_type,
            message, traceback, slot.pid if slot else None, exit_code, signal, peak_rss, retry_at, charged,
        ))
        self._after.append((ticket, status, retry_at))
        if status is RunStatus.RETRYING:
            log.info("run %d (%s) attempt %d %s: %s; retrying in %.3f s", ticket.id, ticket.job.name,
                     ticket.attempts, outcome.value, message, (retry_at or now) - now)

    def _retire(self, slot: WorkerSlot) -> None:
        """Stop giving a worker runs; it exits once it reported what it holds."""
        slot.retiring = True
        if not slot.inflight and self._pool is not None:
            self._pool.send(slot, Stop())

    # -- deaths, deadlines and limits -------------------------------------------------------

    def _on_deadline(self, slot: WorkerSlot, ticket: Ticket) -> None:
        """The running run's timeout, or the grace after a cancel, is over: kill its worker."""
        slot.deadline = None
        if not slot.inflight or slot.inflight[0] is not ticket or slot.terminating:
            return
        if ticket.cancelling:
            slot.kill_target = (ticket, Outcome.CANCELLED, f"cancelled while running; killed after {self.kill_grace} s")
        else:
            elapsed = time.monotonic() - slot.head_started
            slot.kill_target = (ticket, Outcome.TIMED_OUT,
                                f"timed out after {elapsed:.3f} s (timeout {ticket.timeout} s)")
        assert self._pool is not None
        self._pool.terminate(slot)

    def _on_exit(self, slot: WorkerSlot, exitcode: int | None) -> None:
        """A worker process is gone: settle the runs it held, then refill its slot."""
        if slot.deadline is not None:
            slot.deadline.cancel()
            slot.deadline = None
        held = list(slot.inflight)
        slot.inflight.clear()
        slot.ahead = 0.0
        code, sig = (None, -exitcode) if exitcode is not None and exitcode < 0 else (exitcode, None)
        target = slot.kill_target
        expected = target is not None or (slot.retiring and not held) or self._state == "forcing"
        if held:
            head, rest = held[0], held[1:]
            if target is not None and target[0] is head:
                self._finish(head, target[1], slot, error_type=ERROR_TYPES[target[1]], message=target[2],
                             exit_code=code, signal=sig, peak_rss=slot.rss or None)
            elif expected:
                reason = "a forced shutdown" if self._state == "forcing" else "a kill for another run"
                self._finish(head, Outcome.INTERRUPTED, slot, error_type="Interrupted",
                             message=f"the worker was stopped by {reason}", exit_code=code, signal=sig)
            else:
                error_type, message, traceback = describe_death(slot.pid, code, sig, slot.setup_error, slot.note)
                self._finish(head, Outcome.CRASHED, slot, error_type=error_type, message=message,
                             traceback=traceback, exit_code=code, signal=sig, peak_rss=slot.rss or None)
            for ticket in rest:  # sent ahead, never started: as if never claimed
                self._released(ticket)
                self._changes.unclaims.append((ticket.id, ticket.attempts))
                ticket.attempts -= 1
                self._after.append((ticket, RunStatus.QUEUED, None))
        elif not expected:
            error_type, message, _ = describe_death(slot.pid, code, sig, slot.setup_error, slot.note)
            log.warning("worker %d (pid %d) died: %s", slot.index, slot.pid, message)
        assert self._pool is not None
        if self._state in ("serving",):
            delay = self._pool.schedule_restart(slot, crashed=not expected)
            if delay:
                log.warning("worker slot %d restarts in %.1f s after %d quick deaths", slot.index, delay, slot.failures)
        self._schedule_tick()

    def _sample_memory(self) -> None:
        """Kill a worker whose tree's RSS passes max_memory; remember peaks for the attempt log."""
        assert self._loop is not None and self._pool is not None and self.max_memory is not None
        for slot in self._pool.slots:
            if slot.exited or slot.terminating or not slot.inflight:
                continue
            rss = tree_rss(slot.pid)
            slot.rss = max(slot.rss, rss)
            if rss > self.max_memory:
                slot.kill_target = (slot.inflight[0], Outcome.MEMORY_EXCEEDED,
                                    f"the worker used {rss / 2**20:.0f} MiB, over max_memory {self.max_memory / 2**20:.0f} MiB")
                self._pool.terminate(slot)
        self._later(0.25, self._sample_memory)

    # -- serving ------------------------------------------------------------------------------

    def serve(self, until: str | None = None) -> None:
        """Run the pool until a signal or `shutdown()`; `until="drained"` also returns once no run
        is queued, running or waiting for a retry. See `shutdown.py` for signals and exit status."""
        if until not in (None, "drained"):
            raise ValueError(f"invalid until {until!r}: expected None or 'drained'")
        with self._serving_lock:
            if self._state != "idle":
                raise RuntimeError("this supervisor is already serving or was stopped")
            self._state = "starting"
            self._stop_request = None
            self._until = until
            loop = uvloop.new_event_loop()
            self._loop, self._loop_thread = loop, threading.get_ident()
            self._finished_serving.clear()
        self._signals.save()
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._signals.restore()
            for _, timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self._rate_timers.clear()  # their parked runs try again when serving resumes
            for name in self._limits.parked:
                if (head := self._limits.head(name)) is not None:
                    self._ready.push(head)
            loop.close()
            self._loop = self._loop_thread = None
            self._take_inbox()  # submitted from another thread as serving ended: keep them queued
            with self._serving_lock:
                self._state = "idle" if self._fatal is None else "stopped"
            self._signal_count = 0
            self._finished_serving.set()
        if self._fatal is not None:
            raise self._fatal
        if self._exit_code:
            code, self._exit_code = self._exit_code, 0
            raise SystemExit(code)

    def run_until_complete(self) -> None:
        """serve(until="drained"): the batch-script mode."""
        self.serve(until="drained")

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._state = "serving"
        with warnings.catch_warnings():  # jobs from __main__ are found by reference in the worker
            warnings.simplefilter("ignore", dill.PicklingWarning)
            registry = dill.dumps((self.jobs, self.default_retry), recurse=True, byref=True)
        self._pool = Pool(loop, self.workers, registry, self._on_message, self._on_exit,
                          lambda slot: self._schedule_tick(), self.kill_grace, self.max_result_size)
        loop.set_exception_handler(self._on_loop_error)
        try:
            self._signals.install(loop, self._on_signal, self._log_status)
            unarmed, self._unarmed = self._unarmed, []
            for ticket in unarmed:  # delayed or retrying while not serving
                if ticket.id in self._tickets:
                    self._wait_until(ticket, ticket.scheduled_at)
            self._pool.start()
            self._cron.start()
            self._later(self.poll_interval, self._poll_store)
            if self.max_memory is not None:
                self._later(0.25, self._sample_memory)
            self._schedule_tick()
            if self._stop_request is not None:  # shutdown() came while serve() was starting
                self._begin_stop(self._stop_request)
            await self._stopped
        finally:
            self._pool.close()
            for ticket in self._tickets.values():
                if ticket.waiting is not None:
                    ticket.waiting.cancel()
                    ticket.waiting = None
                    self._unarmed.append(ticket)  # armed again by the next serve()
            if self._changes and self._fatal is None:
                try:
                    self.store.commit(self._changes, time.time())
                except StoreError as exc:
                    self._fatal = exc
            self._changes = Changes()

    def _submit_tick(self, found: Job[Any, Any], tick: float) -> None:
        """Submit a cron job's run for one tick (idempotent: the key names the tick)."""
        row = NewRun(found.name, found.validate_input({}), found.priority, (found.retry or self.default_retry).attempts,
                     None, 0.0, found.version, f"cron:{tick:.0f}")
        self._store_runs(found, [row])

    def _poll_store(self) -> None:
        """Pick up runs that other processes (Clients) stored."""
        assert self._loop is not None
        try:
            if self.store.changed():
                self._load(self.store.load_ready(self._scanned))
        except StoreError as exc:
            self._die(exc)
            return
        self._later(self.poll_interval, self._poll_store)

    def _check_progress(self) -> None:
        """Drain mode ends when nothing is left; a stop ends when every worker is gone."""
        if self._state == "serving":
            if self._until == "drained" and not self._tickets and not self._changes:
                self._load(self.store.load_ready(self._scanned))
                if not self._tickets and not self._changes:
                    self._begin_stop(graceful=True)
            return
        if self._state in ("draining", "forcing") and self._pool is not None:
            if self._state == "draining" and not any(s.inflight for s in self._pool.slots):
                for slot in self._pool.slots:
                    if not slot.exited and not slot.retiring:
                        self._retire(slot)
            if all(slot.exited for slot in self._pool.slots) and not self._changes and not self._after:
                self._state = "stopped"
                if self._stopped is not None and not self._stopped.done():
                    self._stopped.set_result(None)

    def _begin_stop(self, graceful: bool, reason: str | None = None) -> None:
        if self._state in ("idle", "stopped") or self._loop is None:
            return
        if graceful and self._state == "serving":
            self._state = "draining"
            running = sum(len(s.inflight) for s in self._pool.slots) if self._pool else 0
            if reason:
                log.warning("%s: finishing %d running run(s) within %.0f s, queued runs stay queued; "
                            "send it again to stop now", reason, running, self.grace)
            self._later(self.grace, self._grace_over)
        elif not graceful and self._state in ("serving", "draining"):
            self._state = "forcing"
            if reason:
                log.warning("%s: stopping now; running runs are interrupted and queued again", reason)
            assert self._pool is not None
            for slot in self._pool.slots:
                if slot.restart_handle is not None:
                    slot.restart_handle.cancel()
                    slot.restart_handle = None
                self._pool.terminate(slot)
        self._schedule_tick()

    def _grace_over(self) -> None:
        if self._state == "draining":
            self._exit_code = self._exit_code or 128 + 15
            self._begin_stop(graceful=False, reason=f"grace period of {self.grace:.0f} s is over")

    def _on_signal(self, signum: int) -> None:
        self._signal_count += 1
        name = signal_name(signum)
        if self._signal_count == 1:
            self._begin_stop(graceful=True, reason=f"received {name}")
        elif self._state != "forcing":
            self._exit_code = 128 + signum
            self._begin_stop(graceful=False, reason=f"received {name} again")

    def _log_status(self) -> None:
        now = time.time()
        pool = self._pool
        running = [
            f"run {t.id} ({t.job.name}, {now - t.claimed_at:.1f} s)" for s in (pool.slots if pool else []) for t in
            list(s.inflight)[:1]
        ]
        pids = [s.pid for s in pool.slots if s.alive] if pool else []
        log.warning("status: %s; %d queued; running: %s; worker pids: %s", self._state, len(self._ready),
                    ", ".join(running) or "none", pids)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception escaped a callback of the loop (a turn, a timer, a pipe reader): the
        turn it broke may have lost changes, so serving on would break promises silently. Stop,
        and let `serve()` raise; the next start requeues what was running."""
        exc = context.get("exception")
        where = context.get("message") or "a loop callback"
        error = SupervisorCrashed(f"the supervisor stopped on an unexpected error in {where}: "
                                  f"{type(exc).__name__ if exc else 'error'}: {exc}")
        error.__cause__ = exc
        log.error("%s", error, exc_info=exc, extra={"actors_loop_error": True})
        if self._fatal is None:
            self._die(error, logged=True)

    def _die(self, exc: BaseException, logged: bool = False) -> None:
        """The store failed, or the loop broke: stop everything rather than carry on without
        durability."""
        if not logged:
            log.error("stopping: %s", exc)
        self._fatal = exc
        self._changes = Changes()
        self._after = []
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def shutdown(self, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop serving, from any thread or from the loop. From another thread, waits until
        `serve()` has returned (or `timeout` seconds)."""
        with self._serving_lock:
            loop = self._loop
            if loop is None or self._state in ("idle", "stopped"):
                return
            if self._loop_thread == threading.get_ident():
                self._begin_stop(graceful)
                return
            # serve() reads this once serving, in case the call below runs before it is
            self._stop_request = graceful and self._stop_request is not False
            try:
                loop.call_soon_threadsafe(self._begin_stop, graceful)
            except RuntimeError:  # the loop closed meanwhile: serve() is returning
                pass
        self._finished_serving.wait(timeout)

    def close(self) -> None:
        """Stop serving if serving (waiting for it), then release the store."""
        if self._loop is not None and self._loop_thread == threading.get_ident():
            raise RuntimeError("close() was called from inside serve(); call shutdown() there instead")
        if self._loop is not None:
            self.shutdown(graceful=True)
        self.store.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- waiting, cancelling, inspecting ----------------------------------------------------------

    def on(self, event: str, callback: Callable[[RunRecord], Any]) -> None:
        """Call `callback(record)` in the supervisor when a run is submitted, started, succeeded,
        failed, retrying, timed_out or cancelled. A callback that raises is logged, no more."""
        self._listeners.add(event, callback)

    def _emit(self, event: str, ticket: Ticket) -> None:
        if self._listeners:
            self._listeners.emit(event, ticket.id, self.store.get)

    def wait_for(self, run_id: int, timeout: float) -> bool:
        """Block until this supervisor finishes the run, or `timeout` seconds; whether it did."""
        def ended() -> bool:
            if run_id in self._tickets:  # held here: the loop will notify
                return False
            record = self.store.get(run_id)
            return record is not None and record.status.is_terminal

        return self._waiters.wait(run_id, timeout, ended)

    def _notify(self, run_id: int) -> None:
        self._waiters.notify(run_id)

    def cancel(self, run_id: int) -> bool:
        """Cancel a run; whether it was live. A queued, delayed or retrying run is cancelled at
        once. A running one sees `ctx.cancelled` turn true and is killed after `kill_grace` if
        it has not finished; its attempt is recorded `cancelled`."""
        if self.store.cancel_queued(run_id, time.time()):
            self._hand_to_loop(self._forget, run_id)
            return True
        record = self.store.get(run_id)
        if record is None or record.status.is_terminal:
            return False
        self._hand_to_loop(self._cancel_running, run_id)
        return True

    def _cancel_running(self, run_id: int) -> None:
        for slot in self._pool.slots if self._pool else ():
            for ticket in slot.inflight:
                if ticket.id == run_id:
                    ticket.cancelling = True
                    self._pool.send(slot, Cancel(run_id))  # type: ignore[union-attr]
                    if slot.inflight[0] is ticket:
                        self._start_head(slot)  # arms the kill after kill_grace
                    return

    def _forget(self, run_id: int) -> None:
        ticket = self._tickets.pop(run_id, None)
        if ticket is not None:
            self._emit("cancelled", ticket)
            if ticket.waiting is not None:
                ticket.waiting.cancel()
            if ticket.job.limited:
                self._limits.discard(ticket)
                head = self._limits.head(ticket.job.name)
                if head is not None:
                    self._ready.push(head)
        self._notify(run_id)
        self._schedule_tick()

    def handle(self, run_id: int) -> Handle[Any]:
        record = self.run(run_id, attempts=False)
        return Handle(self.store, run_id, self.jobs.get(record.job), self)

    def run(self, run_id: int, attempts: bool = True) -> RunRecord:
        """The stored run with its attempt log."""
        record = self.store.get(run_id, attempts=attempts)
        if record is None:
            raise RunNotFound(f"run {run_id} does not exist in the store")
        return record

    def runs(self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50,
             offset: int = 0) -> list[RunRecord]:
        return self.store.runs(status=status, job=job, limit=limit, offset=offset)

    def stats(self) -> dict[str, Any]:
        """Counts per job and status, queue depth, runs finished per second while serving, and
        loop turns so far (each commits at most one transaction)."""
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        return {
            "jobs": self.store.counts(),
            "queued": len(self._ready),
            "live": len(self._tickets),
            "runs_per_second": self._completed / elapsed,
            "turns": self._turns,
            "workers": [s.pid for s in self._pool.slots if s.alive] if self._pool else [],
        }


def _check_importable(found: Job[Any, Any]) -> None:
    """Workers find a job's models by reference; an interactive `__main__` (python -c, a REPL,
    a notebook) cannot be imported again there, so say so now rather than in every run."""
    import sys

    if getattr(sys.modules.get("__main__"), "__file__", None) is not None:
        return
    for model in (found.input_model, found.output_type):
        if getattr(model, "__module__", None) == "__main__":
            raise TypeError(
                f"job {found.name!r}: its model {model.__name__} is defined in an interactive __main__, which "
                "worker processes cannot import; define models in a script or a module"
            )


def _scheduled_at(now: float, delay: Duration | None, at: datetime | None) -> float:
    """When a submitted run may start (epoch seconds); 0 for now."""
    if delay is not None and at is not None:
        raise ValueError("give either delay or at, not both")
    if delay is not None:
        return now + parse_duration(delay, what="delay")
    if at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"at must be a datetime, got {at!r}")
        return at.timestamp()
    return 0.0

