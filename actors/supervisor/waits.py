"""Waiting runs: what each suspended run waits for, and when it may go on.

A run suspends (`ctx.sleep`, `ctx.wait_for`, `ctx.invoke`, `ctx.wait_for_event`): its attempt
ends `suspended` and the run is `waiting` in the store, with its wait. Once that is committed
the tracker hands the ticket here (`hold`), and it is woken (`waiting -> queued`, in the next
turn's transaction, before that turn's claims) when:
- a sleep's time comes, or a wait's timeout (the tracker's timer; `due`);
- every child it waits for has ended: a child that ends here says so (`ended`); children that
  ended before the wait was held, or elsewhere (another supervisor of a shared store), are
  read from the store: at `hold`, and on the slow poll (`recheck`);
- an event it waits for is stored: events already stored are matched at `hold`, new ones as
  the loop reads them (`on_event`).
Waking writes what the run will read on replay into its records: each child's outcome, the
event's payload, or that the wait timed out. So a resumed run reads only its own records.

It holds no timers and no processes: the tracker arms timers, the loop reads events; the
store is read here (a child's outcome, stored events), only for waiting runs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..events import matches

if TYPE_CHECKING:
    from ..stores import Store
    from ..stores.base import Event
    from .dispatch import Ticket
    from .tracker import Tracker

log = logging.getLogger("actors")
RECHECK = 1.0  # seconds between reads of the store for children that ended elsewhere


class Waits:
    """The waiting runs of one supervisor, by what they wait for."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.store: Store | None = None  # set when serving starts
        self.parents: dict[int, set[int]] = {}  # waiting run -> the children it still waits for
        self.children: dict[int, set[int]] = {}  # child run -> the waiting runs that wait for it (a keyed
        # child, `ctx.invoke(..., key=k)`, may be waited for by several parents)
        self.listeners: dict[str, set[int]] = {}  # event name -> the waiting runs that wait for it
        self.since: dict[int, float] = {}  # a run waiting for an event -> when it was created
        self._rechecked = 0.0

    def clear(self) -> None:
        self.parents, self.children, self.listeners, self.since = {}, {}, {}, {}

    # -- a run starts waiting ----------------------------------------------------------------------

    def hold(self, ticket: Ticket) -> None:
        """A suspension is committed: wake the run at once if what it waits for is there, else
        remember it (and arm its time, if it has one)."""
        wait = ticket.wait or {}
        until = wait.get("until")
        if "runs" in wait:
            pending = set(wait["runs"])
            ended = self._outcomes(sorted(pending))
            pending -= ended.keys()
            if not pending:
                self._wake(ticket, self._child_records(ticket, ended))
                return
            self._await(ticket.id, pending)
        elif "event" in wait:
            found = self._stored_event(ticket, wait)
            if found is not None:
                self._wake(ticket, [(wait["record"], {**wait, "payload": json.loads(found.payload),
                                                      "event_id": found.id})])
                return
            self.listeners.setdefault(wait["event"], set()).add(ticket.id)
            record = self.store.get(ticket.id) if self.store is not None else None
            self.since[ticket.id] = record.created_at if record is not None else 0.0
        if until is not None:
            self.tracker.wait_until(ticket, until)
        elif "runs" not in wait and "event" not in wait:
            self._wake(ticket, [])  # nothing to wait for (a wait this supervisor cannot read)

    # -- what wakes it -----------------------------------------------------------------------------

    def due(self, ticket: Ticket) -> None:
        """Its time came: a sleep is over, or a wait timed out (the run sees which on replay)."""
        wait = ticket.wait or {}
        records = []
        if "event" in wait:
            records.append((wait["record"], {**wait, "timed_out": True}))
        self._forget(ticket.id)
        self._wake(ticket, records)

    def ended(self, child_id: int) -> None:
        """A run ended here (committed): the runs waiting for it may go on."""
        for parent_id in sorted(self.children.pop(child_id, ())):
            pending = self.parents.get(parent_id)
            if pending is None:
                continue
            pending.discard(child_id)
            if not pending:
                self._resolve(parent_id)

    def recheck(self) -> None:
        """About once a second on the poll: children that ended elsewhere (another supervisor
        of a shared store, or a cancel by a client while nobody served)."""
        now = time.monotonic()
        if not self.children or now - self._rechecked < RECHECK:
            return
        self._rechecked = now
        for child_id in list(self._outcomes(sorted(self.children))):
            self.ended(child_id)

    def on_event(self, event: Event) -> None:
        """A new event is stored: wake every run waiting for it whose match it satisfies."""
        waiting = self.listeners.get(event.name)
        if not waiting:
            return
        payload = json.loads(event.payload)
        for run_id in sorted(waiting):
            ticket = self.tracker.tickets.get(run_id)
            wait = ticket.wait if ticket is not None else None
            if wait is None or ticket is None:
                waiting.discard(run_id)
                continue
            if event.created_at >= self.since.get(run_id, 0.0) and matches(wait.get("match") or {}, payload):
                self._forget(run_id)
                self._wake(ticket, [(wait["record"], {**wait, "payload": payload, "event_id": event.id})])

    def dropped(self, run_id: int) -> None:
        """A live run left without ending here (cancelled while queued or waiting)."""
        self._forget(run_id)
        self.ended(run_id)

    # -- the parts -------------------------------------------------------------------------------

    def _resolve(self, parent_id: int) -> None:
        self.parents.pop(parent_id, None)
        ticket = self.tracker.tickets.get(parent_id)
        if ticket is None or ticket.wait is None:
            return
        ended = self._outcomes(list(ticket.wait.get("runs", [])))
        if len(ended) < len(ticket.wait.get("runs", [])):  # one was not committed as ended after all
            self._await(parent_id, set(ticket.wait["runs"]) - ended.keys())
            return
        self._wake(ticket, self._child_records(ticket, ended))

    def _child_records(self, ticket: Ticket, ended: dict[int, tuple[str, str | None, str | None, str | None]]
                       ) -> list[tuple[str, Any]]:
        """The parent's invoke records, filled in with each ended child's outcome."""
        records = []
        for name, text in (ticket.steps or {}).items():
            if not name.startswith("run:"):
                continue
            value = json.loads(text)
            outcome = ended.get(value.get("run"))
            if outcome is not None and "status" not in value:
                status, output, error_type, message = outcome
                records.append((name, {"run": value["run"], "status": status, "output": output,
                                       "error_type": error_type, "message": message}))
        return records

    def _wake(self, ticket: Ticket, records: list[tuple[str, Any]]) -> None:
        """waiting -> queued, with the records the run reads on replay, in the next turn."""
        tracker = self.tracker
        changes = tracker.changes
        steps = ticket.steps if ticket.steps is not None else {}
        for name, value in records:
            text = json.dumps(value)
            steps[name] = text
            changes.steps.append((ticket.id, name, text, None))
        ticket.steps = steps
        if ticket.waiting is not None:
            ticket.waiting.cancel()
            ticket.waiting = None
        ticket.wait = None
        changes.wakes.append(ticket.id)
        tracker.ready.push(ticket)
        tracker.effects.wake()

    def _await(self, parent_id: int, pending: set[int]) -> None:
        self.parents[parent_id] = pending
        for child in pending:
            self.children.setdefault(child, set()).add(parent_id)

    def _forget(self, run_id: int) -> None:
        for child in self.parents.pop(run_id, ()):
            waiting = self.children.get(child)
            if waiting is not None:
                waiting.discard(run_id)
                if not waiting:
                    del self.children[child]
        for waiting in self.listeners.values():
            waiting.discard(run_id)
        self.since.pop(run_id, None)

    def _outcomes(self, run_ids: list[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
        if self.store is None or not run_ids:
            return {}
        return self.store.outcomes(run_ids)

    def _stored_event(self, ticket: Ticket, wait: dict[str, Any]) -> Event | None:
        """The oldest stored event the wait matches: emitted since its run was created, and
        not one an earlier wait of the run consumed."""
        if self.store is None:
            return None
        consumed = [json.loads(text).get("event_id") for name, text in (ticket.steps or {}).items()
                    if name.startswith("event:")]
        for found in self.store.find_events(wait["event"], ticket.id, [c for c in consumed if c is not None]):
            if matches(wait.get("match") or {}, json.loads(found.payload)):
                return found
        return None
