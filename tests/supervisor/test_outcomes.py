"""What follows an attempt: settle() maps (outcome, policy, attempts) to the run's next status."""

from __future__ import annotations

import pytest

from actors import Outcome, Retry, RunStatus
from actors.supervisor.outcomes import PolicyFailed, describe_death, settle

POLICY = Retry(attempts=3, backoff="fixed", base="2s")


@pytest.mark.parametrize(
    ("outcome", "retryable", "charged", "expected"),
    [
        (Outcome.SUCCEEDED, True, 1, (RunStatus.SUCCEEDED, None)),
        (Outcome.INTERRUPTED, True, 2, (RunStatus.QUEUED, 100.0)),  # back at once
        (Outcome.INTERRUPTED, True, 3, (RunStatus.FAILED, None)),  # charged (twice in a row), none left
        (Outcome.CANCELLED, True, 1, (RunStatus.CANCELLED, None)),
        (Outcome.FAILED, True, 1, (RunStatus.RETRYING, 102.0)),
        (Outcome.FAILED, False, 1, (RunStatus.FAILED, None)),  # retry_on said no
        (Outcome.FAILED, True, 3, (RunStatus.FAILED, None)),  # attempts used up
        (Outcome.TIMED_OUT, False, 1, (RunStatus.RETRYING, 102.0)),  # on_timeout decides, not retry_on
        (Outcome.TIMED_OUT, True, 3, (RunStatus.TIMED_OUT, None)),
        (Outcome.CRASHED, False, 2, (RunStatus.RETRYING, 102.0)),  # on_crash decides
        (Outcome.MEMORY_EXCEEDED, True, 3, (RunStatus.FAILED, None)),
    ],
)
def test_settle_maps_each_outcome_to_the_runs_next_status(outcome, retryable, charged, expected):
    assert settle(outcome, POLICY, retryable, charged, POLICY.attempts, now=100.0) == expected


def test_on_timeout_and_on_crash_false_end_the_run_at_once():
    strict = Retry(attempts=5, on_timeout=False, on_crash=False)
    assert settle(Outcome.TIMED_OUT, strict, True, 1, 5, now=0.0) == (RunStatus.TIMED_OUT, None)
    assert settle(Outcome.CRASHED, strict, True, 1, 5, now=0.0) == (RunStatus.FAILED, None)


def test_describe_death_names_the_signal_the_exit_code_or_the_setup_error():
    assert describe_death(7, None, 9, None, None)[1] == "worker pid 7 was killed by signal SIGKILL without reporting a result"
    kind, message, _ = describe_death(7, 3, None, None, "the worker closed its pipe")
    assert (kind, message) == ("WorkerCrashed", "worker pid 7 exited with code 3 without reporting a result "
                                                "(the worker closed its pipe)")
    assert describe_death(7, 1, None, ("ImportError", "no x", "tb"), None) == (
        "WorkerSetupFailed", "the worker could not start: ImportError: no x", "tb")


@pytest.mark.parametrize("backoff", [lambda n: "soon", lambda n: 1 / 0], ids=["not-a-duration", "raises"])
def test_a_backoff_that_breaks_is_policy_failed_not_an_escaping_error(backoff):
    with pytest.raises(PolicyFailed, match="backoff"):
        settle(Outcome.FAILED, Retry(attempts=3, backoff=backoff), True, 1, 3, now=0.0)
    # with no retry left the backoff is never asked
    assert settle(Outcome.FAILED, Retry(attempts=1, backoff=backoff), True, 1, 1, now=0.0) == (RunStatus.FAILED, None)
