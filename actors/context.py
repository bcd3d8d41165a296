"""`Context`: what a running job knows about its run (id, attempt, job name, a logger)."""

from __future__ import annotations

import logging
from typing import Any

_log = logging.getLogger("actors.job")


class Context:
    """Given to a job that takes a second parameter. Lives in the worker for one attempt."""

    __slots__ = ("run_id", "attempt", "job", "_log", "_cancelled")

    def __init__(self, run_id: int, attempt: int, job: str) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.job = job
        self._log: logging.LoggerAdapter[Any] | None = None
        self._cancelled = False

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """A logger whose records carry run_id, job and attempt (as `extra`)."""
        if self._log is None:
            self._log = logging.LoggerAdapter(_log, {"run_id": self.run_id, "job": self.job, "attempt": self.attempt})
        return self._log

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this run was requested; a long loop can stop cleanly."""
        return self._cancelled

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} attempt={self.attempt} job={self.job}>"
