"""Durable execution through real workers and a real SQLite file: children invoked in parallel
without holding a worker, durable sleeps that survive `kill -9` of the supervisor, event waits
woken from another process (and by an event stored just before the wait), a thousand sleepers
that hold no worker, triggers, the determinism guard, typed child failures, cancels, and the
step options (retry, timeout, output type)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import script_env, start_script, wait_until
from pydantic import BaseModel
from semantics_jobs import lines, note

from actors import (
    ChildFailed,
    Client,
    Context,
    NondeterministicRun,
    Retry,
    RunCancelled,
    RunFailed,
    RunStatus,
    Supervisor,
    event,
    job,
)

pytestmark = pytest.mark.timeout(90)


class Box(BaseModel):
    dir: str
    n: int = 0


@job
def square(b: Box) -> int:
    note(b.dir, "square.txt", str(b.n))
    return b.n * b.n


@job
def fails(b: Box) -> int:
    raise ValueError(f"bad {b.n}")


@job
def fan_out(b: Box, ctx: Context) -> list[int]:
    kids = [ctx.dispatch(square, Box(dir=b.dir, n=i)) for i in range(1, b.n + 1)]
    note(b.dir, "parent.txt", "dispatched")
    return ctx.wait_for(kids)


@job
def invoker(b: Box, ctx: Context) -> str:
    try:
        ctx.invoke(fails, Box(dir=b.dir, n=7))
    except ChildFailed as exc:
        return f"{exc.error_type}|{exc.message}|{exc.run_id}"
    return "no error"


@job
def napper(b: Box, ctx: Context) -> float:
    ctx.step("before", lambda: note(b.dir, "before.txt", "ran"))
    began = ctx.step("began", time.time)
    ctx.sleep("nap", b.n)
    note(b.dir, "after.txt", "ran")
    return time.time() - began


@job
def listener(b: Box, ctx: Context) -> dict:
    note(b.dir, "listening.txt", "at the wait")
    return ctx.wait_for_event("approved", match={"n": b.n}, timeout="60s")


@job
def impatient(b: Box, ctx: Context) -> str:
    got = ctx.wait_for_event("never", timeout=0.3)
    return "timed out" if got is None else "got one"


@job
def changes_its_mind(b: Box, ctx: Context) -> int:
    ctx.step("first" if ctx.attempt == 1 else "other", lambda: 1)
    ctx.sleep("nap", 0.2)
    return 0


@job
def canceller(b: Box, ctx: Context) -> str:
    child = ctx.dispatch(napper, Box(dir=b.dir, n=60))
    ctx.cancel(child)
    try:
        ctx.wait_for([child])
    except ChildFailed as exc:
        return exc.error_type or ""
    return "not cancelled"


class Pair(BaseModel):
    a: int
    b: str


_calls: dict[str, int] = {}


@job
def typed_steps(b: Box, ctx: Context) -> str:
    def flaky() -> int:
        note(b.dir, "flaky.txt", "try")
        if len(lines(Path(b.dir) / "flaky.txt")) < 3:
            raise OSError("not yet")
        return 5

    pair = ctx.step("pair", lambda: Pair(a=1, b="x").model_dump(), output=Pair)
    count = ctx.step("flaky", flaky, retry=Retry(attempts=3, backoff="immediate"))
    try:
        ctx.step("slow", lambda: time.sleep(5), timeout=0.2)
    except TimeoutError:
        slow = "timed out"
    ctx.sleep("replay", 0.2)  # the second attempt replays the steps: `pair` comes back as a Pair
    return f"{type(pair).__name__}|{count}|{slow}"


class Upload(BaseModel):
    path: str


@job(trigger=event("uploaded", transform=lambda p: Upload(path=p["path"])))
def on_upload(u: Upload) -> str:
    note(os.path.dirname(u.path), "uploads.txt", u.path)
    return u.path


# == children ======================================================================================


def test_a_parent_waits_for_three_children_in_parallel_without_holding_the_only_worker(db: str, tmp_path: Path):
    sup = Supervisor([fan_out, square], workers=1, store=db)
    handle = sup.submit(fan_out, Box(dir=str(tmp_path), n=3))
    assert sup.serve(until="drained") == "drained"  # with the worker held, the children could never run
    assert handle.result(timeout=5) == [1, 4, 9]
    record = sup.run(handle.id)
    assert [a.outcome for a in record.attempt_log] == ["suspended", "succeeded"]
    assert record.status is RunStatus.SUCCEEDED and record.attempts == 2
    children = [r for r in sup.runs(job="square")]
    assert sorted(r.parent_id for r in children) == [handle.id] * 3
    assert len(lines(tmp_path / "square.txt")) == 3, "a child ran twice"
    assert len(lines(tmp_path / "parent.txt")) == 2  # code between records runs again on the replay
    sup.close()


def test_a_child_failure_surfaces_typed_in_the_parent(db: str, tmp_path: Path):
    sup = Supervisor([invoker, fails], workers=1, store=db)
    handle = sup.submit(invoker, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    kind, message, child = handle.result(timeout=5).split("|")
    assert (kind, message) == ("ValueError", "bad 7")
    assert sup.run(int(child)).status is RunStatus.FAILED
    sup.close()


def test_a_parent_can_cancel_its_child_and_reads_the_cancel(db: str, tmp_path: Path):
    sup = Supervisor([canceller, napper], workers=1, store=db)
    handle = sup.submit(canceller, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == "RunCancelled"
    assert [r.status for r in sup.runs(job="napper")] == [RunStatus.CANCELLED]
    sup.close()


@job
def slow_fan(b: Box, ctx: Context) -> list[float]:
    return ctx.wait_for([ctx.dispatch(napper, Box(dir=b.dir, n=1)) for _ in range(2)])


def test_cancelling_a_waiting_parent_leaves_its_children_alone(db: str, tmp_path: Path):
    sup = Supervisor([slow_fan, napper], workers=1, store=db)
    parent = sup.submit(slow_fan, Box(dir=str(tmp_path)))
    import threading

    def cancel_when_waiting() -> None:
        wait_until(lambda: sup.run(parent.id).status is RunStatus.WAITING, timeout=30, what="the parent waiting")
        assert sup.run(parent.id).wait == {"runs": [parent.id + 1, parent.id + 2], "until": None}
        assert sup.cancel(parent.id)

    thread = threading.Thread(target=cancel_when_waiting)
    thread.start()
    sup.serve(until="drained")
    thread.join()
    with pytest.raises(RunCancelled):
        parent.result(timeout=5)
    assert [r.status for r in sup.runs(job="napper")] == [RunStatus.SUCCEEDED] * 2
    sup.close()


# == sleeps ==========================================================================================

SLEEPER = """
import sys
sys.path.insert(0, sys.argv[3])
from actors import Supervisor
from test_durable import napper, Box

