"""Group commit of `insert` calls from several threads sharing one connection.

Each call queues its runs, then waits for the connection's lock. The next call to get it
stores what every queued call brought in one transaction, so N threads that submit at once
pay about one commit, not N in a row. Each call returns its own ids once that transaction
committed (invariant 1). When it fails, each call is tried alone, so that an error is only
ever its own call's. A call interrupted while storing a group puts the others back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run import NewRun

Insert = Callable[["list[NewRun]", float], "list[tuple[int, bool]]"]


class _Arrival:
    """One `insert` call waiting for the connection: its runs, then their ids or the error."""

    __slots__ = ("runs", "now", "done", "stored", "error")

    def __init__(self, runs: list[NewRun], now: float) -> None:
        self.runs, self.now = runs, now
        self.done = False
        self.stored: list[tuple[int, bool]] = []
        self.error: BaseException | None = None


class GroupCommit:
    """Around `insert` (one transaction, called with `mutex` held), for calls from any thread."""

    def __init__(self, mutex: threading.RLock, insert: Insert) -> None:
        self._mutex = mutex
        self._insert = insert
        self._arrivals: list[_Arrival] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The calls waiting for the connection."""
        return len(self._arrivals)

    def insert(self, runs: list[NewRun], now: float) -> list[tuple[int, bool]]:
        entry = _Arrival(runs, now)
        with self._lock:
            self._arrivals.append(entry)
        with self._mutex:
            if not entry.done:  # else stored by the call that held the connection before us
                with self._lock:
                    batch, self._arrivals = self._arrivals, []
                if entry not in batch:  # taken by a call that was interrupted before it stored it
                    batch.insert(0, entry)
                self._together(batch, entry)
        if entry.error is not None:
            raise entry.error
        return entry.stored

    def _together(self, batch: list[_Arrival], own: _Arrival) -> None:
        """One transaction for the runs of every call in `batch` (`own` is the caller's)."""
        try:
            stored = self._insert([run for entry in batch for run in entry.runs], max(e.now for e in batch))
        except Exception as exc:
            if len(batch) == 1:
                own.error, own.done = exc, True
                return
            for entry in batch:
                self._together([entry], entry)
            return
        except BaseException:  # interrupted: the other calls are still to store, by their own threads
            with self._lock:
                self._arrivals[:0] = [entry for entry in batch if entry is not own]
            raise
        start = 0
        for entry in batch:
            entry.stored, entry.done = stored[start:start + len(entry.runs)], True
            start += len(entry.runs)
