"""Semantics end to end: retries, priority, delays, cron, limits, uniqueness, steps, progress,
logging, cancellation, events, hooks, per-worker setup, inspection, versions, result size.

Every test here runs real worker processes on a real SQLite store. Jobs are defined at the top
level of this module (workers import them by reference); the durability tests run their
supervisors in scripts (subprocesses) so that the test can signal or `kill -9` them.

Jobs report what happened by appending to files in a directory the test gives them (the
input's `dir`, or $ACTORS_SEMANTICS_DIR for hooks and setup, which have no input), because
the test cannot see inside worker processes otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import live_descendants, run_script, start_script, wait_until
from pydantic import BaseModel

from actors import (
    Client,
    Context,
    Outcome,
    Priority,
    Retry,
    RunCancelled,
    RunFailed,
    RunRecord,
    RunStatus,
    RunTimedOut,
    SQLiteStore,
    Supervisor,
    job,
    retry,
)

pytestmark = pytest.mark.timeout(60)

ENV_DIR = "ACTORS_SEMANTICS_DIR"
# How early a due run may start: event-loop timers have millisecond resolution, and the
# supervisor treats a run due within half a millisecond as due.
EARLY = 0.005


# -- models and helpers the jobs share -----------------------------------------------------------


class Task(BaseModel):
    dir: str
    tag: str = ""
    n: int = 0


class Tick(BaseModel):
    label: str = "tick"


class NoDefaults(BaseModel):
    label: str


def note(directory: str, name: str, text: str) -> None:
    """Append one line to a file; the way jobs tell the test what they did."""
    with open(os.path.join(directory, name), "a") as f:
        f.write(text + "\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def floats(path: Path) -> list[float]:
    return [float(line.split()[-1]) for line in lines(path)]


def wait_for_file(path: str, seconds: float = 30.0) -> bool:
    """Inside a job: wait for the test to create a marker file (bounded, so nothing hangs)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def task(tmp_path: Path, tag: str = "", n: int = 0) -> Task:
    return Task(dir=str(tmp_path), tag=tag, n=n)


