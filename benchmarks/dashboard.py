"""Dashboard: server-side time of each page on a store of many runs (default 1,000,000).

Usage (from the repo root, with the dashboard extra installed):
    .venv/bin/python benchmarks/dashboard.py [--runs 1000000] [--reps 50] [--store PATH]

Fills a store (the real schema, made by `SQLiteStore`; rows inserted in bulk with SQL, since a
million runs through a supervisor would take minutes): five jobs, runs created over the last
seven days and the newest ones in the last hour, 97% succeeded, 2% failed with a traceback and
an attempt row, 0.5% timed out, 0.5% cancelled, and 1,000 live runs at the top (queued, five
running). `--store PATH` reuses a store filled before (it is filled when missing).

Then it builds the app (`create_app`), waits for its first count (printed: the one full scan,
in a background thread), and requests each page `--reps` times in process (httpx over ASGI,
no network), reading the `Server-Timing` header the app sets: the time from the request
reaching the app to its response starting. Prints p50/p99 per page as a table and a JSON
line. The target: every page under 100 ms on a million runs.

`--throughput N` instead measures what an open dashboard costs a serving supervisor: N no-op
runs through `submit_many` on a supervisor serving in this process (as in throughput.py),
alternately alone and with a dashboard process beside it that renders the overview once a
second (what an open tab does while runs change: each `change` event from
/events makes it fetch the page again); `--pairs` alternations, medians compared. The target:
within 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.stores.sqlite import SQLiteStore  # noqa: E402

JOBS = ["thumbnail", "digest", "ocr", "resize", "report"]
LIVE = 1000
TRACEBACK = ('Traceback (most recent call last):\n  File "jobs.py", line 12, in thumbnail\n'
             '    raise ValueError("bad pixel")\nValueError: bad pixel\n')
INSERT = ("INSERT INTO runs (id, job, status, input, output, attempts, max_attempts, created_at, scheduled_at, "
          "started_at, finished_at, error_type, message, traceback, worker_pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
ATTEMPT = ("INSERT INTO attempts (run_id, number, started_at, finished_at, outcome, error_type, message, traceback, "
           "worker_pid) VALUES (?,?,?,?,?,?,?,?,?)")


def fill(path: str, n: int, seed: int = 1) -> None:
    SQLiteStore(path).close()  # the schema as the library makes it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(seed)
    now = time.time()
    recent = min(n // 10, 20_000)  # the newest runs fall in the last hour (the charts)
    old_step = 7 * 86400 / max(1, n - recent)
    db.execute("BEGIN")
    runs, attempts = [], []
    for i in range(1, n + 1):
        if i <= n - recent:
            created = now - 7 * 86400 + i * old_step
        else:
            created = now - 3600 + (i - (n - recent)) * 3600 / recent
        job = JOBS[i % len(JOBS)]
        if i > n - LIVE:
            running = i > n - 5
            row = (i, job, "running" if running else "queued", f'{{"src": "img/{i}.jpg"}}', None, int(running), 3,
                   created, created, created if running else None, None, None, None, None, None)
        else:
            r = rnd.random()
            started, finished = created + 0.01, created + 0.05 + rnd.random() * 0.2
            status, error, message, trace = "succeeded", None, None, None
            if r >= 0.99:
                status, error, message = "cancelled", "RunCancelled", "cancelled before it started"
            elif r >= 0.985:
                status, error, message = "timed_out", "RunTimedOut", "timed out after 30s"
            elif r >= 0.97:
                status, error, message, trace = "failed", "ValueError", "bad pixel", TRACEBACK
            output = '{"dst": "out.png", "bytes": 1234}' if status == "succeeded" else None
            row = (i, job, status, f'{{"src": "img/{i}.jpg"}}', output, 1, 3, created, created, started, finished,
                   error, message, trace, 4242)
            if status in ("failed", "timed_out"):
                attempts.append((i, 1, started, finished, status, error, message, trace, 4242))
        runs.append(row)
        if len(runs) >= 50_000:
            db.executemany(INSERT, runs)
            db.executemany(ATTEMPT, attempts)
            runs, attempts = [], []
    db.executemany(INSERT, runs)
    db.executemany(ATTEMPT, attempts)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def pages(path: str) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        top = db.execute("SELECT max(id) FROM runs").fetchone()[0]
        failed = db.execute("SELECT max(id) FROM runs WHERE status='failed' AND id > ?", (top - 100_000,)).fetchone()[0]
    return [
        ("overview", "/"),
        ("runs", "/runs"),
        ("runs, failed", "/runs?status=failed"),
        ("runs, queued", "/runs?status=queued"),
        ("runs, running", "/runs?status=running"),
        ("runs, job + cancelled", "/runs?job=ocr&status=cancelled"),
        ("runs, no match (scan budget)", "/runs?job=nobody"),
        ("runs, since 1h", "/runs?since=1h"),
        ("runs, deep page", f"/runs?status=failed&before={top // 2}"),
        ("runs, a day ago", "/runs?until=1d&status=timed_out"),
        ("run, failed", f"/runs/{failed}"),
        ("run, succeeded", f"/runs/{top // 3 - (top // 3) % 5}"),
        ("run, unknown (404)", f"/runs/{top + 1000}"),
        ("jobs", "/jobs"),
    ]


async def measure(app: object, urls: list[tuple[str, str]], reps: int) -> dict[str, dict[str, float]]:
    import httpx

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    results: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for name, url in urls:
            times = []
            status = 0
            for _ in range(reps):
                response = await client.get(url)
                status = response.status_code
                times.append(float(response.headers["server-timing"].split("dur=")[1]))
            times.sort()
            results[name] = {"url": url, "status": status, "p50_ms": statistics.median(times),  # type: ignore[dict-item]
                             "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))], "max_ms": times[-1]}
    return results


REFRESHER = """
import asyncio, sys, time
import httpx
from actors.dashboard import create_app

