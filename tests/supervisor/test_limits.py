"""Limits as pure logic on a fake clock: `rate` is at most N starts in any window of its
period (no burst after idling), and a refused run is woken only when its limit can change."""

from __future__ import annotations

import itertools

import pytest
from pydantic import BaseModel

from actors import job
from actors.supervisor.dispatch import Limits, Ticket


class N(BaseModel):
    x: int = 0


@job(rate="5/s")
def five_a_second(n: N) -> int:
    return n.x


@job(rate="20/s")
def twenty_a_second(n: N) -> int:
    return n.x


@job(rate="1/2s")
def one_per_two_seconds(n: N) -> int:
    return n.x


@job(concurrency=1, rate="50/s")
def one_at_a_time(n: N) -> int:
    return n.x


_ids = itertools.count(1)


def ticket(j) -> Ticket:
    return Ticket(next(_ids), j, "{}", 0, 0, 0, 1, None)


def starts_within(limits: Limits, j, seconds: float, step: float = 0.001, start: float = 1000.0) -> list[float]:
    """Offer a fresh run at every `step` of a fake clock, as a greedy dispatcher would; the times it started one."""
    started = []
    now = start
    while now < start + seconds:
        t = ticket(j)
        if limits.admit(t, now) is None:
            started.append(now)
            limits.release(t)
        else:
            limits.discard(t)
        now = round(now + step, 6)
    return started


def max_in_any_window(times: list[float], period: float) -> int:
    return max(sum(1 for u in times if t <= u < t + period) for t in times)


@pytest.mark.parametrize(("j", "count", "period"), [(five_a_second, 5, 1.0), (twenty_a_second, 20, 1.0),
                                                    (one_per_two_seconds, 1, 2.0)])
def test_rate_allows_at_most_n_starts_in_any_window_of_its_period(j, count, period):
    started = starts_within(Limits(), j, seconds=5 * period)
    assert max_in_any_window(started, period) == count
    # and it is not stingier than that: about count per period over the whole time
    assert abs(len(started) - 5 * count) <= 1


def test_rate_gives_no_burst_after_an_idle_period():
    limits = Limits()
    starts_within(limits, five_a_second, seconds=1.0, start=0.0)
    # ten idle seconds, then a greedy second: still 5 starts in it, not 9 or 10
    assert len(starts_within(limits, five_a_second, seconds=1.0, start=11.0)) == 5


def test_wake_in_names_the_moment_the_window_admits_the_next_start():
    limits = Limits()
    for k in range(5):
        assert limits.admit(ticket(five_a_second), 100.0 + k * 0.1) is None
    refused = ticket(five_a_second)
    assert limits.admit(refused, 100.45) == "rate"
    assert limits.wake_in(five_a_second, 100.45) == pytest.approx(0.55)  # the first start turns 1 s old
    assert limits.admit(refused, 101.0) is None


def test_a_run_refused_by_concurrency_says_so_so_no_rate_timer_is_armed():
    limits = Limits()
    first, second = ticket(one_at_a_time), ticket(one_at_a_time)
    assert limits.admit(first, 0.0) is None
    assert limits.admit(second, 0.0) == "concurrency"
    assert limits.wake_in(one_at_a_time, 0.0) == 0.0  # the rate is not what holds it
    assert limits.release(first) is second  # a release is what wakes it
    assert limits.admit(second, 0.0) is None


def test_parked_runs_keep_their_order():
    limits = Limits()
    running = ticket(one_at_a_time)
    assert limits.admit(running, 0.0) is None
    waiting = [ticket(one_at_a_time) for _ in range(3)]
    assert [limits.admit(t, 0.0) for t in waiting] == ["concurrency", "line", "line"]
    order = []
    head = limits.release(running)
    while head is not None:
        assert limits.admit(head, 1.0) is None
        order.append(head)
        head = limits.release(head)
    assert order == waiting
