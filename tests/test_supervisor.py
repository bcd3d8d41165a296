"""actors.supervisor: submitting, serving with real worker processes, and what runs leave behind.

Every test here starts real workers (a fork server and its children) on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pydantic
import pytest
from conftest import live_descendants, run_script
from pydantic import BaseModel

import actors
from actors import Client, Context, Priority, RunFailed, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(40)


class N(BaseModel):
    x: int


class Line(BaseModel):
    path: str
    tag: str


class Strict(BaseModel):
    y: int


@job
def double(n: N) -> int:
    return n.x * 2


@job
def explode(n: N) -> int:
    raise ValueError(f"cannot handle {n.x}")


@job
def bad_output(n: N) -> Strict:
    return {"z": n.x}  # type: ignore[return-value]


@job(output=Any)
def odd_output(n: N) -> Any:
    if n.x == 1:
        return lambda: 1
    if n.x == 2:
        return threading.Lock()
    return n.x


@job
def who_am_i(n: N, ctx: Context) -> dict[str, Any]:
    return {"run_id": ctx.run_id, "attempt": ctx.attempt, "job": ctx.job, "pid": os.getpid()}


@job
async def async_double(n: N) -> int:
    await asyncio.sleep(0)
    return n.x * 2


@job
def append_line(line: Line) -> None:
    with open(line.path, "a") as f:
        f.write(line.tag + "\n")


@job(priority=Priority.CRITICAL)
def append_urgent(line: Line) -> None:
    with open(line.path, "a") as f:
        f.write(line.tag + "\n")


def stored(db: str) -> list[tuple[int, str, str, str]]:
    """Everything the store holds about runs, through a client and through sqlite3 itself."""
    with Client(store=db) as client:
        runs = [(r.id, r.job, str(r.status), r.input) for r in client.runs(limit=10_000)]
    if os.path.exists(db):
        with sqlite3.connect(db) as conn:
            (count,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        assert count == len(runs)
    return runs


def live_runs(db: str) -> list[Any]:
    with Client(store=db) as client:
        return [r for status in ("queued", "running", "retrying") for r in client.runs(status=status, limit=10_000)]


# -- the happy path, at volume ----------------------------------------------------------------


def test_a_thousand_runs_on_two_workers_all_succeed_with_the_right_outputs(db: str):
    sup = Supervisor([double], workers=2, store=db)
    handles = sup.submit_many(double, [N(x=i) for i in range(500)])
    handles += [sup.submit(double, {"x": i}) for i in range(500, 1000)]
    started = time.monotonic()
    sup.serve(until="drained")
    elapsed = time.monotonic() - started
    assert [h.result(timeout=5) for h in handles] == [2 * i for i in range(1000)]
    assert len({h.id for h in handles}) == 1000
    assert sup.store.counts() == {"double": {"succeeded": 1000}}
    assert elapsed < 20, f"1000 trivial runs took {elapsed:.1f} s"
    sup.close()


def test_runs_execute_in_worker_processes_with_their_context(db: str):
    sup = Supervisor([who_am_i], workers=2, store=db)
    handles = sup.submit_many(who_am_i, [{"x": i} for i in range(4)])
    sup.serve(until="drained")
    for handle in handles:
        seen = handle.result(timeout=5)
        assert (seen["run_id"], seen["attempt"], seen["job"]) == (handle.id, 1, "who_am_i")
        assert seen["pid"] != os.getpid()
        assert sup.run(handle.id).attempt_log[0].worker_pid == seen["pid"]
    sup.close()


def test_an_async_job_is_awaited_in_the_worker(db: str):
    sup = Supervisor([async_double], workers=1, store=db)
    handle = sup.submit(async_double, {"x": 21})
    sup.serve(until="drained")
    assert handle.result(timeout=5) == 42
    sup.close()


# -- mistakes at the door: a clear error, and the store unchanged ----------------------------------


def seeded(db: str) -> list[tuple[int, str, str, str]]:
    """Put one run in the store (so 'unchanged' is not trivially empty); the store's contents."""
    with Client(store=db, create=True) as client:
        client.submit("double", {"x": 1})
    return stored(db)


