"""`Context`: what a running job knows and can say about its run.

A job that takes a second parameter gets one per attempt, in the worker. It carries the run id,
the attempt number and the job name, a logger whose records carry them, the per-worker
resource made by the job's `setup`, memoized steps, progress and metadata (sent to the
supervisor, which stores them while the run is still running), and `cancelled`.

What it sends must be storable as it is, since the supervisor writes it without looking: a step
value or metadata that JSON cannot carry (a lone surrogate in a string, a NaN, an infinity) is
a TypeError in the job, where it can be handled; a progress message is free text, so a lone
surrogate in it is escaped instead (`protocol.storable`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core

from .errors import SoftTimeout
from .job import find_nonfinite
from .protocol import Progress, StepDone, storable

T = TypeVar("T")
_log = logging.getLogger("actors.job")


class Context:
    """Given to a job that takes a second parameter. Lives in the worker for one attempt.

    The worker makes it; a test of a job function may make one to call it directly.

    Args:
        run_id: the run's id (also `.run_id`).
        attempt: the attempt's number, 1 for the first (also `.attempt`).
        job: the job's name (also `.job`).
        resource: what the job's `setup` returned in this worker process (default None).
        steps: the steps stored by earlier attempts, {name: JSON text} (default none).
        send: where progress, metadata and steps go (the worker's pipe; default: nowhere).
        is_cancelled: tells whether a run id was cancelled (default: never).
        max_size: the most bytes of JSON a step value or metadata may take (default 64 MiB,
            the supervisor's `max_result_size`).
    """

    __slots__ = ("run_id", "attempt", "job", "resource", "_log", "_send", "_steps", "_seen", "_is_cancelled",
                 "_max_size")

    def __init__(self, run_id: int, attempt: int, job: str, *, resource: Any = None,
                 steps: dict[str, str] | None = None, send: Callable[[Any], None] | None = None,
                 is_cancelled: Callable[[int], bool] | None = None, max_size: int = 64 * 2**20) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.job = job
        self.resource = resource  # what the job's `setup` returned in this worker process
        self._log: logging.LoggerAdapter[Any] | None = None
        self._send = send or (lambda message: None)
        self._steps = steps or {}
        self._seen: set[str] = set()
        self._is_cancelled = is_cancelled
        self._max_size = max_size  # the supervisor's max_result_size: steps and metadata obey it too

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """A logger whose records carry run_id, job and attempt (as `extra`)."""
        if self._log is None:
            self._log = logging.LoggerAdapter(_log, {"run_id": self.run_id, "job": self.job, "attempt": self.attempt})
        return self._log

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this run was requested; a long loop can check it and stop."""
        return self._is_cancelled is not None and self._is_cancelled(self.run_id)

    def step(self, name: str, fn: Callable[[], T]) -> T:
        """Run `fn` once per run: its JSON result is stored when it returns, and a later attempt
        gets the stored value (as JSON data) instead of running it again.

        Args:
            name: the step's name, unique within the run (ValueError if used twice or empty).
            fn: called with no arguments; its value must be JSON-serializable (TypeError).

        Returns:
            What `fn` returned, or in a later attempt the stored value as JSON data.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid step name {name!r}: expected a non-empty string")
        if name in self._seen:
            raise ValueError(f"step {name!r} was already used in run {self.run_id}: step names are unique within a run")
        self._seen.add(name)
        if name in self._steps:
            return json.loads(self._steps[name])
        value = fn()
        text = _to_json(value, f"step {name!r} returned a value that")
        self._check_size(f"step {name!r}", text)
        self._steps[name] = text
        self._send(StepDone(self.run_id, self.attempt, name, text))
        return value

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report progress and an optional message; visible through `Handle.progress()` and
        `Supervisor.run()` while the run is running.

        Args:
            fraction: done so far, from 0.0 to 1.0 (ValueError outside), or None for none.
            message: free text, or None (default).
        """
        if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"invalid progress {fraction!r}: expected a fraction between 0 and 1")
        if message is not None:
            message = storable(str(message))
        self._send(Progress(self.run_id, self.attempt, None if fraction is None else float(fraction), message, None))

    def metadata(self, **values: Any) -> None:
        """Attach JSON-serializable values to the run (merged with earlier ones)."""
        text = _to_json(values, "metadata")
        self._check_size("metadata", text)
        self._send(Progress(self.run_id, self.attempt, None, None, text))

    def _check_size(self, what: str, text: str) -> None:
        if len(text) * 4 > self._max_size and len(text.encode()) > self._max_size:
            raise ValueError(f"{what} is {len(text.encode())} bytes of JSON, over max_result_size "
                             f"({self._max_size} bytes): store a path instead")

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} attempt={self.attempt} job={self.job}>"


def _to_json(value: Any, what: str) -> str:
    """JSON text of a step's value or of metadata, or a TypeError saying why it has none."""
    try:
        raw = pydantic_core.to_json(value)  # fails on a lone surrogate; writes NaN and Infinity as such
    except SoftTimeout:
        raise  # the job's soft timeout, which only happened to expire here
    except Exception as exc:
        raise TypeError(f"{what} cannot be stored as JSON: {exc}") from exc
    if b"NaN" in raw or b"Infinity" in raw:  # else the store would hold text that is not JSON
        found = find_nonfinite(pydantic_core.to_jsonable_python(value, serialize_unknown=True))
        if found is not None:
            raise TypeError(f"{what} cannot be stored as JSON: {found[1]} at {list(found[0])} (JSON has no NaN "
                            f"or Infinity)")
    return raw.decode()
