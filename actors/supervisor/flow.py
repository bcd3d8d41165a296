"""The tracker's flow control: runs parked by a job's limits and released again, claims a
shared store's limit deferred, a `Limit` key that fails, and debounced runs that follow a later
submit. A part of `Tracker` (a mixin: it uses the tracker's tickets, ready queue, limits,
timers and changes), kept apart so that the tracker's run and window bookkeeping reads in one
file and this in another.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..logs import run_extra
from ..run import NewRun, RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..job import Job
    from ..stores import Changes
    from .dispatch import Limits, Policy, ReadyQueue, Ticket
    from .tracker import Effects

log = logging.getLogger("actors")
DEFER = 0.05  # seconds before a claim refused by a store's limit (`Changes.deferred`) is tried again
DEFER_CAP = 1.0  # ... doubling while refused, to at most this


class FlowControl:
    """Limits, deferrals and debounce, for `Tracker`."""

    policies: dict[str, Policy]
    effects: Effects
    tickets: dict[int, Ticket]
    ready: ReadyQueue
    limits: Limits
    changes: Changes
    after: list[tuple[Ticket, RunStatus, float | None]]
    rate_timers: dict[str, Any]
    deferrals: dict[str, int]
    read_run: Callable[[int], Any] | None

    if TYPE_CHECKING:
        def wait_until(self, ticket: Ticket, when: float) -> None: ...

    # -- limits -----------------------------------------------------------------------------

    def _when_admissible(self, job: Job[Any, Any]) -> None:
        """A rate-limited job's line moves again when its window admits another start."""
        if job.name in self.rate_timers:
            return
        timer = self.effects.later(self.limits.wake_in(job, time.monotonic()), self._unpark, job.name)
        if timer is not None:
            self.rate_timers[job.name] = timer

    def _unpark(self, name: str) -> None:
        self.rate_timers.pop(name, None)
        heads = self.limits.heads(name)  # the rate is per job: every key's line may try
        for head in heads:
            self.ready.push(head)
        if heads:
            self.effects.wake()

    def _defer(self, ticket: Ticket) -> None:
        """A claim the store's own count of a limit refused (other supervisors of a shared store
        hold the job's allowance): the run waits at the head of its line, its attempt not counted,
        and the job's lines try again after `DEFER` seconds, doubling to `DEFER_CAP` while refused
        (or sooner, when a run of its line ends here)."""
        ticket.attempts -= 1
        self.limits.defer(ticket)
        name = ticket.job.name
        if name not in self.rate_timers:
            refusals = self.deferrals.get(name, 0)
            self.deferrals[name] = refusals + 1
            timer = self.effects.later(min(DEFER_CAP, DEFER * 2.0 ** min(refusals, 16)), self._unpark, name)
            if timer is not None:
                self.rate_timers[name] = timer

    def _released(self, ticket: Ticket) -> None:
        """A run left its worker: a limited job's next parked run (of its key) may try again."""
        if ticket.job.limited:
            head = self.limits.release(ticket)
            if head is not None and ticket.job.name not in self.rate_timers:
                self.ready.push(head)

    def _limit_key_failed(self, ticket: Ticket, reason: str) -> None:
        """A run's `Limit` key function raised: that run fails, nothing else does."""
        self.changes.ends.append((ticket.id, RunStatus.FAILED, "LimitKeyError", reason))
        self.after.append((ticket, RunStatus.FAILED, None))
        log.warning("run %d (%s) failed: %s", ticket.id, ticket.job.name, reason,
                    extra=run_extra(ticket.id, ticket.job.name, ticket.attempts, None))

    # -- debounce -------------------------------------------------------------------------------

    def debounced(self, run_id: int, row: NewRun) -> None:
        """A later submit of a debounced job took over the queued run `run_id` in the store
        (its input and due time): the ticket follows, and its timer moves. A ticket that is
        no longer waiting for its time is left alone: the store refused such an update, or
        `due` reads the stored run anyway (the loop's thread)."""
        ticket = self.tickets.get(run_id)
        if ticket is None or ticket.waiting is None or ticket.attempts:
            return
        ticket.waiting.cancel()
        self._follow(ticket, row.input, row.priority, row.timeout, row.tenant)
        self.wait_until(ticket, row.scheduled_at)

    def _follow(self, ticket: Ticket, input: str, priority: int, timeout: float | None, tenant: str | None) -> None:
        ticket.input, ticket.priority, ticket.tenant = input, priority, tenant
        ticket.timeout = self.policies[ticket.job.name].timeout if timeout is None else timeout

    def _debounce_moved(self, ticket: Ticket) -> bool:
        """A debounced run is due: take its input and due time as stored now (a later submit,
        maybe from another process, may have replaced both); whether it waits again."""
        if self.read_run is None or ticket.attempts:
            return False
        stored = self.read_run(ticket.id)
        if stored is None or stored.status is not RunStatus.QUEUED:
            return False  # cancelled or purged meanwhile: its claim is lost
        self._follow(ticket, stored.input, stored.priority, stored.timeout, stored.tenant)
        if stored.scheduled_at > time.time():
            self.wait_until(ticket, stored.scheduled_at)
            return True
        ticket.scheduled_at = stored.scheduled_at
        return False
