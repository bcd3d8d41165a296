"""actors.retry: the Retry policy, the pure compute_backoff(), and retries as workers run them."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from actors import Context, Retry, RunFailed, RunStatus, Supervisor, compute_backoff, job

pytestmark = pytest.mark.timeout(30)


# -- compute_backoff: one pure function, every strategy ---------------------------------------


def delays(policy: Retry, count: int = 6, rng: random.Random | None = None) -> list[float]:
    return [compute_backoff(policy, n, rng or random.Random(0)) for n in range(1, count + 1)]


def test_immediate_backoff_is_always_zero():
    assert delays(Retry(attempts=5, backoff="immediate", base=10, jitter=0.5)) == [0.0] * 6


def test_fixed_backoff_is_the_base_every_time():
    assert delays(Retry(backoff="fixed", base="500ms")) == pytest.approx([0.5] * 6)


def test_linear_backoff_grows_by_the_base():
    assert delays(Retry(backoff="linear", base=2)) == pytest.approx([2, 4, 6, 8, 10, 12])


def test_exponential_backoff_doubles_from_the_base():
    assert delays(Retry(backoff="exponential", base="250ms", cap=None)) == pytest.approx([0.25, 0.5, 1, 2, 4, 8])


def test_exponential_backoff_survives_huge_attempt_numbers():
    assert compute_backoff(Retry(backoff="exponential", base=1, cap="1h"), 10_000) == 3600.0
    assert compute_backoff(Retry(backoff="exponential", base=1, cap=None), 10_000) > 1e18


@pytest.mark.parametrize("table", [["1s", "2s", "5s"], ("1s", 2, timedelta(seconds=5))], ids=["list", "tuple"])
def test_table_backoff_follows_the_table_and_repeats_its_last_step(table):
    assert delays(Retry(backoff=table)) == pytest.approx([1, 2, 5, 5, 5, 5])


def test_callable_backoff_is_called_with_the_failed_attempt_and_may_return_any_duration():
    seen = []

    def backoff(attempt: int):
        seen.append(attempt)
        return f"{attempt * 100}ms" if attempt % 2 else attempt * 0.1

    assert delays(Retry(backoff=backoff), 4) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert seen == [1, 2, 3, 4]


def test_callable_backoff_returning_garbage_raises_value_error():
    with pytest.raises(ValueError, match="'soon'"):
        compute_backoff(Retry(backoff=lambda n: "soon"), 1)


@pytest.mark.parametrize(
    "backoff", ["fixed", "linear", "exponential", ["1m"], lambda n: "1h"],
    ids=["fixed", "linear", "exponential", "table", "callable"],
)
def test_cap_bounds_every_strategy(backoff):
    policy = Retry(backoff=backoff, base=40, cap="30s")
    assert delays(policy, 10) == [30.0] * 10


@pytest.mark.parametrize("backoff", ["fixed", "exponential", ["8s"]], ids=["fixed", "exponential", "table"])
def test_jitter_spreads_the_delay_within_its_fraction(backoff):
    policy = Retry(backoff=backoff, base=8, jitter=0.25, cap=None)
    rng = random.Random(1234)
    samples = [compute_backoff(policy, 1, rng) for _ in range(2000)]
    assert min(samples) >= 8 * 0.75
    assert max(samples) <= 8 * 1.25
    assert min(samples) < 8 * 0.8 and max(samples) > 8 * 1.2  # actually spread, both ways
    again = random.Random(1234)
    assert samples[:50] == [compute_backoff(policy, 1, again) for _ in range(50)]  # same seed, same delays


def test_cap_applies_after_jitter():
    policy = Retry(backoff="fixed", base=10, jitter=1.0, cap=12)
    rng = random.Random(7)
    samples = [compute_backoff(policy, 1, rng) for _ in range(1000)]
    assert max(samples) == 12.0
    assert min(samples) >= 0.0


def test_zero_jitter_uses_no_randomness():
    class NoRandom:
        def uniform(self, a, b):  # pragma: no cover - must not be called
            raise AssertionError("jitter=0 must not draw")

    assert compute_backoff(Retry(backoff="fixed", base=3), 1, NoRandom()) == 3.0


# -- Retry: validation and which exceptions it retries -----------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"attempts": 1.5},
        {"attempts": True},
        {"attempts": "3"},
        {"backoff": "fibonacci"},
        {"backoff": []},
        {"backoff": ["1s", "5 parsecs"]},
        {"backoff": 5},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"base": "x"},
        {"base": -1},
        {"cap": "forever"},
    ],
    ids=repr,
)
def test_invalid_policies_raise_value_error(options):
    with pytest.raises((ValueError, TypeError)) as caught:
        Retry(**options)
    assert caught.type is ValueError, f"{options} raised {caught.type.__name__}: {caught.value}"


def test_policy_durations_are_parsed_to_seconds():
    policy = Retry(attempts=4, base="500ms", cap="1m")
    assert (policy.base_s, policy.cap_s) == (0.5, 60.0)
    assert Retry(cap=None).cap_s is None


def test_retry_on_accepts_a_class_a_tuple_or_a_predicate():
    assert Retry(retry_on=KeyError).retries_exception(KeyError("k"))
    assert not Retry(retry_on=KeyError).retries_exception(ValueError("v"))
    assert Retry(retry_on=(KeyError, ValueError)).retries_exception(ValueError("v"))
    assert Retry().retries_exception(RuntimeError())
    assert not Retry().retries_exception(KeyboardInterrupt())
    picky = Retry(retry_on=lambda exc: "again" in str(exc))
    assert picky.retries_exception(RuntimeError("try again"))
    assert not picky.retries_exception(RuntimeError("give up"))


def test_a_retry_on_predicate_that_raises_means_no_retry():
    assert not Retry(retry_on=lambda exc: 1 / 0).retries_exception(RuntimeError())


# -- retries as the supervisor runs them -------------------------------------------------------


class Flaky(BaseModel):
    succeed_on: int


@job(retry=Retry(attempts=3, backoff="immediate"))
def flaky_three(flaky: Flaky, ctx: Context) -> int:
    if ctx.attempt < flaky.succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=Retry(attempts=2, backoff="immediate"))
def flaky_two(flaky: Flaky, ctx: Context) -> int:
    if ctx.attempt < flaky.succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=Retry(attempts=3, backoff="immediate", retry_on=KeyError))
def only_key_errors(flaky: Flaky, ctx: Context) -> int:
    raise ValueError(f"attempt {ctx.attempt}: not worth retrying")


def test_a_job_failing_twice_then_succeeding_succeeds_on_its_third_attempt(db: str):
    sup = Supervisor([flaky_three], workers=1, store=db)
    handle = sup.submit(flaky_three, Flaky(succeed_on=3))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == 3
    record = sup.run(handle.id)
    assert record.status is RunStatus.SUCCEEDED
    assert record.attempts == 3
    assert [(a.number, a.outcome.value) for a in record.attempt_log] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert [a.message for a in record.attempt_log[:2]] == ["attempt 1 fails", "attempt 2 fails"]
    assert all(a.error_type == "RuntimeError" for a in record.attempt_log[:2])
    sup.close()


def test_a_job_that_keeps_failing_ends_failed_after_its_attempts(db: str):
    sup = Supervisor([flaky_two], workers=1, store=db)
    handle = sup.submit(flaky_two, Flaky(succeed_on=3))
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as caught:
        handle.result(timeout=5)
    assert caught.value.error_type == "RuntimeError"
    assert caught.value.message == "attempt 2 fails"
    record = sup.run(handle.id)
    assert record.status is RunStatus.FAILED
    assert record.attempts == 2
    assert [a.outcome.value for a in record.attempt_log] == ["failed", "failed"]
    sup.close()


def test_an_exception_outside_retry_on_is_not_retried(db: str):
    sup = Supervisor([only_key_errors], workers=1, store=db)
    handle = sup.submit(only_key_errors, Flaky(succeed_on=1))
    sup.serve(until="drained")
    with pytest.raises(RunFailed, match="attempt 1: not worth retrying"):
        handle.result(timeout=5)
    assert len(sup.run(handle.id).attempt_log) == 1
    sup.close()


def test_backoff_delays_the_next_attempt(db: str, tmp_path: Path):
    @job(name="slow_retry", retry=Retry(attempts=2, backoff="fixed", base="300ms"))
    def slow_retry(flaky: Flaky, ctx: Context) -> int:
        if ctx.attempt < flaky.succeed_on:
            raise RuntimeError("once")
        return ctx.attempt

    sup = Supervisor([slow_retry], workers=1, store=db)
    handle = sup.submit(slow_retry, Flaky(succeed_on=2))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == 2
    first, second = sup.run(handle.id).attempt_log
    assert second.started_at - first.finished_at >= 0.29
    sup.close()
