"""Prometheus metrics, served by the supervisor process alone (`pip install 'actors[metrics]'`).

`serve_metrics(sup, port)` (what `actors serve --metrics-port 9464` calls) starts an HTTP
endpoint in a thread of the serving process, bound to 127.0.0.1 unless a host is given, and
hooks the serving loop. One process serves them, so prometheus_client's multiprocess directory
is never needed. `prometheus_client` is imported here only, when metrics are asked for.

- `actors_runs_total{job,status}`: runs that ended (succeeded, failed, timed_out, cancelled).
- `actors_attempts_total{job,outcome}`: attempts that ended, by outcome (also retried ones).
- `actors_run_duration_seconds{job}`: histogram of attempt durations, claim to end.
- `actors_queue_depth{job}`: runs the supervisor holds that are not running (queued, delayed,
  waiting to retry), and `actors_waiting_runs{job}`: durable runs suspended (sleeping, or on
  children or an event), both sampled about once a second.
- `actors_worker_restarts_total`, `actors_worker_kills_total{reason}` (timeout, memory, cancel),
  `actors_workers` (configured).
- `actors_store_commit_seconds`: histogram of the loop's group-commit latency.

The loop calls `committed()` after each turn's commit and `sampled()` with each ~1 s status.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

__all__ = ["Metrics", "serve_metrics"]

INSTALL = "metrics need prometheus_client: pip install 'actors[metrics]'"
_ENDED = ("succeeded", "failed", "timed_out", "cancelled")


class Metrics:
    """The supervisor's metrics in a registry of their own (`registry`)."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError as exc:
            raise ImportError(INSTALL) from exc
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("actors_runs", "Runs that ended, by job and final status", ["job", "status"],
                            registry=self.registry)
        self.attempts = Counter("actors_attempts", "Attempts that ended, by job and outcome", ["job", "outcome"],
                                registry=self.registry)
        self.duration = Histogram("actors_run_duration_seconds", "Attempt duration, claim to end", ["job"],
                                  registry=self.registry,
                                  buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 60, 300, 1800, float("inf")))
        self.commit = Histogram("actors_store_commit_seconds", "Latency of the store's group commit per loop turn",
                                registry=self.registry,
                                buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, float("inf")))
        self._lock = threading.Lock()
        self._depth: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._restarts = 0
        self._kills: dict[str, int] = {"timeout": 0, "memory": 0, "cancel": 0}
        self._workers = 0
        self.registry.register(_Sampled(self))

    # -- hooks, called on the serving loop's thread -------------------------------------------------

    def committed(self, changes: Any, tickets: dict[int, Any], seconds: float, now: float) -> None:
        """One turn's changes were committed in `seconds`; `tickets` still holds their runs."""
        self.commit.observe(seconds)

        def job(run_id: int) -> str:
            ticket = tickets.get(run_id)
            return ticket.job.name if ticket is not None else "unknown"

        for run_id, _, _, started_at, _, _ in changes.successes:
            name = job(run_id)
            self.runs.labels(name, "succeeded").inc()
            self.attempts.labels(name, "succeeded").inc()
            self.duration.labels(name).observe(max(now - started_at, 0.0))
        for finish in changes.finishes:
            name = job(finish.run_id)
            self.attempts.labels(name, finish.outcome).inc()
            self.duration.labels(name).observe(max(finish.finished_at - finish.started_at, 0.0))
            if finish.status in _ENDED:
                self.runs.labels(name, finish.status).inc()
        for run_id, status, _, _ in changes.ends:
            self.runs.labels(job(run_id), str(status)).inc()
        for suspension in changes.suspends:
            self.attempts.labels(job(suspension.run_id), "suspended").inc()

    def sampled(self, info: Any, tracker: Any) -> None:
        """The ~1 s status: restarts, kills, and queue depth by job from the tracker."""
        running = {t.id for window in tracker.windows for t in window.inflight}
        depth: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        for t in tracker.tickets.values():
            if t.id not in running:
                (depth if t.wait is None else waiting)[t.job.name] += 1
        with self._lock:
            self._depth = {name: depth.get(name, 0) for name in set(depth) | set(self._depth)}
            self._waiting = {name: waiting.get(name, 0) for name in set(waiting) | set(self._waiting)}
            self._restarts, self._kills, self._workers = info.restarts, dict(info.kills), info.workers


class _Sampled:
    """A collector of the values sampled about once a second."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        with m._lock:
            depth, waiting, restarts, kills, workers = dict(m._depth), dict(m._waiting), m._restarts, dict(m._kills), \
                m._workers
        queue = GaugeMetricFamily("actors_queue_depth", "Runs held and not running, by job", labels=["job"])
        for name, count in sorted(depth.items()):
            queue.add_metric([name], count)
        yield queue
        held = GaugeMetricFamily("actors_waiting_runs", "Durable runs suspended, by job", labels=["job"])
        for name, count in sorted(waiting.items()):
            held.add_metric([name], count)
        yield held
        yield CounterMetricFamily("actors_worker_restarts", "Worker processes started again", value=restarts)
        killed = CounterMetricFamily("actors_worker_kills", "Workers killed by the supervisor, by reason",
                                     labels=["reason"])
        for reason, count in sorted(kills.items()):
            killed.add_metric([reason], count)
        yield killed
        yield GaugeMetricFamily("actors_workers", "Worker processes configured", value=workers)


def serve_metrics(sup: Any, port: int, host: str = "127.0.0.1") -> tuple[Metrics, int]:
    """Hook `sup`'s serving loop and serve its metrics over HTTP at host:port (0: any free port);
    (the metrics, the port bound). Call before `sup.serve()`."""
    metrics = Metrics()
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    sup._serving.metrics = metrics
    return metrics, server.server_port
