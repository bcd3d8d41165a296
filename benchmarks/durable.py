"""Durable execution: what a memoized step and a durable sleep cost, against DBOS Transact.

Usage (from the repo root):
    .venv/bin/python benchmarks/durable.py [--runs 10000] [--dbos-runs 200] [--only actors]

Four workloads, each N runs of a job (a DBOS workflow) taking an int:
- plain: ``x + 1``, no step (the baseline of "10 steps");
- 10 steps: ten trivial steps, each returning a small int;
- 1 step: one such step (the baseline of "1 step + sleep");
- 1 step + sleep: one step, then a durable sleep of SLEEP s (10 ms).  actors counts a sleep
  within 5 ms of its end as over (``context._EARLY``), so a shorter one would not suspend; with
  10 ms every run really suspends (its attempt ends ``suspended``, the worker is freed) and
  resumes once: two attempts, checked on the last run of each batch.

actors: a Supervisor with 2 workers on a SQLite store in a temp dir; each batch is
``submit_many`` then ``serve(until="drained")``, timed from serve's start to its return
(worker start-up included: the fork server is kept from an un-timed warm-up batch), median of
3 batches.  Rows with the default durability ("normal": WAL, synchronous=NORMAL, a commit
survives a process crash) and with ``durability="full"`` (synchronous=FULL: a power loss too).

DBOS Transact (``pip install dbos``), in a fresh child process per configuration (it is a
process-wide singleton and runs threads, which must not be running when actors forks its
workers): workflows with ``@DBOS.step()`` calls and ``DBOS.sleep(SLEEP)``, each batch started
with ``DBOS.start_workflow`` on an executor of ``max_executor_threads=2`` (like our 2 workers;
DBOS runs workflows in threads of one process) and waited for with ``get_result`` polling
every 5 ms (its default is 1 s); timed from the first start to the last result, one batch of
--dbos-runs after 20 un-timed ones (DBOS is slow enough here that a larger N would not fit the
~2 minute budget).  Configurations: its SQLite default
(``system_database_url="sqlite:///<tmp>/dbos.sqlite"``: a rollback journal with
synchronous=FULL, like our "full"); the same file through a ``system_database_engine`` with WAL
and synchronous=NORMAL (like our default); the default through its documented queue
(``DBOS.register_queue(worker_concurrency=2, polling_interval_sec=0.005)``, ``enqueue``; 1 ms
polled no faster), which was slower here than ``start_workflow`` (so only its step cost is
measured, on half the runs, to keep the budget); and, for the sleep only, the default executor
(unbounded threads), since ``DBOS.sleep`` holds its thread where actors frees the worker.

Derived columns: "µs per step" = (1/rate(10 steps) - 1/rate(plain)) / 10, and "µs per sleep
cycle" = 1/rate(1 step + sleep) - 1/rate(1 step): wall time added per step or per suspend and
resume, at 2 workers (throughput, not latency).  The ratio column is runs/s against the actors
default row for the same workload.  The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers as P  # noqa: E402

from actors import Context, Supervisor, job  # noqa: E402

STEPS = 10
SLEEP = 0.01  # s; over actors' 5 ms "already over" margin, so each run suspends once
WORKLOADS = ["plain", "10 steps", "1 step", "1 step + sleep"]
REF = "actors, SQLite"
DBOS_BUDGET = 150  # s per DBOS child process
QUEUE_POLL = 0.005  # s; a DBOS queue's polling interval (default 1 s; 1 ms was no faster here)
RESULT_POLL = 0.005  # s; DBOS get_result's polling interval (default 1 s)


# --- actors -----------------------------------------------------------------------------------


@job
def plain(x: int) -> int:
    return x + 1


@job
def ten_steps(x: int, ctx: Context) -> int:
    total = 0
    for i in range(STEPS):
        total += ctx.step(f"s{i}", lambda i=i: i)
    return x + total


@job
def one_step(x: int, ctx: Context) -> int:
    return x + ctx.step("s0", lambda: 1)


@job
def step_sleep(x: int, ctx: Context) -> int:
    y = ctx.step("s0", lambda: 1)
    ctx.sleep("nap", SLEEP)
    return x + y


ACTORS_JOBS = {"plain": plain, "10 steps": ten_steps, "1 step": one_step, "1 step + sleep": step_sleep}
EXPECTED = {"plain": 1, "10 steps": sum(range(STEPS)), "1 step": 1, "1 step + sleep": 1}  # x + this


def bench_actors(n, durability):
    d = tempfile.mkdtemp(prefix="bench-durable-")
    sup = Supervisor(list(ACTORS_JOBS.values()), workers=P.WORKERS,
                     store=os.path.join(d, "actors.db"), durability=durability)
    try:
        for j in ACTORS_JOBS.values():  # warm-up: starts the fork server, fills the caches
            sup.submit_many(j, list(range(50)))
        sup.serve(until="drained")
        out = {}
        for name, j in ACTORS_JOBS.items():
            times = []
            for _ in range(P.REPS):
                hs = sup.submit_many(j, list(range(n)))
                t0 = time.perf_counter()
                sup.serve(until="drained")
                times.append(time.perf_counter() - t0)
                if [h.result() for h in hs] != [x + EXPECTED[name] for x in range(n)]:
                    raise AssertionError(f"{name}: wrong results")
                if name == "1 step + sleep" and sup.run(hs[-1].id).attempts != 2:
                    raise AssertionError("a sleeping run did not suspend and resume once")
            med = statistics.median(times)
            out[name] = {"runs_per_s": n / med, "s": med, "times_s": [round(t, 4) for t in times]}
        return out
    finally:
        sup.close()
        shutil.rmtree(d, ignore_errors=True)


# --- DBOS (in a child process) ----------------------------------------------------------------


DBOS_SYSTEMS = {  # name -> (engine, how started, executor threads, workloads)
    "DBOS, SQLite default": ("default", "start_workflow", P.WORKERS, WORKLOADS),
    "DBOS, SQLite WAL+NORMAL": ("wal", "start_workflow", P.WORKERS, WORKLOADS),
    "DBOS, SQLite default, queue": ("default", "queue", None, ["plain", "10 steps"]),  # half the runs
    "DBOS, SQLite default, unbounded threads": ("default", "start_workflow", None,
                                                ["1 step", "1 step + sleep"]),
}


def dbos_child(system, n):
    """Runs in a fresh interpreter: one DBOS configuration, prints its results as JSON."""
    import logging

    from dbos import DBOS

    engine, how, threads, workloads = DBOS_SYSTEMS[system]
    d = tempfile.mkdtemp(prefix="bench-dbos-")
    url = f"sqlite:///{d}/dbos.sqlite"
    config = {"name": "bench-durable", "system_database_url": url, "log_level": "WARNING"}
    if threads is not None:
        config["max_executor_threads"] = threads
    if engine == "wal":
        import sqlalchemy as sa

        eng = sa.create_engine(url)

        @sa.event.listens_for(eng, "connect")
        def _connect(conn, record):  # as DBOS's own SQLite engine, plus WAL and NORMAL
            conn.isolation_level = "IMMEDIATE"
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")

        config["system_database_engine"] = eng
    DBOS(config=config)

    @DBOS.step()
    def small(i):
        return i

    @DBOS.workflow()
    def wf_plain(x):
        return x + 1

    @DBOS.workflow()
    def wf_ten_steps(x):
        total = 0
        for i in range(STEPS):
            total += small(i)
        return x + total

    @DBOS.workflow()
    def wf_one_step(x):
        return x + small(1)

    @DBOS.workflow()
    def wf_step_sleep(x):
        y = small(1)
        DBOS.sleep(SLEEP)
        return x + y

    flows = {"plain": wf_plain, "10 steps": wf_ten_steps, "1 step": wf_one_step,
             "1 step + sleep": wf_step_sleep}
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    try:
        if how == "queue":
            queue = DBOS.register_queue("bench", worker_concurrency=P.WORKERS,
                                        polling_interval_sec=QUEUE_POLL)
            start = queue.enqueue
        else:
            start = DBOS.start_workflow

        def batch(name, xs):
            hs = [start(flows[name], x) for x in xs]
            return [h.get_result(polling_interval_sec=RESULT_POLL) for h in hs]

        out = {}
        for name in workloads:
            batch(name, range(20))  # warm-up
            t0 = time.perf_counter()
            res = batch(name, range(n))
            dt = time.perf_counter() - t0
            if res != [x + EXPECTED[name] for x in range(n)]:
                raise AssertionError(f"{name}: wrong results")
            out[name] = {"runs_per_s": n / dt, "s": dt, "times_s": [round(dt, 4)]}
        print("RESULT: " + json.dumps(out))
    finally:
        DBOS.destroy()
        shutil.rmtree(d, ignore_errors=True)


def bench_dbos(system, n):
    """(results, None) or (None, why not)."""
    try:
        import dbos  # noqa: F401 - only to say early that it is missing
    except ImportError:
        return None, "not run: dbos is not installed (pip install -e '.[bench]')"
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--dbos-child", system,
                               "--dbos-runs", str(n)], capture_output=True, text=True,
                              timeout=DBOS_BUDGET)
    except subprocess.TimeoutExpired:
        return None, f"not run: over {DBOS_BUDGET} s"
    for line in done.stdout.splitlines():
        if line.startswith("RESULT: "):
            return json.loads(line[len("RESULT: "):]), None
    lines = [x for x in (done.stderr or done.stdout).strip().splitlines() if x.strip()]
    print(done.stderr[-3000:], file=sys.stderr)
    return None, f"not run: {lines[-1][:300] if lines else f'exit code {done.returncode}'}"


# --- report -----------------------------------------------------------------------------------


def derive(r):
    """Per-step and per-sleep-cycle µs from the rates of one system's workloads (in place)."""
    rate = {w: v["runs_per_s"] for w, v in r.items()}
    if "10 steps" in rate and "plain" in rate:
        r["10 steps"]["us_per_step"] = (1 / rate["10 steps"] - 1 / rate["plain"]) / STEPS * 1e6
    if "1 step + sleep" in rate and "1 step" in rate:
        r["1 step + sleep"]["us_per_sleep_cycle"] = (1 / rate["1 step + sleep"] - 1 / rate["1 step"]) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10000, help="runs per actors batch (default 10000)")
    p.add_argument("--dbos-runs", type=int, default=200, help="workflows per DBOS batch (default 200)")
    p.add_argument("--only", default="", help="comma-separated substrings of the systems to run")
    p.add_argument("--dbos-child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.dbos_child is not None:
        return dbos_child(a.dbos_child, a.dbos_runs)
    only = [s.strip().lower() for s in a.only.split(",") if s.strip()]
    info = {"workers": P.WORKERS, "reps": P.REPS, "runs": a.runs, "dbos_runs": a.dbos_runs,
            "steps": STEPS, "sleep_s": SLEEP}
    print("durable: memoized steps and durable sleeps, serve start to drained  ("
          + ", ".join(f"{k}={v}" for k, v in info.items()) + f", cpus={os.cpu_count()})")

    systems = [(REF, "actors", "normal"), ("actors, SQLite, durability=full", "actors", "full")]
    systems += [(name, "dbos", None) for name in DBOS_SYSTEMS]
    systems = [s for s in systems if not only or s[0] == REF or any(o in s[0].lower() for o in only)]
    results, errors = {}, {}
    for name, kind, durability in systems:
        print(f"  {name} ...", end="", flush=True, file=sys.stderr)
        t0 = time.perf_counter()
        if kind == "actors":
            try:
                with P.deadline(DBOS_BUDGET):
                    results[name] = bench_actors(a.runs, durability)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
        else:
            res, why = bench_dbos(name, a.dbos_runs if "queue" not in name else max(20, a.dbos_runs // 2))
            if res is None:
                errors[name] = why
            else:
                results[name] = res
        print(f" {time.perf_counter() - t0:.1f} s" + (f" FAILED: {errors[name]}" if name in errors else ""),
              file=sys.stderr)
        if name in results:
            derive(results[name])

    ref = results.get(REF, {})
    headers = ["system", "workload", "runs/s", "µs per step / sleep cycle", f"vs {REF}"]
    rows = []
    for name, _, _ in systems:
        if name in errors:
            rows.append([name, "all", "-", "-", errors[name]])
            continue
        for w, r in results[name].items():
            extra = r.get("us_per_step", r.get("us_per_sleep_cycle"))
            r["ratio_vs_actors"] = r["runs_per_s"] / ref[w]["runs_per_s"] if w in ref else None
            rows.append([name, w, f"{r['runs_per_s']:,.0f}", "-" if extra is None else f"{extra:,.1f}",
                         "-" if r["ratio_vs_actors"] is None else f"{r['ratio_vs_actors']:.3f}x"])
    print()
    P.print_table(headers, rows)
    P.emit_json({"benchmark": "durable", **info, "reference": REF, "results": results, "errors": errors})
    charted = {name: [r.get(w, {}).get("runs_per_s", 0) for w in WORKLOADS] for name, r in results.items()
               if all(w in r for w in WORKLOADS)}
    P.chart("durable", f"durable execution: runs/s by workload (actors {a.runs:,} runs, "
            f"DBOS {a.dbos_runs:,} workflows)", charted, WORKLOADS, REF,
            log=True)


if __name__ == "__main__":
    main()
