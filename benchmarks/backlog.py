"""Backlog: a fresh supervisor on a store that already holds many queued runs.

Usage (from the repo root):
    .venv/bin/python benchmarks/backlog.py [--runs 1000000] [--workers 2]

Stores N no-op runs with `submit_many` (in batches of 50,000, not timed), then in a fresh
process: constructs a `Supervisor` on that store, serves until drained, and prints the time from
construction to the first run started (the job reads the clock when it runs), the supervisor's
peak RSS while draining (sampled every 50 ms from a thread started after the fork server), and
the drain rate. The supervisor reads a long queue a page at a time (`loop.PAGE`), so memory
stays flat whatever the backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = """
import time
from actors import job

@job
def tick(x: int) -> float:
    return time.monotonic()
"""

FILL = JOB + """
import sys
from actors import Supervisor

if __name__ == "__main__":
    store, runs = sys.argv[1], int(sys.argv[2])
    sup = Supervisor([tick], store=store)
    for start in range(0, runs, 50_000):
        sup.submit_many(tick, range(start, min(runs, start + 50_000)))
    sup.close()
"""

DRAIN = JOB + """
import json, sys, threading
import psutil
from actors import Supervisor

if __name__ == "__main__":
    store, workers = sys.argv[1], int(sys.argv[2])
    t0 = time.monotonic()
    sup = Supervisor([tick], workers=workers, store=store)
    constructed = time.monotonic() - t0
    first = []
    sup.on("started", lambda record: first or first.append(time.monotonic()))
    sup.prefork()  # before the sampling thread: the fork server stays a fork
    peak = [psutil.Process().memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], psutil.Process().memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    t_serve = time.monotonic()
    sup.serve(until="drained")
    drained = time.monotonic()
    done.set()
    counts = sup.store.counts()
    sup.close()
    print(json.dumps({"construct_s": constructed, "first_run_s": first[0] - t0 if first else None,
                      "drain_s": drained - t_serve, "peak_rss_mb": peak[0] / 2**20, "counts": counts}))
"""


def script(tmp: str, name: str, code: str) -> str:
    path = os.path.join(tmp, name)
    with open(path, "w") as file:
        file.write(textwrap.dedent(code))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "backlog.db")
        started = time.monotonic()
        subprocess.run([sys.executable, script(tmp, "fill.py", FILL), store, str(args.runs)], check=True, env=env,
                       cwd=tmp)
        filled = time.monotonic() - started
        done = subprocess.run([sys.executable, script(tmp, "drain.py", DRAIN), store, str(args.workers)],
                              check=True, env=env, cwd=tmp, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    succeeded = sum(c.get("succeeded", 0) for c in result["counts"].values())
    rate = succeeded / result["drain_s"]
    print(f"{'stored runs':<34}{args.runs:>12,}   (stored in {filled:.1f} s)")
    print(f"{'construct -> first run started':<34}{result['first_run_s']:>12.3f} s")
    print(f"{'peak supervisor RSS while draining':<34}{result['peak_rss_mb']:>12.0f} MB")
    print(f"{'drain rate':<34}{rate:>12,.0f} runs/s   ({succeeded:,} succeeded)")
    print(json.dumps({"runs": args.runs, "first_run_s": round(result["first_run_s"], 4),
                      "construct_s": round(result["construct_s"], 4), "peak_rss_mb": round(result["peak_rss_mb"], 1),
                      "drain_rate": round(rate), "succeeded": succeeded}))


if __name__ == "__main__":
    main()