@pytest.mark.parametrize("value", [{"x": "abc"}, {"y": 1}, None, "x=1", N], ids=["wrong-type", "missing",
                                                                                  "none", "str", "class"])
def test_bad_input_raises_validation_error_at_submit_and_stores_nothing(db: str, value):
    before = seeded(db)
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(pydantic.ValidationError):
        sup.submit(double, value)
    with pytest.raises(pydantic.ValidationError):
        sup.submit_many(double, [{"x": 1}, value, {"x": 3}])  # all or nothing
    assert stored(db) == before
    sup.close()


def test_an_unknown_job_raises_job_not_found_and_stores_nothing(db: str):
    before = seeded(db)
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(actors.JobNotFound, match="'nope'"):
        sup.submit("nope", {"x": 1})
    with pytest.raises(actors.JobNotFound, match="explode"):
        sup.submit(explode, {"x": 1})  # a real job, but not given to this supervisor
    with pytest.raises(actors.JobNotFound):
        sup.submit_many("nope", [{"x": 1}])
    assert stored(db) == before
    sup.close()


def test_duplicate_job_names_raise_at_construction_and_leave_the_store_alone(db: str):
    before = seeded(db)
    twin = job(lambda n: n.x, name="double", input=N, output=int)
    with pytest.raises(actors.DuplicateJob, match="'double'"):
        Supervisor([double, twin], workers=1, store=db)
    assert stored(db) == before
    Supervisor([double], workers=1, store=db).close()  # the store is not left locked


@pytest.mark.parametrize(
    ("options", "value"),
    [({"kill_grace": "x"}, "'x'"), ({"grace": "forever"}, "'forever'"), ({"poll_interval": "5 parsecs"},
     "'5 parsecs'"), ({"kill_grace": -1}, "-1"), ({"max_memory": "lots"}, "'lots'"), ({"workers": 0}, "0")],
    ids=["kill_grace", "grace", "poll_interval", "negative", "max_memory", "workers"],
)
def test_a_malformed_option_raises_value_error_naming_it_and_leaves_the_store_alone(db: str, options, value):
    before = seeded(db)
    with pytest.raises(ValueError) as caught:
        Supervisor([double], store=db, **options)
    assert value in str(caught.value)
    assert stored(db) == before
    Supervisor([double], workers=1, store=db).close()  # the store is not left locked


def test_a_malformed_run_timeout_raises_value_error_at_submit_and_stores_nothing(db: str):
    before = seeded(db)
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(ValueError, match="'5 parsecs'"):
        sup.submit(double, {"x": 1}, timeout="5 parsecs")
    with pytest.raises(TypeError, match="priority"):
        sup.submit(double, {"x": 1}, priority="high")  # type: ignore[arg-type]
    assert stored(db) == before
    sup.close()


def test_a_malformed_job_timeout_raises_before_any_supervisor_exists():
    with pytest.raises(ValueError, match="'5 parsecs'"):
        job(timeout="5 parsecs")(double.fn)


def test_serve_rejects_an_unknown_until(db: str):
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(ValueError, match="'forever'"):
        sup.serve(until="forever")
    sup.close()


# -- runs that fail, clearly -------------------------------------------------------------------


def test_a_raising_job_records_error_type_message_and_traceback(db: str):
    sup = Supervisor([explode], workers=1, store=db)
    handle = sup.submit(explode, {"x": 7})
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as caught:
        handle.result(timeout=5)
    error = caught.value
    assert (error.run_id, error.error_type, error.message) == (handle.id, "ValueError", "cannot handle 7")
    assert "in explode" in error.traceback
    assert 'raise ValueError(f"cannot handle {n.x}")' in error.traceback
    assert "ValueError: cannot handle 7" in error.traceback
    assert "Remote traceback" in str(error) and "cannot handle 7" in str(error)
    record = sup.run(handle.id)
    assert (record.status, record.error_type, record.message) == (RunStatus.FAILED, "ValueError", "cannot handle 7")
    (attempt,) = record.attempt_log
    assert (attempt.outcome, attempt.error_type, attempt.message) == (actors.Outcome.FAILED, "ValueError",
                                                                       "cannot handle 7")
    assert attempt.traceback == error.traceback
    assert attempt.worker_pid not in (None, os.getpid())
    assert attempt.finished_at >= attempt.started_at
    sup.close()


