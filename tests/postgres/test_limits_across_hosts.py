"""Three supervisors, in processes of their own, serving one PostgreSQL database: a drain of
3,000 runs where each runs exactly once, and the limits that must hold across them because the
store enforces them (`concurrency`, `Limit(n, key="tenant")`, `Limit(n, key=<a function>)`,
`rate`), uniqueness and keys
submitted from the three at once, and a cron tick that runs once.

Each job appends a line per start and end to a file opened with O_APPEND (one write each, so
lines of several processes never mix); the tests read the lines (and the store).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import test_supervisors
from conftest import script_env, wait_until
from semantics_jobs import Task, serving, task
from test_supervisors import lines, stop

from actors import Client, Supervisor, job
from actors.run import JobInfo, NewRun
from actors.stores import Changes
from actors.stores.postgres import PostgresStore
from actors.supervisor.dispatch import key_text

pytestmark = pytest.mark.timeout(120)
supervisors = test_supervisors.supervisors  # the fixture: supervisors still running are killed after the test

SUPERVISOR = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Limit, Supervisor, job
from actors.stores.postgres import PostgresStore

dsn, schema, LOG, mode, name = sys.argv[1:6]


class Task(BaseModel):
    n: int = 0
    seconds: float = 0.0
    group: str = ""


def note(*fields):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (" ".join(str(f) for f in fields) + "\\n").encode())
    finally:
        os.close(fd)


def timed(t, ctx):
    note("start", ctx.run_id, ctx.attempt, os.getpid(), time.time())
    if t.seconds:
        time.sleep(t.seconds)
    note("end", ctx.run_id, ctx.attempt, os.getpid(), time.time())
    return t.n


@job(retry=None)
def noop(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, concurrency=1)
def single(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, concurrency=Limit(1, key="tenant"))
def per_tenant(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, concurrency=Limit(1, key=lambda t: t.group))
def per_group(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, rate="4/s")
def paced(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, unique=True)
def uniq(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


@job(retry=None, cron="* * * * * *")  # every second (croniter's sixth field)
def ticking(t: Task, ctx: Context) -> int:
    return timed(t, ctx)


if __name__ == "__main__":
    jobs = [noop, single, per_tenant, per_group, paced, uniq] + ([ticking] if mode == "cron" else [])
    store = PostgresStore(dsn, schema=schema)
    sup = Supervisor(jobs, workers=2, store=store, poll_interval=0.02)
    if mode == "submit":  # all three submit one key and one unique input at once, then serve
        while not os.path.exists(name + ".go"):
            time.sleep(0.005)
        keyed = sup.submit(noop, Task(n=1), key="the-key")
        unique = sup.submit(uniq, Task(n=2))
        print("submitted", keyed.id, unique.id, flush=True)
        while not os.path.exists(name + ".serve"):
            time.sleep(0.005)
    print("serving", os.getpid(), flush=True)
    sup.serve()
    sup.close()
"""


def start(started: list[subprocess.Popen[bytes]], tmp_path: Path, dsn: str, schema: str, name: str,
          mode: str = "serve") -> subprocess.Popen[bytes]:
    script = tmp_path / "serve_limits.py"
    if not script.exists():  # written once: rewriting it while a supervisor reads it would empty its program
        script.write_text(SUPERVISOR)
    out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen([sys.executable, str(script), dsn, schema, str(tmp_path / "runs.log"), mode,
                             str(tmp_path / "all")], stdout=out, stderr=subprocess.STDOUT, env=script_env(),
                            cwd=tmp_path)
    out.close()
    started.append(proc)
    return proc


def start_three(started: list[subprocess.Popen[bytes]], tmp_path: Path, dsn: str, schema: str,
                store: PostgresStore, mode: str = "serve") -> list[subprocess.Popen[bytes]]:
    """Three supervisors; returns once all three serve (three live incarnations)."""
    procs = [start(started, tmp_path, dsn, schema, name, mode) for name in ("a", "b", "c")]
    if mode != "submit":
        wait_until(lambda: live_incarnations(store) == 3 or any(p.poll() is not None for p in procs), timeout=60,
                   interval=0.05, what="three supervisors to serve")
        assert [p.poll() for p in procs] == [None] * 3, f"a supervisor exited: {[p.poll() for p in procs]}"
        wait_until(lambda: len([w for w in store.workers() if w.pid]) == 6, timeout=60, interval=0.05,
                   what="the three supervisors' workers to start")
    return procs


