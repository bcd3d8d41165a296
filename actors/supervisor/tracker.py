"""The run tracker: every live run the supervisor holds, and each worker's window of runs.

It owns the run state of a supervisor and nothing else: tickets (queued, waiting, running),
the ready queue, limits, estimates, each worker's `Window` (runs sent ahead in order, the head's
deadline, a kill verdict, peak memory, retiring), and the turn's `Changes`. It decides what a
report (`Done`, `Failed`, `StepDone`, `Progress`), a deadline or a worker's death means for a
run, records the writes, and defers what must wait for the commit to `after` (acted on in
`act`). It never imports the pool or the loop: what it needs of them — timers, sending to a
worker, killing one, events, waking a turn — it is handed as `Effects`, so its tests start no
process. Its flow control (runs parked by limits, deferred claims, debounce) is in `flow.py`,
its waiting runs in `waits.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from ..job import Job
from ..logs import run_extra
from ..protocol import (
    Assign,
    Cancel,
    CancelRun,
    Done,
    Failed,
    Logged,
    Order,
    Progress,
    Spawn,
    StepDone,
    StepStarted,
    Stop,
    Suspend,
)
from ..run import NewRun, Outcome, RunStatus
from ..stores import Changes, Finish
from ..stores.base import BY_NAME, Suspension, Waiting
from .dispatch import NO_LINE, Estimates, Limits, Policy, ReadyQueue, Ticket, Window, fill
from .flow import FlowControl
from .outcomes import ERROR_TYPES, PolicyFailed, describe_death, settle
from .waits import Waits

log = logging.getLogger("actors")


class Effects(Protocol):
    """What the tracker asks of the serving loop: a timer (`later`, None when no loop serves),
    a message to a worker, a kill of its tree (`terminate`, False if it is already gone or being
    killed), events (`listening` says whether anyone listens), waking waiters, and a turn."""

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any | None: ...
    def send(self, window: Window, message: Any) -> None: ...
    def terminate(self, window: Window, note: str | None = None) -> bool: ...
    @property
    def listening(self) -> bool: ...
    def emit(self, event: str, ticket: Ticket) -> None: ...
    def notify(self, run_id: int) -> None: ...
    def wake(self) -> None: ...
    def spawn(self, window: Window, parent: Ticket, message: Spawn) -> None: ...
    def cancel_run(self, run_id: int) -> None: ...


class Tracker(FlowControl):
    """Live runs and worker windows of one supervisor; see the module docstring."""

    def __init__(self, policies: dict[str, Policy], effects: Effects, workers: int, *, kill_grace: float,
                 max_runs_per_worker: int | None) -> None:
        self.policies = policies
        self.effects = effects
        self.kill_grace = kill_grace
        self.max_runs_per_worker = max_runs_per_worker
        self.windows = [Window(i) for i in range(workers)]
        self.tickets: dict[int, Ticket] = {}  # every live run known here: queued, waiting or running
        self.ready = ReadyQueue()
        self.limits = Limits()
        self.estimates = Estimates()
        self.changes = Changes()
        self.after: list[tuple[Ticket, RunStatus, float | None]] = []  # to act on once committed
        self.unarmed: list[Ticket] = []  # tickets waiting for a time while no loop runs
        self.rate_timers: dict[str, Any] = {}  # job -> the timer that wakes its parked line
        self.deferrals: dict[str, int] = {}  # job -> its claims refused in a row by a store's limit (`_defer`)
        self.limit_keys_counted = False  # the store counts `Limit` keys across supervisors: pass them with claims
        self.scanned = 0  # the highest run id read from the store
        self.backlog = False  # stored runs past `scanned` wait to be read (see `loop.PAGE`)
        self.completed = 0
        self.kills = {"timeout": 0, "memory": 0, "cancel": 0}  # workers killed by us, by reason
        self.waits = Waits(self)
        # reads a stored run (`Store.get`): a debounced run's input and due time when it is due
        self.read_run: Callable[[int], Any] | None = None

    # -- runs arriving ----------------------------------------------------------------------

    def new_tickets(self, found: Job[Any, Any], rows: list[NewRun], stored: list[tuple[int, bool]],
                    now: float) -> list[Ticket]:
        """Tickets for runs just stored by a submit (any thread; they are queued by `enqueue`)."""
        timeout = self.policies[found.name].timeout
        tickets = [Ticket(run_id, found, row.input, row.priority, 0, 0, row.max_attempts or 1,
                          timeout if row.timeout is None else row.timeout, row.scheduled_at or now, row.version)
                   for (run_id, created), row in zip(stored, rows, strict=True) if created]
        if rows and rows[0].tenant is not None:
            for ticket in tickets:
                ticket.tenant = rows[0].tenant  # one tenant per submit
        return tickets

    def load(self, rows: Iterable[Any], jobs: dict[str, Job[Any, Any]], steps: Callable[[int], dict[str, str]],
             positions: Callable[[int], dict[str, int]] | None = None) -> None:
        """Tickets for stored queued/retrying runs (at start, and those other processes added)."""
        tickets = []
        ends = self.changes.ends
        for row in rows:
            self.scanned = max(self.scanned, row.id)
            if row.id in self.tickets:
                continue
            found = jobs.get(row.job)
            if found is None:
                ends.append((row.id, RunStatus.FAILED, "JobNotFound",
                             f"job {row.job!r} is not registered with the supervisor serving this store"))
                continue
            policy = self.policies[found.name]
            attempts = row.max_attempts or policy.attempts
            timeout = row.timeout if row.timeout is not None else policy.timeout
            version = row.version
            if version == BY_NAME:  # submitted by name elsewhere: it is a run of the job served here
                version = found.version
                self.changes.adopts.append((row.id, version, _unique_key(found, row)))
            ticket = Ticket(row.id, found, row.input, row.priority, row.attempts, row.free_attempts, attempts, timeout,
                            row.scheduled_at, version)
            ticket.tenant = getattr(row, "tenant", None)
            if row.attempts:
                ticket.steps = steps(row.id) or None
                if ticket.steps and positions is not None:
                    ticket.positions = positions(row.id) or None
            ticket.retrying = row.status == RunStatus.RETRYING
            ticket.interrupted = row.interrupted
            if row.attempts and ticket.charged >= attempts:  # recover() charged a second interruption
                ends.append((row.id, RunStatus.FAILED, "Interrupted",
                             f"attempt {row.attempts} was interrupted like the one before it (its supervisor "
                             "died during both) and no attempt is left"))
                continue
            tickets.append(ticket)
        self.enqueue(tickets)

    def load_waiting(self, rows: list[Waiting], jobs: dict[str, Job[Any, Any]], steps: Callable[[int], dict[str, str]],
                     positions: Callable[[int], dict[str, int]]) -> None:
        """Tickets for the stored waiting runs, when serving starts: each waits here again."""
        for waiting in rows:
            row = waiting.pending
            found = jobs.get(row.job)
            if found is None or row.id in self.tickets:
                continue  # a job not served here: it waits until a supervisor that has it serves
            policy = self.policies[found.name]
            ticket = Ticket(row.id, found, row.input, row.priority, row.attempts, row.free_attempts,
                            row.max_attempts or policy.attempts, row.timeout if row.timeout is not None else policy.timeout,
                            row.scheduled_at, row.version)
            ticket.steps, ticket.positions = steps(row.id) or None, positions(row.id) or None
            ticket.tenant = row.tenant
            ticket.wait = json.loads(waiting.wait)
            self.tickets[row.id] = ticket
            self.waits.hold(ticket)

    def clear(self) -> None:
        """Forget every queued run (none runs while not serving): serving starts, and the store
        alone says what is queued (another process may have served it meanwhile)."""
        self.waits.clear()
        self.tickets, self.ready, self.limits = {}, ReadyQueue(), Limits()
        self.unarmed, self.rate_timers, self.scanned, self.backlog = [], {}, 0, False

    def enqueue(self, tickets: list[Ticket]) -> None:
        """Make runs live here: each stored run enters exactly once, whatever path brought it."""
        now = time.time()
        known = self.tickets
        for ticket in tickets:
            if ticket.id in known:
                continue
            known[ticket.id] = ticket
            job = ticket.job
            if job.min_version is not None and ticket.version < job.min_version:
                self.changes.ends.append((ticket.id, RunStatus.CANCELLED, "StaleVersion",
                                          f"run of job version {ticket.version}, below min_version {job.min_version}"))
                self.after.append((ticket, RunStatus.CANCELLED, None))
                continue
            if ticket.scheduled_at > now + 0.0005:
                self.wait_until(ticket, ticket.scheduled_at)
            else:
                self.due(ticket)
            if ticket.attempts == 0:
                self.effects.emit("submitted", ticket)
        self.effects.wake()

    def wait_until(self, ticket: Ticket, when: float) -> None:
        """Hold a ticket until `when` (epoch seconds), then queue it; armed when serving starts."""
        ticket.scheduled_at = when
        ticket.waiting = self.effects.later(when - time.time(), self.due, ticket)
        if ticket.waiting is None:
            self.unarmed.append(ticket)

    def due(self, ticket: Ticket) -> None:
        ticket.waiting = None
        if ticket.wait is not None:  # a sleep is over, or a wait timed out
            self.waits.due(ticket)
            return
        if ticket.job.debounce is not None and self._debounce_moved(ticket):
            return
        if ticket.retrying:  # its backoff is over: retrying -> queued, in this turn's transaction
            ticket.retrying = False
            self.changes.requeues.append(ticket.id)
        self.ready.push(ticket)
        self.effects.wake()

    def arm(self) -> None:
        """Serving starts: arm the timers of runs that wait for a time."""
        unarmed, self.unarmed = self.unarmed, []
        for ticket in unarmed:
            if ticket.id in self.tickets:
                self.wait_until(ticket, ticket.scheduled_at)

    def disarm(self) -> None:
        """Serving ended (its timers are cancelled): keep waiting runs and parked lines for the next."""
        for ticket in self.tickets.values():
            if ticket.waiting is not None:
                ticket.waiting = None
                self.unarmed.append(ticket)
        self.rate_timers.clear()  # their parked runs try again when serving resumes
        for name in list(self.limits.parked):
            for head in self.limits.heads(name):
                self.ready.push(head)

    # -- the turn ---------------------------------------------------------------------------

    def dispatch(self, windows: Iterable[Window]) -> list[tuple[Window, list[Ticket]]]:
        """Claim ready runs for the given (live) workers with room in their window."""
        sends = []
        now = time.time()
        for window in windows:
            if not self.ready:
                break
            batch = fill(window, self.ready, self.tickets, self.limits, self.estimates, self.changes.claims,
                         self.max_runs_per_worker, now, self._when_admissible, self._limit_key_failed,
                         self.changes.claim_keys if self.limit_keys_counted else None)
            if batch:
                sends.append((window, batch))
        return sends

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    def act(self, sends: list[tuple[Window, list[Ticket]]], lost: set[int],
            deferred: Collection[int] = ()) -> None:
        """The turn's changes are committed: send the claimed runs, then act on the decisions.
        Of the `lost` claims, those `deferred` (a limit counted in the store refused them) wait
        here and try again later (`_defer`); the others are dropped."""
        effects = self.effects
        if lost:
            effects.wake()  # the workers those claims were for have room again
        waits: list[Ticket] = []
        for window, batch in sends:
            if self.deferrals:
                for ticket in batch:
                    if ticket.id not in lost:
                        self.deferrals.pop(ticket.job.name, None)  # claimed: its next refusal waits briefly again
            if lost:
                batch = self._drop_lost(window, batch, lost, deferred, waits)
                if not batch:
                    continue
            if window.inflight and window.inflight[0] is batch[0]:
                self.start_head(window)
            effects.send(window, Assign([Order(t.id, t.attempts, t.job.name, t.input, t.soft_timeout, t.steps,
                                               t.positions) for t in batch]))
            if effects.listening:
                for ticket in batch:
                    effects.emit("started", ticket)
        for ticket in reversed(waits):  # the last first: each goes to the head of its line
            self._defer(ticket)
        after, self.after = self.after, []
        for ticket, status, retry_at in after:
            if status is RunStatus.RETRYING:
                ticket.retrying = True
                self.wait_until(ticket, retry_at or 0.0)
            elif status is RunStatus.QUEUED:
                self.ready.push(ticket)
                effects.wake()
            elif status is RunStatus.WAITING:
                self.waits.hold(ticket)
            else:
                self.tickets.pop(ticket.id, None)
                self.completed += 1
                effects.notify(ticket.id)
                if self.waits.children:
                    self.waits.ended(ticket.id)
            if effects.listening:
                effects.emit(status.value, ticket)

    def _drop_lost(self, window: Window, batch: list[Ticket], lost: set[int], deferred: Collection[int] = (),
                   waits: list[Ticket] | None = None) -> list[Ticket]:
        """Claims the store refused (cancelled meanwhile by another process, or claimed by another
        supervisor of a shared store): forget them; "cancelled" reaches listeners only for the first.
        Those `deferred` by a limit go to `waits` instead (they stay live here)."""
        kept = []
        for ticket in batch:
            if ticket.id in lost:
                window.inflight.remove(ticket)
                window.ahead -= ticket.estimate
                if ticket.id in deferred and waits is not None and ticket.line is not NO_LINE:
                    waits.append(ticket)
                    continue
                self._released(ticket)
                self.tickets.pop(ticket.id, None)
                self.effects.emit("cancelled", ticket)
                self.effects.notify(ticket.id)
            else:
                kept.append(ticket)
        return kept

    # -- a worker's window --------------------------------------------------------------------

    def worker_ready(self, window: Window) -> None:
        window.ready = True
        self.start_head(window)
        self.effects.wake()

    def start_head(self, window: Window) -> None:
        """The oldest unreported run of a worker is the one it executes now: time it."""
        if window.deadline is not None:
            window.deadline.cancel()
            window.deadline = None
        if not window.inflight:
            return
        head = window.inflight[0]
        window.head_started = time.monotonic()
        if not window.ready:
            return  # a starting worker's fork and setup are not the run's time: armed when ready
        delay = self.kill_grace if head.cancelling else head.timeout
        if delay is not None:
            window.deadline = self.effects.later(delay, self.on_deadline, window, head)

    def _logged(self, window: Window, message: Logged) -> None:
        """A `ctx.log` record from inside a run: logged here, with the run's fields."""
        logger = logging.getLogger(message.logger)
        if not logger.isEnabledFor(message.level):
            return
        ticket = self.tickets.get(message.run_id)
        extra = run_extra(message.run_id, ticket.job.name if ticket else "?", message.attempt, window.pid)
        record = logger.makeRecord(logger.name, message.level, "(worker)", 0, message.message, (), None,
                                   extra=extra)
        record.created = message.created
        logger.handle(record)

    def report(self, window: Window, message: Any) -> None:
        """A worker's report on the run it executes (the head of its window)."""
        if window.kill is not None:
            return  # we are killing this worker for its head run: a late report loses to the kill
        kind = type(message)
        if kind is Logged:
            self._logged(window, message)
            return
        inflight = window.inflight
        if not inflight or inflight[0].id != message.run_id or inflight[0].attempts != message.attempt:
            if kind is Done or kind is Failed:
                self.effects.terminate(window, f"the worker reported run {message.run_id} out of order")
            return  # a step or progress about a run this worker no longer holds
        if kind is Done or kind is Failed:
            ticket = inflight.popleft()
            window.ahead -= ticket.estimate
            window.runs_done += 1
            self.estimates.observe(ticket.job.name, message.seconds)
            if kind is Done and not ticket.cancelling:  # the hot path, kept lean
                self._released(ticket)
                self.changes.successes.append(
                    (ticket.id, ticket.attempts, message.output, ticket.claimed_at, window.pid, message.peak_rss))
                self.after.append((ticket, RunStatus.SUCCEEDED, None))
            elif kind is Done:
                self.finish(ticket, Outcome.SUCCEEDED, window, output=message.output, peak_rss=message.peak_rss)
            else:
                self.finish(ticket, Outcome.FAILED, window, retryable=message.retryable, error_type=message.error_type,
                            message=message.message, traceback=message.traceback, peak_rss=message.peak_rss)
            self.start_head(window)
            limit = self.max_runs_per_worker
            if window.retiring or limit is not None and window.runs_done >= limit:
                self.retire(window)
        elif kind is StepDone:
            ticket = inflight[0]
            if ticket.steps is None:
                ticket.steps = {}
            ticket.steps[message.name] = message.value
            if message.position is not None:
                if ticket.positions is None:
                    ticket.positions = {}
                ticket.positions[message.name] = message.position
            self.changes.steps.append((message.run_id, message.name, message.value, message.position))
        elif kind is Progress:
            self.changes.progress.append((message.run_id, message.fraction, message.message, message.metadata))
        elif kind is Suspend:
            self._suspended(window, message)
        elif kind is Spawn:
            self.effects.spawn(window, inflight[0], message)
        elif kind is StepStarted:
            self.changes.current_steps.append((message.run_id, message.name))
        elif kind is CancelRun:
            self.effects.cancel_run(message.target)
        self.effects.wake()

    def _suspended(self, window: Window, message: Suspend) -> None:
        """The head run waits durably: its attempt ends, free, and the worker goes on."""
        ticket = window.inflight.popleft()
        window.ahead -= ticket.estimate
        window.runs_done += 1
        if ticket.cancelling:  # the cancel was asked first: the run ends here
            self.finish(ticket, Outcome.CANCELLED, window, error_type="RunCancelled", message="cancelled while running",
                        peak_rss=message.peak_rss)
        else:
            self._released(ticket)
            ticket.free += 1
            ticket.wait = json.loads(message.wait)
            self.changes.suspends.append(Suspension(ticket.id, ticket.attempts, ticket.claimed_at, time.time(),
                                                    message.wait, message.wake_at, window.pid, message.peak_rss))
            self.after.append((ticket, RunStatus.WAITING, None))
        self.start_head(window)
        limit = self.max_runs_per_worker
        if window.retiring or limit is not None and window.runs_done >= limit:
            self.retire(window)

    def finish(self, ticket: Ticket, outcome: Outcome, window: Window | None, *, retryable: bool = True,
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
            status, retry_at = settle(outcome, self.policies[ticket.job.name].retry, retryable, ticket.charged,
                                      ticket.max_attempts, now)
        except PolicyFailed as exc:  # the user's backoff raised: fail the run, saying both why
            status, retry_at = RunStatus.FAILED, None
            message = f"{message} (not retried: {exc})" if message else f"not retried: {exc}"
        self.changes.finishes.append(Finish(
            ticket.id, ticket.attempts, status.value, outcome.value, ticket.claimed_at, now, output, error_type,
            message, traceback, window.pid if window else None, exit_code, signal, peak_rss, retry_at, charged,
        ))
        self.after.append((ticket, status, retry_at))
        extra = run_extra(ticket.id, ticket.job.name, ticket.attempts, window.pid if window else None)
        if status is RunStatus.RETRYING:
            log.info("run %d (%s) attempt %d %s: %s; retrying in %.3f s", ticket.id, ticket.job.name,
                     ticket.attempts, outcome.value, message, (retry_at or now) - now, extra=extra)
        elif status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            log.warning("run %d (%s) %s after attempt %d: %s: %s", ticket.id, ticket.job.name, status.value,
                        ticket.attempts, error_type, message, extra=extra)

    def retire(self, window: Window) -> None:
        """Stop giving a worker runs; it is told to exit once it reported what it holds."""
        window.retiring = True
        if not window.inflight and not window.stop_sent:
            window.stop_sent = True
            self.effects.send(window, Stop())

    def on_deadline(self, window: Window, ticket: Ticket) -> None:
        """The running run's timeout, or the grace after a cancel, is over: kill its worker."""
        window.deadline = None
        if not window.inflight or window.inflight[0] is not ticket or window.kill is not None:
            return
        if ticket.cancelling:
            verdict = (ticket, Outcome.CANCELLED, f"cancelled while running; killed after {self.kill_grace} s")
        else:
            elapsed = time.monotonic() - window.head_started
            verdict = (ticket, Outcome.TIMED_OUT, f"timed out after {elapsed:.3f} s (timeout {ticket.timeout} s)")
        if self.effects.terminate(window):  # not if it is being killed already, for another reason
            window.kill = verdict

    def memory_sampled(self, window: Window, used: int, limit: int) -> None:
        """Remember a worker tree's peak memory; kill it if it holds more than `limit` bytes."""
        window.peak_memory = max(window.peak_memory, used)
        if used > limit and window.inflight and window.kill is None and self.effects.terminate(window):
            window.kill = (window.inflight[0], Outcome.MEMORY_EXCEEDED,
                           f"the worker used {used / 2**20:.0f} MiB, over max_memory {limit / 2**20:.0f} MiB")

    def worker_exited(self, window: Window, exitcode: int | None, *, forcing: bool,
                      setup_error: tuple[str, str, str] | None = None, note: str | None = None) -> bool:
        """A worker process is gone: settle the runs it held. Whether we expected it (a kill of
        ours, a retirement, a forced stop) rather than a crash."""
        if window.deadline is not None:
            window.deadline.cancel()
            window.deadline = None
        held = list(window.inflight)
        window.inflight.clear()
        window.ahead = 0.0
        code, sig = (None, -exitcode) if exitcode is not None and exitcode < 0 else (exitcode, None)
        kill = window.kill
        expected = kill is not None or (window.retiring and not held) or forcing
        peak = window.peak_memory or None
        if held:
            head, rest = held[0], held[1:]
            if kill is not None and kill[0] is head:
                reason = _KILL_REASONS.get(kill[1])
                if reason is not None:
                    self.kills[reason] += 1
                self.finish(head, kill[1], window, error_type=ERROR_TYPES[kill[1]], message=kill[2],
                            exit_code=code, signal=sig, peak_rss=peak)
            elif expected:
                reason = "a forced shutdown" if forcing else "a kill for another run"
                self.finish(head, Outcome.INTERRUPTED, window, error_type="Interrupted",
                            message=f"the worker was stopped by {reason}", exit_code=code, signal=sig)
            else:
                error_type, message, traceback = describe_death(window.pid, code, sig, setup_error, note)
                self.finish(head, Outcome.CRASHED, window, error_type=error_type, message=message,
                            traceback=traceback, exit_code=code, signal=sig, peak_rss=peak)
            for ticket in rest:  # sent ahead, never started: as if never claimed
                self._released(ticket)
                self.changes.unclaims.append((ticket.id, ticket.attempts))
                ticket.attempts -= 1
                self.after.append((ticket, RunStatus.QUEUED, None))
        elif not expected:
            _, message, _ = describe_death(window.pid, code, sig, setup_error, note)
            log.warning("worker %d (pid %d) died: %s", window.index, window.pid, message)
        self.effects.wake()
        return expected

    # -- cancels ------------------------------------------------------------------------------

    def cancel_running(self, run_id: int) -> None:
        """A running run was asked to stop: tell its worker, and kill it after the grace."""
        for window in self.windows:
            for ticket in window.inflight:
                if ticket.id == run_id:
                    ticket.cancelling = True
                    self.effects.send(window, Cancel(run_id))
                    if window.inflight[0] is ticket:
                        self.start_head(window)  # arms the kill after kill_grace
                    return

    def forget(self, run_id: int) -> None:
        """A queued or waiting run was cancelled in the store: drop it here."""
        ticket = self.tickets.pop(run_id, None)
        self.waits.dropped(run_id)
        if ticket is not None:
            self.effects.emit("cancelled", ticket)
            if ticket.waiting is not None:
                ticket.waiting.cancel()
            if ticket.job.limited:
                self.limits.discard(ticket)
                head = self.limits.head_of(ticket)
                if head is not None:
                    self.ready.push(head)
        self.effects.notify(run_id)
        self.effects.wake()

    def running(self) -> int:
        return sum(len(window.inflight) for window in self.windows)


_KILL_REASONS = {Outcome.TIMED_OUT: "timeout", Outcome.MEMORY_EXCEEDED: "memory", Outcome.CANCELLED: "cancel"}


def _unique_key(found: Job[Any, Any], row: Any) -> str | None:
    """The unique key of a run submitted by name (its input was not validated where it was)."""
    try:
        return found.unique_key(row.input)
    except Exception as exc:  # an invalid input (the worker will say so) or unique= raised
        log.warning("run %d: no unique key (%s: %s); the worker validates its input", row.id, type(exc).__name__, exc)
        return None