def test_an_output_that_violates_its_model_fails_the_run_clearly(db: str):
    sup = Supervisor([bad_output], workers=1, store=db)
    handle = sup.submit(bad_output, {"x": 1})
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as caught:
        handle.result(timeout=5)
    assert caught.value.error_type == "OutputValidationError"
    assert "bad_output" in caught.value.message
    assert "Strict" in caught.value.message
    assert sup.run(handle.id).status is RunStatus.FAILED
    sup.close()


def test_an_unserializable_output_fails_only_its_own_run(db: str):
    sup = Supervisor([odd_output], workers=1, store=db)
    handles = sup.submit_many(odd_output, [{"x": i} for i in range(6)])
    sup.serve(until="drained")
    for handle in handles[1:3]:
        with pytest.raises(RunFailed) as caught:
            handle.result(timeout=5)
        assert caught.value.error_type == "OutputSerializationError"
        assert "odd_output" in caught.value.message
    assert [h.result(timeout=5) for h in (handles[0], *handles[3:])] == [0, 3, 4, 5]
    pids = {sup.run(h.id).attempt_log[0].worker_pid for h in handles}
    assert len(pids) == 1, "the worker must survive a bad return value"
    sup.close()


# -- jobs from a script's __main__ ---------------------------------------------------------------

SCRIPT = """
import json, os, sys
from pydantic import BaseModel
from actors import Supervisor, job

class N(BaseModel):
    x: int

if __name__ == "__main__":
    offset = int(sys.argv[2])

    def make_adder(k):
        def add(n: N) -> int:
            return n.x + k
        return add

    adder = job(make_adder(offset), name="add")
    double = job(lambda n: n.x * 2, name="double", input=N, output=int)
    sup = Supervisor([adder, double], workers=2, store=sys.argv[1])
    added = sup.submit_many(adder, [{"x": i} for i in range(5)])
    doubled = sup.submit_many("double", [N(x=i) for i in range(5)])
    sup.serve(until="drained")
    pids = {a.worker_pid for h in added + doubled for a in sup.run(h.id).attempt_log}
    print(json.dumps({
        "added": [h.result(timeout=5) for h in added],
        "doubled": [h.result(timeout=5) for h in doubled],
        "script_pid": os.getpid(),
        "worker_pids": sorted(pids),
    }))
"""


def test_closure_and_lambda_jobs_from_a_scripts_main_block_run_in_workers(tmp_path: Path, db: str):
    done = run_script(tmp_path, SCRIPT, db, "100", timeout=30)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["added"] == [100, 101, 102, 103, 104]
    assert report["doubled"] == [0, 2, 4, 6, 8]
    assert report["worker_pids"] and report["script_pid"] not in report["worker_pids"]


# -- serve(until="drained") ---------------------------------------------------------------------


def test_serve_until_drained_returns_with_an_empty_queue_leaving_the_fork_server_and_idle_workers(db: str):
    """serve() keeps its idle workers and the fork server for the next serve(), until close()."""
    before = {p.pid for p in live_descendants()}
    sup = Supervisor([double, explode], workers=2, store=db)
    ok = sup.submit_many(double, [{"x": i} for i in range(50)])
    bad = sup.submit_many(explode, [{"x": i} for i in range(5)])
    sup.serve(until="drained")
    assert live_runs(db) == []
    assert all(h.status() is RunStatus.SUCCEEDED for h in ok)
    assert all(h.status() is RunStatus.FAILED for h in bad)
    left = [p for p in live_descendants() if p.pid not in before]
    assert sorted(p.name() for p in left) == ["actors-forksrv", "actors-worker", "actors-worker"], \
        [(p.pid, p.name()) for p in left]
    sup.close()
    left = [p for p in live_descendants() if p.pid not in before]
    assert left == [], f"close() left children behind: {[(p.pid, p.name()) for p in left]}"


