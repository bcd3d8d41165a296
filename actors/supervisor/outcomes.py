"""How an attempt ended, in words and in statuses: pure functions the supervisor's loop calls.

`settle` decides what follows an attempt (done, retry after a backoff, queue again, fail);
`describe_death` says why a worker vanished without reporting. Kept apart from the loop so the
rules can be read, and tested, without processes.
"""

from __future__ import annotations

import signal as signals
import time

from ..retry import Retry, compute_backoff
from ..run import Outcome, RunStatus

ERROR_TYPES = {
    Outcome.TIMED_OUT: "RunTimedOut",
    Outcome.MEMORY_EXCEEDED: "MemoryExceeded",
    Outcome.CANCELLED: "RunCancelled",
    Outcome.CRASHED: "WorkerCrashed",
}


class PolicyFailed(Exception):
    """Raised by `settle` when the retry policy's own code (a backoff callable) raised or
    returned something that is not a duration: the run fails with this reason instead."""


_END_STATUS = {Outcome.TIMED_OUT: RunStatus.TIMED_OUT, Outcome.CANCELLED: RunStatus.CANCELLED}


def settle(outcome: Outcome, policy: Retry, retryable: bool, charged: int, max_attempts: int,
           now: float | None = None) -> tuple[RunStatus, float | None]:
    """The run's status after an attempt ended so, and when it may run again (epoch seconds).

    `charged` counts the run's attempts so far that count against its policy (this one
    included); `retryable` is the worker's verdict on an exception (`retry_on`). Timeouts follow
    `on_timeout`, crashes and memory kills `on_crash`; an interrupted attempt goes straight back
    to the queue unless it was charged (the second in a row) and no attempt is left. A backoff callable that raises is `PolicyFailed`.
    """
    now = time.time() if now is None else now
    if outcome is Outcome.SUCCEEDED:
        return RunStatus.SUCCEEDED, None
    if outcome is Outcome.INTERRUPTED:
        return (RunStatus.QUEUED, now) if charged < max_attempts else (RunStatus.FAILED, None)
    if outcome is Outcome.CANCELLED:
        return RunStatus.CANCELLED, None
    if outcome is Outcome.TIMED_OUT:
        retryable = policy.on_timeout
    elif outcome is not Outcome.FAILED:
        retryable = policy.on_crash
    if retryable and charged < max_attempts:
        try:
            delay = compute_backoff(policy, charged)
        except Exception as exc:
            raise PolicyFailed(f"its retry policy's backoff raised {type(exc).__name__}: {exc}") from exc
        return RunStatus.RETRYING, now + delay
    return _END_STATUS.get(outcome, RunStatus.FAILED), None


def describe_death(pid: int, code: int | None, sig: int | None, setup_error: tuple[str, str, str] | None,
                   note: str | None) -> tuple[str, str, str | None]:
    """(error type, message, traceback) for a worker that exited without reporting its run."""
    if setup_error is not None:
        kind, message, traceback = setup_error
        return "WorkerSetupFailed", f"the worker could not start: {kind}: {message}", traceback
    how = (f"was killed by signal {signal_name(sig)}" if sig is not None
           else f"exited with code {code}" if code is not None
           else "exited with an unknown exit status")
    text = f"worker pid {pid} {how} without reporting a result"
    if note:
        text += f" ({note})"
    return "WorkerCrashed", text, None


def signal_name(sig: int | None) -> str:
    try:
        return signals.Signals(sig).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return str(sig)
