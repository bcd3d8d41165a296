"""Cron ticks: while a supervisor serves, each cron job gets a run at every tick of its schedule.

Catch-up rule: ticks missed while no supervisor served the store run once (the latest of them),
not once each; the first serve of a cron job starts from now. Each tick's run carries the
idempotency key "cron:<tick>", so no tick runs twice, not even across a crash between storing
the run and remembering the tick. Expressions are parsed by croniter, in UTC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..job import Job
from ..stores import Store

log = logging.getLogger("actors")


class CronTicks:
    """Arms a timer per cron job and submits its run at each tick through `submit(job, tick)`."""

    def __init__(self, jobs: list[Job[Any, Any]], store: Store, submit: Callable[[Job[Any, Any], float], None],
                 serving: Callable[[], bool], later: Callable[..., Any]) -> None:
        self.jobs = jobs
        self.store = store
        self.submit = submit
        self.serving = serving
        self.later = later  # the supervisor's timers: cancelled when serving ends

    def start(self) -> None:
        now = time.time()
        for job in self.jobs:
            last = self.store.cron_last(job.name)
            if last is None:
                self.store.set_cron(job.name, now)
            else:
                latest = _schedule(job.cron, now).get_prev(float)
                if latest > last:
                    self._fire(job, latest)
            self._arm(job, now)

    def _arm(self, job: Job[Any, Any], after: float) -> None:
        tick = _schedule(job.cron, after).get_next(float)
        self.later(tick - time.time(), self._tick, job, tick)

    def _tick(self, job: Job[Any, Any], tick: float) -> None:
        if self.serving():
            self._fire(job, tick)
            self._arm(job, tick)

    def _fire(self, job: Job[Any, Any], tick: float) -> None:
        try:
            self.submit(job, tick)
            self.store.set_cron(job.name, tick)
        except Exception:
            log.exception("cron job %r could not submit its run for tick %s", job.name, tick)


def _schedule(expression: str | None, start: float) -> Any:
    """croniter over an expression, imported on first use: importing actors need not pay for it."""
    from croniter import croniter

    return croniter(expression, start)