def test_a_pool_kept_across_two_serves_runs_both_batches_in_the_same_workers_and_ends_at_close(db: str):
    before = {p.pid for p in live_descendants()}
    sup = Supervisor([double], workers=2, store=db)
    first = sup.submit_many(double, [{"x": i} for i in range(10)])
    assert sup.serve(until="drained") == "drained"
    kept = sorted(p.pid for p in live_descendants() if p.pid not in before)
    assert len(kept) == 3  # the fork server and both workers
    second = sup.submit_many(double, [{"x": i} for i in range(10, 20)])
    assert sup.serve(until="drained") == "drained"
    assert [h.result(timeout=5) for h in first + second] == [2 * i for i in range(20)]
    assert sorted(p.pid for p in live_descendants() if p.pid not in before) == kept  # the same ones
    workers = {a.worker_pid for h in second for a in sup.run(h.id).attempt_log}
    assert workers and workers <= set(kept)  # the second batch ran in the kept workers
    sup.close()
    assert [p for p in live_descendants() if p.pid not in before] == []


def test_a_kept_worker_killed_between_two_serves_is_replaced(db: str):
    before = {p.pid for p in live_descendants()}
    sup = Supervisor([double], workers=1, store=db)
    first = sup.submit(double, {"x": 1})
    sup.serve(until="drained")
    (kept,) = [p for p in live_descendants() if p.pid not in before and p.name() == "actors-worker"]
    os.kill(kept.pid, signal.SIGKILL)
    kept.wait(10)
    second = sup.submit(double, {"x": 2})
    sup.serve(until="drained")
    assert (first.result(timeout=5), second.result(timeout=5)) == (2, 4)
    (attempt,) = sup.run(second.id).attempt_log
    assert attempt.worker_pid not in (0, kept.pid) and attempt.outcome == "succeeded"
    sup.close()
    assert [p for p in live_descendants() if p.pid not in before] == []


def test_max_runs_per_worker_counts_the_runs_a_kept_worker_did_in_an_earlier_serve(db: str):
    sup = Supervisor([double], workers=1, store=db, max_runs_per_worker=3)
    first = sup.submit_many(double, [{"x": i} for i in range(2)])
    sup.serve(until="drained")
    second = sup.submit_many(double, [{"x": i} for i in range(2, 4)])
    sup.serve(until="drained")
    pids = [sup.run(h.id).attempt_log[0].worker_pid for h in first + second]
    assert pids[0] == pids[1] == pids[2] != pids[3]  # recycled after its third run, across serves
    sup.close()


def test_prefork_starts_the_workers_and_their_setup_before_serve(tmp_path: Path, db: str):
    marks = tmp_path / "setups"
    marks.mkdir()

    def mark() -> str:
        (marks / str(os.getpid())).touch()
        return "ready"

    @job(setup=mark)
    def uses(x: int, ctx: Context) -> str:
        return f"{ctx.resource} {os.getpid()}"

    before = {p.pid for p in live_descendants()}
    sup = Supervisor([uses], workers=2, store=db)
    sup.prefork()
    deadline = time.monotonic() + 10
    while len(list(marks.iterdir())) < 2:  # setup runs in both workers before serve() is called
        assert time.monotonic() < deadline, "the workers' setup did not run"
        time.sleep(0.01)
    started = sorted(int(p.name) for p in marks.iterdir())
    assert set(started) <= {p.pid for p in live_descendants()}
    handles = sup.submit_many(uses, range(6))
    sup.serve(until="drained")
    pids = {int(h.result(timeout=5).split()[1]) for h in handles}
    assert pids <= set(started) and len(list(marks.iterdir())) == 2  # no other worker started
    sup.close()
    assert [p for p in live_descendants() if p.pid not in before] == []


