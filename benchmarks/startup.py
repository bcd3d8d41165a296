"""Start-up: how long a cold process takes to import, start a pool, run one task and stop.

Usage (from the repo root):
    .venv/bin/python benchmarks/startup.py [--repeat 10] [--batch 24] [--only actors,Pool]

Each sample is a fresh interpreter (so nothing is warm but the OS's file cache) that times,
on CLOCK_MONOTONIC (shared by every process on Linux, so a worker's reading compares with
its parent's):
- import: `import actors` (or the peer's module) in the process;
- construct -> first result: from creating the pool object to the first result in hand;
- start -> first run started: for actors from `serve()` (the Supervisor was constructed just
  before, with its one run submitted), for a peer from creating its pool; the task itself
  reads the clock when it starts;
- drain -> return: from the end of the last task (its own clock) to `serve()` returning, or to
  the peer's pool being shut down (close + join);
- total: construct to stopped (for actors, less the second serve() below).
For actors also a second `serve()` on the same Supervisor, whose workers were kept from the
first: serve -> first run started, and last result -> returned.
Peers: multiprocessing.Pool(2), ProcessPoolExecutor(2), pebble ProcessPool(2), loky
(get_reusable_executor(2)); all with 2 workers, one no-op task.

Then the batch-script case: N CPU-bound tasks of about 170 ms on 2 workers, wall time from
before the submits to `serve(until="drained")` returning (start and stop included; a second
row with `prefork()` called before the timing, as the Pool is created before its), against
`Pool.apply_async` with the Pool created BEFORE its timing starts (the strict bar), and the
same Pool in a script that imports actors first (as an actors script does): pure-Python work
that allocates (ints here) runs a few per cent slower in a process whose heap holds pydantic
and the rest, whoever runs it, and this row shows that part of the gap apart.

Medians of --repeat samples; the ratio column is to multiprocessing.Pool in the same run.
The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = """
import json, os, sys, time
T0 = time.monotonic()

def noop(x=0):
    return time.monotonic()

def burn(n):
    started = time.monotonic()
    total = 0
    for i in range(n):
        total += i * i
    return started, time.monotonic()
"""

ACTORS = COMMON + """
t = time.monotonic()
from actors import Supervisor, job
imported = time.monotonic() - t

@job
def tick(x: int) -> float:
    return time.monotonic()

if __name__ == "__main__":
    store = sys.argv[1]
    t_construct = time.monotonic()
    sup = Supervisor([tick], workers=2, store=store)
    handle = sup.submit(tick, 1)
    t_serve = time.monotonic()
    sup.serve(until="drained")
    t_return = time.monotonic()
    started = handle.result()
    again = sup.submit(tick, 2)  # a second serve() on the same Supervisor: its workers were kept
    t_again = time.monotonic()
    sup.serve(until="drained")
    t_again_return = time.monotonic()
    again_started = again.result()
    sup.close()
    t_stopped = time.monotonic()
    print(json.dumps({"import": imported, "first_result": t_return - t_construct,
                      "first_started": started - t_serve, "drain_return": t_return - started,
                      "total": t_stopped - t_construct - (t_again_return - t_return),
                      "again_started": again_started - t_again, "again_return": t_again_return - again_started}))
"""

PEER = COMMON + """
t = time.monotonic()
{import_line}
imported = time.monotonic() - t

if __name__ == "__main__":
    t_construct = time.monotonic()
    {make}
    started = {one}
    t_result = time.monotonic()
    t_stop = time.monotonic()
    {stop}
    t_stopped = time.monotonic()
    print(json.dumps({{"import": imported, "first_result": t_result - t_construct,
                      "first_started": started - t_construct, "drain_return": t_stopped - t_stop,
                      "total": t_stopped - t_construct}}))
