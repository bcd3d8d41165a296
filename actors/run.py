"""The shapes the store persists: a run, its attempts, and their statuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """queued -> running -> succeeded; running -> retrying -> queued; running -> failed | timed_out;
    cancelled from any live state."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})
LIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING})


class Outcome(StrEnum):
    """How one attempt ended. `interrupted` attempts are not charged against the retry policy."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    MEMORY_EXCEEDED = "memory_exceeded"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class NewRun:
    """A run about to be stored by `submit`: input already validated and serialized as JSON."""

    job: str
    input: str
    priority: int = 0
    max_attempts: int | None = 1  # None: the job's policy decides (runs submitted by name)
    timeout: float | None = None
    scheduled_at: float = 0.0
    version: int = 1
    key: str | None = None  # idempotency key: one run per key for the store's lifetime
    unique_key: str | None = None  # one live (queued/running/retrying) run per key


@dataclass(slots=True)
class Attempt:
    """One try of a run: times in epoch seconds, outcome, error, and what the worker looked like."""

    number: int
    started_at: float
    finished_at: float | None = None
    outcome: Outcome | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    worker_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_rss: int | None = None


@dataclass(slots=True)
class RunRecord:
    """A run as stored. `input` and `output` are JSON text; `attempts` counts claimed attempts."""

    id: int
    job: str
    status: RunStatus
    input: str
    output: str | None = None
    priority: int = 0
    attempts: int = 0
    max_attempts: int | None = 1
    timeout: float | None = None
    created_at: float = 0.0
    scheduled_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    key: str | None = None
    attempt_log: list[Attempt] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        """The output as plain JSON data (for callers without the job's models)."""
        import json

        return None if self.output is None else json.loads(self.output)