@job
def wait_for_file(path: str) -> str:
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return path


def test_a_serving_supervisor_holds_a_run_from_its_submit_to_its_end(tmp_path: Path, db: str):
    sup = Supervisor([wait_for_file], workers=1, store=db)
    server = threading.Thread(target=sup.serve)
    server.start()
    try:
        marker = tmp_path / "go"
        handle = sup.submit(wait_for_file, str(marker))  # from another thread than the loop's
        assert sup.holds(handle.id)  # handed over or queued: the loop will notify its end
        marker.touch()
        assert handle.result(timeout=30) == str(marker)
        assert not sup.holds(handle.id)
    finally:
        sup.shutdown()
        server.join(30)
        sup.close()


def test_a_script_that_serves_and_exits_without_close_leaves_no_process(tmp_path: Path):
    """The fork server and the workers kept for another serve() end when their supervisor's
    process exits (EOF on their pipes): nothing outlives a batch script."""
    code = (
        "import os, sys, time\n"
        "from actors import Supervisor, job\n"
        "@job\n"
        "def square(n: int) -> int:\n"
        "    return n * n\n"
        "if __name__ == '__main__':\n"
        "    sup = Supervisor([square], workers=2, store=sys.argv[1])\n"
        "    handles = sup.submit_many(square, range(5))\n"
        "    sup.serve(until='drained')\n"
        "    print([h.result() for h in handles])\n"
        "    import psutil\n"
        "    print(' '.join(str(p.pid) for p in psutil.Process().children(recursive=True)))\n"
    )
    done = run_script(tmp_path, code, str(tmp_path / "b.db"))
    assert done.returncode == 0, done.stderr
    results, pids = done.stdout.splitlines()
    assert results == "[0, 1, 4, 9, 16]"
    left = [int(pid) for pid in pids.split()]
    assert len(left) == 3, "the fork server and both workers should still run after serve() returned"
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in left):
        assert time.monotonic() < deadline, f"processes outlived the script: {left}"
        time.sleep(0.02)


def test_run_until_complete_serves_until_drained_and_can_be_called_again(db: str):
    sup = Supervisor([double], workers=1, store=db)
    first = sup.submit(double, {"x": 1})
    sup.run_until_complete()
    assert first.result(timeout=5) == 2
    second = sup.submit(double, {"x": 2})  # a second serve starts a fresh pool
    sup.run_until_complete()
    assert second.result(timeout=5) == 4
    assert live_runs(db) == []
    sup.close()


def test_serve_until_drained_with_nothing_to_do_returns_at_once(db: str):
    sup = Supervisor([double], workers=1, store=db)
    started = time.monotonic()
    sup.serve(until="drained")
    assert time.monotonic() - started < 10
    sup.close()


def test_runs_stored_before_the_supervisor_started_are_served(db: str):
    with Client(store=db, create=True) as client:
        handles = client.submit_many("double", [{"x": i} for i in range(10)])
        sup = Supervisor([double], workers=1, store=db)
        sup.serve(until="drained")
        assert [h.result(timeout=5) for h in handles] == [2 * i for i in range(10)]
        assert [sup.handle(h.id).result(timeout=5) for h in handles] == [2 * i for i in range(10)]
    sup.close()


def test_a_memory_store_serves_runs_too():
    sup = Supervisor([double, explode], workers=1, store=":memory:")
    ok, bad = sup.submit(double, {"x": 4}), sup.submit(explode, {"x": 1})
    sup.serve(until="drained")
    assert ok.result(timeout=5) == 8
    with pytest.raises(RunFailed, match="cannot handle 1"):
        bad.result(timeout=5)
    assert sup.store.counts() == {"double": {"succeeded": 1}, "explode": {"failed": 1}}
    sup.close()