def live_incarnations(store: PostgresStore) -> int:
    return int(store._all("SELECT count(*) FROM {s}.incarnations WHERE stopped_at IS NULL")[0][0])


def intervals(tmp_path: Path) -> dict[int, list[tuple[str, float, str]]]:
    """run id -> its ("start" | "end", time, worker pid) lines, in file order."""
    found: dict[int, list[tuple[str, float, str]]] = defaultdict(list)
    for fields in lines(tmp_path):
        if fields[0] in ("start", "end"):
            found[int(fields[1])].append((fields[0], float(fields[4]), fields[3]))
    return found


def executed_once(tmp_path: Path, run_ids: list[int]) -> dict[int, tuple[float, float]]:
    """Assert that each run started and ended exactly once, in one worker; run id -> (start, end)."""
    found = intervals(tmp_path)
    assert sorted(found) == sorted(run_ids), "a run was lost, or a run ran that was not asked for"
    spans = {}
    for run_id, notes in found.items():
        assert [kind for kind, _, _ in notes] == ["start", "end"], f"run {run_id} executed {notes}"
        assert notes[0][2] == notes[1][2]
        spans[run_id] = (notes[0][1], notes[1][1])
    return spans


def overlaps(spans: list[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Pairs of intervals of which the second began before the first ended."""
    ordered = sorted(spans)
    return [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1]]


def succeeded(store: PostgresStore, job: str) -> int:
    return store.counts().get(job, {}).get("succeeded", 0)


def no_tracebacks(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()


def test_three_supervisors_drain_3000_short_runs_each_executed_exactly_once(tmp_path, supervisors, postgres_dsn,
                                                                        postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store)
    handles = []
    for batch in range(6):  # while they serve: every one of them reaches for the same runs
        handles += client.submit_many("noop", [{"n": batch * 500 + i, "seconds": 0.002} for i in range(500)])
    wait_until(lambda: succeeded(store, "noop") == 3000, timeout=90, interval=0.1, what="3000 runs to succeed")
    pids = {str(p.pid): {str(c.pid) for c in __import__("psutil").Process(p.pid).children(recursive=True)}
            for p in procs}
    for proc in procs:
        stop(proc)
    spans = executed_once(tmp_path, [h.id for h in handles])
    assert len(spans) == 3000
    assert store.counts()["noop"] == {"succeeded": 3000}
    assert {record.attempts for record in client.runs(job="noop", limit=3000)} == {1}
    workers = {notes[0][2] for notes in intervals(tmp_path).values()}
    took_part = [sup for sup, children in pids.items() if children & workers]
    assert len(took_part) == 3, f"only {len(took_part)} of the supervisors ran runs"
    no_tracebacks(tmp_path)
    client.close()


def test_concurrency_1_holds_across_three_supervisors(tmp_path, supervisors, postgres_dsn, postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store)
    handles = client.submit_many("single", [{"n": i, "seconds": 0.05} for i in range(24)])
    others = client.submit_many("noop", [{"n": i} for i in range(50)])  # unlimited runs flow past them
    wait_until(lambda: succeeded(store, "single") == 24 and succeeded(store, "noop") == 50, timeout=60,
               interval=0.05, what="the runs to succeed")
    for proc in procs:
        stop(proc)
    spans = executed_once(tmp_path, [h.id for h in handles + others])
    single = [spans[h.id] for h in handles]
    assert overlaps(single) == [], "two runs of a concurrency=1 job ran at once"
    no_tracebacks(tmp_path)
    client.close()


def test_a_tenant_limit_holds_per_tenant_across_three_supervisors(tmp_path, supervisors, postgres_dsn,
                                                                   postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store)
    by_tenant = {tenant: client.submit_many("per_tenant", [{"n": i, "seconds": 0.05} for i in range(8)],
                                            tenant=tenant) for tenant in ("red", "blue")}
    wait_until(lambda: succeeded(store, "per_tenant") == 16, timeout=60, interval=0.05, what="the runs to succeed")
    for proc in procs:
        stop(proc)
    spans = executed_once(tmp_path, [h.id for handles in by_tenant.values() for h in handles])
    for tenant, handles in by_tenant.items():
        assert overlaps([spans[h.id] for h in handles]) == [], f"two runs of tenant {tenant} ran at once"
    no_tracebacks(tmp_path)
    client.close()


def test_a_limit_keyed_by_a_function_holds_per_key_across_three_supervisors(tmp_path, supervisors, postgres_dsn,
                                                                           postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store)
    groups = ("red", "blue", "green")
    handles = client.submit_many("per_group", [{"n": i, "seconds": 0.05, "group": groups[i % 3]} for i in range(24)])
    wait_until(lambda: succeeded(store, "per_group") == 24, timeout=60, interval=0.05, what="the runs to succeed")
    for proc in procs:
        stop(proc)
    spans = executed_once(tmp_path, [h.id for h in handles])
    for i, group in enumerate(groups):
        assert overlaps([spans[h.id] for h in handles[i::3]]) == [], f"two runs of group {group} ran at once"
    assert overlaps(list(spans.values())), "the groups never ran side by side"
    assert {row[0] for row in store._all("SELECT limit_key FROM {s}.runs WHERE job = 'per_group'")} == {
        '"red"', '"blue"', '"green"'}
    no_tracebacks(tmp_path)
    client.close()


def test_a_rate_holds_across_three_supervisors(tmp_path, supervisors, postgres_dsn, postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    first = start(supervisors, tmp_path, postgres_dsn, postgres_schema, "a")
    wait_until(lambda: live_incarnations(store) == 1, timeout=60, interval=0.05, what="a supervisor to serve")
    handles = client.submit_many("paced", [{"n": i} for i in range(20)])  # rate="4/s": 5 s at least
    wait_until(lambda: succeeded(store, "paced") >= 1, timeout=30, interval=0.02, what="the first runs")
    # two more join while the first one spends its allowance every second: alone, each would
    # take 4 starts a second of its own
    others = [start(supervisors, tmp_path, postgres_dsn, postgres_schema, name) for name in ("b", "c")]
    wait_until(lambda: live_incarnations(store) == 3, timeout=60, interval=0.05, what="three supervisors to serve")
    assert succeeded(store, "paced") < 16, "the first supervisor was done before the others joined"
    wait_until(lambda: succeeded(store, "paced") == 20, timeout=60, interval=0.05, what="the runs to succeed")
    for proc in [first, *others]:
        stop(proc)
    executed_once(tmp_path, [h.id for h in handles])
    # the claims' times (each run's only attempt): at most 4 in any window of a second. The store
    # counts by the database clock when it claims; a claim's stored time is its supervisor's clock
    # a moment before (the turn's start, before the lock): hence the slack
    claimed = sorted(record.started_at for record in client.runs(job="paced", limit=100))  # type: ignore[type-var]
    assert len(claimed) == 20
    gaps = [claimed[i + 4] - claimed[i] for i in range(len(claimed) - 4)]
    assert min(gaps) >= 1.0 - 0.25, f"more than 4 starts within a second: gaps {gaps}"
    no_tracebacks(tmp_path)
    client.close()


def test_a_key_and_a_unique_input_submitted_by_three_supervisors_at_once_give_one_run(
        tmp_path, supervisors, postgres_dsn, postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store, mode="submit")
    time.sleep(0.5)  # not an assertion: give the three a moment to reach their wait for the signal
    (tmp_path / "all.go").touch()

    def submitted() -> list[list[str]]:
        found = [[line.split() for line in (tmp_path / f"{name}.log").read_text().splitlines()
                  if line.startswith("submitted")] for name in ("a", "b", "c")]
        return [f[0][1:] for f in found] if all(found) else []

    ids = wait_until(submitted, timeout=60, what="the three to submit")
    assert ids[0] == ids[1] == ids[2], f"the supervisors got different runs: {ids}"
    (tmp_path / "all.serve").touch()
    wait_until(lambda: succeeded(store, "noop") == 1 and succeeded(store, "uniq") == 1, timeout=60,
               what="the two runs to succeed")
    for proc in procs:
        stop(proc)
    assert store.counts()["noop"] == {"succeeded": 1} and store.counts()["uniq"] == {"succeeded": 1}
    executed_once(tmp_path, [int(ids[0][0]), int(ids[0][1])])
    no_tracebacks(tmp_path)
    client.close()


def test_a_cron_tick_runs_once_across_three_supervisors(tmp_path, supervisors, postgres_dsn, postgres_schema):
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    client = Client(store)
    procs = start_three(supervisors, tmp_path, postgres_dsn, postgres_schema, store, mode="cron")
    wait_until(lambda: succeeded(store, "ticking") >= 3, timeout=30, interval=0.05, what="three ticks to run")
    for proc in procs:
        stop(proc)
    records = client.runs(job="ticking", limit=100)
    keys = Counter(record.key for record in records)
    assert all(key and key.startswith("cron:") for key in keys) and max(keys.values()) == 1
    executed_once(tmp_path, [record.id for record in records])
    ticks = sorted(float(key.removeprefix("cron:")) for key in keys if key)
    # one run per tick: the ticks are whole seconds, and (all three fired every tick) none is twice
    assert all(tick == int(tick) for tick in ticks) and len(set(ticks)) == len(ticks)
    no_tracebacks(tmp_path)
    client.close()


# -- the store alone: what it counts, and what it answers -------------------------------------

NOW = 1_000.0


@pytest.fixture
def stores(postgres_dsn: str, postgres_schema: str):
    """Stores opened on one schema, each serving (as several supervisors would); closed after."""
    made: list[PostgresStore] = []

    def open_(limits: dict) -> PostgresStore:
        store = PostgresStore(postgres_dsn, schema=postgres_schema)
        made.append(store)
        store.acquire()
        store.record_jobs([JobInfo("job", 1, None, None, limits, NOW), JobInfo("free", 1, None, None, {}, NOW)])
        return store

    yield open_
    for store in made:
        store.close()


def insert(store: PostgresStore, count: int, job: str = "job", tenant: str | None = None) -> list[int]:
    return [run_id for run_id, _ in store.insert([NewRun(job, f'{{"x": {i}}}', tenant=tenant)
                                                   for i in range(count)], NOW)]


def claim(store: PostgresStore, ids: list[int]) -> tuple[set[int], set[int]]:
    """Claim the runs' first attempts: (won, deferred)."""
    changes = Changes(claims=[(i, 1) for i in ids])
    lost = store.commit(changes, time.time())
    return set(ids) - lost, changes.deferred


def succeed(store: PostgresStore, ids: list[int]) -> None:
    store.commit(Changes(successes=[(i, 1, "1", NOW, None, None) for i in ids]), time.time())


def test_a_concurrency_limit_is_counted_in_the_store_across_supervisors(stores):
    a, b = stores({"concurrency": 2}), stores({"concurrency": 2})
    ids = insert(a, 5)
    free = insert(a, 3, job="free")
    assert claim(a, ids[:2] + free) == (set(ids[:2] + free), set())  # unlimited runs are never counted
    assert claim(b, ids[2:4]) == (set(), set(ids[2:4]))  # refused: deferred, not lost for good
    assert b.get(ids[2]).attempts == 0 and b.get(ids[2]).status.value == "queued"  # type: ignore[union-attr]
    succeed(a, ids[:1])
    assert claim(b, ids[2:4]) == ({ids[2]}, {ids[3]})  # the allowance, in the order asked for
    b.commit(Changes(claims=[(ids[4], 1)], successes=[(ids[2], 1, "1", NOW, None, None)]), time.time())
    assert a.get(ids[4]).status.value == "running"  # type: ignore[union-attr]  # a run ended in the turn frees its place


def test_two_supervisors_claiming_at_once_never_exceed_the_limit(stores):
    a, b = stores({"concurrency": 10}), stores({"concurrency": 10})
    ids = insert(a, 100)
    won: dict[str, set[int]] = {}
    barrier = threading.Barrier(2)

    def run(name: str, store: PostgresStore, mine: list[int]) -> None:
        barrier.wait()
        for i in range(0, len(mine), 5):
            won[name] = won.get(name, set()) | claim(store, mine[i:i + 5])[0]

    threads = [threading.Thread(target=run, args=("a", a, ids[:50])), threading.Thread(target=run, args=("b", b, ids[50:]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won["a"]) + len(won["b"]) == 10
    assert a.counts()["job"] == {"running": 10, "queued": 90}


def test_a_tenant_limit_counts_each_tenant_apart(stores):
    a, b = stores({"concurrency": 1, "concurrency_key": "tenant"}), stores({"concurrency": 1, "concurrency_key": "tenant"})
    red, blue, none = insert(a, 2, tenant="red"), insert(a, 2, tenant="blue"), insert(a, 2)
    assert claim(a, [red[0], blue[0], none[0]])[0] == {red[0], blue[0], none[0]}
    assert claim(b, [red[1], blue[1], none[1]]) == (set(), {red[1], blue[1], none[1]})
    succeed(a, [blue[0]])
    assert claim(b, [red[1], blue[1], none[1]])[0] == {blue[1]}


def test_a_function_key_limit_counts_each_key_passed_with_the_claims_apart(stores):
    options = {"concurrency": 1, "concurrency_key": "<lambda>"}  # Job.options() of Limit(1, key=lambda ...)
    a, b = stores(options), stores(options)
    ids = insert(a, 6)
    red, blue, none = ids[0:2], ids[2:4], ids[4:6]
    keys = {**dict.fromkeys(red, '"red"'), **dict.fromkeys(blue, '"blue"'), **dict.fromkeys(none, "null")}

    def claim_keyed(store: PostgresStore, some: list[int]) -> tuple[set[int], set[int]]:
        changes = Changes(claims=[(i, 1) for i in some], claim_keys={i: keys[i] for i in some})
        lost = store.commit(changes, time.time())
        return set(some) - lost, changes.deferred

    assert claim_keyed(a, [red[0], red[1], blue[0], none[0]]) == ({red[0], blue[0], none[0]}, {red[1]})
    assert claim_keyed(b, [red[1], blue[1], none[1]]) == (set(), {red[1], blue[1], none[1]})
    succeed(a, [blue[0]])
    assert claim_keyed(b, [red[1], blue[1], none[1]])[0] == {blue[1]}
    assert b._all("SELECT limit_key FROM {s}.runs WHERE id = %s", (blue[1],)) == [('"blue"',)]


def test_a_function_key_is_the_same_text_in_every_process():
    assert key_text(("a", 1)) == '["a", 1]'
    assert key_text({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert key_text(frozenset({"b", "a"})) == '["a", "b"]'  # not its repr, whose order follows the hash seed


def test_a_rate_is_a_sliding_window_by_the_database_clock_across_supervisors(stores):
    a, b = stores({"rate": "3/s"}), stores({"rate": "3/s"})
    ids = insert(a, 6)
    began = time.monotonic()
    assert claim(a, ids[:2])[0] == set(ids[:2])
    assert claim(b, ids[2:5]) == ({ids[2]}, {ids[3], ids[4]})
    wait_until(lambda: claim(b, ids[3:5])[0] == {ids[3], ids[4]}, timeout=10, interval=0.05,
               what="the window to admit two more starts")
    assert time.monotonic() - began >= 0.9  # refused until the first two starts were a second old
    assert a._all("SELECT count(*) FROM {s}.starts")[0][0] <= 6  # older starts are deleted as it goes


def test_a_store_that_knows_no_limit_claims_as_before(stores):
    a = stores({})
    ids = insert(a, 3)
    assert not a._limits
    assert claim(a, ids) == (set(ids), set())


@job(concurrency=1, retry=None)
def alone(t: Task) -> int:
    return t.n


def test_a_deferred_claim_waits_without_spinning_and_runs_once_the_place_is_free(stores, postgres_dsn,
                                                                                 postgres_schema, tmp_path):
    other = stores({"concurrency": 1})
    (held,) = insert(other, 1, job="alone")
    assert claim(other, [held]) == ({held}, set())  # another supervisor runs one (and never reports)
    store = PostgresStore(postgres_dsn, schema=postgres_schema)
    sup = Supervisor([alone], workers=1, store=store, poll_interval=0.02)
    with serving(sup):
        handle = sup.submit(alone, task(tmp_path, n=7))
        wait_until(lambda: store.deferred >= 3, timeout=10, what="the claim to be refused a few times")
        turns, deferred = sup._serving.turns, store.deferred
        time.sleep(1.0)  # not an assertion of timing: a window to count the turns in
        assert sup._serving.turns - turns < 100, "the supervisor spins on a refused claim"
        assert store.deferred - deferred <= 5  # it tries again at most about once a second by then
        assert store.get(handle.id).status.value == "queued"  # type: ignore[union-attr]
        succeed(other, [held])
        assert handle.result(timeout=10) == 7
    assert store.get(handle.id).attempts == 1  # type: ignore[union-attr]  # the refusals were not attempts