@contextlib.contextmanager
def serving(sup: Supervisor) -> Iterator[Supervisor]:
    """Serve in a background thread (no signal handlers there) while the test body runs."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            sup.serve()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=target, name="serve", daemon=True)
    thread.start()
    try:
        wait_until(lambda: sup.stats()["workers"] or errors, what="the supervisor to start its workers")
        yield sup
    finally:
        sup.shutdown(graceful=True, timeout=15)
        if thread.is_alive():
            sup.shutdown(graceful=False, timeout=15)
        thread.join(15)
        alive = thread.is_alive()
        if not alive:
            sup.close()
    assert not alive, "serve() did not return after shutdown()"
    assert not errors, f"serve() raised {errors!r}"


def attempts_of(record: RunRecord) -> list[str | None]:
    return [a.outcome.value if a.outcome else None for a in record.attempt_log]


# -- jobs: retries -------------------------------------------------------------------------------


@job(retry=Retry(attempts=3, backoff="fixed", base="50ms"))
def flaky_fixed(t: Task, ctx: Context) -> int:
    note(t.dir, "fixed.txt", f"{ctx.attempt} {time.time()!r}")
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=Retry(attempts=3, backoff="immediate", retry_on=(KeyError,)))
def picky(t: Task, ctx: Context) -> int:
    note(t.dir, f"picky-{t.tag}.txt", str(ctx.attempt))
    if ctx.attempt == 1:
        raise KeyError("missing") if t.tag == "key" else ValueError("bad value")
    return ctx.attempt


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "transient" in str(exc)


@job(retry=Retry(attempts=3, backoff="immediate", retry_on=is_transient))
def judged(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError(f"{t.tag} failure")
    return ctx.attempt


@job(timeout="300ms", retry=Retry(attempts=3, backoff="immediate", on_timeout=False))
def hangs_no_timeout_retry(t: Task) -> None:
    time.sleep(30)


@job(timeout="1500ms", retry=Retry(attempts=2, backoff="immediate"))  # room for a replacement worker's start
def hangs_once(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        time.sleep(30)
    return ctx.attempt


@job
def no_policy(t: Task, ctx: Context) -> int:
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(retry=1)
def own_policy(t: Task, ctx: Context) -> int:
    raise RuntimeError(f"attempt {ctx.attempt} fails")


@job
def no_policy_value_error(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise ValueError("not retryable under the supervisor's default")
    return ctx.attempt


# -- jobs: ordering, timing, limits ----------------------------------------------------------------


@job
def append_tag(t: Task) -> None:
    note(t.dir, "order.txt", t.tag)


@job(priority=Priority.HIGH)
def urgent_tag(t: Task) -> None:
    note(t.dir, "order.txt", t.tag)


@job
def stamp(t: Task) -> float:
    now = time.time()
    note(t.dir, "stamps.txt", f"{t.tag} {now!r}")
    return now


@job(cron="* * * * *")
def every_minute(tick: Tick, ctx: Context) -> str:
    return f"{tick.label} {ctx.run_id}"


@job(concurrency=1)
def solo(t: Task) -> None:
    start = time.time()
    time.sleep(0.2)
    note(t.dir, "solo.txt", f"{start!r} {time.time()!r}")


@job
def free(t: Task) -> None:
    note(t.dir, "free.txt", f"{time.time()!r}")


@job(rate="5/s")
def rated(t: Task) -> None:
    note(t.dir, "rated.txt", f"{time.time()!r}")


@job(unique=True)
def uniq(t: Task) -> int:
    return t.n


@job
def keyed(t: Task) -> int:
    return t.n


# -- jobs: steps, progress, logs -----------------------------------------------------------------


def _first_stage(directory: str) -> dict[str, Any]:
    note(directory, "first-calls.txt", str(os.getpid()))
    return {"value": 41, "items": (1, 2)}


def _second_stage(directory: str) -> int:
    note(directory, "second-calls.txt", str(os.getpid()))
    return 1


@job(retry=Retry(attempts=2, backoff="immediate"))
def staged(t: Task, ctx: Context) -> dict[str, Any]:
    first = ctx.step("first", lambda: _first_stage(t.dir))
    if ctx.attempt == 1:
        raise RuntimeError("fails after the first step")
    second = ctx.step("second", lambda: _second_stage(t.dir))
    return {"total": first["value"] + second, "items_type": type(first["items"]).__name__, "attempt": ctx.attempt}


@job
def step_twice(t: Task, ctx: Context) -> int:
    ctx.step("dup-step", lambda: 1)
    ctx.step("dup-step", lambda: 2)
    return 0


@job
def reporter(t: Task, ctx: Context) -> str:
    ctx.progress(0.5, "halfway")
    ctx.metadata(stage="resize", pages=3)
    ctx.metadata(pages=4)
    note(t.dir, "reporter.txt", "reported")
    return "done" if wait_for_file(os.path.join(t.dir, "go")) else "gave up"


@job(retry=Retry(attempts=2, backoff="immediate"))
def chatty(t: Task, ctx: Context) -> str:
    logger = logging.getLogger("actors.job")
    handler = logging.FileHandler(os.path.join(t.dir, "log.txt"))
    handler.setFormatter(logging.Formatter("%(run_id)s|%(job)s|%(attempt)s|%(levelname)s|%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ctx.log.info("working on %s", t.tag)
    finally:
        logger.removeHandler(handler)
        handler.close()
    if ctx.attempt == 1:
        raise RuntimeError("log again on attempt 2")
    return "ok"


# -- jobs: cancellation, events ------------------------------------------------------------------


@job
def cooperative(t: Task, ctx: Context) -> str:
    note(t.dir, "coop.txt", "started")
    deadline = time.monotonic() + 30
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    note(t.dir, "coop.txt", "returned" if ctx.cancelled else "gave up")
    return "stopped"


@job
def stubborn(t: Task) -> str:
    note(t.dir, "stubborn.txt", str(os.getpid()))
    time.sleep(60)
    return "never"


@job
def double(t: Task) -> int:
    return t.n * 2


@job
def explode(t: Task) -> int:
    raise ValueError(f"cannot handle {t.n}")


@job(retry=Retry(attempts=2, backoff="immediate"))
def fails_once(t: Task, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return ctx.attempt


@job(timeout="300ms")
def overstays(t: Task) -> None:
    time.sleep(30)


# -- jobs: hooks, setup, versions, sizes ---------------------------------------------------------


def hook_before(ctx: Context) -> None:
    note(os.environ[ENV_DIR], "hooks.txt", f"before {ctx.run_id} {ctx.attempt} {os.getpid()}")


def hook_after(ctx: Context, error: BaseException | None) -> None:
    kind = type(error).__name__ if error is not None else "None"
    note(os.environ[ENV_DIR], "hooks.txt", f"after {ctx.run_id} {ctx.attempt} {os.getpid()} {kind}")


@job(before_run=hook_before, after_run=hook_after)
def hooked(t: Task, ctx: Context) -> int:
    note(t.dir, "hooks.txt", f"body {ctx.run_id} {ctx.attempt} {os.getpid()}")
    if t.tag == "fail":
        raise ValueError("the body fails")
    return t.n


def make_resource() -> dict[str, Any]:
    note(os.environ[ENV_DIR], "setup.txt", str(os.getpid()))
    return {"pid": os.getpid(), "token": "R"}


def slow_setup() -> str:
    time.sleep(0.8)
    return "loaded"


@job(timeout="400ms", setup=slow_setup)
def after_slow_setup(t: Task, ctx: Context) -> str:
    return ctx.resource


@job(setup=make_resource)
def use_resource(t: Task, ctx: Context) -> dict[str, Any]:
    return {"resource": ctx.resource, "pid": os.getpid()}


def _versioned(t: Task, ctx: Context) -> int:
    note(t.dir, "versioned.txt", f"{t.tag} {ctx.run_id}")
    return t.n


versioned_v1 = job(name="versioned", version=1)(_versioned)
versioned_v2 = job(name="versioned", version=2, min_version=2)(_versioned)


@job
def big(t: Task) -> str:
    return "x" * t.n


@job
def with_step(t: Task, ctx: Context) -> int:
    return ctx.step("load", lambda: {"k": t.n})["k"]


# == retries through real runs ====================================================================


def test_fixed_backoff_retries_twice_then_succeeds_with_gaps_of_at_least_the_base(db: str, tmp_path: Path):
    sup = Supervisor([flaky_fixed], workers=1, store=db)
    handle = sup.submit(flaky_fixed, task(tmp_path))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == 3
    record = sup.run(handle.id, attempts=True)
    assert record.status is RunStatus.SUCCEEDED
    assert record.attempts == 3
    assert attempts_of(record) == ["failed", "failed", "succeeded"]
    assert [a.number for a in record.attempt_log] == [1, 2, 3]
    assert [a.error_type for a in record.attempt_log[:2]] == ["RuntimeError", "RuntimeError"]
    starts = [a.started_at for a in record.attempt_log]
    assert all(later - earlier >= 0.045 for earlier, later in zip(starts, starts[1:], strict=False)), starts
    # and as the job itself saw it
    seen = lines(tmp_path / "fixed.txt")
    assert [line.split()[0] for line in seen] == ["1", "2", "3"]
    times = floats(tmp_path / "fixed.txt")
    assert all(later - earlier >= 0.045 for earlier, later in zip(times, times[1:], strict=False)), times
    sup.close()


def test_retry_on_exception_classes_retries_those_and_fails_others_at_once(db: str, tmp_path: Path):
    sup = Supervisor([picky], workers=2, store=db)
    retried = sup.submit(picky, task(tmp_path, "key"))
    refused = sup.submit(picky, task(tmp_path, "value"))
    sup.serve(until="drained")
    assert retried.result(timeout=5) == 2
    assert attempts_of(sup.run(retried.id)) == ["failed", "succeeded"]
    with pytest.raises(RunFailed) as info:
        refused.result(timeout=5)
    assert info.value.error_type == "ValueError"
    record = sup.run(refused.id)
    assert record.status is RunStatus.FAILED
    assert record.attempts == 1 and attempts_of(record) == ["failed"]
    assert lines(tmp_path / "picky-value.txt") == ["1"]
    sup.close()


def test_retry_on_a_predicate_decides_per_exception(db: str, tmp_path: Path):
    sup = Supervisor([judged], workers=2, store=db)
    transient = sup.submit(judged, task(tmp_path, "transient"))
    permanent = sup.submit(judged, task(tmp_path, "permanent"))
    sup.serve(until="drained")
    assert transient.result(timeout=5) == 2
    with pytest.raises(RunFailed, match="permanent failure"):
        permanent.result(timeout=5)
    assert sup.run(permanent.id).attempts == 1
    sup.close()


def test_on_timeout_false_ends_a_timed_out_run_at_once_while_the_default_retries_it(db: str, tmp_path: Path):
    sup = Supervisor([hangs_no_timeout_retry, hangs_once], workers=2, store=db, kill_grace="200ms")
    final = sup.submit(hangs_no_timeout_retry, task(tmp_path))
    retried = sup.submit(hangs_once, task(tmp_path))
    started = time.monotonic()
    sup.serve(until="drained")
    assert time.monotonic() - started < 10
    with pytest.raises(RunTimedOut):
        final.result(timeout=5)
    record = sup.run(final.id)
    assert record.status is RunStatus.TIMED_OUT
    assert record.attempts == 1 and attempts_of(record) == ["timed_out"]
    assert retried.result(timeout=5) == 2
    assert attempts_of(sup.run(retried.id)) == ["timed_out", "succeeded"]
    sup.close()


def test_the_supervisors_default_retry_applies_to_jobs_that_set_none(db: str, tmp_path: Path):
    sup = Supervisor([no_policy, own_policy], workers=2, store=db, retry=Retry(attempts=3, backoff="immediate"))
    defaulted = sup.submit(no_policy, task(tmp_path))
    own = sup.submit(own_policy, task(tmp_path))
    sup.serve(until="drained")
    assert defaulted.result(timeout=5) == 3
    record = sup.run(defaulted.id)
    assert record.max_attempts == 3 and attempts_of(record) == ["failed", "failed", "succeeded"]
    with pytest.raises(RunFailed):
        own.result(timeout=5)
    assert sup.run(own.id).attempts == 1  # the job's own policy (one attempt) wins
    sup.close()


def test_without_a_supervisor_default_a_job_without_retry_runs_once(db: str, tmp_path: Path):
    sup = Supervisor([no_policy], workers=1, store=db)
    handle = sup.submit(no_policy, task(tmp_path))
    sup.serve(until="drained")
    with pytest.raises(RunFailed):
        handle.result(timeout=5)
    assert sup.run(handle.id).attempts == 1
    sup.close()


def test_the_supervisors_default_retry_on_is_honoured_for_jobs_that_set_none(db: str, tmp_path: Path):
    sup = Supervisor([no_policy_value_error], workers=1, store=db,
                     retry=Retry(attempts=3, backoff="immediate", retry_on=(KeyError,)))
    handle = sup.submit(no_policy_value_error, task(tmp_path))
    sup.serve(until="drained")
    record = sup.run(handle.id)
    sup.close()
    assert record.status is RunStatus.FAILED, f"a ValueError was retried: {attempts_of(record)}"
    assert record.attempts == 1


RETRY_SCRIPT = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Retry, Supervisor, job

class Task(BaseModel):
    dir: str

@job(retry=Retry(attempts=2, backoff="fixed", base="3s"))
def slow_retry(t: Task, ctx: Context) -> int:
    with open(os.path.join(t.dir, "attempts.txt"), "a") as f:
        f.write(f"{ctx.attempt} {time.time()!r}\\n")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt

if __name__ == "__main__":
    sup = Supervisor([slow_retry], workers=1, store="runs.db")
    if sys.argv[1] == "first":
        handle = sup.submit(slow_retry, {"dir": os.getcwd()})
        print("submitted", handle.id, flush=True)
        sup.serve()
    else:
        sup.serve(until="drained")
    sup.close()
    print("served", sys.argv[1], flush=True)
"""