def test_a_second_supervisor_on_a_served_store_submits_but_may_not_serve(db: str):
    """Only serve() takes the store's lock: a second Supervisor on a served file submits like a
    Client (its handle waits for the serving one), and its serve() is refused."""
    sup = Supervisor([double], workers=1, store=db)
    other = Supervisor([double], workers=1, store=db)
    handle = other.submit(double, {"x": 21})
    served = threading.Thread(target=sup.serve)
    served.start()
    try:
        assert handle.result(timeout=30) == 42
        assert other.serving()  # the other one serves its store
        with pytest.raises(actors.StoreLocked, match=str(os.getpid())):
            other.serve()
    finally:
        sup.shutdown()
        served.join(30)
    assert not other.serving()
    assert other.serve(until="drained") == "drained"  # the lock is free again
    other.close()
    sup.close()


# -- priority -------------------------------------------------------------------------------------


def test_higher_priority_runs_execute_first(db: str, tmp_path: Path):
    order = tmp_path / "order.txt"
    sup = Supervisor([append_line, append_urgent], workers=1, store=db)
    for i in range(5):
        sup.submit(append_line, Line(path=str(order), tag=f"low{i}"), priority=Priority.LOW)
    for i in range(5):
        sup.submit(append_line, Line(path=str(order), tag=f"normal{i}"))
    for i in range(5):
        sup.submit(append_line, Line(path=str(order), tag=f"high{i}"), priority=Priority.HIGH)
    sup.submit_many(append_urgent, [Line(path=str(order), tag=f"urgent{i}") for i in range(3)])  # job's default
    sup.serve(until="drained")
    expected = ([f"urgent{i}" for i in range(3)] + [f"high{i}" for i in range(5)] + [f"normal{i}" for i in range(5)]
                + [f"low{i}" for i in range(5)])
    assert order.read_text().split() == expected
    sup.close()


def test_a_delayed_run_that_fell_due_before_serving_runs_and_one_due_later_waits(db: str):
    sup = Supervisor([double], workers=1, store=db)
    try:
        early = sup.submit(double, {"x": 3}, delay="50ms")
        late = sup.submit(double, {"x": 4}, delay="400ms")
        time.sleep(0.1)  # the first one falls due while no loop runs: nothing may forget it
        sup.serve(until="drained")
        assert (early.result(timeout=0), late.result(timeout=0)) == (6, 8)
        started = sup.run(late.id).attempt_log[0].started_at
        assert started >= sup.run(late.id).created_at + 0.4 - 0.005
    finally:
        sup.close()


@job(retry=actors.Retry(attempts=3, backoff="immediate", on_crash=False))
def crash_once_no_retry(n: N) -> int:
    os._exit(1)


def test_durability_full_makes_every_commit_synchronous_and_runs_still_succeed(db: str):
    with Supervisor([double], workers=1, store=db, durability="full") as sup:
        assert sup.store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        handle = sup.submit(double, {"x": 21})
        sup.run_until_complete()
        assert handle.result(timeout=0) == 42
    with pytest.raises(ValueError, match="'paranoid'"):
        Supervisor([double], store=db, durability="paranoid")


def test_on_crash_false_ends_a_crashed_run_after_one_attempt(db: str):
    with Supervisor([crash_once_no_retry], workers=1, store=db) as sup:
        handle = sup.submit(crash_once_no_retry, {"x": 1})
        sup.serve(until="drained")
        record = sup.run(handle.id)
    assert record.status is RunStatus.FAILED and record.error_type == "WorkerCrashed"
    assert [a.outcome for a in record.attempt_log] == [actors.Outcome.CRASHED]


def test_a_short_poll_interval_picks_up_client_runs_while_serving(db: str):
    sup = Supervisor([double], workers=1, store=db, poll_interval="10ms")
    serving = threading.Thread(target=sup.serve, daemon=True)
    serving.start()
    try:
        client = actors.Client(store=db)
        started = time.monotonic()
        assert client.submit("double", {"x": 5}).result(timeout=10) == 10
        assert time.monotonic() - started < 5
        client.close()
    finally:
        sup.shutdown()
        serving.join(10)
        sup.close()


