"""Latency: one no-op run at a time, submit to result, p50 and p99 in microseconds.

Usage (from the repo root):
    .venv/bin/python benchmarks/latency.py [--n 2000] [--quick] [--only actors,Huey]

For each system, with its 2 workers already started and warmed up (50
un-timed calls first), times N sequential calls of ``noop(x) -> x + 1``, each
from submit to result in the caller, and takes p50 and p99 of the N
latencies; this is repeated 3 times and the median p50 / median p99 reported.

Systems: a raw Pipe to one child process that echoes ``noop`` (the floor;
with stdlib multiprocessing and with the dill-based ``multiprocess``), actors
with the SQLite store (``serve()`` in a background thread, ``submit(...)
.result(timeout=10)`` from the main thread), pebble ``schedule``,
``multiprocessing.Pool.apply_async``, ``ProcessPoolExecutor.submit``, loky,
and Huey ``SqliteHuey`` whose consumer and result polling are set to 1 ms
(its default starts at 100 ms and backs off to 10 s).

Default N=2000 (under ~3 min on 2 cores); --quick uses N=300 (~30 s).
The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers as P  # noqa: E402

WARM = 50
SYSTEMS = [
    ("Pipe echo (multiprocessing)", lambda: P.PipeEchoRunner("multiprocessing")),
    ("Pipe echo (multiprocess)", lambda: P.PipeEchoRunner("multiprocess")),
    ("actors sqlite", lambda: P.ActorsRunner("sqlite")),
    ("pebble schedule", P.PebbleRunner),
    ("Pool.apply_async", lambda: P.PoolRunner("apply_async")),
    ("ProcessPoolExecutor.submit", P.ProcessPoolRunner),
    ("loky submit", P.LokyRunner),
    (P.HueyRunner.name, P.HueyRunner),
]
FLOOR = "Pipe echo (multiprocessing)"


def latencies_us(r, n):
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        y = r.one("noop", i)
        out.append((time.perf_counter_ns() - t0) / 1000)
        if y != i + 1:
            raise AssertionError(f"noop({i}) returned {y!r}")
    return out


def main():
    args = P.parse_args(__doc__, n_default=2000, n_quick=300)
    info = P.header("latency: one no-op run at a time, submit to result", args, warm=WARM)

    def body(r):
        for i in range(WARM):
            r.one("noop", i)
        reps = [latencies_us(r, args.n) for _ in range(P.REPS)]
        return {
            "p50_us": statistics.median(P.percentile(x, 50) for x in reps),
            "p99_us": statistics.median(P.percentile(x, 99) for x in reps),
            "mean_us": statistics.median(statistics.fmean(x) for x in reps),
            "p50_per_rep_us": [round(P.percentile(x, 50), 1) for x in reps],
            "durable": r.durable,
        }

    systems = P.selected(SYSTEMS, args.only, keep=FLOOR)
    results, errors = P.run_all(systems, args, body)
    floor = results.get(FLOOR, {}).get("p50_us")
    headers = ["system", "p50 us", "p99 us", "p50 vs pipe", "durable", "note"]
    rows = []
    for name, _ in systems:
        if name in errors:
            rows.append(P.failed_row(name, len(headers)))
            continue
        r = results[name]
        r["p50_vs_floor"] = r["p50_us"] / floor if floor else None
        ratio = f"{r['p50_vs_floor']:.1f}x" if floor else "-"
        durable = "yes" if r["durable"] else "no"
        rows.append([name, f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", ratio, durable, ""])
    P.report(
        headers, rows, errors, {"benchmark": "latency", **info, "floor": FLOOR, "results": results}
    )
    P.chart("latency", "latency: one no-op run at a time, submit to result",
            {name: [r["p50_us"], r["p99_us"]] for name, r in results.items()}, ["p50 µs", "p99 µs"],
            "Pool.apply_async", higher_is_better=False)


if __name__ == "__main__":
    main()