if __name__ == "__main__":
    sup = Supervisor([napper], workers=1, store=sys.argv[1])
    if sys.argv[2] == "submit":
        sup.submit(napper, Box(dir=sys.argv[4], n=2))
    print("serving", flush=True)
    sup.serve(until="drained")
    print("drained", flush=True)
"""


def test_a_sleep_survives_kill_9_of_the_supervisor_and_resumes_on_time_without_rerunning_steps(db: str, tmp_path: Path):
    here = str(Path(__file__).parent)
    first = start_script(tmp_path, SLEEPER, db, "submit", here, str(tmp_path))
    try:
        wait_until(lambda: os.path.exists(db), timeout=30, what="the store made")
        client = Client(db)
        wait_until(lambda: [r.status for r in client.runs()] == [RunStatus.WAITING], timeout=30,
                   what="the run sleeping")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    (record,) = client.runs()
    assert record.wait is not None and record.wait["until"] > time.time() - 1
    second = subprocess.run([sys.executable, str(tmp_path / "script.py"), db, "serve", here, str(tmp_path)],
                            capture_output=True, text=True, timeout=60, env=script_env())
    assert second.returncode == 0, second.stderr
    done = client.get(record.id)
    assert done.status is RunStatus.SUCCEEDED
    assert 2.0 <= done.result < 20.0  # slept its two seconds, counted from the first attempt
    assert done.finished_at >= record.wait["until"]
    assert len(lines(tmp_path / "before.txt")) == 1, "a completed step ran again after the restart"
    assert len(lines(tmp_path / "after.txt")) == 1
    client.close()


def test_a_thousand_sleepers_hold_no_worker_and_wake_together(db: str, tmp_path: Path):
    sup = Supervisor([napper, square], workers=2, store=db)
    sleepers = sup.submit_many(napper, [Box(dir=str(tmp_path), n=1) for _ in range(1000)])
    others = sup.submit_many(square, [Box(dir=str(tmp_path), n=i) for i in range(20)])
    began = time.time()
    sup.serve(until="drained")
    assert [h.result(timeout=5) for h in others] == [i * i for i in range(20)]
    records = [sup.run(h.id, attempts=False) for h in sleepers]
    assert all(r.status is RunStatus.SUCCEEDED for r in records)
    wake = max(r.finished_at for r in records) - began
    assert wake < 30, f"the sleepers took {wake:.1f} s to finish"
    squares = [sup.run(h.id, attempts=False) for h in others]
    assert max(r.finished_at for r in squares) < min(r.finished_at for r in records)  # served while they slept
    sup.close()


# == events ==========================================================================================


def test_an_event_from_another_process_wakes_a_waiting_run(db: str, tmp_path: Path):
    sup = Supervisor([listener], workers=1, store=db)
    handle = sup.submit(listener, Box(dir=str(tmp_path), n=5))
    import threading

    def emit_from_a_client() -> None:
        wait_until(lambda: sup.run(handle.id).status is RunStatus.WAITING, timeout=30, what="the run waiting")
        assert sup.run(handle.id).wait["event"] == "approved"
        code = ("import sys; from actors import Client; c = Client(sys.argv[1]); "
                "c.emit('approved', {'n': 4}); c.emit('approved', {'n': 5, 'by': 'ann'})")
        subprocess.run([sys.executable, "-c", code, db], check=True, timeout=30, env=script_env())

    thread = threading.Thread(target=emit_from_a_client)
    thread.start()
    sup.serve(until="drained")
    thread.join()
    assert handle.result(timeout=5) == {"n": 5, "by": "ann"}  # not the event for n=4
    sup.close()


def test_an_event_emitted_before_the_wait_is_recorded_is_still_matched(db: str, tmp_path: Path):
    sup = Supervisor([listener, impatient], workers=1, store=db)
    handle = sup.submit(listener, Box(dir=str(tmp_path), n=1))
    sup.emit("approved", {"n": 1})  # before the run even started
    late = sup.submit(impatient, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == {"n": 1}
    assert late.result(timeout=5) == "timed out"
    sup.close()


def test_an_event_starts_one_run_of_the_job_it_triggers(db: str, tmp_path: Path):
    sup = Supervisor([on_upload], workers=1, store=db)
    with Client(db) as client:
        client.emit("uploaded", {"path": str(tmp_path / "a.jpg")})
        client.emit("uploaded", {"path": str(tmp_path / "b.jpg")})
        client.emit("other", {"path": "x"})
    sup.serve(until="drained")
    sup.serve(until="drained")  # a second session finds them handled: no second run
    assert sorted(lines(tmp_path / "uploads.txt")) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert sorted(r.key for r in sup.runs(job="on_upload")) == ["event:1", "event:2"]
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        sup.emit("uploaded", {"bad": object()})
    sup.close()


# == the guard and the steps' options ======================================================================


def test_a_replay_that_reaches_a_different_step_fails_as_nondeterministic(db: str, tmp_path: Path):
    sup = Supervisor([changes_its_mind], workers=1, store=db)
    handle = sup.submit(changes_its_mind, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=5)
    assert info.value.error_type == NondeterministicRun.__name__
    assert "'other' at position 0" in (info.value.message or "") and "'first'" in (info.value.message or "")
    sup.close()


def test_step_retry_timeout_and_output_type(db: str, tmp_path: Path):
    sup = Supervisor([typed_steps], workers=1, store=db)
    handle = sup.submit(typed_steps, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == "Pair|5|timed out"
    assert len(lines(tmp_path / "flaky.txt")) == 3  # two failures, then a success, never again on replay
    record = sup.run(handle.id)
    assert record.metadata["step_failures"]["flaky"]["failures"] == 2
    assert record.current_step == "slow"
    sup.close()


def test_a_context_without_a_supervisor_refuses_to_invoke(tmp_path: Path):
    ctx = Context(1, 1, "test", jobs={"square": square})
    with pytest.raises(RuntimeError, match="need a serving supervisor"):
        ctx.invoke(square, Box(dir=str(tmp_path)))
    with pytest.raises(ValueError, match="not one of the supervisor's jobs"):
        Context(1, 1, "test").dispatch("nope", {})


# == inspection: what a run waits for, its children, its steps ===========================================


def test_a_waiting_parent_says_it_waits_for_its_children_and_lists_them(db: str, tmp_path: Path):
    sup = Supervisor([slow_fan, napper], workers=1, store=db)
    parent = sup.submit(slow_fan, Box(dir=str(tmp_path)), tenant="acme")
    seen: dict[str, object] = {}

    def look_while_waiting() -> None:
        wait_until(lambda: parent.status() is RunStatus.WAITING, timeout=30, what="the parent waiting")
        seen["waiting_for"] = parent.waiting_for()
        seen["summary"] = sup.run(parent.id).summary()
        seen["children"] = [h.id for h in parent.children()]

    import threading

    thread = threading.Thread(target=look_while_waiting)
    thread.start()
    sup.serve(until="drained")
    thread.join()
    kids = [parent.id + 1, parent.id + 2]
    assert seen["waiting_for"] == f"waiting for runs {kids[0]}, {kids[1]}"
    assert f"waiting attempts=1/1 for runs {kids[0]}, {kids[1]}" in str(seen["summary"])
    assert seen["children"] == kids
    assert parent.waiting_for() is None  # it ended
    children = parent.children()
    assert [h.result(timeout=5) >= 1.0 for h in children] == [True, True]
    assert [sup.run(h.id).tenant for h in children] == ["acme", "acme"]  # a child is its parent's tenant's
    kinds = [(s.kind, s.name) for s in parent.steps()]
    assert kinds == [("child", "napper"), ("child", "napper"), ("wait", "")]
    assert [s.value["status"] for s in parent.steps()[:2]] == ["succeeded", "succeeded"]
    sup.close()


def test_an_event_wait_and_a_sleep_say_what_they_wait_for(db: str, tmp_path: Path):
    sup = Supervisor([listener, napper], workers=1, store=db)
    waiting = sup.submit(listener, Box(dir=str(tmp_path), n=5))
    sleeping = sup.submit(napper, Box(dir=str(tmp_path), n=2))
    seen: dict[str, object] = {}

    def look_then_emit() -> None:
        wait_until(lambda: waiting.status() is RunStatus.WAITING and sleeping.status() is RunStatus.WAITING,
                   timeout=30, what="both runs waiting")
        seen["event"], seen["sleep"] = waiting.waiting_for(), sleeping.waiting_for()
        seen["summary"] = sup.run(sleeping.id).summary()
        sup.emit("approved", {"n": 5})

    import threading

    thread = threading.Thread(target=look_then_emit)
    thread.start()
    sup.serve(until="drained")
    thread.join()
    assert str(seen["event"]).startswith("waiting for event 'approved' matching {\"n\": 5} until 20")
    assert str(seen["sleep"]).startswith("sleeping until 20") and str(seen["sleep"]).endswith("Z")
    assert "wakes in" in str(seen["summary"])
    steps = sleeping.steps()
    assert [(s.kind, s.name) for s in steps] == [("step", "before"), ("step", "began"), ("sleep", "nap")]
    assert set(steps[2].value) == {"until"}
    (event,) = waiting.steps()
    assert (event.kind, event.name, event.value["payload"]) == ("event", "approved", {"n": 5})
    sup.close()


def test_a_step_record_shows_the_failed_tries_of_a_step(db: str, tmp_path: Path):
    sup = Supervisor([typed_steps], workers=1, store=db)
    handle = sup.submit(typed_steps, Box(dir=str(tmp_path)))
    sup.serve(until="drained")
    flaky = next(s for s in handle.steps() if s.name == "flaky")
    assert (flaky.kind, flaky.value, flaky.failures, flaky.error) == ("step", 5, 2, "OSError: not yet")
    pair = next(s for s in handle.steps() if s.name == "pair")
    assert (pair.failures, pair.error) == (0, None)
    sup.close()


@job
def cached(b: Box, ctx: Context) -> int:
    return ctx.invoke(square, Box(dir=b.dir, n=3), key="square-of-3")


def test_an_invoke_with_a_key_runs_its_child_once_across_parents(db: str, tmp_path: Path):
    sup = Supervisor([cached, square], workers=1, store=db)
    first = sup.submit(cached, Box(dir=str(tmp_path), n=1))
    sup.serve(until="drained")
    second = sup.submit(cached, Box(dir=str(tmp_path), n=2))  # after the child ended: its output comes back
    sup.serve(until="drained")
    assert (first.result(timeout=5), second.result(timeout=5)) == (9, 9)
    assert len(lines(tmp_path / "square.txt")) == 1, "the keyed child ran twice"
    (child,) = sup.runs(job="square")
    assert child.key == "square-of-3" and child.parent_id == first.id
    assert first.children()[0].id == second.children()[0].id == child.id
    sup.close()


def test_parents_that_invoke_one_key_at_once_share_the_child_while_it_runs(db: str, tmp_path: Path):
    sup = Supervisor([cached, square], workers=1, store=db)
    parents = sup.submit_many(cached, [Box(dir=str(tmp_path), n=i) for i in range(3)])
    sup.serve(until="drained")
    assert [p.result(timeout=5) for p in parents] == [9, 9, 9]
    assert len(lines(tmp_path / "square.txt")) == 1, "the keyed child ran twice"
    assert len({p.children()[0].id for p in parents}) == 1
    sup.close()


def test_a_childs_handle_from_its_parent_gives_the_typed_output(db: str, tmp_path: Path):
    sup = Supervisor([fan_out, square], workers=1, store=db)
    parent = sup.submit(fan_out, Box(dir=str(tmp_path), n=2))
    sup.serve(until="drained")
    children = parent.children()
    assert [h.job for h in children] == [square, square]
    assert [h.result(timeout=5) for h in children] == [1, 4]
    with Client(db) as client:  # a client without the code: plain JSON, the same values
        assert [h.result(timeout=5) for h in client.handle(parent.id).children()] == [1, 4]
    sup.close()
