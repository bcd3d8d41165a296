"""Who hears about runs ending: event listeners (`sup.on`) and threads blocked in `result()`.

Both are called by the supervisor's loop after the change they report is committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..run import RunRecord, RunStatus

log = logging.getLogger("actors")

EVENTS = frozenset({"submitted", "started", "succeeded", "failed", "retrying", "timed_out", "cancelled"})


class Listeners:
    """Callbacks per event, called with the run's stored record; one that raises is logged."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[[RunRecord], Any]]] = {}

    def add(self, event: str, callback: Callable[[RunRecord], Any]) -> None:
        if event not in EVENTS:
            raise ValueError(f"invalid event {event!r}: expected one of {sorted(EVENTS)}")
        if not callable(callback):
            raise TypeError(f"callback for {event!r} must be callable, got {callback!r}")
        self._callbacks.setdefault(event, []).append(callback)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def emit(self, event: str, run_id: int, read: Callable[[int], RunRecord | None]) -> None:
        callbacks = self._callbacks.get(event)
        if not callbacks:
            return
        record = read(run_id)
        if record is None:
            return
        if event == "cancelled" and record.status is not RunStatus.CANCELLED:
            return  # a claim lost to another supervisor (a shared PostgreSQL store): the run is its own
        for callback in callbacks:
            try:
                callback(record)
            except Exception:
                log.exception("callback %r for event %r raised (run %d)", callback, event, run_id)


class Waiters:
    """Threads waiting for runs to end, woken by `notify` (from the loop, after the commit)."""

    def __init__(self) -> None:
        self._events: dict[int, list[threading.Event]] = {}
        self._lock = threading.Lock()

    def wait(self, run_id: int, timeout: float, ended: Callable[[], bool]) -> bool:
        """Block until `notify(run_id)` or `timeout` seconds; `ended()` is asked once the waiter is
        registered, so a run that ends meanwhile still counts. Whether it ended."""
        event = threading.Event()
        with self._lock:
            self._events.setdefault(run_id, []).append(event)
        if ended() or event.wait(timeout):
            return True
        with self._lock:  # timed out: leave no event behind for a long wait's next round
            events = self._events.get(run_id)
            if events is not None and event in events:
                events.remove(event)
                if not events:
                    del self._events[run_id]
        return False

    def notify(self, run_id: int) -> None:
        if self._events:
            with self._lock:
                events = self._events.pop(run_id, ())
            for event in events:
                event.set()