def test_a_waiting_retry_is_durable_across_a_restart_and_keeps_its_due_time(tmp_path: Path, db: str):
    first = start_script(tmp_path, RETRY_SCRIPT, "first")
    try:
        with Client(store=db) as client:
            record = wait_until(lambda: next(iter(client.runs(status="retrying")), None), timeout=20,
                                what="the run to wait for its retry")
            assert record.scheduled_at > time.time() + 0.5, "the retry is not stored with a future due time"
            due = record.scheduled_at
            first.send_signal(signal.SIGTERM)
            out, err = first.communicate(timeout=20)
            assert first.returncode == 0, err
            assert "served first" in out
            after_stop = client.run(record.id)
            assert after_stop.status is RunStatus.RETRYING
            assert after_stop.scheduled_at == pytest.approx(due)
            assert lines(tmp_path / "attempts.txt")[0].startswith("1 ")
            assert len(lines(tmp_path / "attempts.txt")) == 1
            restarted_at = time.time()
            second = run_script(tmp_path, RETRY_SCRIPT, "second", timeout=30)
            assert second.returncode == 0, second.stderr
            done = client.run(record.id)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == 2
    assert attempts_of(done) == ["failed", "succeeded"]
    attempt_two = floats(tmp_path / "attempts.txt")[1]
    assert restarted_at < due, "the restart came after the due time: the test proves less than it should"
    assert attempt_two >= due - EARLY, f"attempt 2 ran {due - attempt_two:.3f} s before its due time"
    assert done.attempt_log[1].started_at >= due - EARLY


# == the retry decorator on plain functions ========================================================


def test_retry_decorator_retries_a_sync_function_with_the_policys_delays():
    delays: list[float] = []
    calls: list[int] = []

    @retry(attempts=3, backoff="fixed", base="50ms", sleep=delays.append)
    def sometimes(x: int) -> str:
        """Docstring kept."""
        calls.append(x)
        if len(calls) < 3:
            raise OSError("try again")
        return f"ok {x}"

    assert sometimes(7) == "ok 7"
    assert calls == [7, 7, 7]
    assert delays == [pytest.approx(0.05), pytest.approx(0.05)]
    assert sometimes.__name__ == "sometimes" and sometimes.__doc__ == "Docstring kept."


def test_retry_decorator_exponential_delays_and_the_last_error_propagates():
    delays: list[float] = []

    @retry(attempts=4, backoff="exponential", base="100ms", sleep=delays.append)
    def always() -> None:
        raise OSError(f"failure {len(delays) + 1}")

    with pytest.raises(OSError, match="failure 4"):
        always()
    assert delays == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.4)]


