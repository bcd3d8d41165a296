"""Job-level flow control through real workers on a real SQLite file: a concurrency limit per
key (`Limit`), `throttle=` (the `rate` limit under another name), `debounce=`, and `priority` /
`timeout` computed from the input at submit. Each holds under a burst of 500 submits.

The jobs live in flow_jobs (workers import them by reference); they append one line per run to
a file in the test's directory, which is how the test sees inside the workers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flow_jobs import (
    Item,
    computed_options,
    debounced,
    keyed_by_a_fragile_function,
    one_per_group,
    read_spans,
    throttled,
    two_per_tenant,
)
from semantics_jobs import serving

from actors import Client, Job, Limit, RunStatus, Supervisor, job
from actors.durations import parse_rate

BURST = 500


def most_overlapping(spans: list[tuple[float, float]], slack: float = 0.002) -> int:
    """The most spans (start, end) running at one moment; a start within `slack` of an end does
    not count as overlapping it (the two clocks read in two processes)."""
    events = sorted([(start + slack, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def any_overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


# == options, declared =============================================================================


def test_throttle_is_the_rate_limit_under_another_name_and_reads_words():
    @job(name="words", throttle="2 per second")
    def words(item: Item) -> int:
        return item.n

    assert words.rate_limit == parse_rate("2/s") == (2.0, 1.0)
    assert words.limited and words.options()["rate"] == "2 per second"
    assert parse_rate("100 per minute") == (100.0, 60.0) and parse_rate("10/m") == (10.0, 60.0)
    with pytest.raises(ValueError, match="not both"):
        job(lambda item: 0, name="both", input=Item, rate="1/s", throttle="1/s")
    with pytest.raises(ValueError, match="invalid rate"):
        job(lambda item: 0, name="bad", input=Item, throttle="2 per fortnight")


def test_options_show_the_new_options():
    options = debounced.options()
    assert options["debounce"] == 1.0
    assert one_per_group.options()["concurrency"] == 1
    assert one_per_group.options()["concurrency_key"] == "<lambda>"
    assert two_per_tenant.options()["concurrency_key"] == "tenant"
    assert (one_per_group.options()["concurrency_by"], two_per_tenant.options()["concurrency_by"]) == ("input", "tenant")
    computed = computed_options.options()
    assert computed["priority_fn"] == computed["timeout_fn"] == "<lambda>"
    assert computed["timeout"] is None and computed["priority"] == 0


def test_a_debounced_job_refuses_what_cannot_apply():
    with pytest.raises(ValueError, match="debounce"):
        job(lambda item: 0, name="d1", input=Item, debounce="1s", unique=True)
    with pytest.raises(ValueError, match="debounce"):
        job(lambda item: 0, name="d2", input=Item, debounce="0s")


def test_concurrency_takes_an_int_or_a_limit():
    plain: Job[Item, int] = job(lambda item: 0, name="plain", input=Item, output=int, concurrency=Limit(3))
    assert plain.concurrency == 3 and plain.concurrency_key is None
    with pytest.raises(ValueError, match="concurrency"):
        job(lambda item: 0, name="zero", input=Item, concurrency=0)


# == priority and timeout computed at submit =========================================================


@pytest.mark.timeout(60)
def test_priority_and_timeout_are_computed_from_the_input_at_submit(db: str, tmp_path: Path):
    sup = Supervisor([computed_options], workers=1, store=db)
    low = sup.submit(computed_options, Item(dir=str(tmp_path), n=0))
    high = sup.submit(computed_options, Item(dir=str(tmp_path), n=2))
    mid = sup.submit(computed_options, Item(dir=str(tmp_path), n=1))
    given = sup.submit(computed_options, Item(dir=str(tmp_path), n=3), priority=-5, timeout="9s")
    # timeout 0.3 s computed from its sleep; last, so that its kill requeues nothing sent ahead
    killed = sup.submit(computed_options, Item(dir=str(tmp_path), n=4, sleep=3.0), priority=-100)
    assert (low.record().priority, high.record().priority, mid.record().priority) == (0, 20, 10)
    assert (low.record().timeout, killed.record().timeout) == (None, pytest.approx(0.3))
    assert (given.record().priority, given.record().timeout) == (-5, 9.0)  # a submit's own options win
    sup.serve(until="drained")
    assert killed.status() is RunStatus.TIMED_OUT
    order = [n for _, n, _, _ in sorted(read_spans(str(tmp_path / "computed.txt")), key=lambda s: s[2])]
    assert order == [2, 1, 0, 3]  # highest computed priority first; the killed one never wrote
    sup.close()


def test_a_priority_function_that_raises_is_refused_at_submit_with_nothing_stored(db: str, tmp_path: Path):
    @job(name="bad_priority", priority=lambda item: 1 // item.n)
    def bad_priority(item: Item) -> int:
        return item.n

    sup = Supervisor([bad_priority], workers=1, store=db)
    with pytest.raises(ValueError, match="priority function raised ZeroDivisionError"):
        sup.submit(bad_priority, Item(dir=str(tmp_path), n=0))
    assert sup.runs() == []
    sup.close()


# == concurrency per key =====================================================================


@pytest.mark.timeout(120)
def test_a_limit_per_input_key_holds_under_a_burst_and_keys_run_side_by_side(db: str, tmp_path: Path):
    groups = ["a", "b", "c", "d", "e"]
    sup = Supervisor([one_per_group], workers=3, store=db)
    with serving(sup):
        handles = [sup.submit(one_per_group, Item(dir=str(tmp_path), group=groups[i % 5], n=i, sleep=0.002))
                   for i in range(BURST)]
        for handle in handles:
            handle.result(timeout=90)
    spans = read_spans(str(tmp_path / "groups.txt"))
    assert len(spans) == BURST
    by_group = {g: [(s, e) for group, _, s, e in spans if group == g] for g in groups}
    for group, times in by_group.items():
        assert most_overlapping(times) == 1, f"two runs of group {group} overlapped"
    # one key's backlog never holds up the others: different keys ran at the same time
    assert any(any_overlap(by_group[x], by_group[y]) for x in groups for y in groups if x < y)
    assert most_overlapping([(s, e) for _, _, s, e in spans]) >= 2


@pytest.mark.timeout(120)
def test_a_limit_per_tenant_holds_for_runs_read_from_the_store(db: str, tmp_path: Path):
    with Client(db, create=True) as client:  # stored before any supervisor: read back with their tenants
        for tenant in ("acme", "globex"):
            client.submit_many(two_per_tenant, [Item(dir=str(tmp_path), group=tenant, n=i, sleep=0.003)
                                                for i in range(BURST // 2)], tenant=tenant)
    sup = Supervisor([two_per_tenant], workers=3, store=db)
    assert sup.serve(until="drained") == "drained"
    spans = read_spans(str(tmp_path / "tenants.txt"))
    assert len(spans) == BURST
    acme = [(s, e) for g, _, s, e in spans if g == "acme"]
    globex = [(s, e) for g, _, s, e in spans if g == "globex"]
    assert most_overlapping(acme) <= 2 and most_overlapping(globex) <= 2
    assert any_overlap(acme, globex)
    assert len(sup.runs(tenant="acme", status="succeeded", limit=BURST)) == BURST // 2
    sup.close()


@pytest.mark.timeout(60)
def test_a_key_function_that_raises_fails_that_run_only(db: str, tmp_path: Path):
    sup = Supervisor([keyed_by_a_fragile_function], workers=1, store=db)
    handles = sup.submit_many(keyed_by_a_fragile_function, [Item(dir=str(tmp_path), group="g", n=n) for n in range(20)])
    assert sup.serve(until="drained") == "drained"
    statuses = {h.id: h.status() for h in handles}
    bad = handles[13].record()
    assert bad.status is RunStatus.FAILED and bad.error_type == "LimitKeyError"
    assert "RuntimeError: unlucky input" in (bad.message or "")
    assert [s for i, s in statuses.items() if i != bad.id] == [RunStatus.SUCCEEDED] * 19
    sup.close()


# == throttle ===================================================================================


@pytest.mark.timeout(120)
def test_throttle_allows_at_most_n_starts_in_any_second_of_a_burst(db: str, tmp_path: Path):
    count, _ = throttled.rate_limit or (0, 0)
    sup = Supervisor([throttled], workers=3, store=db)
    with serving(sup):
        handles = [sup.submit(throttled, Item(dir=str(tmp_path), n=i)) for i in range(BURST)]
        results = [h.result(timeout=90) for h in handles]
        # the limiter decides when a run is handed out: its attempt starts when it is claimed
        starts = sorted(r.started_at or 0.0 for r in sup.runs(limit=BURST))
    assert results == list(range(BURST))  # none dropped
    assert len(starts) == BURST
    busiest = max(sum(1 for u in starts[i:i + int(count) + 10] if u < t + 1.0) for i, t in enumerate(starts))
    assert busiest <= count + 2, f"{busiest} starts within one second, throttle {count}/s"
    assert starts[-1] - starts[0] >= (BURST / count - 1) * 0.9  # spread out, not run at once


# == debounce ===================================================================================


def debounced_lines(tmp_path: Path) -> list[tuple[str, int]]:
    return [(group, n) for group, n, _, _ in read_spans(str(tmp_path / "debounced.txt"))]


@pytest.mark.timeout(60)
def test_a_burst_of_submits_with_one_key_becomes_one_run_with_the_last_input(db: str, tmp_path: Path):
    sup = Supervisor([debounced], workers=2, store=db)
    with serving(sup):
        began = time.monotonic()
        handles = [sup.submit(debounced, Item(dir=str(tmp_path), group="k", n=i), key="k") for i in range(BURST)]
        burst = time.monotonic() - began
        assert {h.id for h in handles} == {handles[0].id}
        assert handles[0].result(timeout=30) == BURST - 1
        waited = time.monotonic() - began
        runs = sup.runs(job="debounced")
    assert debounced_lines(tmp_path) == [("k", BURST - 1)]
    assert len(runs) == 1 and runs[0].key == "k" and runs[0].attempts == 1
    assert waited >= burst + 0.9  # it started a window after the last submit, not the first


@pytest.mark.timeout(60)
def test_several_keys_make_one_run_each_and_a_later_burst_makes_a_new_run(db: str, tmp_path: Path):
    keys = ["k0", "k1", "k2", "k3", "k4"]
    sup = Supervisor([debounced], workers=2, store=db)
    with serving(sup):
        handles = [sup.submit(debounced, Item(dir=str(tmp_path), group=keys[i % 5], n=i), key=keys[i % 5])
                   for i in range(BURST)]
        assert len({h.id for h in handles}) == 5
        results = {h.id: h.result(timeout=30) for h in handles}
        assert sorted(results.values()) == list(range(BURST - 5, BURST))  # each key's last input
        again = sup.submit(debounced, Item(dir=str(tmp_path), group="k0", n=1000), key="k0")
        assert again.id not in results  # the first burst's run has run: a new burst, a new run
        assert again.result(timeout=30) == 1000
        first, latest = sup.run(handles[0].id), sup.run(again.id)
    assert sorted(debounced_lines(tmp_path)) == sorted([(k, BURST - 5 + i) for i, k in enumerate(keys)] + [("k0", 1000)])
    assert first.key is None and latest.key == "k0"  # the key moved to the new run


@pytest.mark.timeout(60)
def test_a_burst_from_a_client_in_another_connection_also_becomes_one_run(db: str, tmp_path: Path):
    sup = Supervisor([debounced], workers=1, store=db)
    with serving(sup), Client(db, jobs=[debounced]) as client:
        handles = [client.submit(debounced, Item(dir=str(tmp_path), group="c", n=i), key="c") for i in range(100)]
        time.sleep(0.2)  # the supervisor has polled the first version of the run meanwhile
        handles += [client.submit(debounced, Item(dir=str(tmp_path), group="c", n=100 + i), key="c")
                    for i in range(100)]
        assert {h.id for h in handles} == {handles[0].id}
        assert handles[0].result(timeout=30) == 199
    assert debounced_lines(tmp_path) == [("c", 199)]


def test_a_debounced_job_needs_a_key_and_refuses_delays(db: str, tmp_path: Path):
    sup = Supervisor([debounced], workers=1, store=db)
    with pytest.raises(ValueError, match="key="):
        sup.submit(debounced, Item(dir=str(tmp_path)))
    with pytest.raises(ValueError, match="delay="):
        sup.submit(debounced, Item(dir=str(tmp_path)), key="k", delay="1s")
    with pytest.raises(ValueError, match="key="):
        Client(db, jobs=[debounced]).submit(debounced, Item(dir=str(tmp_path)))
    assert sup.runs() == []
    sup.close()


def test_debounce_in_the_memory_store_updates_the_queued_run():
    sup = Supervisor([debounced], workers=1, store=":memory:")
    first = sup.submit(debounced, Item(dir="/nowhere", n=1), key="m", metadata={"v": 1})
    second = sup.submit(debounced, Item(dir="/nowhere", n=2), key="m", metadata={"v": 2}, tenant="t")
    assert first.id == second.id
    record = sup.run(first.id)
    assert Item.model_validate_json(record.input).n == 2 and record.metadata == {"v": 2} and record.tenant == "t"
    assert record.scheduled_at > time.time() + 0.5
    sup.close()


def test_a_key_function_named_tenant_is_still_a_function_of_the_input_for_a_shared_store():
    from actors import Limit
    from actors.run import JobInfo
    from actors.stores.postgres_limits import limits_of

    def tenant(item: Item) -> str:  # a name that reads like the stored tenant
        return item.group

    by_group = job(lambda item: 0, name="by_group", input=Item, concurrency=Limit(1, key=tenant))
    infos = [JobInfo(j.name, 1, None, None, j.options(), 0.0) for j in (by_group, two_per_tenant)]
    assert {name: limit.keyed for name, limit in limits_of(infos).items()} == {"by_group": "input",
                                                                               "two_per_tenant": "tenant"}
