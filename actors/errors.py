"""Every public exception of `actors`, under one base class."""

from __future__ import annotations


class ActorsError(Exception):
    """Base class of every error `actors` raises on purpose."""


class JobNotFound(ActorsError, LookupError):
    """Raised when a job name is not in the registry this supervisor or client was given."""


class DuplicateJob(ActorsError, ValueError):
    """Raised when two jobs given to one supervisor share a name."""


class StoreError(ActorsError):
    """Raised when the store is corrupt, read-only, full or otherwise unusable."""


class StoreLocked(StoreError):
    """Raised when another live supervisor already serves this store file."""


class SupervisorCrashed(ActorsError):
    """Raised by `serve()` when an unexpected error escaped the supervisor's loop: it stopped
    rather than serve on with a turn's changes lost. What was committed is intact; runs it held
    are found `running` by the next start and queued again."""


class NotServing(ActorsError):
    """Raised by `Handle.result()` without a timeout when no supervisor serves the run's store
    (none in this process, and the store's serving lock is free), so the wait could never end."""


class RunNotFound(ActorsError, LookupError):
    """Raised when a run id does not exist in the store."""


class SoftTimeout(Exception):
    """Raised inside a job when its `soft_timeout` expires, so it can clean up before the kill."""


class RunError(ActorsError):
    """Raised by `Handle.result()` when a run ended without a result.

    Carries the run id, the error type name, the message and the remote traceback text;
    `str()` ends with the remote traceback.

    Args:
        run_id: the run's id (also `.run_id`).
        error_type: the class name of the error the run ended with (also `.error_type`).
        message: its message (also `.message`).
        traceback: the traceback text from the worker, or None (also `.traceback`).
    """

    def __init__(
        self,
        run_id: int,
        error_type: str | None,
        message: str | None,
        traceback: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"run {run_id}: {error_type or 'error'}: {message or ''}".rstrip(": "))

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text


class RunFailed(RunError):
    """Raised when the run's last attempt failed: an exception, a crash or a bad output."""


class RunTimedOut(RunError):
    """Raised when the run's last attempt overstayed its timeout and was killed."""


class RunCancelled(RunError):
    """Raised when the run was cancelled before it produced a result."""


class ChildFailed(RunError):
    """Raised inside a parent run by `ctx.invoke` / `ctx.wait_for` when a child run ended
    without a result: `run_id` is the child's, `error_type` and `message` its error (a child
    that was cancelled or timed out says so in `error_type`)."""


class NondeterministicRun(ActorsError):
    """A replayed run reached a different step, sleep or invoke than the one it recorded at that
    position: its code or its inputs to those calls changed. The run fails rather than mix
    results."""


class WaitTimedOut(ActorsError, TimeoutError):
    """`ctx.wait_for(handles, timeout=...)` ran out of time before every child ended."""


class DurableLimitExceeded(ActorsError, ValueError):
    """A run went over a durable limit: steps per run, bytes per step, bytes of all its steps."""
