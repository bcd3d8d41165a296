"""Shared helpers for the benchmark scripts (not a benchmark itself).

- CLI parsing (``--n``, ``--quick``, ``--only``), median-of-3 timing, aligned
  plain-text tables and the final ``JSON: {...}`` line.
- One *runner* per system, all with ``WORKERS`` (2) worker processes and the
  same interface, used as a context manager::

      with PoolRunner() as r:          # starts the pool
          r.warm("noop", range(20))    # un-timed warm-up batch
          r.batch("noop", args)        # submit everything, return all results
          r.one("noop", 1)             # submit one, wait for its result

  Task names ("noop", "spin", "pillow") map to the functions in ``_tasks.py``.

Start methods are each library's default (fork for multiprocessing, pebble and
ProcessPoolExecutor on Linux; loky's own fork+exec; Huey's consumer runs in a
spawned child and forks its workers).
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _tasks  # noqa: E402

WORKERS = 2
REPS = 3
HUEY_POLL = 0.001  # s; Huey's queue and result polling interval (default: 0.1 s, growing)


# --- CLI, timing, output ------------------------------------------------------


def parse_args(doc, n_default, n_quick):
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"problem size (default {n_default}, {n_quick} with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="small run, under ~30 s")
    p.add_argument(
        "--only", default="", help="comma-separated substrings; run only systems whose name matches"
    )
    a = p.parse_args()
    if a.n is None:
        a.n = n_quick if a.quick else n_default
    a.only = [s.strip().lower() for s in a.only.split(",") if s.strip()]
    return a


def selected(systems, only, keep=None):
    """Filter ``[(name, factory), ...]`` by the ``--only`` substrings, always keeping ``keep``
    (the reference the ratios are computed against)."""
    return [s for s in systems if not only or s[0] == keep or any(o in s[0].lower() for o in only)]


def timed(fn):
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn, *args, reps=REPS):
    """Median wall time of ``reps`` calls of ``fn(*args)``, the list of times, the last result."""
    times, out = [], None
    for _ in range(reps):
        dt, out = timed(lambda: fn(*args))
        times.append(dt)
    return statistics.median(times), times, out


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


class Timeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds):
    """Raise ``Timeout`` in the main thread after ``seconds`` (guards against hangs)."""

    def _raise(signum, frame):
        raise Timeout(f"timed out after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_seen_errors = set()


def run_system(name, make_runner, body, errors, budget):
    """Start a runner, call ``body(runner)``, close it; record failures in ``errors``.

    Returns body's result, or None if anything failed or ran past ``budget`` s.
    """
    print(f"  {name} ...", end="", flush=True, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with deadline(budget), make_runner() as r:
            out = body(r)
        print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return out
    except BaseException as exc:  # noqa: BLE001 - report and go on with the others
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = f"{type(exc).__name__}: {exc}".strip()
        print(f" FAILED: {msg}", file=sys.stderr)
        if msg not in _seen_errors:  # one traceback per distinct failure
            _seen_errors.add(msg)
            traceback.print_exc(limit=8, file=sys.stderr)
        errors[name] = msg[:500]
        return None


def run_all(systems, args, body):
    """``run_system`` for each (name, factory) selected by ``--only``; returns (results, errors)."""
    results, errors = {}, {}
    budget = 30 if args.quick else 150
    for name, make in systems:
        res = run_system(name, make, body, errors, budget)
        if res is not None:
            results[name] = res
    return results, errors


DRAINED_NOTE = "* serve(until='drained') per batch: includes starting and stopping serving (the workers are kept)"


def report(headers, rows, errors, payload):
    """Print the table, the failures, then the final ``JSON:`` line."""
    print()
    print_table(headers, rows)
    if any(r[0].endswith("*") for r in rows):
        print(DRAINED_NOTE)
    for name, msg in errors.items():
        print(f"FAILED {name}: {msg}")
    emit_json({**payload, "errors": errors})


def failed_row(name, ncols):
    return [name] + ["-"] * (ncols - 2) + ["FAILED"]


def print_table(headers, rows):
    """Aligned plain-text table; text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_isnum(r[i]) for r in cells[1:] if r[i] not in ("", "-")) for i in range(len(headers))
    ]
    for k, r in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if numeric[i] and k else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _isnum(s):
    try:
        float(s.replace(",", "").rstrip("x%"))
        return True
    except ValueError:
        return False


def emit_json(obj):
    print("JSON: " + json.dumps(obj, separators=(",", ":")))


def header(title, args, **extra):
    info = {"workers": WORKERS, "reps": REPS, "n": args.n, "quick": args.quick, **extra}
    print(
        f"{title}  (" + ", ".join(f"{k}={v}" for k, v in info.items()) + f", cpus={os.cpu_count()})"
    )
    return info


