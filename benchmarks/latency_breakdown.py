"""Where one run's latency goes: timestamps along the path of one durable run.

Usage (from the repo root):
    .venv/bin/python benchmarks/latency_breakdown.py

Serves in a background thread, submits one no-op run at a time from the main thread (as
`latency.py` does), and stamps each step on CLOCK_MONOTONIC (`time.perf_counter`, comparable
between the supervisor and its workers on Linux) by wrapping the supervisor's own functions:
the submit's commit, the loop taking the run from its inbox, the claim's commit, the Assign
written to the pipe, the job running in the worker, the result read back, the result's commit
(the waiter is notified), and `result()` returning. Prints the median of 1,000 runs per step.
The wrappers add a few microseconds each: read the steps, not the total.
"""
import os
import statistics
import tempfile
import threading
import time

from actors import Supervisor, job
from actors.stores import sqlite as S
from actors.supervisor import loop as L
from actors.supervisor import pool as P

marks = {}
def mark(name):
    marks.setdefault(name, time.perf_counter())

@job
def noop(x: int) -> float:
    return time.perf_counter()   # CLOCK_MONOTONIC: comparable across processes

def wrap(obj, name, label, after=True):
    orig = getattr(obj, name)
    def stamped(*args, **kwargs):
        if not after:
            mark(label)
        result = orig(*args, **kwargs)
        if after:
            mark(label)
        return result

    setattr(obj, name, stamped)

wrap(S.SQLiteStore, "insert", "1 submit commit done")
wrap(L.ServeLoop, "_take_inbox", "2 loop took the inbox", after=False)
wrap(S.SQLiteStore, "commit", "3 claim commit done")  # first commit after the inbox
wrap(P.Pool, "send", "4 Assign written")
wrap(P.Pool, "_feed", "6 result read by the supervisor", after=False)
orig_notify = L.ServeLoop.notify
def notify(self, run_id):
    mark("7 result commit done, waiter notified")
    return orig_notify(self, run_id)
L.ServeLoop.notify = notify

if __name__ == "__main__":
    sup = Supervisor([noop], workers=2, store=os.path.join(tempfile.mkdtemp(), "l.db"))
    serving = threading.Thread(target=sup.serve, daemon=True)
    serving.start()
    for i in range(100):
        sup.submit(noop, i).result(timeout=5)
    rows = []
    for i in range(1000):
        marks.clear()
        t0 = time.perf_counter()
        h = sup.submit(noop, i)
        ran = h.result(timeout=5)
        t_end = time.perf_counter()
        stamps = {**marks, "5 job ran in the worker": ran, "8 result() returned": t_end}
        rows.append({k: (v - t0) * 1e6 for k, v in stamps.items()})
    sup.shutdown()
    serving.join(10)
    sup.close()
    keys = sorted({k for r in rows for k in r})
    prev = 0.0
    print(f"{'step':<42}{'median us since submit':>24}{'step us':>10}")
    for k in keys:
        med = statistics.median(r[k] for r in rows if k in r)
        print(f"{k:<42}{med:>24.0f}{med - prev:>10.0f}")
        prev = med
