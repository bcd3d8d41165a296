"""A wait that can never end says so: `result()` without a timeout raises NotServing when no
supervisor serves the store, and `serve()` says whether it drained or was stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import start_script, wait_until
from pydantic import BaseModel

from actors import Client, NotServing, RunStatus, Supervisor, job


class In(BaseModel):
    n: int


@job(timeout="10s")
def slow(x: In) -> int:
    time.sleep(0.3)
    return x.n


@job(timeout="10s")
def quick(x: In) -> int:
    return x.n


@pytest.mark.timeout(30)
def test_result_without_serve_raises_not_serving_instead_of_waiting_forever(db: str):
    sup = Supervisor([quick], workers=1, store=db)
    handle = sup.submit(quick, {"n": 1})
    started = time.monotonic()
    with pytest.raises(NotServing, match="no supervisor serves its store.*serve"):
        handle.result()
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError):  # with a timeout, the caller decided how long to wait
        handle.result(timeout=0.2)
    assert sup.serve(until="drained") == "drained"
    assert handle.result() == 1
    sup.close()


@pytest.mark.timeout(30)
def test_serve_says_stopped_when_a_shutdown_left_runs_queued_and_their_wait_is_not_serving(db: str):
    sup = Supervisor([slow], workers=1, store=db)
    handles = sup.submit_many(slow, [{"n": n} for n in range(6)])
    sup.on("succeeded", lambda record: sup.shutdown())  # the first success stops serving
    assert sup.serve(until="drained") == "stopped"
    assert handles[0].result() == 0
    left = [h for h in handles if h.status() is RunStatus.QUEUED]
    assert left, "the stop should leave runs queued"
    with pytest.raises(NotServing):
        left[-1].result()
    sup.close()


@pytest.mark.timeout(30)
def test_a_result_awaited_as_serving_starts_in_another_thread_is_not_refused(db: str):
    sup = Supervisor([slow], workers=1, store=db)
    handle = sup.submit(slow, {"n": 7})
    serving = threading.Thread(target=sup.serve, kwargs={"until": "drained"})
    serving.start()
    assert handle.result() == 7
    serving.join(10)
    sup.close()


SERVER = """
import sys, time
from pydantic import BaseModel
from actors import Supervisor, job

class In(BaseModel):
    n: int

@job(timeout="10s")
def quick(x: In) -> int:
    return x.n

if __name__ == "__main__":
    sup = Supervisor([quick], workers=1, store=sys.argv[1])
    print("serving", flush=True)
    sup.serve()
"""


@pytest.mark.timeout(60)
def test_a_client_waits_while_another_process_serves_and_is_told_when_none_does(db: str, tmp_path: Path):
    server = start_script(tmp_path, SERVER, db)
    try:
        assert server.stdout.readline().strip() == "serving"
        with Client(store=db) as client:
            wait_until(client.serving, timeout=20, what="the script's serve() to take the store's lock")
            assert client.submit("quick", {"n": 5}).result() == 5
            server.terminate()  # a graceful stop: the supervisor lets go of its lock
            server.wait(30)
            wait_until(lambda: client.serving() is False, timeout=10, what="the serving lock to be free")
            orphan = client.submit("quick", {"n": 6})
            with pytest.raises(NotServing):
                orphan.result()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
