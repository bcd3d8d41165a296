"""Counts kept up to date without counting the whole history on each page: runs per job and
status, ended runs per minute for the charts, and the set of live runs (queued, running, waiting,
retrying). No index is needed, so the supervisor's hot path pays nothing for it.

Two facts make it incremental. Run ids only grow, and a run committed later has a larger id
(SQLite has one writer at a time). And a run that ended keeps its status and its `finished_at`
for good (a retry makes a new run; only purge deletes, and only ended runs). So a page reads:
- the runs past the highest id read so far (a page reads at most NEW_IDS of them; a backlog
  is read over the next pages): an ended one is counted once, a live one joins the live set;
- the live set again, by primary key: a run found ended is counted once and leaves the set;
  the rest give the live counts by status. A page reads at most LIVE_CHECKED of them: the
  oldest half (the supervisor claims the oldest first, so they hold the running ones) and a
  window that moves through the rest from page to page; the others count as queued, and the
  page says so.
Each ended run is counted exactly once: when its id is first read, or when it leaves the set.

The first count (a scan: about 0.5 s per million runs) runs in a background thread when the
app starts, and again every REBUILD seconds, which forgets purged runs; until the first one is
done, pages say the counts are being made. A page never waits for a scan.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .queries import LIVE

log = logging.getLogger("actors.dashboard")

HOUR = 60  # minutes in the charts
REBUILD = 300.0  # seconds between full recounts
NEW_IDS = 200_000  # new runs read per page at most
LIVE_CHECKED = 2_000  # live runs whose status a page reads at most


@dataclass(slots=True)
class Tally:
    """What a page shows: ended totals {(job, status): count}, ended per epoch minute of the last
    hour {minute: {status: count}}, live {(job, status): count}, and how sure it is."""

    ended: dict[tuple[str, str], int] = field(default_factory=dict)
    minutes: dict[int, Counter[str]] = field(default_factory=dict)
    live: dict[tuple[str, str], int] = field(default_factory=dict)
    live_total: int = 0
    unchecked: int = 0  # live runs counted as queued without reading their status
    behind: bool = False  # new runs still to read (a backlog)
    ready: bool = True


class Counts:
    def __init__(self, reader: Any) -> None:  # queries.Reader or pg_queries.PostgresReader
        self._reader = reader
        self._lock = threading.Lock()
        self._ended: Counter[tuple[str, str]] = Counter()
        self._minutes: dict[int, Counter[str]] = {}
        self._live: dict[int, str] = {}  # run id -> job, in id order
        self._live_jobs: Counter[str] = Counter()  # the same, counted per job
        self._top = 0  # the highest run id read
        self._turn = 0  # where the moving window of live runs to check starts
        self._built_at: float | None = None
        self._building = False
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self._built_at is not None

    def start(self) -> None:
        """Count everything in a background thread (unless a count is under way)."""
        with self._lock:
            if self._building:
                return
            self._building = True
        threading.Thread(target=self._build, name="actors-dashboard-counts", daemon=True).start()

    def _build(self) -> None:
        try:
            since = int(time.time() // 60) - HOUR
            top, rows, live = self._reader.full_count(since)  # one snapshot (a scan)
            ended: Counter[tuple[str, str]] = Counter()
            minutes: dict[int, Counter[str]] = {}
            for job, status, minute, count in rows:
                ended[(job, status)] += count
                if minute is not None:
                    minutes.setdefault(minute, Counter())[status] += count
            with self._lock:
                self._ended, self._minutes, self._live, self._top = ended, minutes, live, top
                self._live_jobs = Counter(live.values())
                self._built_at = time.monotonic()
                self.error = None
        except Exception as exc:  # pages say so; the next page tries again
            log.warning("counting runs failed: %s", exc)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._building = False

    def _end(self, job: str, status: str, minute: int | None) -> None:
        self._ended[(job, status)] += 1
        if minute is not None:
            self._minutes.setdefault(minute, Counter())[status] += 1

    def read(self, now: float | None = None) -> Tally:
        """The counts as of now (`now`, epoch seconds, only places the charts' hour)."""
        now = time.time() if now is None else now
        reader = self._reader
        if self._built_at is None:
            if not self._building:
                self.start()
            return Tally(ready=False)
        with self._lock:
            top, new_live, new_ended = reader.new_runs(self._top, NEW_IDS)
            behind = top - self._top == NEW_IDS
            self._top = top
            for run_id, job in new_live:
                self._live[run_id] = job
                self._live_jobs[job] += 1
            for job, status, at, count in new_ended:
                self._ended[(job, status)] += count
                if at is not None:
                    self._minutes.setdefault(at, Counter())[status] += count
            checked = self._to_check()
            live: Counter[tuple[str, str]] = Counter()
            checked_jobs: Counter[str] = Counter()
            for run_id, job, status, minute in reader.recheck(checked):
                if status in LIVE:
                    live[(job, status)] += 1
                    checked_jobs[job] += 1
                elif self._live.pop(run_id, None) is not None:
                    self._live_jobs[job] -= 1
                    self._end(job, status, minute)
            unchecked = len(self._live) - sum(checked_jobs.values())
            for job, count in self._live_jobs.items():
                if count > checked_jobs[job]:
                    live[(job, "queued")] += count - checked_jobs[job]
            oldest = int(now // 60) - HOUR
            for minute in [m for m in self._minutes if m < oldest]:
                del self._minutes[minute]
            tally = Tally(ended=dict(self._ended), minutes={m: Counter(c) for m, c in self._minutes.items()},
                          live=dict(live), live_total=len(self._live), unchecked=max(0, unchecked), behind=behind)
            stale = time.monotonic() - self._built_at > REBUILD
        if stale:
            self.start()
        return tally

    def _to_check(self) -> list[int]:
        """The live ids a page reads: all, or the oldest half of LIVE_CHECKED and a window
        that moves through the others."""
        if len(self._live) <= LIVE_CHECKED:
            return list(self._live)
        half = LIVE_CHECKED // 2
        rest = len(self._live) - half
        start = self._turn % rest
        self._turn = start + half
        window = list(itertools.islice(self._live, half + start, half + start + half))
        if len(window) < half:
            window += list(itertools.islice(self._live, half, half + half - len(window)))
        return list(itertools.islice(self._live, half)) + window

    def live_ends(self, n: int) -> list[int]:
        """The oldest and the newest `n` live run ids, as last read."""
        with self._lock:
            if len(self._live) <= 2 * n:
                return list(self._live)
            return list(itertools.islice(self._live, n)) + list(itertools.islice(reversed(self._live), n))

    def live_ids(self, below: int, above: int) -> list[int]:
        """Live run ids between `above` and `below` (exclusive), newest first, as last read."""
        with self._lock:
            return [run_id for run_id in reversed(self._live) if above < run_id < below]