async def main(path):
    app = create_app(path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        print("ready", flush=True)
        while True:
            (await client.get("/")).raise_for_status()
            await asyncio.sleep(1.0)

asyncio.run(main(sys.argv[1]))
"""


def throughput(n: int, pairs: int) -> None:
    import subprocess

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _peers

    runner = _peers.ActorsRunner("sqlite", many=True)
    runner.start()
    times: dict[str, list[float]] = {"alone": [], "with dashboard": []}
    try:
        runner.warm("noop", range(200))
        store = os.path.join(runner.dir, "actors.db")
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for _ in range(pairs):
            for mode in ("alone", "with dashboard"):
                refresher = None
                if mode == "with dashboard":
                    refresher = subprocess.Popen([sys.executable, "-c", REFRESHER, store], stdout=subprocess.PIPE,
                                                 text=True, env=env)
                    assert refresher.stdout is not None and refresher.stdout.readline().strip() == "ready"
                    time.sleep(1.5)  # its first count is done and it refreshes
                try:
                    start = time.perf_counter()
                    out = runner.batch("noop", list(range(n)))
                    times[mode].append(time.perf_counter() - start)
                    assert sorted(out) == list(range(1, n + 1))
                finally:
                    if refresher is not None:
                        refresher.terminate()
                        refresher.wait(timeout=10)
    finally:
        runner.close()
    rates = {mode: n / statistics.median(t) for mode, t in times.items()}
    ratio = rates["with dashboard"] / rates["alone"]
    print(f"{'supervisor':24s} {'runs/s':>10s}   (median of {pairs}, {n:,} no-op runs each, alternated)")
    for mode, rate in rates.items():
        print(f"{mode:24s} {rate:10,.0f}   {[round(n / t) for t in times[mode]]}")
    print(f"ratio: {ratio:.3f} (target: at least 0.95)")
    print("JSON: " + json.dumps({"benchmark": "dashboard-throughput", "n": n, "pairs": pairs,
                                 "runs_per_s": rates, "ratio": ratio,
                                 "times_s": {m: [round(t, 4) for t in v] for m, v in times.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--store", help="reuse this store (filled when missing)")
    parser.add_argument("--throughput", type=int, metavar="N", help="measure a supervisor's throughput instead")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    if args.throughput:
        throughput(args.throughput, args.pairs)
        return
    from actors.dashboard import create_app

    folder = None
    path = args.store
    if path is None:
        folder = tempfile.mkdtemp(prefix="bench-dashboard-")
        path = os.path.join(folder, "runs.db")
    filled_s = None
    if not os.path.exists(path):
        start = time.perf_counter()
        fill(path, args.runs)
        filled_s = time.perf_counter() - start
    with sqlite3.connect(path) as db:
        n = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    print(f"dashboard: {n:,} runs in {path}" + (f" (filled in {filled_s:.1f} s)" if filled_s else ""))
    start = time.perf_counter()
    app = create_app(path)
    counts = app.state.dashboard.counts
    while not counts.ready:
        if time.perf_counter() - start > 300:
            raise SystemExit("the first count took over 300 s")
        time.sleep(0.01)
    first_count = time.perf_counter() - start
    print(f"first count (background, once at start): {first_count:.2f} s")
    results = asyncio.run(measure(app, pages(path), args.reps))
    print()
    print(f"{'page':32s} {'status':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for name, r in results.items():
        print(f"{name:32s} {r['status']:>6} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}")
    worst = max(r["p99_ms"] for r in results.values())
    print(f"\nworst p99: {worst:.1f} ms (target: under 100 ms)")
    print("JSON: " + json.dumps({"benchmark": "dashboard", "runs": n, "reps": args.reps,
                                 "first_count_s": round(first_count, 3), "worst_p99_ms": round(worst, 2),
                                 "pages": results}))
    if folder is not None:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


if __name__ == "__main__":
    main()
