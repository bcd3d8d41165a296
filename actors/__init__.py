"""actors: run CPU-heavy Python jobs in a supervised pool of worker processes, durably.

    from actors import Supervisor, job

    @job(timeout="30s")
    def thumbnail(thumb: Thumb) -> Made: ...

    Supervisor([thumbnail], workers=4, store="runs.db").serve()
"""

from typing import TYPE_CHECKING, Any

from .client import Client
from .context import Child, Context
from .durations import parse_duration
from .errors import (
    ActorsError,
    ChildFailed,
    DuplicateJob,
    DurableLimitExceeded,
    JobNotFound,
    NondeterministicRun,
    NotServing,
    RunCancelled,
    RunError,
    RunFailed,
    RunNotFound,
    RunTimedOut,
    SoftTimeout,
    StoreError,
    StoreLocked,
    SupervisorCrashed,
    WaitTimedOut,
)
from .events import event
from .handle import Handle
from .job import Job, Limit, Priority, job
from .retry import Retry, compute_backoff, retry
from .run import Attempt, Outcome, RunRecord, RunStatus, StepRecord
from .stores import MemoryStore, SQLiteStore, Store

if TYPE_CHECKING:
    from .supervisor.supervisor import Supervisor


def __getattr__(name: str) -> Any:
    """`Supervisor` is imported when first used: a process that only submits and reads (a
    `Client`, a CLI, a web handler) does not load the serving machinery."""
    if name == "Supervisor":
        from .supervisor.supervisor import Supervisor

        return Supervisor
    raise AttributeError(f"module 'actors' has no attribute {name!r}")

__all__ = [
    # running jobs
    "Supervisor", "job", "Job", "Context", "Retry", "retry", "Priority", "Limit", "Client", "Handle", "Child", "event",
    # records
    "RunStatus", "Outcome", "RunRecord", "Attempt", "StepRecord",
    # stores
    "Store", "SQLiteStore", "MemoryStore",
    # errors
    "ActorsError", "JobNotFound", "DuplicateJob", "NotServing", "StoreError", "StoreLocked", "SupervisorCrashed", "RunNotFound", "RunError",
    "RunFailed", "RunTimedOut", "RunCancelled", "SoftTimeout", "ChildFailed", "NondeterministicRun", "WaitTimedOut",
    "DurableLimitExceeded",
    # helpers
    "compute_backoff", "parse_duration",
]