"""

PEERS = {
    "multiprocessing.Pool": dict(import_line="import multiprocessing", make="pool = multiprocessing.Pool(2)",
                                 one="pool.apply_async(noop).get()", stop="pool.close(); pool.join()"),
    "ProcessPoolExecutor": dict(import_line="from concurrent.futures import ProcessPoolExecutor",
                                make="pool = ProcessPoolExecutor(2)", one="pool.submit(noop).result()",
                                stop="pool.shutdown(wait=True)"),
    "pebble ProcessPool": dict(import_line="import pebble", make="pool = pebble.ProcessPool(max_workers=2)",
                               one="pool.schedule(noop).result()", stop="pool.close(); pool.join()"),
    "loky": dict(import_line="import loky", make="pool = loky.get_reusable_executor(max_workers=2)",
                 one="pool.submit(noop).result()", stop="pool.shutdown(wait=True)"),
}

BATCH_ACTORS = COMMON + """
from actors import Supervisor, job

@job
def work(n: int) -> tuple[float, float]:
    return burn(n)

if __name__ == "__main__":
    n, count, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sup = Supervisor([work], workers=2, store=store)
    if sys.argv[4:] == ["prefork"]:  # workers started before the timing, as the Pool's are
        sup.prefork()
    t0 = time.monotonic()
    handles = [sup.submit(work, n) for _ in range(count)]
    sup.serve(until="drained")
    wall = time.monotonic() - t0
    spans = [h.result() for h in handles]
    sup.close()
    print(json.dumps({"wall": wall}))
"""

BATCH_POOL = COMMON + """
import multiprocessing
if sys.argv[3:] == ["imports"]:  # what an actors script imports (pydantic, actors): their heap, not their code
    import actors.supervisor.supervisor

if __name__ == "__main__":
    n, count = int(sys.argv[1]), int(sys.argv[2])
    pool = multiprocessing.Pool(2)
    pool.apply_async(noop).get()  # started and warm: the strict bar
    t0 = time.monotonic()
    results = [pool.apply_async(burn, (n,)) for _ in range(count)]
    spans = [r.get() for r in results]
    wall = time.monotonic() - t0
    pool.close(); pool.join()
    print(json.dumps({"wall": wall}))
"""

CALIBRATE = COMMON + """
if __name__ == "__main__":
    n = 1_000_000
    while True:
        a, b = burn(n)
        if b - a > 0.05:
            break
        n *= 2
    print(int(n * 0.170 / (b - a)))