# --- runners ------------------------------------------------------------------


class Runner:
    name = "?"
    durable = False

    def start(self):
        pass

    def close(self):
        pass

    def batch(self, task, args):
        """Submit every arg, wait for every result; return results in submit order."""
        raise NotImplementedError

    def one(self, task, arg):
        return self.batch(task, [arg])[0]

    def warm(self, task, args):
        self.batch(task, list(args))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


class SerialRunner(Runner):
    """Everything in this process, one after the other (the CPU baseline)."""

    name = "serial (1 process)"

    def batch(self, task, args):
        f = _tasks.TASKS[task]
        return [f(a) for a in args]


def from_threads(threads, args, submit):
    """``[submit(a) for a in args]``, from `threads` threads at once when more than one (each
    submits a contiguous share); the results in the order of `args`."""
    if threads <= 1:
        return [submit(a) for a in args]
    args = list(args)
    share = -(-len(args) // threads)
    parts = [args[i:i + share] for i in range(0, len(args), share)]
    out = [None] * len(parts)

    def run(index):
        out[index] = [submit(a) for a in parts[index]]

    pool = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return [r for part in out for r in part]


class PoolRunner(Runner):
    """multiprocessing.Pool: ``apply_async`` per task, or ``imap_unordered(chunksize=1)``."""

    def __init__(self, mode="apply_async", threads=1):
        self.mode, self.threads = mode, threads
        self.name = f"Pool.{mode}"

    def start(self):
        self.pool = multiprocessing.Pool(WORKERS)

    def batch(self, task, args):
        f = _tasks.TASKS[task]
        if self.mode == "imap_unordered":
            return list(self.pool.imap_unordered(f, args, chunksize=1))  # completion order
        rs = from_threads(self.threads, args, lambda a: self.pool.apply_async(f, (a,)))
        return [r.get() for r in rs]

    def one(self, task, arg):
        return self.pool.apply_async(_tasks.TASKS[task], (arg,)).get()

    def close(self):
        self.pool.terminate()
        self.pool.join()


class _FuturesRunner(Runner):
    """Anything with concurrent.futures-style futures."""

    def _submit(self, f, a):
        raise NotImplementedError

    def batch(self, task, args):
        f = _tasks.TASKS[task]
        fs = [self._submit(f, a) for a in args]
        return [x.result() for x in fs]


class ProcessPoolRunner(_FuturesRunner):
    name = "ProcessPoolExecutor.submit"

    def start(self):
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(WORKERS)

    def _submit(self, f, a):
        return self.ex.submit(f, a)

    def close(self):
        self.ex.shutdown(wait=True, cancel_futures=True)


class PebbleRunner(_FuturesRunner):
    name = "pebble ProcessPool.schedule"

    def start(self):
        from pebble import ProcessPool

        self.pool = ProcessPool(max_workers=WORKERS)

    def _submit(self, f, a):
        return self.pool.schedule(f, args=(a,))

    def close(self):
        self.pool.stop()
        self.pool.join()


class LokyRunner(_FuturesRunner):
    name = "loky reusable_executor.submit"

    def start(self):
        from loky import get_reusable_executor

        self.ex = get_reusable_executor(max_workers=WORKERS, timeout=600)

    def _submit(self, f, a):
        return self.ex.submit(f, a)

    def close(self):
        self.ex.shutdown(wait=True, kill_workers=True)


class HueyRunner(Runner):
    """SqliteHuey (temp file) + a process-worker consumer in a child process,
    queue and result polling every HUEY_POLL s."""

    name = f"Huey SqliteHuey (poll {HUEY_POLL * 1000:g} ms)"
    durable = True

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-huey-")
        path = os.path.join(self.dir, "huey.db")
        self.huey, self.tasks = _tasks.make_huey(path)  # creates the tables first
        ctx = multiprocessing.get_context("spawn")  # a clean parent for the forked workers
        self.proc = ctx.Process(target=_tasks.huey_consumer_main, args=(path, WORKERS, HUEY_POLL))
        self.proc.start()

    def batch(self, task, args):
        rs = [self.tasks[task](a) for a in args]
        return [r.get(blocking=True, timeout=120, backoff=1.0, max_delay=HUEY_POLL) for r in rs]

    def close(self):
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM: immediate consumer shutdown, workers too
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        shutil.rmtree(self.dir, ignore_errors=True)


def _echo(conn, reply):
    while True:
        x = conn.recv()
        if x is None:
            return
        conn.send(reply(x))


class PipeEchoRunner(Runner):
    """A raw Pipe to one child that runs noop and sends the answer back:
    the floor for one-at-a-time latency (``mod`` is multiprocessing or multiprocess)."""

    def __init__(self, mod="multiprocessing"):
        self.mp = __import__(mod)
        self.name = f"Pipe echo ({mod})"

    def start(self):
        self.conn, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=_echo, args=(child, _tasks.noop), daemon=True)
        self.proc.start()

    def batch(self, task, args):
        assert task == "noop"
        out = []
        for a in args:
            self.conn.send(a)
            out.append(self.conn.recv())
        return out

    def close(self):
        self.conn.send(None)
        self.proc.join(5)


