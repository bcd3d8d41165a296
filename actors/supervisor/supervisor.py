"""The Supervisor: the public face of a pool of workers serving one store.

It holds the options, the registry of jobs and their resolved policies, and the store; submits,
cancels and inspection go through it from any thread. Serving is the loop's (`loop.py`: one
event loop, its timers, the store poll, the stop states), run state is the tracker's
(`tracker.py`: live runs and each worker's window), processes are the pool's (`pool.py`).
The loop's docstring draws the data flow. The rules they use are small modules of their own:
`dispatch.py` (tickets, the ready queue, windows, limits), `outcomes.py` (what follows an
attempt), `notify.py` (listeners and waiting threads), `cron.py` (schedules), `shutdown.py`
(signals), `scripts.py` (the user's script as workers import it again: a missing
`if __name__ == "__main__":` guard, models defined under it).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar, overload

from ..durations import Duration, parse_duration, parse_size
from ..errors import DuplicateJob, JobNotFound
from ..handle import Handle, read_run
from ..job import Job
from ..retry import NO_RETRY, Retry
from ..run import NewRun, RunRecord, RunStatus
from ..stores import Store, open_store
from ..submission import NO_INPUT, new_runs, submitted_input
from .cron import CronTicks
from .loop import ServeLoop, Stage
from .notify import Listeners, Waiters
from .scripts import (
    REIMPORTED,
    main_classes,
    misplaced,
    misplaced_message,
    package_main,
    package_main_message,
    reimported,
    unguarded,
    unguarded_message,
)
from .tracker import Policy

log = logging.getLogger("actors")
In = TypeVar("In")
Out = TypeVar("Out")


class Supervisor:
    """Owns the queue, the store and the worker pool. See the module docstring for the parts.

    Submitting stores runs; only `serve()` (or `run_until_complete()`) starts workers and runs
    them. Use it as a context manager, or call `close()`, to stop the fork server and release
    the store. Durations are seconds (int or float), a `datetime.timedelta`, or "250ms", "30s",
    "5m", "2h", "1d"; sizes are bytes or "512MB", "2GB", "1GiB".

    Args:
        jobs: the `@job` functions this supervisor may run (names must be unique:
            `DuplicateJob`).
        workers: worker processes (default None: the CPU count).
        store: a path to an SQLite file (default "actors.db", created if missing),
            ":memory:" (a `MemoryStore`, gone with the process), or a `Store`.
        durability: "normal" (a commit survives any process crash) or "full" (also a power
            loss: SQLite's synchronous=FULL). Default "normal".
        retry: the `Retry` policy of jobs that set none (default None: one attempt, no retry).
        kill_grace: between SIGTERM and SIGKILL when a worker is killed (default 2 s).
        grace: how long a graceful shutdown waits for running runs (default 30 s).
        max_memory: memory limit of a worker and its descendants ("2GB"; PSS summed over the
            tree, so shared pages count once), sampled every 250 ms (default None: no limit).
        max_runs_per_worker: replace a worker after this many runs (leak protection; default
            None: never).
        poll_interval: how often runs submitted by other processes are looked for
            (default 50 ms).
        max_result_size: the largest output (JSON bytes) a run may return (default "64MB"); a
            larger one fails that run with `ResultTooLarge`. Return paths for large images,
            not pixels.
        metrics_port: serve Prometheus metrics at http://127.0.0.1:PORT/metrics from this
            process while it serves (from the first `serve()`; needs `actors[metrics]`);
            default None: no endpoint.
        metrics_host: the address the metrics endpoint binds (default "127.0.0.1").

    Raises:
        DuplicateJob: two jobs share a name.
        TypeError: an item of `jobs` is not a `Job`, or a job's model cannot be imported by
            the workers.
        ValueError: an option out of range, or a malformed duration or size.
        StoreError: the store cannot be opened or written.
    """

    def __init__(
        self,
        jobs: Iterable[Job[Any, Any]],
        *,
        workers: int | None = None,
        store: Store | str | os.PathLike[str] = "actors.db",
        durability: str = "normal",
        retry: Retry | None = None,
        kill_grace: Duration = 2.0,
        grace: Duration = 30.0,
        max_memory: int | str | None = None,
        max_runs_per_worker: int | None = None,
        poll_interval: Duration = 0.05,
        max_result_size: int | str = "64MB",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        if reimported():  # a worker running an unguarded script again: before the store, no StoreLocked
            raise RuntimeError(REIMPORTED)
        self._unguarded = unguarded(sys._getframe(1))  # serve() refuses to start workers then
        self.jobs: dict[str, Job[Any, Any]] = {}
        for item in jobs:
            if not isinstance(item, Job):
                raise TypeError(f"not a job: {item!r} (decorate it with @actors.job)")
            if item.name in self.jobs:
                raise DuplicateJob(f"two jobs are named {item.name!r}: give one of them @job(name=...)")
            _check_importable(item)
            self.jobs[item.name] = item
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"invalid workers {workers!r}: expected an int >= 1")
        if max_runs_per_worker is not None and (not isinstance(max_runs_per_worker, int) or max_runs_per_worker < 1):
            raise ValueError(f"invalid max_runs_per_worker {max_runs_per_worker!r}: expected an int >= 1")
        self.default_retry = retry or NO_RETRY
        self.policies = {name: Policy(found.retry or self.default_retry, found.timeout)
                         for name, found in self.jobs.items()}
        self.kill_grace = parse_duration(kill_grace, what="kill_grace")
        self.grace = parse_duration(grace, what="grace")
        self.max_memory = parse_size(max_memory) if max_memory is not None else None
        self.max_runs_per_worker = max_runs_per_worker
        self.poll_interval = parse_duration(poll_interval, what="poll_interval")
        self.max_result_size = parse_size(max_result_size)
        if metrics_port is not None and (not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535):
            raise ValueError(f"invalid metrics_port {metrics_port!r}: expected a port number 0-65535")
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.store = open_store(store, durability=durability)  # serve() takes the serving lock
        if callable(writable := getattr(self.store, "check_writable", None)):
            try:
                writable()  # a supervisor writes: refuse a read-only file now, not at a submit
            except BaseException:
                self.store.close()
                raise
        self._waiters = Waiters()
        self._listeners = Listeners()
        self._started_at = time.monotonic()
        self._serving = ServeLoop(self)
        self._tracker = self._serving.tracker
        self._tracker.read_run = self.store.get  # a debounced run's stored input, when it is due
        self._cron = CronTicks([j for j in self.jobs.values() if j.cron], self.store, self._submit_tick,
                               lambda: self._serving.stage is Stage.SERVING, self._serving.later)

    # -- submitting -----------------------------------------------------------------------------

    def _resolve(self, job: Job[Any, Out] | str) -> Job[Any, Out]:
        name = job if isinstance(job, str) else getattr(job, "name", None)
        found = self.jobs.get(name) if isinstance(name, str) else None
        if found is None:
            raise JobNotFound(f"job {name or job!r} is not registered with this supervisor (known: {sorted(self.jobs)})")
        return found

    @overload
    def submit(self, job: Job[In, Out], input: In | dict[str, Any] = ..., /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Out]: ...
    @overload
    def submit(self, job: str, input: Any = ..., /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Any]: ...
    def submit(self, job: Job[Any, Out] | str, input: Any = NO_INPUT, /, *, priority: int | None = None,
               timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
               key: str | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
               tenant: str | None = None, **fields: Any) -> Handle[Out]:
        """Validate the input and store a queued run; durable when this returns.

        The input is positional: a model instance, a dict, or any value of the job's input type
        (`submit(resize, 256)`, `submit(thumbnail, Thumb(src="a.jpg"))`). When there is none,
        the other keyword arguments are the input's fields: `submit(thumbnail, src="a.jpg")` is
        `submit(thumbnail, {"src": "a.jpg"})`. `priority`, `timeout`, `delay`, `at`, `key`, `rerun`,
        `metadata` and `tenant` are always the options: an input with a field of one of those names is submitted
        positionally, and giving such a keyword while submitting by keywords is a TypeError
        naming it (so is an input and keyword fields at once). A dict key the input's model does
        not know is a pydantic.ValidationError, unless the model sets `extra=` itself.

        `delay` / `at` hold the run until then (durably). `key` is an idempotency key: while a
        run with that key is in the store, submitting it again returns that run's handle. A job
        with `unique=` does the same while its run is queued or running. `rerun="failed"` (with
        `key`) runs again a run under the key that ended failed, timed out or cancelled: a new run
        takes the key over and the old one keeps its history (`rerun_of`); the default, None or
        "never", gives back the key's run whatever its status. A succeeded run is never rerun.
        For a job with `debounce=`, `key` names the burst instead: a submit with the key of a
        run that is still queued and not due replaces that run's input and pushes its start
        back by the window, and returns its handle (see `job`).

        Args:
            job: the `Job`, or the name of one given to this supervisor.
            input: the input, positional: a value of the job's input type or a dict.
            priority: overrides the job's priority (default None: the job's); higher first.
            timeout: overrides the job's timeout for this run (a duration: seconds, "30s",
                "5m", "1d"...; default None: the job's).
            delay: hold the run this long (a duration) before it may start (default None).
            at: hold the run until this datetime (default None; not with `delay`).
            key: an idempotency key (default None).
            rerun: "failed" or None/"never" (default), as above; needs `key`.
            metadata: a dict of JSON data stored with the run (`RunRecord.metadata`, which
                `ctx.metadata` later merges into; default None: `{}`).
            tenant: a non-empty str stored with the run (`RunRecord.tenant`): `runs(tenant=...)`
                filters by it, `Limit(n, key="tenant")` limits by it (default None).
            fields: the input's fields as keywords, when `input` is not given.

        Returns:
            A `Handle` on the stored run; its `result()` waits for the output.

        Raises:
            JobNotFound: `job` is not registered here.
            pydantic.ValidationError: the input does not validate (nothing is stored).
            TypeError: an input and keyword fields at once, a field named as an option, or
                `metadata` that is not a dict of JSON data.
            ValueError: a `tenant` that is not a non-empty str, or a debounced job without `key`.
        """
        if input is NO_INPUT or fields:
            input = submitted_input(self._resolve(job), input, fields,
                                    {"priority": priority, "timeout": timeout, "delay": delay, "at": at, "key": key,
                                     "rerun": rerun, "metadata": metadata, "tenant": tenant})
        return self.submit_many(job, [input], priority=priority, timeout=timeout, delay=delay, at=at,
                                keys=None if key is None else [key], rerun=rerun, metadata=metadata, tenant=tenant)[0]

    @overload
    def submit_many(self, job: Job[In, Out], inputs: Iterable[In | dict[str, Any]], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Out]]: ...
    @overload
    def submit_many(self, job: str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Any]]: ...
    def submit_many(self, job: Job[Any, Out] | str, inputs: Iterable[Any], *, priority: int | None = None,
                    timeout: Duration | None = None, delay: Duration | None = None, at: datetime | None = None,
                    keys: list[str] | None = None, rerun: str | None = None, metadata: dict[str, Any] | None = None,
                    tenant: str | None = None) -> list[Handle[Out]]:
        """Like `submit`, for a batch stored in one transaction (all or nothing).

        Args:
            job: the `Job`, or the name of one given to this supervisor.
            inputs: the inputs, each as `submit` takes one (a value or a dict).
            priority: overrides the job's priority for every run (default None: the job's).
            timeout: overrides the job's timeout (a duration; default None: the job's).
            delay: hold every run this long (a duration) before it may start.
            at: hold every run until this datetime.
            keys: one idempotency key per input (default None), as `submit`'s `key`.
            rerun: as in `submit`: "failed" reruns the key's run that ended without success.
            metadata: a dict of JSON data stored with every run, as in `submit`.
            tenant: the tenant of every run, as in `submit`.

        Returns:
            One `Handle` per input, in order.

        Raises:
            JobNotFound: `job` is not registered here.
            pydantic.ValidationError: an input does not validate (nothing is stored).
            TypeError: bad `metadata`, as in `submit` (nothing is stored).
            ValueError: a bad `tenant`, or a debounced job without `keys` (nothing is stored).
        """
        found = self._resolve(job)
        rows = new_runs(found, inputs, time.time(), default_attempts=self.default_retry.attempts, priority=priority,
                        timeout=timeout, delay=delay, at=at, keys=keys, rerun=rerun, metadata=metadata, tenant=tenant)
        return self._store_runs(found, rows)

    def _store_runs(self, found: Job[Any, Out], rows: list[NewRun]) -> list[Handle[Out]]:
        if not rows:
            return []
        now = time.time()
        stored = self.store.insert(rows, now)
        if self._serving.started():  # else the next serve() reads them from the store, a page at a time
            tickets = self._tracker.new_tickets(found, rows, stored, now)
            if tickets:
                self._serving.hand_over(tickets)
            if found.debounce is not None:  # a run that took a later input: its ticket follows
                for (run_id, created), row in zip(stored, rows, strict=True):
                    if not created:  # after the hand-over above: the loop's thread takes them in order
                        self._serving.call(self._tracker.debounced, run_id, row)
        return [Handle(self, run_id, found) for run_id, _ in stored]

    def _submit_tick(self, found: Job[Any, Any], tick: float) -> None:
        """Submit a cron job's run for one tick (idempotent: the key names the tick)."""
        row = NewRun(found.name, found.validate_input({}), found.priority, self.policies[found.name].attempts,
                     None, 0.0, found.version, f"cron:{tick:.0f}")
        self._store_runs(found, [row])

    def _spawn(self, parent_id: int, tenant: str | None, message: Any) -> int:
        """Store a child run for `ctx.invoke`/`ctx.dispatch` (the loop's thread); its id. The key
        makes a replay (or a cached invoke) give back the run made the first time. The child
        belongs to its parent's tenant (so a `Limit(n, key="tenant")` counts it there)."""
        found = self._resolve(message.job)
        scheduled = time.time() + message.delay if message.delay else 0.0
        row = NewRun(found.name, message.input, found.priority_for(message.input), self.policies[found.name].attempts,
                     found.timeout_for(message.input), scheduled, found.version, message.key,
                     found.unique_key(message.input), parent_id=parent_id, tenant=tenant)
        return self._store_runs(found, [row])[0].id

    def _trigger(self, found: Any) -> None:
        """Start the runs an event triggers (the loop's thread): one per job, keyed by the event."""
        import json

        for triggered in self.jobs.values():
            trigger = triggered.trigger
            if trigger is None or trigger.name != found.name:
                continue
            try:
                text = triggered.validate_input(trigger.input_of(json.loads(found.payload)))
                row = NewRun(triggered.name, text, triggered.priority_for(text),
                             self.policies[triggered.name].attempts, triggered.timeout_for(text), 0.0,
                             triggered.version, f"event:{found.id}", triggered.unique_key(text))
            except Exception as exc:  # the user's transform or priority/timeout function, an invalid input
                log.warning("event %d (%s) starts no run of %s: %s: %s", found.id, found.name, triggered.name,
                            type(exc).__name__, exc)
                continue
            self._store_runs(triggered, [row])

    def emit(self, name: str, payload: Any = None) -> int:
        """Store an event (durable on return): it wakes the runs waiting for it
        (`ctx.wait_for_event`) and starts the runs of jobs it triggers (`trigger=event(name)`).
        Returns its id.

        Args:
            name: the event's name.
            payload: JSON data (TypeError otherwise; default None).
        """
        from ..events import payload_json

        event_id = self.store.emit(name, payload_json(name, payload), time.time())
        if self._serving.started():
            self._serving.call(self._serving.read_events)
        return event_id

    # -- serving ------------------------------------------------------------------------------

    def serve(self, until: str | None = None) -> str:
        """Run the pool until a signal or `shutdown()`; `until="drained"` also returns once no run
        is queued, running or waiting for a retry. Returns "drained" when it returned because the
        queue was empty, "stopped" after a graceful stop (a signal, `shutdown()`), when runs may
        be left queued. A forced stop raises SystemExit; see `shutdown.py`."""
        if until not in (None, "drained"):
            raise ValueError(f"invalid until {until!r}: expected None or 'drained'")
        if reimported():
            raise RuntimeError(REIMPORTED)
        if self._unguarded is not None:
            raise RuntimeError(unguarded_message(self._unguarded, "Supervisor(...) is created"))
        if (where := unguarded(sys._getframe(1))) is not None:
            raise RuntimeError(unguarded_message(where, "serve() is called"))
        return self._serving.run(until)

    def prefork(self) -> None:
        """Start the fork server and the workers now (each job's `setup` runs in them), so that
        `serve()` hands out runs at once. `serve()` starts the fork server itself, as a fork of
        this process when no other thread runs (workers then start in milliseconds and share
        the modules already imported), else as a fresh interpreter (a few hundred ms, the
        script imported again). A program that starts a thread before `serve()` (a progress
        display, a metrics or web server) calls `prefork()` before that thread to keep the fast
        start. The fork server stays until `close()` or the process's exit; so do idle workers
        between two `serve()` calls."""
        self._serving.prefork(workers=True)

    def run_until_complete(self) -> str:
        """serve(until="drained"): the batch-script mode; "drained" or "stopped"."""
        return self.serve(until="drained")

    def shutdown(self, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop serving, from any thread or from the loop. From another thread, waits until
        `serve()` has returned (or `timeout` seconds; default None: as long as it takes).

        Args:
            graceful: True (default): running runs may finish within `grace` while queued runs
                stay queued; False: stop now, running runs are interrupted and queued again.
            timeout: the most seconds to wait, from another thread, for `serve()` to return.
        """
        self._serving.request_stop(graceful, timeout)

    def close(self) -> None:
        """Stop serving if serving (waiting for it), stop the fork server (kept from the first
        `serve()` so that later ones start workers at once; it also ends with the process), then
        release the store."""
        serving = self._serving
        if serving.loop is not None and serving.thread == threading.get_ident():
            raise RuntimeError("close() was called from inside serve(); call shutdown() there instead")
        if serving.loop is not None:
            self.shutdown(graceful=True)
        serving.close_servers()
        self.store.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- waiting, cancelling, inspecting ----------------------------------------------------------

    def on(self, event: str, callback: Callable[[RunRecord], Any]) -> None:
        """Call `callback(record)` in the supervisor when a run is submitted, started, succeeded,
        failed, retrying, timed_out or cancelled. A callback that raises is logged, no more.

        Args:
            event: one of "submitted", "started", "succeeded", "failed", "retrying",
                "timed_out", "cancelled" (another is a ValueError).
            callback: called with the run's `RunRecord` as stored.
        """
        self._listeners.add(event, callback)

    def _emit(self, event: str, run_id: int) -> None:
        if self._listeners:
            self._listeners.emit(event, run_id, self.store.get)

    def serving(self) -> bool:
        """Whether this supervisor serves now (or is starting or stopping), or another process
        serves its store (the store's serving lock names a live process)."""
        if self._serving.serving():
            return True
        served = getattr(self.store, "served", None)
        return bool(served()) if callable(served) else False

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        """The run `run_id` as stored now (with its attempt log if `attempts`), or None (what a
        `Handle` reads)."""
        return self.store.get(run_id, attempts=attempts)

    def wait_for(self, run_id: int, timeout: float) -> bool:
        """Block until this supervisor finishes the run `run_id`, or `timeout` seconds; whether
        it did."""
        def ended() -> bool:
            if self._serving.holds(run_id):  # the loop will notify
                return False
            record = self.store.get(run_id)
            return record is not None and record.status.is_terminal

        return self._waiters.wait(run_id, timeout, ended)

    def holds(self, run_id: int) -> bool:
        """Whether this supervisor holds the run `run_id` live: queued, running, or handed over
        to its serving loop, which notifies its end (a `Handle` then waits for that before it
        reads the store). False when it cannot tell."""
        return self._serving.holds(run_id)

    def cancel(self, run_id: int) -> bool:
        """Cancel the run `run_id`; whether it was live. A queued, delayed or retrying run is cancelled at
        once. A running one sees `ctx.cancelled` turn true and is killed after `kill_grace` if
        it has not finished; its attempt is recorded `cancelled`."""
        if self.store.cancel_queued(run_id, time.time()):
            self._serving.call(self._tracker.forget, run_id)
            return True
        record = self.store.get(run_id)
        if record is None or record.status.is_terminal:
            return False
        self._serving.call(self._tracker.cancel_running, run_id)
        return True

    def handle(self, run_id: int) -> Handle[Any]:
        """A `Handle` on the existing run `run_id` (one submitted earlier, maybe by another
        process); its `result()` returns the job's output type for a job given to this
        supervisor. Raises RunNotFound if the store holds no such run."""
        record = self.run(run_id, attempts=False)
        return Handle(self, run_id, self.jobs.get(record.job))

    def run(self, run_id: int, attempts: bool = True) -> RunRecord:
        """The stored run `run_id`, with its attempt log unless `attempts=False`; RunNotFound if
        there is none."""
        return read_run(self, run_id, attempts)

    def runs(self, status: RunStatus | str | None = None, job: str | None = None, limit: int = 50,
             offset: int = 0, tenant: str | None = None) -> list[RunRecord]:
        """Stored runs, newest first, without their attempt logs.

        Args:
            status: only runs in this `RunStatus` (or its name, "failed"); default None: all.
            job: only runs of the job of this name; default None: all.
            limit: at most this many runs (default 50).
            offset: skip this many of the newest first (default 0), to page.
            tenant: only runs submitted with this `tenant=`; default None: all.
        """
        if tenant is None:  # a store without the tenant filter still answers the rest
            return self.store.runs(status=status, job=job, limit=limit, offset=offset)
        return self.store.runs(status=status, job=job, limit=limit, offset=offset, tenant=tenant)

    def stats(self) -> dict[str, Any]:
        """Counts per job and status, queue depth, runs finished per second while serving, and
        loop turns so far (each commits at most one transaction)."""
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        pool = self._serving.pool
        return {
            "jobs": self.store.counts(),
            "queued": len(self._tracker.ready),
            "live": len(self._tracker.tickets),
            "runs_per_second": self._tracker.completed / elapsed,
            "turns": self._serving.turns,
            "workers": [s.pid for s in pool.slots if s.alive] if pool else [],
        }


def _check_importable(found: Job[Any, Any]) -> None:
    """Workers find a job's models by reference, in their own import of the script (see
    `scripts.py`): an interactive `__main__` (python -c, a REPL, a notebook) cannot be imported
    again there, nor a package's `__main__.py` run with `python -m pkg` (never imported again), and
    a model defined under the script's `if __name__ == "__main__":` guard or in a
    function is not defined by that import. Say so now rather than in every run. The models are
    the input and output types, their type arguments and their fields' types, recursively."""
    interactive = getattr(sys.modules.get("__main__"), "__file__", None) is None
    package = package_main()
    for model in main_classes((found.input_model, found.output_type)):
        if package is not None:  # a fresh-interpreter fork server would never define it
            raise TypeError(package_main_message(found.name, model, package))
        if interactive:
            raise TypeError(
                f"job {found.name!r}: its model {model.__name__} is defined in an interactive __main__, which "
                "worker processes cannot import; define models in a script or a module"
            )
        where = misplaced(model)
        if where is not None:
            raise TypeError(misplaced_message(found.name, model, where))
