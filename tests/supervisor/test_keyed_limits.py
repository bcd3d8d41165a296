"""Limits with a key, as pure logic (no process): `concurrency=Limit(n, key=...)` keeps a line
and a running count per key, so one key's backlog never holds up another key's runs."""

from __future__ import annotations

import itertools

from pydantic import BaseModel

from actors import Limit, job
from actors.supervisor.dispatch import Limits, Ticket


class In(BaseModel):
    group: str = ""
    n: int = 0


@job(concurrency=Limit(1, key=lambda i: i.group))
def per_group(i: In) -> int:
    return i.n


@job(concurrency=Limit(2, key="tenant"))
def per_tenant(i: In) -> int:
    return i.n


def _raises_on_13(i: In) -> str:
    if i.n == 13:
        raise RuntimeError("unlucky")
    return i.group


@job(concurrency=Limit(1, key=_raises_on_13))
def fragile(i: In) -> int:
    return i.n


@job(concurrency=Limit(1, key=lambda i: {"unhashable": i.group}))
def unhashable_key(i: In) -> int:
    return i.n


@job(concurrency=Limit(1, key="tenant"), rate="2/s")
def keyed_and_rated(i: In) -> int:
    return i.n


_ids = itertools.count(1)


def ticket(j, group: str = "", n: int = 0, tenant: str | None = None) -> Ticket:
    t = Ticket(next(_ids), j, j.validate_input({"group": group, "n": n}), 0, 0, 0, 1, None)
    t.tenant = tenant
    return t


def test_one_key_at_its_limit_does_not_hold_up_another_key():
    limits = Limits()
    a1, a2, b1 = ticket(per_group, "a"), ticket(per_group, "a"), ticket(per_group, "b")
    assert limits.admit(a1, 0.0) is None
    assert limits.admit(a2, 0.0) == "concurrency"
    assert limits.admit(b1, 0.0) is None  # b's first run goes past a's backlog
    assert limits.running == {("per_group", "a"): 1, ("per_group", "b"): 1}


def test_a_release_wakes_the_head_of_its_own_key_only():
    limits = Limits()
    a = [ticket(per_group, "a", n) for n in range(3)]
    b = [ticket(per_group, "b", n) for n in range(2)]
    assert [limits.admit(t, 0.0) for t in a] == [None, "concurrency", "line"]
    assert [limits.admit(t, 0.0) for t in b] == [None, "concurrency"]
    assert limits.release(b[0]) is b[1]
    assert limits.release(a[0]) is a[1]
    assert limits.admit(a[1], 0.0) is None
    assert limits.head_of(a[2]) is a[2]
    assert sorted(t.id for t in limits.heads("per_group")) == sorted([a[2].id, b[1].id])


def test_the_tenant_key_is_the_tickets_stored_tenant():
    limits = Limits()
    acme = [ticket(per_tenant, tenant="acme") for _ in range(3)]
    other = ticket(per_tenant, tenant="globex")
    none = ticket(per_tenant)
    assert [limits.admit(t, 0.0) for t in acme] == [None, None, "concurrency"]
    assert limits.admit(other, 0.0) is None
    assert limits.admit(none, 0.0) is None  # runs without a tenant share the key None
    assert ("per_tenant", None) in limits.running


def test_the_key_is_computed_once_per_ticket():
    calls = []

    @job(name="counted", concurrency=Limit(1, key=lambda i: calls.append(i.n) or i.group))
    def counted(i: In) -> int:
        return i.n

    limits = Limits()
    first, second = ticket(counted, "a", 1), ticket(counted, "a", 2)
    limits.admit(first, 0.0)
    for _ in range(3):
        limits.admit(second, 0.0)  # refused each time: the key stays
    limits.release(first)
    assert limits.admit(second, 0.0) is None
    assert calls == [1, 2]


def test_a_key_function_that_raises_is_an_error_for_that_run_only():
    limits = Limits()
    bad, good = ticket(fragile, "a", 13), ticket(fragile, "a", 1)
    assert limits.admit(bad, 0.0) == "error"
    assert "fragile" in limits.errors[bad.id] and "RuntimeError: unlucky" in limits.errors[bad.id]
    assert limits.admit(good, 0.0) is None
    assert len(limits) == 0  # the failed run is not parked


def test_an_unhashable_key_is_keyed_by_its_repr():
    limits = Limits()
    a1, a2 = ticket(unhashable_key, "a"), ticket(unhashable_key, "a")
    assert limits.admit(a1, 0.0) is None
    assert limits.admit(a2, 0.0) == "concurrency"


def test_idle_keys_leave_nothing_behind():
    limits = Limits()
    for key in range(100):
        t1, t2 = ticket(per_group, str(key)), ticket(per_group, str(key))
        assert limits.admit(t1, 0.0) is None
        assert limits.admit(t2, 0.0) == "concurrency"
        assert limits.release(t1) is t2
        assert limits.admit(t2, 0.0) is None
        assert limits.release(t2) is None
    assert not limits.running and not limits.parked and len(limits) == 0


def test_a_cancelled_parked_run_leaves_its_line():
    limits = Limits()
    a1, a2, a3 = (ticket(per_group, "a") for _ in range(3))
    limits.admit(a1, 0.0)
    limits.admit(a2, 0.0)
    limits.admit(a3, 0.0)
    limits.discard(a2)
    assert limits.release(a1) is a3


def test_the_rate_is_per_job_across_keys():
    limits = Limits()
    a, b, c = ticket(keyed_and_rated, tenant="a"), ticket(keyed_and_rated, tenant="b"), ticket(keyed_and_rated, tenant="c")
    assert limits.admit(a, 0.0) is None
    assert limits.admit(b, 0.1) is None
    assert limits.admit(c, 0.2) == "rate"  # 2 starts in the last second, whatever their keys
    assert limits.heads("keyed_and_rated") == [c]
    assert limits.wake_in(keyed_and_rated, 0.2) > 0
    assert limits.admit(c, 1.0) is None


def test_limit_refuses_bad_values():
    import pytest

    with pytest.raises(ValueError, match="int >= 1"):
        Limit(0)
    with pytest.raises(ValueError, match="tenant"):
        Limit(1, key="account")
    with pytest.raises(TypeError):
        Limit(1, key=3)  # type: ignore[arg-type]
    assert repr(Limit(2, key="tenant")) == "Limit(2, key='tenant')"
    assert per_group.options()["concurrency"] == 1
    assert per_tenant.options()["concurrency_key"] == "tenant"
