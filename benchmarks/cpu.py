"""CPU-bound work: wall time and parallel efficiency with 2 workers.

Usage (from the repo root):
    .venv/bin/python benchmarks/cpu.py [--n 40] [--quick] [--only actors,serial]

Two workloads of N tasks each (see _tasks.py):
  spin    ``spin(50)``: a pure-Python loop of ~50 ms per task;
  pillow  ``pillow_pipeline(seed)``: resize a cached 2000x1500 RGB image to
          400x300 (LANCZOS), blur, JPEG-encode in memory (~30 ms per task).

Each system starts its 2 workers once, runs an un-timed warm-up of both
workloads (4 tasks each, so every worker has built its cached image), then
times N tasks of each workload from first submit to last result, median of 3.
"serial" runs the same tasks one after the other in this process.
Parallel efficiency = serial wall / (system wall x 2 workers); 100% is a
perfect 2x speed-up, and it cannot really reach that on 2 shared cores where
the submitting process also needs some CPU.

Systems: serial, actors with the SQLite store (``submit_many``, ``serve()``
in a background thread started before timing, like the pools), the same in
batch-script mode (row marked *: submit_many, ``serve(until="drained")``,
which starts and stops its workers, so it includes worker start-up), ``multiprocessing.Pool.apply_async``,
``ProcessPoolExecutor.submit``, loky, pebble, Huey (SqliteHuey, process
workers, 1 ms polling).

Default N=40 (under ~3 min on 2 cores); --quick uses N=10 (~20 s).
The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers as P  # noqa: E402

SPIN_MS = 50
WARM = 4
SYSTEMS = [
    ("serial (1 process)", P.SerialRunner),
    ("actors sqlite", lambda: P.ActorsRunner("sqlite", many=True)),
    ("actors sqlite, drained*", lambda: P.ActorsRunner("sqlite", many=True, serve="drained")),
    ("Pool.apply_async", lambda: P.PoolRunner("apply_async")),
    ("ProcessPoolExecutor.submit", P.ProcessPoolRunner),
    ("loky submit", P.LokyRunner),
    ("pebble schedule", P.PebbleRunner),
    (P.HueyRunner.name, P.HueyRunner),
]
SERIAL = "serial (1 process)"


def main():
    args = P.parse_args(__doc__, n_default=40, n_quick=10)
    info = P.header("cpu: CPU-bound tasks, first submit to last result", args, spin_ms=SPIN_MS)
    workloads = {"spin": [SPIN_MS] * args.n, "pillow": list(range(args.n))}
    expected = {}  # workload -> results, from the first system that ran it

    def body(r):
        for task, xs in workloads.items():
            r.warm(task, xs[:WARM])
        out = {"durable": r.durable}
        for task, xs in workloads.items():
            med, times, res = P.median_time(r.batch, task, xs)
            if expected.setdefault(task, res) != res:
                raise AssertionError(f"{task}: results differ from the first system's")
            out[task] = {"wall_s": med, "times_s": [round(t, 4) for t in times]}
        return out

    systems = P.selected(SYSTEMS, args.only, keep=SERIAL)
    results, errors = P.run_all(systems, args, body)
    headers = ["system", "spin wall s", "spin eff", "pillow wall s", "pillow eff", "note"]
    rows = []
    for name, _ in systems:
        if name in errors:
            rows.append(P.failed_row(name, len(headers)))
            continue
        row = [name]
        for task in workloads:
            r = results[name][task]
            base = results.get(SERIAL, {}).get(task, {}).get("wall_s")
            r["efficiency"] = base / (r["wall_s"] * P.WORKERS) if base else None
            row += [f"{r['wall_s']:.3f}", f"{r['efficiency']:.0%}" if base else "-"]
        rows.append(row + [""])
    P.report(
        headers, rows, errors, {"benchmark": "cpu", **info, "baseline": SERIAL, "results": results}
    )


if __name__ == "__main__":
    main()
