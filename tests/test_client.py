"""actors.client: Client (another process's door to a store), and Handle read through it.

The cross-process tests start a serving supervisor in a subprocess script and submit into its
store from this process, as a separate program would.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pydantic
import pytest
from conftest import start_script, wait_until, workers_of
from pydantic import BaseModel

import actors
from actors import Client, Handle, RunCancelled, RunFailed, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(40)


class N(BaseModel):
    x: int


class Doubled(BaseModel):
    doubled: int


class Mark(BaseModel):
    path: str
    x: int


@job
def double(n: N) -> Doubled:
    return Doubled(doubled=n.x * 2)


@job
def explode(n: N) -> int:
    raise KeyError(f"no {n.x}")


@job
def mark(m: Mark) -> int:
    with open(m.path, "a") as f:
        f.write(f"{m.x}\n")
    return m.x


@job
def slow_double(n: N) -> int:
    time.sleep(0.05)
    return n.x * 2


# -- Client in another process, a supervisor serving ----------------------------------------------

SERVER = """
import os, sys, time
from pydantic import BaseModel
from actors import Supervisor, job

class N(BaseModel):
    x: int

class Doubled(BaseModel):
    doubled: int
    pid: int

@job
def double(n: N) -> Doubled:
    return Doubled(doubled=n.x * 2, pid=os.getpid())

@job
def nap(n: N) -> int:
    time.sleep(n.x / 1000)
    return n.x

if __name__ == "__main__":
    sup = Supervisor([double, nap], workers=2, store=sys.argv[1])
    print("serving", flush=True)
    sup.serve()
    print("stopped", flush=True)