def test_retry_decorator_does_not_retry_what_retry_on_excludes():
    delays: list[float] = []
    calls = []

    @retry(attempts=5, backoff="immediate", retry_on=(KeyError,), sleep=delays.append)
    def wrong() -> None:
        calls.append(1)
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        wrong()
    assert len(calls) == 1 and delays == []

    @retry(attempts=3, backoff="fixed", base="1s", retry_on=lambda exc: "again" in str(exc), sleep=delays.append)
    def judged_locally() -> None:
        calls.append(2)
        raise RuntimeError("again" if len(calls) < 3 else "stop")

    with pytest.raises(RuntimeError, match="stop"):
        judged_locally()
    assert calls == [1, 2, 2] and delays == [1.0]


def test_retry_decorator_retries_an_async_function():
    delays: list[float] = []
    calls = []

    @retry(attempts=3, backoff="linear", base="10ms", sleep=delays.append)
    async def flaky_async(x: int) -> int:
        await asyncio.sleep(0)
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return x * 2

    assert asyncio.iscoroutinefunction(flaky_async)
    assert asyncio.run(flaky_async(21)) == 42
    assert calls == [21, 21, 21]
    assert delays == [pytest.approx(0.01), pytest.approx(0.02)]


def test_retry_decorator_async_without_a_fake_sleeps_on_the_event_loop():
    calls = []

    @retry(attempts=3, backoff="fixed", base="30ms")
    async def flaky_async() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return "ok"

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:  # the loop stays free while the retry waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        other = asyncio.create_task(ticker())
        result = await flaky_async()
        other.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == "ok"
    assert calls[1] - calls[0] >= 0.025 and calls[2] - calls[1] >= 0.025
    assert ticks >= 3


# == priority ===================================================================================


def test_priorities_order_runs_and_fifo_holds_within_one_priority(db: str, tmp_path: Path):
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.CRITICAL
    sup = Supervisor([append_tag, urgent_tag], workers=1, store=db)
    plan = [("a0", Priority.LOW), ("a1", None), ("a2", Priority.HIGH), ("a3", Priority.CRITICAL),
            ("a4", Priority.NORMAL), ("a5", Priority.LOW), ("a6", Priority.HIGH), ("a7", 7), ("a8", None)]
    handles = {}
    for tag, prio in plan:
        handles[tag] = sup.submit(append_tag, task(tmp_path, tag), priority=prio)
    handles["u0"] = sup.submit(urgent_tag, task(tmp_path, "u0"))  # the job's default: HIGH
    handles["u1"] = sup.submit(urgent_tag, task(tmp_path, "u1"), priority=Priority.LOW)  # per submit wins
    assert handles["u0"].record().priority == Priority.HIGH
    assert handles["u1"].record().priority == Priority.LOW
    assert handles["a1"].record().priority == Priority.NORMAL
    sup.serve(until="drained")
    expected = ["a3", "a2", "a6", "u0", "a7", "a1", "a4", "a8", "a0", "a5", "u1"]
    assert lines(tmp_path / "order.txt") == expected
    sup.close()


def test_fifo_within_one_priority_over_many_runs(db: str, tmp_path: Path):
    sup = Supervisor([append_tag], workers=1, store=db)
    for i in range(30):
        sup.submit(append_tag, task(tmp_path, f"r{i:02d}"))
    sup.submit_many(append_tag, [task(tmp_path, f"s{i:02d}") for i in range(30)])
    sup.serve(until="drained")
    assert lines(tmp_path / "order.txt") == [f"r{i:02d}" for i in range(30)] + [f"s{i:02d}" for i in range(30)]
    sup.close()


# == delayed runs =================================================================================