"""


def run(code: str, *args: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.py")
        with open(path, "w") as file:
            file.write(textwrap.dedent(code))
        done = subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=300, cwd=tmp,
                              env={**os.environ, "PYTHONPATH": ROOT})
        if done.returncode != 0:
            raise RuntimeError(f"{path} failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def actors_sample() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run(ACTORS, os.path.join(tmp, "runs.db"))


def interpreter_import() -> dict[str, float]:
    """`python -c "import X"` wall time, minus `python -c pass` (medians of 10); pydantic's own
    import too, the part of ours that no laziness removes."""
    def wall(code: str) -> float:
        samples = []
        for _ in range(10):
            t = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ROOT})
            samples.append(time.monotonic() - t)
        return statistics.median(samples)

    base = wall("pass")
    return {"actors": wall("import actors") - base, "multiprocessing.Pool": wall("import multiprocessing") - base,
            "pydantic": wall("import pydantic; from pydantic import BaseModel, TypeAdapter") - base}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    systems: dict[str, object] = {"actors": actors_sample}
    for name, parts in PEERS.items():
        systems[name] = lambda parts=parts: run(PEER.format(**parts))
    if only:
        systems = {name: fn for name, fn in systems.items() if any(o in name for o in only)}
    samples: dict[str, list[dict]] = {name: [] for name in systems}
    for _ in range(args.repeat):  # interleaved, so that noise hits every system alike
        for name, sample in systems.items():
            try:
                samples[name].append(sample())
            except (RuntimeError, ModuleNotFoundError) as exc:
                print(f"# {name}: {exc}", file=sys.stderr)
    keys = ["import", "first_result", "first_started", "drain_return", "total"]
    medians = {name: {k: statistics.median(s[k] for s in got) for k in keys} for name, got in samples.items() if got}
    base = medians.get("multiprocessing.Pool")
    print(f"{'system':<22}" + "".join(f"{k:>15}" for k in keys) + f"{'total/Pool':>12}")
    for name, m in medians.items():
        ratio = f"{m['total'] / base['total']:.2f}x" if base else "-"
        print(f"{name:<22}" + "".join(f"{1000 * m[k]:>13.1f}ms" for k in keys) + f"{ratio:>12}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _peers as P

    P.chart("startup", "start-up: construct, one task, stop (a fresh process each)",
            {name: 1000 * m["total"] for name, m in medians.items()}, "ms", "multiprocessing.Pool",
            higher_is_better=False)
    if "actors" in samples and samples["actors"]:
        again = {k: statistics.median(s[k] for s in samples["actors"]) for k in ("again_started", "again_return")}
        medians["actors"].update(again)
        print(f"actors, a second serve() on the same Supervisor (workers kept): serve -> first run started "
              f"{1000 * again['again_started']:.1f} ms, last result -> returned {1000 * again['again_return']:.1f} ms")
    imports = interpreter_import()
    print(f"python -c 'import actors': {1000 * imports['actors']:.0f} ms over a bare interpreter "
          f"('import multiprocessing': {1000 * imports['multiprocessing.Pool']:.0f} ms; pydantic alone, which "
          f"actors needs for its models: {1000 * imports['pydantic']:.0f} ms)")

    batch: dict[str, float] = {}
    if args.batch:
        n = int(run_plain(CALIBRATE))
        walls: dict[str, list[float]] = {"actors": [], "actors, prefork() before": [], "Pool.apply_async": [],
                                         "Pool, importing actors": []}
        for _ in range(max(3, args.repeat // 3)):
            with tempfile.TemporaryDirectory() as tmp:
                walls["actors"].append(run(BATCH_ACTORS, str(n), str(args.batch), os.path.join(tmp, "b.db"))["wall"])
                walls["actors, prefork() before"].append(
                    run(BATCH_ACTORS, str(n), str(args.batch), os.path.join(tmp, "p.db"), "prefork")["wall"])
            walls["Pool.apply_async"].append(run(BATCH_POOL, str(n), str(args.batch))["wall"])
            walls["Pool, importing actors"].append(run(BATCH_POOL, str(n), str(args.batch), "imports")["wall"])
        batch = {name: statistics.median(w) for name, w in walls.items()}
        pool = batch["Pool.apply_async"]
        print(f"batch of {args.batch} x ~170 ms on 2 workers (start and stop included; Pool created before): "
              f"actors {batch['actors']:.3f} s, Pool {pool:.3f} s, ratio {batch['actors'] / pool:.3f}x; "
              f"actors with prefork() before the timing {batch['actors, prefork() before']:.3f} s, "
              f"ratio {batch['actors, prefork() before'] / pool:.3f}x; "
              f"Pool in a script that imports actors {batch['Pool, importing actors']:.3f} s, "
              f"ratio {batch['Pool, importing actors'] / pool:.3f}x")
    print(json.dumps({"startup_ms": {n: {k: round(1000 * v, 2) for k, v in m.items()} for n, m in medians.items()},
                      "import_ms": {k: round(1000 * v, 1) for k, v in imports.items()},
                      "batch_s": {k: round(v, 4) for k, v in batch.items()}}))


def run_plain(code: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calibrate.py")
        with open(path, "w") as file:
            file.write(textwrap.dedent(code))
        return subprocess.run([sys.executable, path], capture_output=True, text=True, check=True,
                              timeout=120).stdout.strip()


if __name__ == "__main__":
    main()