def test_models_from_an_interactive_main_are_refused_with_a_clear_error(tmp_path: Path):
    code = (
        "from pydantic import BaseModel\n"
        "from actors import Supervisor, job\n"
        "class N(BaseModel):\n    x: int\n"
        "@job\ndef sq(n: N) -> int:\n    return n.x\n"
        "Supervisor([sq], workers=1, store='runs.db')\n"
    )
    import subprocess
    import sys

    from conftest import script_env

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=script_env(), cwd=tmp_path)
    assert done.returncode == 1
    assert "model N is defined in an interactive __main__" in done.stderr


def test_a_submit_racing_the_start_of_serving_in_another_thread_is_never_stranded():
    """submit() from the main thread while serve() is still starting in another thread must wake
    the loop (a plain call_soon from a foreign thread would not)."""
    for _ in range(5):
        sup = Supervisor([double], workers=1, store=":memory:")
        serving = threading.Thread(target=sup.serve, daemon=True)
        serving.start()
        try:
            handles = [sup.submit(double, {"x": i}) for i in range(3)]
            assert [h.result(timeout=20) for h in handles] == [0, 2, 4]
        finally:
            sup.shutdown()
            serving.join(10)
            sup.close()


# -- a long stored queue is read a page at a time --------------------------------------------------


@pytest.mark.timeout(60)
def test_a_backlog_is_read_a_page_at_a_time_and_every_run_executes_once(db: str, monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path):
    from actors.supervisor import dispatch, loop

    monkeypatch.setattr(loop, "PAGE", 40)
    monkeypatch.setattr(dispatch, "MAX_WINDOW", 8)  # else one worker's window holds most of this small queue
    with Supervisor([double], workers=1, store=db) as before:  # stored by another supervisor: a backlog
        before.submit_many(double, [{"x": i} for i in range(300)])
    sup = Supervisor([double], workers=1, store=db)
    held: list[int] = []
    late: list[int] = []

    def started(record: actors.RunRecord) -> None:
        tracker = sup._tracker  # runs known here and not sent to a worker yet (the window sends some ahead)
        held.append(len(tracker.tickets) - sum(len(w.inflight) for w in tracker.windows))
        if record.id == 100:  # submitted while the backlog is read: it runs too, once
            late.append(sup.submit(double, {"x": 1000}).id)

    sup.on("started", started)
    assert sup.serve(until="drained") == "drained"
    client = Client(store=db)
    assert [r.status for r in client.runs(limit=1000)] == [RunStatus.SUCCEEDED] * 301
    assert all(len(sup.run(r.id).attempt_log) == 1 for r in client.runs(limit=1000))
    # a page, what was left of the one before, and runs ended but not committed yet (at most a
    # window): never the whole queue
    assert max(held) <= 2 * 40 + 8, str(held)
    assert sup.handle(late[0]).result(timeout=5) == 2000
    sup.close()


PREFORK = """
import sys, threading
from actors import Supervisor, job

@job
def square(n: int) -> int:
    return n * n

if __name__ == "__main__":
    sup = Supervisor([square], workers=1, store=sys.argv[1])
    if sys.argv[2] == "prefork":
        sup.prefork()
    stop = threading.Event()
    ticker = threading.Thread(target=stop.wait)  # a thread that runs while serving, like a progress bar
    ticker.start()
    handle = sup.submit(square, 7)
    sup.serve(until="drained")
    stop.set()
    ticker.join()
    print(handle.result(), sup._serving.servers.current.forked)
    sup.close()
"""


@pytest.mark.parametrize("how, forked", [("prefork", "True"), ("plain", "False")])
def test_prefork_before_a_thread_keeps_the_fork_server_a_fork(tmp_path: Path, how: str, forked: str):
    """A thread running when serve() starts forbids forking the supervisor: the fork server is a
    fresh interpreter then; prefork() before the thread keeps it a fork. Both serve."""
    done = run_script(tmp_path, PREFORK, str(tmp_path / "p.db"), how)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["49", forked]
