"""ctx.log records reach the supervisor's handlers with the run's fields; Supervisor(metrics_port=)
serves Prometheus text from the serving process (real workers, a real HTTP scrape)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.request

import pytest
from pydantic import BaseModel

from actors import Context, Supervisor, job


class Greeting(BaseModel):
    name: str


@job
def greet(g: Greeting, ctx: Context) -> str:
    ctx.log.info("hello %s from pid %d", g.name, os.getpid())
    ctx.log.debug("a detail")
    return g.name


class Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.timeout(60)
def test_ctx_log_records_reach_the_supervisors_handlers_with_the_run_fields(db: str) -> None:
    logger = logging.getLogger("actors.job")
    caught, level = Caught(), logger.level
    logger.addHandler(caught)
    logger.setLevel(logging.INFO)  # the supervisor's level decides: the debug record is not written
    try:
        with Supervisor([greet], workers=1, store=db) as sup:
            handle = sup.submit(greet, Greeting(name="ada"))
            assert sup.serve(until="drained") == "drained"
            assert handle.result(timeout=5) == "ada"
    finally:
        logger.removeHandler(caught)
        logger.setLevel(level)
    hello = [r for r in caught.records if "hello ada" in r.getMessage()]
    assert len(hello) == 1, [r.getMessage() for r in caught.records]
    record = hello[0]
    worker = int(record.getMessage().rsplit(" ", 1)[1])
    assert worker != os.getpid()  # made in the worker, written here
    assert (record.run_id, record.job, record.attempt, record.worker_pid) == (handle.id, "greet", 1, worker)
    assert record.levelno == logging.INFO
    assert not [r for r in caught.records if "a detail" in r.getMessage()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(60)
def test_metrics_port_serves_prometheus_text_while_serving(db: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = _free_port()
    sup = Supervisor([greet], workers=1, store=db, metrics_port=port)
    sup.submit_many(greet, [Greeting(name=str(i)) for i in range(3)])
    served = threading.Thread(target=sup.serve)
    served.start()
    try:
        for handle in sup.runs(limit=3):
            sup.handle(handle.id).result(timeout=30)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        sup.shutdown()
        served.join(30)
        sup.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("actors_runs_total", (("job", "greet"), ("status", "succeeded")))] == 3


def test_a_bad_metrics_port_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="metrics_port"):
        Supervisor([greet], store=":memory:", metrics_port=70000)


@job
def naps(g: Greeting, ctx: Context) -> str:
    ctx.sleep("nap", 60)
    return g.name


@pytest.mark.timeout(60)
def test_metrics_count_suspended_attempts_and_waiting_runs_apart_from_the_queue(db: str) -> None:
    from conftest import wait_until
    from prometheus_client.parser import text_string_to_metric_families

    from actors import RunStatus

    port = _free_port()
    sup = Supervisor([naps], workers=1, store=db, metrics_port=port)
    handles = sup.submit_many(naps, [Greeting(name=str(i)) for i in range(2)])
    served = threading.Thread(target=sup.serve)
    served.start()

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    try:
        wait_until(lambda: all(h.status() is RunStatus.WAITING for h in handles), timeout=30, what="both sleeping")
        wait_until(lambda: samples().get(("actors_waiting_runs", (("job", "naps"),))) == 2, timeout=10,
                   what="the waiting gauge sampled")
        got = samples()
    finally:
        sup.shutdown()
        served.join(30)
        sup.close()
    assert got[("actors_attempts_total", (("job", "naps"), ("outcome", "suspended")))] == 2
    assert got.get(("actors_queue_depth", (("job", "naps"),)), 0) == 0
