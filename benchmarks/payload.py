"""Payload: passing a 10 MB image through actors three ways, ms per run and MB/s.

Usage (from the repo root):
    .venv/bin/python benchmarks/payload.py [--mb 10] [--runs 5] [--batch 8] [--only base64,path,shm]

Each run hands a 10 MB image (raw bytes, already in the caller's memory) to a job that copies it
to its output, and ends when the caller holds the result bytes again. Three ways:

- base64: the bytes as a base64 str in the input model and in the output model, so they cross
  the pipes both ways and are stored in the run store (13.3 MB of JSON each way, kept there).
- path:   the caller writes a file in a temp dir and passes its path; the job reads it and writes
          the result file; the caller reads that back. Only two short strings are stored.
- shm:    `multiprocessing.shared_memory`: the caller creates an input and an output segment
          and passes their names; the job copies between them. Nothing big is written anywhere.

Timed two ways with 2 workers, the supervisor already serving (SQLite store in a temp dir,
`serve()` in a background thread, warmed up): "one at a time" (submit, wait; median of --runs)
and "batch" (--batch runs submitted together, then every result awaited; ms per run = wall /
batch). MB/s counts the image once per run. The last line is `JSON: {...}`. Default: under a
minute on 2 cores. The machine is shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing import resource_tracker, shared_memory

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pydantic import BaseModel  # noqa: E402

from actors import Supervisor, job  # noqa: E402

WORKERS = 2


class B64(BaseModel):
    data: str


class Paths(BaseModel):
    src: str
    dst: str


class Segments(BaseModel):
    src: str
    dst: str
    size: int


class Written(BaseModel):
    where: str
    size: int


@job
def via_base64(image: B64) -> B64:
    data = base64.b64decode(image.data)
    return B64(data=base64.b64encode(data).decode())


@job
def via_path(paths: Paths) -> Written:
    with open(paths.src, "rb") as f:
        data = f.read()
    with open(paths.dst, "wb") as f:
        f.write(data)
    return Written(where=paths.dst, size=len(data))


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the caller's segment without handing it to this process's resource tracker (which
    would unlink it when the worker exits; Python 3.13 has track=False for this)."""
    segment = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
    return segment


@job
def via_shm(seg: Segments) -> Written:
    src, dst = _attach(seg.src), _attach(seg.dst)
    try:
        dst.buf[: seg.size] = src.buf[: seg.size]
    finally:
        src.close()
        dst.close()
    return Written(where=seg.dst, size=seg.size)


# -- the caller's side of each way: image bytes in, result bytes out ----------------------------


class Way:
    def __init__(self, sup: Supervisor, tmp: str) -> None:
        self.sup, self.tmp, self.count = sup, tmp, 0

    def submit(self, image: bytes):
        raise NotImplementedError

    def collect(self, handle, token) -> bytes:
        raise NotImplementedError


class Base64Way(Way):
    def submit(self, image):
        return self.sup.submit(via_base64, B64(data=base64.b64encode(image).decode())), None

    def collect(self, handle, token):
        return base64.b64decode(handle.result(timeout=120).data)


class PathWay(Way):
    def submit(self, image):
        self.count += 1
        src, dst = (os.path.join(self.tmp, f"{self.count}.{kind}") for kind in ("in", "out"))
        with open(src, "wb") as f:
            f.write(image)
        return self.sup.submit(via_path, Paths(src=src, dst=dst)), (src, dst)

    def collect(self, handle, token):
        handle.result(timeout=120)
        src, dst = token
        with open(dst, "rb") as f:
            data = f.read()
        os.remove(src)
        os.remove(dst)
        return data


class ShmWay(Way):
    def submit(self, image):
        src = shared_memory.SharedMemory(create=True, size=len(image))
        dst = shared_memory.SharedMemory(create=True, size=len(image))
        src.buf[: len(image)] = image
        return self.sup.submit(via_shm, Segments(src=src.name, dst=dst.name, size=len(image))), (src, dst)

    def collect(self, handle, token):
        size = handle.result(timeout=120).size
        src, dst = token
        data = bytes(dst.buf[:size])
        for segment in (src, dst):
            segment.close()
            segment.unlink()
        return data