class ActorsRunner(Runner):
    """actors.Supervisor with WORKERS workers.

    store: "sqlite" (a temp file) or ":memory:".  many: ``batch`` uses ``submit_many``
    (one transaction) instead of one ``submit()`` per run.  serve:

    - "thread" (default): ``serve()`` runs in a background thread from start() to close(),
      so the workers are started (and warmed) before timing, as for the pools; ``batch``
      submits everything from the caller's thread then waits on every ``Handle.result()``.
    - "drained": the batch-script mode: ``batch`` submits everything, then runs
      ``serve(until="drained")``, then reads the results.  Each ``serve()`` call starts
      and stops serving; the workers idle at the end of one are kept for the next.
    """

    def __init__(self, store="sqlite", many=False, serve="thread", threads=1):
        self.store, self.many, self.serve, self.threads = store, many, serve, threads
        self.durable = store != ":memory:"

    def start(self):
        if _tasks.ACTORS_IMPORT_ERROR is not None:
            raise RuntimeError(f"import actors failed: {_tasks.ACTORS_IMPORT_ERROR!r}")
        from actors import Supervisor

        self.dir = tempfile.mkdtemp(prefix="bench-actors-")
        store = os.path.join(self.dir, "actors.db") if self.durable else ":memory:"
        self.thread = None
        try:
            self.sup = Supervisor(
                [j for j, _ in _tasks.ACTOR_JOBS.values()], workers=WORKERS, store=store
            )
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        if self.serve == "thread":
            self.thread = threading.Thread(target=self.sup.serve, daemon=True)
            self.thread.start()

    def batch(self, task, args):
        job, field = _tasks.ACTOR_JOBS[task]
        payloads = [{field: a} for a in args]
        if self.many:
            hs = self.sup.submit_many(job, payloads)
        else:
            hs = from_threads(self.threads, payloads, lambda p: self.sup.submit(job, p))
        if self.thread is None:
            self.sup.serve(until="drained")
            return [h.result() for h in hs]
        return [h.result(timeout=120) for h in hs]

    def one(self, task, arg):
        assert self.thread is not None, "one() needs serve='thread'"
        job, field = _tasks.ACTOR_JOBS[task]
        return self.sup.submit(job, {field: arg}).result(timeout=10)

    def close(self):
        try:
            if self.thread is not None:
                self.sup.shutdown()
                self.thread.join(30)
            self.sup.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- charts -----------------------------------------------------------------------------------


CHARTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charts")


def chart(name, title, values, unit, reference, higher_is_better=True, log=False):
    """A bar chart of one figure per system (a dict name -> value, or name -> [values] for grouped
    bars named in `unit`'s list), actors' bars highlighted and each bar's ratio to `reference`
    written on it; saved as benchmarks/charts/<name>.png. ``log``: a logarithmic value axis (for
    values orders of magnitude apart). Needs matplotlib (the bench extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: matplotlib is not installed; pip install -e '.[bench]')")
        return None
    names = list(values)
    series = {k: v if isinstance(v, list) else [v] for k, v in values.items()}
    labels = unit if isinstance(unit, list) else [unit]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(names) * len(labels)))
    for j, label in enumerate(labels):
        ys = [i + j * width for i in range(len(names))]
        xs = [series[n][j] for n in names]
        colors = ["#d62728" if n.startswith("actors") else "#7f7f7f" for n in names]
        fade = min(0.35, 0.7 / max(1, len(labels) - 1))  # 2 series: 1.0 and 0.65, as before
        bars = ax.barh(ys, xs, height=width, color=colors, alpha=1.0 - fade * j, label=label)
        ref = series.get(reference, [None] * len(labels))[j]
        for bar, x in zip(bars, xs, strict=True):
            text = f"{x:,.0f}" + (f"  ({x / ref:.2f}x)" if ref and x >= ref / 100 else
                                  f"  ({x / ref:.2g}x)" if ref else "")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=8)
    ax.set_yticks([i + width * (len(labels) - 1) / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"{title}\n(ratio to {reference}; {'higher' if higher_is_better else 'lower'} is better)",
                 fontsize=10)
    ax.set_xlabel(" / ".join(labels) + (" (log scale)" if log else ""))
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.3)
    if len(labels) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(CHARTS, exist_ok=True)
    path = os.path.join(CHARTS, f"{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {os.path.relpath(path)}")
    return path
