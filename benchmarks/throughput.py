"""Throughput: N no-op runs end to end, 2 workers, tasks per second.

Usage (from the repo root):
    .venv/bin/python benchmarks/throughput.py [--n 20000] [--quick] [--only actors,Pool]

Measures, for each system, the wall time from the first submit to the last
result of N ``noop(x) -> x + 1`` runs, with the pool already started and
warmed up (a first un-timed batch of 200 runs on the same pool/supervisor),
median of 3 timed batches on that same pool/supervisor.

Systems: actors with the SQLite store (temp file), one ``submit()`` per run
(from one thread, and from 8 threads at once: their submits are group-committed)
and ``submit_many``; actors with the memory store (``":memory:"``), both ways.
These run ``Supervisor.serve()`` in a background thread started (and warmed)
before timing, like the pools; the caller submits everything, then waits on
every ``Handle.result()``.  The extra rows marked * are the batch-script mode
(submit from the same thread, then ``serve(until="drained")``, read results):
each ``serve()`` starts and stops serving, with the workers kept from the
warm-up batch's ``serve()``.  Peers: ``multiprocessing.Pool.apply_async`` (the 1.0x
reference) and ``imap_unordered(chunksize=1)``, ``ProcessPoolExecutor.submit``,
pebble ``ProcessPool.schedule`` and loky ``get_reusable_executor().submit``.

Default N=20000 (under ~3 min on 2 cores); --quick uses N=2000 (~30 s).
The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers as P  # noqa: E402

WARM = 200
SYSTEMS = [  # (name, runner factory)
    ("actors sqlite submit", lambda: P.ActorsRunner("sqlite", many=False)),
    ("actors sqlite submit, 8 threads", lambda: P.ActorsRunner("sqlite", many=False, threads=8)),
    ("actors sqlite submit_many", lambda: P.ActorsRunner("sqlite", many=True)),
    ("actors memory submit", lambda: P.ActorsRunner(":memory:", many=False)),
    ("actors memory submit_many", lambda: P.ActorsRunner(":memory:", many=True)),
    ("actors sqlite submit, drained*", lambda: P.ActorsRunner("sqlite", many=False, serve="drained")),
    (
        "actors sqlite submit_many, drained*",
        lambda: P.ActorsRunner("sqlite", many=True, serve="drained"),
    ),
    ("Pool.apply_async", lambda: P.PoolRunner("apply_async")),
    ("Pool.apply_async, 8 threads", lambda: P.PoolRunner("apply_async", threads=8)),
    ("Pool.imap_unordered", lambda: P.PoolRunner("imap_unordered")),
    ("ProcessPoolExecutor.submit", P.ProcessPoolRunner),
    ("pebble schedule", P.PebbleRunner),
    ("loky submit", P.LokyRunner),
]
REF = "Pool.apply_async"


def main():
    args = P.parse_args(__doc__, n_default=20000, n_quick=2000)
    info = P.header("throughput: no-op runs, first submit to last result", args, warm=WARM)
    xs = list(range(args.n))
    expected = sorted(x + 1 for x in xs)

    def body(r):
        r.warm("noop", range(WARM))
        med, times, out = P.median_time(r.batch, "noop", xs)
        if sorted(out) != expected:
            raise AssertionError("wrong results")
        return {
            "tasks_per_s": args.n / med,
            "us_per_task": med / args.n * 1e6,
            "s": med,
            "times_s": [round(t, 4) for t in times],
            "durable": r.durable,
        }

    systems = P.selected(SYSTEMS, args.only, keep=REF)
    results, errors = P.run_all(systems, args, body)
    ref = results.get(REF, {}).get("tasks_per_s")
    headers = ["system", "tasks/s", "us/task", f"vs {REF}", "durable", "note"]
    rows = []
    for name, _ in systems:
        if name in errors:
            rows.append(P.failed_row(name, len(headers)))
            continue
        r = results[name]
        r["ratio_vs_pool"] = r["tasks_per_s"] / ref if ref else None
        ratio = f"{r['ratio_vs_pool']:.2f}x" if ref else "-"
        durable = "yes" if r["durable"] else "no"
        rows.append(
            [name, f"{r['tasks_per_s']:,.0f}", f"{r['us_per_task']:.1f}", ratio, durable, ""]
        )
    P.report(
        headers,
        rows,
        errors,
        {"benchmark": "throughput", **info, "reference": REF, "results": results},
    )
    P.chart("throughput", f"throughput: {args.n:,} no-op runs, first submit to last result",
            {name: r["tasks_per_s"] for name, r in results.items()}, "tasks/s", REF)


if __name__ == "__main__":
    main()