WAYS = {"base64": (Base64Way, via_base64), "path": (PathWay, via_path), "shm": (ShmWay, via_shm)}


def measure(name: str, image: bytes, runs: int, batch: int) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix=f"bench-payload-{name}-")
    store = os.path.join(tmp, "runs.db")
    cls, fn = WAYS[name]
    sup = Supervisor([fn], workers=WORKERS, store=store)
    server = threading.Thread(target=sup.serve, daemon=True)
    server.start()
    try:
        way = cls(sup, tmp)

        def one() -> float:
            started = time.perf_counter()
            handle, token = way.submit(image)
            out = way.collect(handle, token)
            elapsed = time.perf_counter() - started
            if out != image:
                raise AssertionError(f"{name}: the result differs from the image")
            return elapsed

        for _ in range(WORKERS):  # warm-up: workers started, imports done, store file grown
            one()
        single = statistics.median(one() for _ in range(runs))
        started = time.perf_counter()
        pending = [way.submit(image) for _ in range(batch)]
        outs = [way.collect(handle, token) for handle, token in pending]
        batched = (time.perf_counter() - started) / batch
        if any(out != image for out in outs):
            raise AssertionError(f"{name}: a batch result differs from the image")
        store_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp) if f.startswith("runs.db"))
        done = WORKERS + runs + batch
    finally:
        sup.shutdown(timeout=30)
        server.join(30)
        sup.close()
        shutil.rmtree(tmp, ignore_errors=True)
    mb = len(image) / 1e6
    return {"ms_per_run": single * 1e3, "mb_per_s": mb / single, "batch_ms_per_run": batched * 1e3,
            "batch_mb_per_s": mb / batched, "store_mb_per_run": store_bytes / 1e6 / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="image size in MB (default 10)")
    parser.add_argument("--runs", type=int, default=5, help="one-at-a-time runs, median (default 5)")
    parser.add_argument("--batch", type=int, default=8, help="runs submitted together (default 8)")
    parser.add_argument("--only", default="base64,path,shm", help="comma-separated ways")
    args = parser.parse_args()
    ways = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        parser.error(f"unknown way(s) {unknown}: expected some of {sorted(WAYS)}")
    image = random.Random(0).randbytes(int(args.mb * 1e6))  # noise: incompressible, like pixels
    print(f"payload: a {args.mb:g} MB image through actors (workers={WORKERS}, runs={args.runs}, "
          f"batch={args.batch}, cpus={os.cpu_count()})")
    results = {}
    for name in ways:
        results[name] = measure(name, image, args.runs, args.batch)
    header = f"{'way':8} {'ms/run':>9} {'MB/s':>8} {'batch ms/run':>13} {'batch MB/s':>11} {'store MB/run':>13}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:8} {r['ms_per_run']:9.1f} {r['mb_per_s']:8.1f} {r['batch_ms_per_run']:13.1f} "
              f"{r['batch_mb_per_s']:11.1f} {r['store_mb_per_run']:13.2f}")
    fastest = min(results, key=lambda n: results[n]["ms_per_run"])
    summary = {"mb": args.mb, "workers": WORKERS, "runs": args.runs, "batch": args.batch, "ways": results,
               "fastest": fastest}
    if "base64" in results and "path" in results:
        summary["path_speedup_over_base64"] = results["base64"]["ms_per_run"] / results["path"]["ms_per_run"]
        print(f"\npaths are {summary['path_speedup_over_base64']:.1f}x faster per run than base64 in the "
              f"models ({results['base64']['ms_per_run']:.0f} ms vs {results['path']['ms_per_run']:.0f} ms): "
              f"pass paths for large images")
    print("JSON: " + json.dumps(_rounded(summary)))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