def test_delay_and_at_hold_a_run_until_it_is_due(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    with serving(sup):
        submitted = time.time()
        delayed = sup.submit(stamp, task(tmp_path, "delayed"), delay="300ms")
        at = datetime.now(UTC) + timedelta(milliseconds=500)
        timed = sup.submit(stamp, task(tmp_path, "at"), at=at)
        now = sup.submit(stamp, task(tmp_path, "now"))
        assert delayed.record().scheduled_at == pytest.approx(submitted + 0.3, abs=0.05)
        assert timed.record().scheduled_at == pytest.approx(at.timestamp(), abs=0.001)
        assert now.result(timeout=10) < submitted + 0.3
        assert delayed.result(timeout=10) >= submitted + 0.3 - EARLY
        assert delayed.result() >= delayed.record().scheduled_at - EARLY
        assert timed.result(timeout=10) >= at.timestamp() - EARLY
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["now", "delayed", "at"]
    with pytest.raises(ValueError):
        sup.submit(stamp, task(tmp_path), delay="1s", at=at)
    with pytest.raises(ValueError, match="soon"):
        sup.submit(stamp, task(tmp_path), delay="soon")


def test_serve_until_drained_waits_for_delayed_runs(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    handle = sup.submit(stamp, task(tmp_path, "delayed"), delay="400ms")
    due = handle.record().scheduled_at
    sup.serve(until="drained")
    assert handle.status() is RunStatus.SUCCEEDED
    assert handle.result() >= due - EARLY
    sup.close()


def test_due_runs_of_one_priority_go_in_order_of_their_due_time(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    delayed = sup.submit(stamp, task(tmp_path, "delayed"), delay="200ms")  # lower id, due later
    sup.submit(stamp, task(tmp_path, "plain"))
    wait_until(lambda: time.time() > delayed.record().scheduled_at + 0.05, what="both runs to be due")
    sup.serve(until="drained")
    sup.close()
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["plain", "delayed"]


def test_a_delayed_run_is_durable_across_a_restart_and_not_run_before_its_time(db: str, tmp_path: Path):
    first = Supervisor([stamp], workers=1, store=db)
    with serving(first):
        warmup = first.submit(stamp, task(tmp_path, "warmup"))
        assert warmup.result(timeout=10) > 0
        delayed = first.submit(stamp, task(tmp_path, "delayed"), delay="2s")
        due = delayed.record().scheduled_at
    # the first supervisor is stopped: the run waits in the store, not run yet
    with Client(store=db) as client:
        record = client.run(delayed.id)
        assert record.status is RunStatus.QUEUED and record.scheduled_at == pytest.approx(due)
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["warmup"]
    assert time.time() < due, "the restart came after the due time: the test proves less than it should"
    second = Supervisor([stamp], workers=1, store=db)
    second.serve(until="drained")
    record = second.run(delayed.id)
    assert record.status is RunStatus.SUCCEEDED
    assert second.handle(delayed.id).result() >= due - EARLY
    assert record.attempt_log[0].started_at >= due - EARLY
    second.close()


# == cron ========================================================================================


def _minute(t: float) -> float:
    return t // 60 * 60


def test_cron_catch_up_submits_one_run_for_missed_ticks_and_never_twice(db: str):
    if time.time() % 60 > 50:  # keep the whole test inside one cron minute
        wait_until(lambda: time.time() % 60 < 50, timeout=12, interval=0.1, what="a fresh minute")
    store = SQLiteStore(db)
    store.set_cron("every_minute", time.time() - 600)  # ten missed ticks
    store.close()
    before = time.time()
    sup = Supervisor([every_minute], workers=1, store=db)
    sup.serve(until="drained")
    after = time.time()
    runs = sup.runs(job="every_minute")
    assert len(runs) == 1, [(r.id, r.key) for r in runs]
    tick = _minute(before)
    assert _minute(after) == tick
    assert runs[0].key == f"cron:{tick:.0f}"
    assert runs[0].status is RunStatus.SUCCEEDED
    assert runs[0].result == f"tick {runs[0].id}"
    assert sup.store.cron_last("every_minute") == pytest.approx(tick)
    sup.close()

    # a second start in the same minute submits nothing more
    again = Supervisor([every_minute], workers=1, store=db)
    again.serve(until="drained")
    assert [r.id for r in again.runs(job="every_minute")] == [runs[0].id]
    again.close()

    # even told that the tick is still due, the key "cron:<tick>" keeps it from running twice
    store = SQLiteStore(db)
    store.set_cron("every_minute", time.time() - 600)
    store.close()
    third = Supervisor([every_minute], workers=1, store=db)
    third.serve(until="drained")
    assert [r.id for r in third.runs(job="every_minute")] == [runs[0].id]
    third.close()
    assert _minute(time.time()) == tick, "the minute changed during the test"


def test_the_first_serve_of_a_cron_job_starts_from_now_without_a_run(db: str):
    sup = Supervisor([every_minute], workers=1, store=db)
    before = time.time()
    sup.serve(until="drained")
    assert sup.runs(job="every_minute") == [] or _minute(time.time()) != _minute(before)
    last = sup.store.cron_last("every_minute")
    assert last is not None and before - 1 <= last <= time.time()
    sup.close()


def test_a_malformed_cron_expression_raises_value_error_naming_it():
    def fn(tick: Tick) -> None: ...

    for bad in ("not a cron", "61 * * * *", "* * *"):
        with pytest.raises(ValueError, match="cron") as info:
            job(cron=bad)(fn)
        assert bad in str(info.value)


def test_a_cron_job_whose_model_lacks_defaults_raises_value_error():
    def fn(value: NoDefaults) -> None: ...

    with pytest.raises(ValueError, match="default"):
        job(cron="* * * * *")(fn)


# == concurrency and rate limits ==================================================================


def test_concurrency_one_never_overlaps_while_other_jobs_flow_past_its_backlog(db: str, tmp_path: Path):
    sup = Supervisor([solo, free], workers=2, store=db)
    sup.submit_many(solo, [task(tmp_path, f"s{i}") for i in range(4)])
    sup.submit_many(free, [task(tmp_path, f"f{i}") for i in range(8)])
    sup.serve(until="drained")
    spans = sorted(tuple(map(float, line.split())) for line in lines(tmp_path / "solo.txt"))
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.002, f"runs of a concurrency=1 job overlapped: {spans}"
    frees = floats(tmp_path / "free.txt")
    assert len(frees) == 8
    assert max(frees) < spans[-1][0], "the other job's runs waited behind the limited job's backlog"
    assert sup.stats()["jobs"] == {"solo": {"succeeded": 4}, "free": {"succeeded": 8}}
    sup.close()


def test_a_rate_limit_spaces_out_starts(db: str, tmp_path: Path):
    sup = Supervisor([rated], workers=2, store=db)
    handles = sup.submit_many(rated, [task(tmp_path, str(i)) for i in range(10)])
    sup.serve(until="drained")
    assert len(lines(tmp_path / "rated.txt")) == 10
    # the limiter controls when runs are handed out (an attempt starts when it is claimed); inside
    # the workers the first starts also wait for the workers to boot
    starts = sorted(sup.run(h.id).attempt_log[0].started_at for h in handles)
    # at most 5 starts in any window of a second (a little under, for the two clocks' skew)
    busiest = max(sum(1 for u in starts if t <= u < t + 0.95) for t in starts)
    assert busiest == 5, f"{busiest} of 10 runs at 5/s started within one second: {starts}"
    assert 0.95 <= starts[-1] - starts[0] < 6
    sup.close()


# == unique runs and idempotency keys ===============================================================


def test_unique_returns_the_live_run_and_a_new_one_once_it_finished(db: str, tmp_path: Path):
    sup = Supervisor([uniq], workers=1, store=db)
    one = sup.submit(uniq, task(tmp_path, n=1))
    same = sup.submit(uniq, {"dir": str(tmp_path), "n": 1})
    other = sup.submit(uniq, task(tmp_path, n=2))
    assert same.id == one.id
    assert other.id != one.id
    sup.serve(until="drained")
    assert one.result(timeout=5) == 1 and other.result(timeout=5) == 2
    later = sup.submit(uniq, task(tmp_path, n=1))
    assert later.id not in (one.id, other.id)
    sup.serve(until="drained")
    assert later.result(timeout=5) == 1
    assert len(sup.runs(job="uniq")) == 3
    sup.close()


def test_a_key_returns_the_same_handle_for_the_stores_lifetime(db: str, tmp_path: Path):
    sup = Supervisor([keyed], workers=1, store=db)
    first = sup.submit(keyed, task(tmp_path, n=1), key="abc")
    again = sup.submit(keyed, task(tmp_path, n=2), key="abc")
    other = sup.submit(keyed, task(tmp_path, n=3), key="xyz")
    assert again.id == first.id and other.id != first.id
    sup.serve(until="drained")
    assert first.result(timeout=5) == 1
    after = sup.submit(keyed, task(tmp_path, n=4), key="abc")
    assert after.id == first.id and after.result(timeout=5) == 1
    assert sup.run(first.id).key == "abc"
    sup.close()
    reopened = Supervisor([keyed], workers=1, store=db)
    assert reopened.submit(keyed, task(tmp_path, n=5), key="abc").id == first.id
    assert len(reopened.runs(job="keyed")) == 2
    reopened.close()


# == ctx.step ======================================================================================


def test_a_retry_skips_completed_steps_and_gets_their_stored_values(db: str, tmp_path: Path):
    sup = Supervisor([staged], workers=1, store=db)
    handle = sup.submit(staged, task(tmp_path))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == {"total": 42, "items_type": "list", "attempt": 2}
    assert len(lines(tmp_path / "first-calls.txt")) == 1, "the first step ran again on the retry"
    assert len(lines(tmp_path / "second-calls.txt")) == 1
    record = sup.run(handle.id, attempts=True)
    assert attempts_of(record) == ["failed", "succeeded"]
    assert record.steps == {"first": {"value": 41, "items": [1, 2]}, "second": 1}
    sup.close()


def test_a_step_name_used_twice_fails_the_run_naming_the_step(db: str, tmp_path: Path):
    sup = Supervisor([step_twice], workers=1, store=db)
    handle = sup.submit(step_twice, task(tmp_path))
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as info:
        handle.result(timeout=5)
    assert info.value.error_type == "ValueError"
    assert "dup-step" in (info.value.message or "")
    sup.close()


STEPS_SCRIPT = """
import os, sys, time
from pydantic import BaseModel
from actors import Context, Retry, Supervisor, job

class Task(BaseModel):
    dir: str

def first_stage(directory):
    with open(os.path.join(directory, "first-calls.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return {"value": 42}

@job(retry=Retry(attempts=2, backoff="immediate"))
def durable_steps(t: Task, ctx: Context) -> dict:
    first = ctx.step("first", lambda: first_stage(t.dir))
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(t.dir, "go")) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = ctx.step("second", lambda: ctx.attempt)
    return {"first": first, "second": second, "attempt": ctx.attempt}

if __name__ == "__main__":
    sup = Supervisor([durable_steps], workers=1, store="runs.db")
    if sys.argv[1] == "first":
        handle = sup.submit(durable_steps, {"dir": os.getcwd()})
        print("submitted", handle.id, flush=True)
        sup.serve()
    else:
        sup.serve(until="drained")
    sup.close()
"""


def test_completed_steps_survive_a_kill_9_of_the_supervisor(tmp_path: Path, db: str):
    first = start_script(tmp_path, STEPS_SCRIPT, "first")
    try:
        with Client(store=db) as client:
            wait_until(lambda: client.runs(status="running") and client.run(1).steps, timeout=20,
                       what="the first step to be stored")
            assert client.run(1).steps == {"first": {"value": 42}}
            children = live_descendants(first.pid)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            _, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, f"processes outlived their supervisor: {alive}"
            (tmp_path / "go").touch()
            second = run_script(tmp_path, STEPS_SCRIPT, "second", timeout=30)
            assert second.returncode == 0, second.stderr
            record = client.run(1)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert record.status is RunStatus.SUCCEEDED
    assert record.result == {"first": {"value": 42}, "second": 2, "attempt": 2}
    assert attempts_of(record) == ["interrupted", "succeeded"]
    assert len(lines(tmp_path / "first-calls.txt")) == 1, "the first step ran again after the restart"


# == progress, metadata, logs ======================================================================


def test_progress_and_metadata_are_visible_while_the_run_is_running(db: str, tmp_path: Path):
    sup = Supervisor([reporter], workers=1, store=db)
    with serving(sup):
        handle = sup.submit(reporter, task(tmp_path))
        record = wait_until(lambda: (r := sup.run(handle.id)).metadata.get("pages") == 4 and r, timeout=15,
                            what="progress and metadata to be stored")
        assert record.status is RunStatus.RUNNING
        assert record.progress == 0.5 and record.progress_message == "halfway"
        assert record.metadata == {"stage": "resize", "pages": 4}
        with Client(store=db) as client:
            seen = client.run(handle.id)
            assert seen.status is RunStatus.RUNNING
            assert (seen.progress, seen.progress_message, seen.metadata) == (0.5, "halfway",
                                                                              {"stage": "resize", "pages": 4})
        assert handle.status() is RunStatus.RUNNING
        assert handle.progress() == (0.5, "halfway")
        (tmp_path / "go").touch()
        assert handle.result(timeout=15) == "done"


def test_ctx_log_records_carry_run_id_job_and_attempt(db: str, tmp_path: Path):
    sup = Supervisor([chatty], workers=1, store=db)
    handle = sup.submit(chatty, task(tmp_path, "page-7"))
    sup.serve(until="drained")
    assert handle.result(timeout=5) == "ok"
    assert lines(tmp_path / "log.txt") == [
        f"{handle.id}|chatty|1|INFO|working on page-7",
        f"{handle.id}|chatty|2|INFO|working on page-7",
    ]
    sup.close()


# == cancellation =================================================================================


def test_cancelling_a_cooperative_running_run_ends_it_cancelled_soon(db: str, tmp_path: Path):
    sup = Supervisor([cooperative, double], workers=1, store=db, kill_grace="10s")
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        asked = time.monotonic()
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        assert time.monotonic() - asked < 5, "the run was killed, not stopped cooperatively"
        assert lines(tmp_path / "coop.txt") == ["started", "returned"]
        record = sup.run(handle.id)
        assert record.status is RunStatus.CANCELLED
        assert attempts_of(record) == ["cancelled"]
        assert sup.submit(double, task(tmp_path, n=4)).result(timeout=10) == 8


def test_a_cancelled_run_that_returned_anyway_stores_no_output(db: str, tmp_path: Path):
    sup = Supervisor([cooperative], workers=1, store=db, kill_grace="10s")
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        handle.cancel()
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        record = sup.run(handle.id)
    assert record.status is RunStatus.CANCELLED
    assert record.output is None, f"a cancelled run stored the output {record.output!r}"


def test_cancelling_an_uncooperative_run_kills_it_after_kill_grace(db: str, tmp_path: Path):
    sup = Supervisor([stubborn, double], workers=1, store=db, kill_grace="300ms")
    with serving(sup):
        handle = sup.submit(stubborn, task(tmp_path))
        pid = int(wait_until(lambda: lines(tmp_path / "stubborn.txt"), what="the run to start")[0])
        asked = time.monotonic()
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        assert time.monotonic() - asked < 5
        record = sup.run(handle.id)
        assert record.status is RunStatus.CANCELLED
        assert attempts_of(record) == ["cancelled"]
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   what="the worker to be killed")
        assert sup.submit(double, task(tmp_path, n=5)).result(timeout=10) == 10  # a new worker serves


def test_cancelling_a_queued_run_is_immediate_and_it_never_runs(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    doomed = sup.submit(stamp, task(tmp_path, "doomed"))
    kept = sup.submit(stamp, task(tmp_path, "kept"))
    assert doomed.cancel() is True
    assert doomed.status() is RunStatus.CANCELLED
    with pytest.raises(RunCancelled):
        doomed.result(timeout=1)
    sup.serve(until="drained")
    assert kept.result(timeout=5) > 0
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["kept"]
    assert doomed.cancel() is False  # no longer live
    assert kept.cancel() is False
    record = sup.run(doomed.id)
    assert record.status is RunStatus.CANCELLED and record.attempt_log == []
    sup.close()


def test_cancelling_a_delayed_run_while_serving_is_immediate(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    with serving(sup):
        handle = sup.submit(stamp, task(tmp_path, "later"), delay="2s")
        assert handle.cancel() is True
        assert handle.status() is RunStatus.CANCELLED
        with pytest.raises(RunCancelled):
            handle.result(timeout=1)
        assert sup.submit(stamp, task(tmp_path, "now")).result(timeout=10) > 0
    assert [line.split()[0] for line in lines(tmp_path / "stamps.txt")] == ["now"]


# == events =======================================================================================


def _recorder(sup: Supervisor) -> list[tuple[str, int, RunStatus]]:
    events: list[tuple[str, int, RunStatus]] = []
    for name in ("submitted", "started", "succeeded", "failed", "retrying", "timed_out", "cancelled"):
        sup.on(name, lambda record, name=name: events.append((name, record.id, record.status)))
    return events


def test_events_deliver_run_records_in_order_and_a_raising_callback_changes_nothing(db: str, tmp_path: Path):
    sup = Supervisor([double, explode, fails_once, overstays], workers=2, store=db, kill_grace="200ms")
    records: list[Any] = []

    def boom(record: RunRecord) -> None:
        records.append(record)
        raise RuntimeError("a callback that raises")

    sup.on("succeeded", boom)  # registered first: the recorder still hears every event after it
    sup.on("started", boom)
    events = _recorder(sup)
    ok = sup.submit(double, task(tmp_path, n=2))
    bad = sup.submit(explode, task(tmp_path, n=3))
    flaky = sup.submit(fails_once, task(tmp_path))
    slow = sup.submit(overstays, task(tmp_path))
    more = sup.submit_many(double, [task(tmp_path, n=i) for i in range(5)])
    sup.serve(until="drained")
    assert ok.result(timeout=5) == 4 and [h.result(timeout=5) for h in more] == [0, 2, 4, 6, 8]
    assert all(isinstance(r, RunRecord) for r in records)
    for _, _, status in events:
        assert isinstance(status, RunStatus)

    def of(run_id: int) -> list[tuple[str, RunStatus]]:
        return [(name, status) for name, rid, status in events if rid == run_id]

    q, r = RunStatus.QUEUED, RunStatus.RUNNING
    assert of(ok.id) == [("submitted", q), ("started", r), ("succeeded", RunStatus.SUCCEEDED)]
    assert of(bad.id) == [("submitted", q), ("started", r), ("failed", RunStatus.FAILED)]
    assert of(flaky.id) == [("submitted", q), ("started", r), ("retrying", RunStatus.RETRYING), ("started", r),
                            ("succeeded", RunStatus.SUCCEEDED)]
    assert of(slow.id) == [("submitted", q), ("started", r), ("timed_out", RunStatus.TIMED_OUT)]
    for handle in more:
        assert [name for name, _ in of(handle.id)] == ["submitted", "started", "succeeded"]
    sup.close()


def test_a_cancelled_running_run_emits_cancelled(db: str, tmp_path: Path):
    sup = Supervisor([cooperative], workers=1, store=db, kill_grace="5s")
    events = _recorder(sup)
    with serving(sup):
        handle = sup.submit(cooperative, task(tmp_path))
        wait_until(lambda: lines(tmp_path / "coop.txt"), what="the run to start")
        handle.cancel()
        with pytest.raises(RunCancelled):
            handle.result(timeout=15)
        wait_until(lambda: any(name == "cancelled" for name, _, _ in events), what="the cancelled event")
    assert [(name, status) for name, rid, status in events if rid == handle.id] == [
        ("submitted", RunStatus.QUEUED), ("started", RunStatus.RUNNING), ("cancelled", RunStatus.CANCELLED)]


def test_a_cancelled_queued_run_emits_cancelled(db: str, tmp_path: Path):
    sup = Supervisor([stamp], workers=1, store=db)
    events = _recorder(sup)
    with serving(sup):
        handle = sup.submit(stamp, task(tmp_path), delay="5s")
        assert handle.cancel() is True
        with pytest.raises(RunCancelled):
            handle.result(timeout=5)
        assert sup.submit(stamp, task(tmp_path)).result(timeout=10) > 0  # a later loop turn has passed
    assert [name for name, rid, _ in events if rid == handle.id] == ["submitted", "cancelled"]


def test_an_unknown_event_name_raises_value_error(db: str):
    sup = Supervisor([double], workers=1, store=db)
    with pytest.raises(ValueError, match="finished"):
        sup.on("finished", lambda record: None)
    with pytest.raises(TypeError):
        sup.on("succeeded", "not callable")  # type: ignore[arg-type]
    sup.close()


# == hooks and per-worker setup ===================================================================


def test_before_and_after_run_hooks_run_in_the_worker_around_each_attempt(db: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([hooked], workers=1, store=db)
    good = sup.submit(hooked, task(tmp_path, "ok", n=5))
    bad = sup.submit(hooked, task(tmp_path, "fail"))
    sup.serve(until="drained")
    assert good.result(timeout=5) == 5
    with pytest.raises(RunFailed):
        bad.result(timeout=5)
    seen = [line.split() for line in lines(tmp_path / "hooks.txt")]
    pid = seen[0][3]
    assert pid != str(os.getpid())
    assert seen == [
        ["before", str(good.id), "1", pid], ["body", str(good.id), "1", pid], ["after", str(good.id), "1", pid, "None"],
        ["before", str(bad.id), "1", pid], ["body", str(bad.id), "1", pid],
        ["after", str(bad.id), "1", pid, "ValueError"],
    ]
    sup.close()


def test_setup_runs_once_per_worker_and_is_the_contexts_resource(db: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([use_resource], workers=2, store=db)
    handles = sup.submit_many(use_resource, [task(tmp_path, n=i) for i in range(12)])
    sup.serve(until="drained")
    results = [h.result(timeout=5) for h in handles]
    setups = lines(tmp_path / "setup.txt")
    assert len(setups) == len(set(setups)) == 2, setups  # once per worker process
    for result in results:
        assert result["resource"] == {"pid": result["pid"], "token": "R"}
        assert str(result["pid"]) in setups
    sup.close()


def test_setup_runs_again_in_a_replacement_worker(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    sup = Supervisor([use_resource], workers=1, store=db)
    with serving(sup):
        before = sup.submit(use_resource, task(tmp_path)).result(timeout=10)
        old_pid = before["pid"]
        assert lines(tmp_path / "setup.txt") == [str(old_pid)]
        os.kill(old_pid, signal.SIGKILL)
        setups = wait_until(lambda: len(lines(tmp_path / "setup.txt")) == 2 and lines(tmp_path / "setup.txt"),
                            what="the replacement worker's setup")
        new_pid = int(setups[1])
        assert new_pid != old_pid
        after = sup.submit(use_resource, task(tmp_path)).result(timeout=10)
        assert after == {"resource": {"pid": new_pid, "token": "R"}, "pid": new_pid}
    assert lines(tmp_path / "setup.txt") == [str(old_pid), str(new_pid)]


def test_a_runs_timeout_does_not_count_the_workers_setup(db: str, tmp_path: Path):
    sup = Supervisor([after_slow_setup], workers=1, store=db)
    handle = sup.submit(after_slow_setup, task(tmp_path))
    sup.serve(until="drained")
    record = sup.run(handle.id)
    sup.close()
    assert record.status is RunStatus.SUCCEEDED, f"{record.status}: {record.message}"
    assert record.result == "loaded"


# == inspection ===================================================================================


def test_runs_run_and_stats_inspect_the_store(db: str, tmp_path: Path):
    sup = Supervisor([double, explode, with_step], workers=2, store=db)
    oks = sup.submit_many(double, [task(tmp_path, n=i) for i in range(5)])
    bads = sup.submit_many(explode, [task(tmp_path, n=i) for i in range(3)])
    stepped = sup.submit(with_step, task(tmp_path, n=9))
    sup.serve(until="drained")
    ok_ids = [h.id for h in oks]
    newest_first = sorted(ok_ids, reverse=True)
    assert [r.id for r in sup.runs(status="succeeded", job="double")] == newest_first
    assert [r.id for r in sup.runs(status=RunStatus.SUCCEEDED, job="double", limit=2, offset=1)] == newest_first[1:3]
    assert [r.id for r in sup.runs(status="failed")] == sorted((h.id for h in bads), reverse=True)
    assert sup.runs(status="running") == []
    assert len(sup.runs()) == 9 and len(sup.runs(limit=4)) == 4
    assert {r.job for r in sup.runs(job="explode")} == {"explode"}
    with Client(store=db) as client:
        assert [r.id for r in client.runs(status="succeeded", job="double", limit=2, offset=1)] == newest_first[1:3]
        assert [r.id for r in client.runs(job="explode")] == sorted((h.id for h in bads), reverse=True)
        assert client.run(stepped.id).steps == {"load": {"k": 9}}
    record = sup.run(stepped.id, attempts=True)
    assert record.result == 9
    assert record.steps == {"load": {"k": 9}}
    assert len(record.attempt_log) == 1
    attempt = record.attempt_log[0]
    assert attempt.number == 1 and attempt.outcome is Outcome.SUCCEEDED
    assert attempt.worker_pid and attempt.worker_pid != os.getpid()
    assert attempt.started_at <= attempt.finished_at
    failed = sup.run(bads[0].id)
    assert failed.attempt_log[0].error_type == "ValueError" and "cannot handle 0" in failed.attempt_log[0].message
    stats = sup.stats()
    assert stats["jobs"] == {"double": {"succeeded": 5}, "explode": {"failed": 3}, "with_step": {"succeeded": 1}}
    assert stats["queued"] == 0 and stats["live"] == 0
    sup.close()


# == versions ====================================================================================


def test_versions_are_stored_and_min_version_cancels_older_runs(db: str, tmp_path: Path):
    old = Supervisor([versioned_v1], workers=1, store=db)
    stale = old.submit(versioned_v1, task(tmp_path, "old", n=1))
    assert stale.record().version == 1
    old.close()
    new = Supervisor([versioned_v2], workers=1, store=db)
    fresh = new.submit(versioned_v2, task(tmp_path, "new", n=2))
    assert fresh.record().version == 2
    new.serve(until="drained")
    assert fresh.result(timeout=5) == 2
    with pytest.raises(RunCancelled):
        new.handle(stale.id).result(timeout=5)
    record = new.run(stale.id)
    assert record.status is RunStatus.CANCELLED
    assert record.error_type and record.message and "min_version" in record.message
    assert [line.split()[0] for line in lines(tmp_path / "versioned.txt")] == ["new"]
    new.close()


# == result size ==================================================================================


def test_a_result_over_max_result_size_fails_that_run_only(db: str, tmp_path: Path):
    sup = Supervisor([big], workers=1, store=db, max_result_size="1MB")
    huge = sup.submit(big, task(tmp_path, n=2_000_000))
    small = [sup.submit(big, task(tmp_path, n=i)) for i in (1, 10, 100)]
    sup.serve(until="drained")
    with pytest.raises(RunFailed) as info:
        huge.result(timeout=5)
    assert info.value.error_type == "ResultTooLarge"
    assert sup.run(huge.id).output is None
    assert [h.result(timeout=5) for h in small] == ["x", "x" * 10, "x" * 100]
    sup.close()