"""


@pytest.fixture
def server(tmp_path: Path, db: str) -> Iterator[subprocess.Popen[str]]:
    """A supervisor serving `db` in another process until SIGTERM."""
    proc = start_script(tmp_path, SERVER, db)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "serving", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out


def test_a_client_in_another_process_submits_while_the_supervisor_serves(server, db: str, capsys):
    with Client(store=db) as client:
        warm = client.submit("double", {"x": 21})
        first = warm.result(timeout=10)  # plain JSON data: this process does not know the job
        assert first["doubled"] == 42 and first["pid"] != server.pid
        workers = wait_until(lambda: workers_of(server.pid), what="the server's workers")
        assert first["pid"] in {p.pid for p in workers}

        latencies = []
        for i in range(20):
            started = time.monotonic()
            handle = client.submit("double", {"x": i})
            assert handle.result(timeout=10)["doubled"] == 2 * i
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 5.0, latencies
        with capsys.disabled():
            print(f"\n[pickup latency over 20 runs: median {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms]")

        batch = client.submit_many("double", [{"x": i} for i in range(100)])
        assert [h.result(timeout=10)["doubled"] for h in batch] == [2 * i for i in range(100)]
        assert client.run(batch[0].id).status is RunStatus.SUCCEEDED

    assert "stopped" in stop(server)
    for proc in workers:
        wait_until(lambda p=proc: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, timeout=5,
                   what=f"worker {proc.pid} to exit")
    with Client(store=db) as client:
        assert client.runs(status="queued") == client.runs(status="running") == []


def test_a_client_reads_failures_from_another_process_as_run_errors(server, db: str):
    with Client(store=db) as client:
        bad_input = client.submit("double", {"x": "not a number"})
        with pytest.raises(RunFailed) as caught:
            bad_input.result(timeout=10)
        assert caught.value.error_type == "ValidationError"
        assert "invalid input for job 'double'" in caught.value.message
        unknown = client.submit("nope", {"x": 1})
        with pytest.raises(RunFailed) as caught:
            unknown.result(timeout=10)
        assert caught.value.error_type == "JobNotFound"
        assert "'nope'" in caught.value.message
    stop(server)


def test_a_client_cancels_a_queued_run_while_the_supervisor_serves(server, db: str):
    with Client(store=db) as client:
        naps = client.submit_many("nap", [{"x": 400}] * 3)  # two workers busy, one nap waiting
        wait_until(lambda: client.run(naps[1].id).status is RunStatus.RUNNING, what="both workers busy")
        target = client.submit("double", {"x": 1})
        assert target.cancel() is True
        with pytest.raises(RunCancelled):
            target.result(timeout=10)
        assert [h.result(timeout=10) for h in naps] == [400, 400, 400]
        record = client.run(target.id)
        assert (record.status, record.attempts, record.attempt_log) == (RunStatus.CANCELLED, 0, [])
    stop(server)


# -- Client, in-process supervisor ------------------------------------------------------------


def test_a_client_with_the_job_validates_input_before_storing(db: str):
    with Client(store=db, jobs=[double], create=True) as client:
        with pytest.raises(pydantic.ValidationError):
            client.submit("double", {"x": "abc"})
        with pytest.raises(pydantic.ValidationError):
            client.submit(double, {"y": 1})
        with pytest.raises(pydantic.ValidationError):
            client.submit_many(double, [{"x": 1}, {"x": "abc"}])
        assert client.runs(limit=10_000) == []
        handle = client.submit("double", N(x=4), priority=7)
        assert client.run(handle.id).priority == 7
        sup = Supervisor([double], workers=1, store=db)
        sup.serve(until="drained")
        assert handle.result(timeout=5) == Doubled(doubled=8)  # the job is known here: a model
        assert client.handle(handle.id).result(timeout=5) == Doubled(doubled=8)
    sup.close()


def test_a_client_refuses_a_memory_store_and_non_jobs(db: str):
    with pytest.raises(ValueError, match="memory"):
        Client(store=":memory:")
    with Client(store=db, create=True) as client, pytest.raises(actors.JobNotFound):
        client.submit(42, {"x": 1})  # type: ignore[arg-type]


def test_a_client_cancel_of_a_queued_run_means_it_never_runs(db: str, tmp_path: Path):
    marks = tmp_path / "marks.txt"
    with Client(store=db, create=True) as client:
        keep = client.submit("mark", {"path": str(marks), "x": 1})
        drop = client.submit("mark", {"path": str(marks), "x": 2})
        assert drop.cancel() is True
        assert drop.cancel() is False
        sup = Supervisor([mark], workers=1, store=db)
        sup.serve(until="drained")
        assert keep.result(timeout=5) == 1
        with pytest.raises(RunCancelled):
            drop.result(timeout=5)
    assert marks.read_text().split() == ["1"]
    sup.close()


def test_unknown_run_ids_raise_run_not_found(db: str):
    with Client(store=db, create=True) as client:
        with pytest.raises(actors.RunNotFound):
            client.handle(999)
        with pytest.raises(actors.RunNotFound):
            client.run(999)
        with pytest.raises(actors.RunNotFound):
            Handle(client, 999, None).status()


def test_a_client_submit_takes_the_supervisors_options(db: str):
    at = datetime.now() + timedelta(hours=2)
    with Client(store=db, jobs=[double], create=True) as client:
        before = time.time()
        delayed = client.run(client.submit(double, {"x": 1}, delay="1h", timeout="5s", priority=3).id)
        assert before + 3600 <= delayed.scheduled_at <= time.time() + 3600
        assert (delayed.timeout, delayed.priority, delayed.max_attempts) == (5.0, 3, None)  # the server's policy decides
        assert client.run(client.submit("double", {"x": 2}, at=at).id).scheduled_at == at.timestamp()
        by_name = client.run(client.submit("mark", {"x": 3}, delay=60).id)  # a job this client does not know
        assert by_name.scheduled_at >= before + 60 and by_name.max_attempts is None
        first = client.submit(double, {"x": 4}, key="order-4")
        assert client.submit(double, {"x": 5}, key="order-4").id == first.id
        batch = client.submit_many("mark", [{"x": 6}, {"x": 7}], keys=["a", "b"])
        assert [client.run(h.id).key for h in batch] == ["a", "b"]
        assert [h.id for h in client.submit_many("mark", [{"x": 0}] * 2, keys=["b", "a"])] == [batch[1].id, batch[0].id]
        stored = len(client.runs(limit=100))
        with pytest.raises(ValueError, match="2 keys for 1 inputs"):
            client.submit_many(double, [{"x": 1}], keys=["x", "y"])
        with pytest.raises(ValueError, match="either delay or at"):
            client.submit(double, {"x": 1}, delay=1, at=at)
        with pytest.raises(TypeError, match="priority"):
            client.submit("mark", {"x": 1}, priority="high")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.submit(double, {"x": 1}, timeout="soon")
        assert len(client.runs(limit=100)) == stored


def test_a_client_run_with_a_delay_waits_for_its_time_in_a_serving_supervisor(db: str):
    sup = Supervisor([double], workers=1, store=db, poll_interval=0.01)
    server = threading.Thread(target=sup.serve, name="serve")
    server.start()
    try:
        with Client(store=db) as client:
            submitted = time.time()
            later = client.submit("double", {"x": 2}, delay=0.5)
            sooner = client.submit("double", {"x": 1})
            assert sooner.result(timeout=20) == {"doubled": 2}
            assert later.result(timeout=20) == {"doubled": 4}
            record = client.run(later.id)
            assert record.scheduled_at >= submitted + 0.5
            assert record.attempt_log[0].started_at >= record.scheduled_at - 0.01  # timers may round a little
    finally:
        sup.shutdown(timeout=20)
        server.join(20)
    sup.close()


def test_client_wait_for_polls_the_store_until_the_run_ends_or_time_is_up(db: str):
    with Client(store=db, create=True) as client:
        handle = client.submit("double", {"x": 1})
        started = time.monotonic()
        assert client.wait_for(handle.id, 0.1) is False
        assert 0.1 <= time.monotonic() - started < 2
        started = time.monotonic()
        assert client.wait_for(999, 5) is False  # no such run: nothing to wait for
        assert time.monotonic() - started < 1
        canceller = threading.Timer(0.1, client.cancel, [handle.id])
        canceller.start()
        assert client.wait_for(handle.id, 10) is True
        canceller.join()
        assert client.get(handle.id).status is RunStatus.CANCELLED
        assert client.get(999) is None


# -- Handle ------------------------------------------------------------------------------------


def test_a_handle_has_an_id_and_follows_the_run_status(db: str):
    sup = Supervisor([double], workers=1, store=db)
    first, second = sup.submit(double, {"x": 1}), sup.submit(double, {"x": 2})
    assert isinstance(first.id, int) and second.id > first.id
    assert first.status() is RunStatus.QUEUED
    sup.serve(until="drained")
    assert first.status() is RunStatus.SUCCEEDED
    assert first.result() == Doubled(doubled=2)
    sup.close()


def test_result_raises_timeout_error_when_the_run_is_not_done_in_time(db: str):
    sup = Supervisor([double], workers=1, store=db)
    handle = sup.submit(double, {"x": 1})
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    with pytest.raises(TimeoutError):
        handle.result(timeout=0)
    assert handle.status() is RunStatus.QUEUED
    sup.close()


def test_cancel_of_a_queued_run_raises_run_cancelled_and_it_never_runs(db: str, tmp_path: Path):
    marks = tmp_path / "marks.txt"
    sup = Supervisor([mark], workers=1, store=db)
    handles = [sup.submit(mark, {"path": str(marks), "x": i}) for i in range(3)]
    assert handles[1].cancel() is True
    assert handles[1].status() is RunStatus.CANCELLED
    with pytest.raises(RunCancelled) as caught:
        handles[1].result(timeout=1)
    assert (caught.value.run_id, caught.value.error_type) == (handles[1].id, "RunCancelled")
    sup.serve(until="drained")
    assert [handles[0].result(timeout=5), handles[2].result(timeout=5)] == [0, 2]
    assert marks.read_text().split() == ["0", "2"]
    assert handles[1].cancel() is False
    assert handles[0].cancel() is False
    assert sup.run(handles[1].id).attempt_log == []
    sup.close()


def test_a_failed_run_raises_run_failed_with_the_remote_error(db: str):
    sup = Supervisor([explode], workers=1, store=db)
    handle = sup.submit(explode, {"x": 3})
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as caught:
        handle.result(timeout=5)
    assert (caught.value.error_type, caught.value.message) == ("KeyError", "'no 3'")
    assert "KeyError" in caught.value.traceback
    sup.close()


def test_a_handle_can_be_awaited_while_serve_runs_in_a_thread(db: str):
    sup = Supervisor([slow_double], workers=2, store=db)
    handles = sup.submit_many(slow_double, [{"x": i} for i in range(6)])
    server = threading.Thread(target=sup.serve, name="serve")
    server.start()

    async def main() -> tuple[int, list[int], int]:
        one = await handles[0]
        rest = await asyncio.gather(*handles[1:])
        late = sup.submit(slow_double, {"x": 50})  # submitted while serving, from another thread
        return one, list(rest), await late

    try:
        one, rest, late = asyncio.run(asyncio.wait_for(main(), timeout=20))
    finally:
        sup.shutdown(timeout=20)
        server.join(20)
    assert not server.is_alive()
    assert (one, rest, late) == (0, [2, 4, 6, 8, 10], 100)
    sup.close()


def test_a_handle_keeps_working_after_serve_returns_and_from_a_fresh_client(db: str):
    sup = Supervisor([double, explode], workers=1, store=db)
    ok = sup.submit(double, {"x": 5})
    bad = sup.submit(explode, {"x": 6})
    sup.serve(until="drained")
    assert ok.result(timeout=1) == Doubled(doubled=10)
    assert ok.status() is RunStatus.SUCCEEDED
    assert ok.record(attempts=True).attempt_log[0].outcome is actors.Outcome.SUCCEEDED
    sup.close()
    with Client(store=db) as client:
        fresh = client.handle(ok.id)
        assert fresh.result(timeout=1) == {"doubled": 10}  # plain data: this client was given no jobs
        assert fresh.status() is RunStatus.SUCCEEDED
        assert len(client.run(ok.id).attempt_log) == 1
        with pytest.raises(RunFailed, match="no 6"):
            client.handle(bad.id).result(timeout=1)
        assert [r.id for r in client.runs(status="succeeded")] == [ok.id]
        assert [r.id for r in client.runs(job="explode")] == [bad.id]
    with Client(store=db, jobs=[double]) as client:
        assert client.handle(ok.id).result(timeout=1) == Doubled(doubled=10)


# -- the store's path --------------------------------------------------------------------------


def test_a_client_refuses_a_store_that_does_not_exist_and_creates_nothing(tmp_path: Path, monkeypatch):
    missing = tmp_path / "typo.db"
    with pytest.raises(actors.StoreError) as caught:
        Client(store=str(missing))
    message = str(caught.value)
    for words in (str(missing), "does not exist", "Supervisor creates", "create=True"):
        assert words in message, message
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(actors.StoreError, match="does not exist") as caught:
        Client(store="runs.db")  # a relative path, from the wrong directory
    assert str(elsewhere / "runs.db") in str(caught.value)  # the error names the absolute path
    with pytest.raises(actors.StoreError, match="does not exist"):
        Client(store=Path("runs.db"), jobs=[double])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere"]  # no file, no -wal, no -shm


def test_a_client_with_create_true_makes_the_store_and_a_supervisor_serves_it(db: str):
    with Client(store=db, create=True) as client:
        handle = client.submit("double", {"x": 3})
    assert Path(db).stat().st_mode & 0o777 == 0o600
    with Client(store=db) as client:  # it exists now: no create needed
        assert client.run(handle.id).status is RunStatus.QUEUED
        with Supervisor([double], workers=1, store=db) as sup:
            sup.serve(until="drained")
        assert client.handle(handle.id).result(timeout=5) == {"doubled": 6}


def test_a_client_keeps_its_store_s_absolute_path_across_chdir(tmp_path: Path, monkeypatch):
    home, other = tmp_path / "home", tmp_path / "other"
    home.mkdir()
    other.mkdir()
    Supervisor([double], workers=1, store=str(home / "runs.db")).close()  # a supervisor made the store
    monkeypatch.chdir(home)
    with Client(store="runs.db") as client:
        assert client.store.path == str(home / "runs.db")  # type: ignore[attr-defined]
        monkeypatch.chdir(other)
        handle = client.submit("double", {"x": 1})
        assert client.run(handle.id).status is RunStatus.QUEUED
        assert repr(handle).startswith(f"<Handle {handle.id} double queued")
    assert list(other.iterdir()) == []
    monkeypatch.chdir(home)
    with Client(store="runs.db") as again:
        assert [r.id for r in again.runs()] == [handle.id]


def test_a_client_that_knows_the_job_returns_its_model_from_any_handle(db: str):
    with Client(store=db, create=True) as plain:
        by_name = plain.submit("double", {"x": 3})  # this client was given no jobs
        with_job = plain.submit(double, {"x": 4})  # a Job object: its handle knows the job
        with Supervisor([double], workers=1, store=db) as sup:
            sup.serve(until="drained")
        assert by_name.result(timeout=5) == {"doubled": 6}
        assert plain.handle(by_name.id).result(timeout=5) == {"doubled": 6}
        assert with_job.result(timeout=5) == Doubled(doubled=8)
        assert plain.handle(by_name.id, double).result(timeout=5) == Doubled(doubled=6)
    with Client(store=db, jobs=[double]) as knowing:
        assert knowing.handle(by_name.id).result(timeout=5) == Doubled(doubled=6)
        assert knowing.handle(with_job.id).result(timeout=5) == Doubled(doubled=8)
        assert knowing.submit("double", {"x": 5}).job is double  # by name, known: the model too


def test_a_client_without_the_jobs_code_stores_inputs_by_name_as_json_data(tmp_path):
    from pydantic import BaseModel

    from actors import Client

    class Point(BaseModel):
        x: int

    with Client(str(tmp_path / "runs.db"), create=True) as client:
        texts = [client.get(client.submit("j", value).id).input for value in ("ann", 3, {"a": [1]}, Point(x=2))]
        assert texts == ['"ann"', "3", '{"a": [1]}', '{"x":2}']
        for bad in (float("nan"), object()):
            with pytest.raises(TypeError, match="the input of a 'j' run .submitted by name. cannot be stored as JSON"):
                client.submit("j", bad)
        assert len(client.runs()) == 4  # nothing stored for the refused ones
