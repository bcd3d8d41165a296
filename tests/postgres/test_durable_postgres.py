"""Durable execution on a PostgreSQL store: a parent's children in parallel, a sleep, an event
from another connection, and two supervisors (processes of their own) sharing one schema, where
a parent waits on one while its children run on either and it wakes when they ended elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import script_env, wait_until
from semantics_jobs import lines
from test_durable import Box, fan_out, listener, napper, square

from actors import Client, RunStatus, Supervisor
from actors.stores.postgres import PostgresStore

pytestmark = pytest.mark.timeout(120)


def test_children_a_sleep_and_an_event_on_one_supervisor(tmp_path: Path, postgres_dsn: str, postgres_schema: str):
    sup = Supervisor([fan_out, square, napper, listener], workers=1,
                     store=PostgresStore(postgres_dsn, schema=postgres_schema))
    parent = sup.submit(fan_out, Box(dir=str(tmp_path), n=3))
    sleeper = sup.submit(napper, Box(dir=str(tmp_path), n=1))
    waiter = sup.submit(listener, Box(dir=str(tmp_path), n=7))

    def emit_from_another_connection() -> None:
        wait_until(lambda: waiter.status() is RunStatus.WAITING, timeout=60, what="the listener waiting")
        assert str(waiter.waiting_for()).startswith("waiting for event 'approved' matching {\"n\": 7} until 20")
        with Client(PostgresStore(postgres_dsn, schema=postgres_schema)) as client:
            client.emit("approved", {"n": 6})
            client.emit("approved", {"n": 7, "by": "ann"})

    thread = threading.Thread(target=emit_from_another_connection)
    thread.start()
    assert sup.serve(until="drained") == "drained"
    thread.join()
    assert parent.result(timeout=5) == [1, 4, 9]
    assert [a.outcome for a in sup.run(parent.id).attempt_log] == ["suspended", "succeeded"]
    assert [h.id for h in parent.children()] == [r.id for r in sorted(sup.runs(job="square"), key=lambda r: r.id)]
    assert sleeper.result(timeout=5) >= 1.0
    assert len(lines(tmp_path / "before.txt")) == 1  # the step before the sleep ran once
    assert waiter.result(timeout=5) == {"n": 7, "by": "ann"}
    assert [s.kind for s in sleeper.steps()] == ["step", "step", "sleep"]
    sup.close()


SERVE = """
import sys
sys.path.insert(0, sys.argv[3])
from actors import Supervisor
from actors.stores.postgres import PostgresStore
from test_durable import fan_out, square

if __name__ == "__main__":
    sup = Supervisor([fan_out, square], workers=1, store=PostgresStore(sys.argv[1], schema=sys.argv[2]),
                     poll_interval=0.02)
    print("serving", flush=True)
    sup.serve()
    sup.close()
"""


def test_two_supervisors_share_a_parents_children_and_it_wakes_when_they_ended_elsewhere(
        tmp_path: Path, postgres_dsn: str, postgres_schema: str):
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    here = str(Path(__file__).parent.parent)
    with Client(PostgresStore(postgres_dsn, schema=postgres_schema), jobs=[fan_out, square]) as client:
        parents = [client.submit(fan_out, Box(dir=str(tmp_path), n=4)) for _ in range(3)]
        procs = [subprocess.Popen([sys.executable, str(script), postgres_dsn, postgres_schema, here],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"sup{i}.log", "wb"),  # noqa: SIM115
                                  env=script_env(), cwd=tmp_path) for i in range(2)]
        try:
            wait_until(lambda: all(client.get(p.id).status is RunStatus.SUCCEEDED for p in parents), timeout=90,
                       what="every parent done")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(30)
        assert [p.result(timeout=5) for p in parents] == [[1, 4, 9, 16]] * 3
        squares = [r for r in client.runs(job="square", limit=100)]
        assert len(squares) == 12 and len(lines(tmp_path / "square.txt")) == 12, "a child was lost or ran twice"
        for parent in parents:
            assert [a.outcome for a in client.get(parent.id, attempts=True).attempt_log][-1] == "succeeded"
