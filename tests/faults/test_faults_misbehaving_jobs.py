"""The catalogue of misbehaving jobs, run as a table: each costs only its own run, ends with a
message naming what happened, and good runs beside it (before it and after it, on the same
pool) succeed. A worker that exits without reporting is never a success (invariant 4)."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import live_descendants
from pydantic import BaseModel

from actors import Outcome, RunFailed, RunStatus, RunTimedOut, Supervisor, job


class Empty(BaseModel):
    pass


class Num(BaseModel):
    n: int


class Made(BaseModel):
    size: int


# -- the misbehaving jobs ---------------------------------------------------------------------


@job(timeout="10s")
def exit_3(_: Empty) -> int:
    os._exit(3)


@job(timeout="10s")
def exit_0(_: Empty) -> int:
    os._exit(0)


@job(timeout="10s")
def segfault(_: Empty) -> int:
    ctypes.string_at(0)
    return 1


@job(timeout="10s")
def sigkill_self(_: Empty) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
    return 1


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@job(timeout="10s")
def raise_unprintable(_: Empty) -> int:
    raise Unprintable()


@job(timeout="10s")
def return_lambda(_: Empty) -> Any:
    return lambda: 1


@job(timeout="10s")
def return_bad_output(_: Empty) -> Made:
    return {"size": "not a number"}  # type: ignore[return-value]


@job(timeout="10s")
def close_all_fds(_: Empty) -> int:
    os.closerange(3, 1024)
    time.sleep(0.3)
    return 1


@job(timeout="1s")
def stop_self(_: Empty) -> int:
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen: only the SIGKILL after kill_grace can end it
    return 1


@job(timeout="1s")
def own_sigterm_handler(_: Empty) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # swallows the polite kill
    while True:
        time.sleep(0.05)


@job(timeout="1s")
def sigterm_handler_reports(_: Empty) -> int:
    """Turns the timeout's SIGTERM into a normal exception: its `Failed` races the kill and must lose."""

    def stop(signum: int, frame: Any) -> None:
        raise RuntimeError("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(0.05)


@job(timeout="10s")
def leave_sigterm_handler(_: Empty) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    raise RuntimeError("installed a SIGTERM handler and failed")


@job(timeout="10s")
def change_directory(_: Empty) -> str:
    os.chdir("/")
    raise RuntimeError("changed directory to / and failed")


@job(timeout="10s")
def raise_system_exit(_: Empty) -> int:
    raise SystemExit(3)


@job(timeout="10s")
def raise_keyboard_interrupt(_: Empty) -> int:
    raise KeyboardInterrupt()


# -- the good job beside them -----------------------------------------------------------------


@job(timeout="10s")
def good(num: Num) -> list[Any]:
    """Reports what a well-behaved run sees: its number, the working directory, SIGTERM's disposition."""
    time.sleep(0.01)
    handler = signal.getsignal(signal.SIGTERM)
    return [num.n, os.getcwd(), handler == signal.SIG_DFL]


JOBS = [exit_3, exit_0, segfault, sigkill_self, raise_unprintable, return_lambda, return_bad_output, close_all_fds,
        stop_self, own_sigterm_handler, sigterm_handler_reports, leave_sigterm_handler, change_directory, raise_system_exit, raise_keyboard_interrupt,
        good]


@dataclass
class Case:
    job: Any
    status: RunStatus
    outcome: Outcome
    error_type: str
    message: tuple[str, ...]  # substrings the message must contain
    exit_code: int | None = None
    signal: int | None = None
    marks: list[Any] = field(default_factory=list)


CASES = {
    "os._exit(3)": Case(exit_3, RunStatus.FAILED, Outcome.CRASHED, "WorkerCrashed",
                        ("exited with code 3", "without reporting a result"), exit_code=3),
    "os._exit(0)": Case(exit_0, RunStatus.FAILED, Outcome.CRASHED, "WorkerCrashed",
                        ("exited with code 0", "without reporting a result"), exit_code=0),
    "SIGSEGV": Case(segfault, RunStatus.FAILED, Outcome.CRASHED, "WorkerCrashed", ("SIGSEGV",),
                    signal=signal.SIGSEGV),
    "SIGKILL self": Case(sigkill_self, RunStatus.FAILED, Outcome.CRASHED, "WorkerCrashed", ("SIGKILL",),
                         signal=signal.SIGKILL),
    "exception whose __str__ raises": Case(raise_unprintable, RunStatus.FAILED, Outcome.FAILED, "Unprintable",
                                           ("str() of the exception failed",)),
    "unserializable output": Case(return_lambda, RunStatus.FAILED, Outcome.FAILED, "OutputSerializationError",
                                  ("cannot be serialized",)),
    "output violating its model": Case(return_bad_output, RunStatus.FAILED, Outcome.FAILED, "OutputValidationError",
                                       ("does not match Made", "size")),
    "closes all fds": Case(close_all_fds, RunStatus.FAILED, Outcome.CRASHED, "WorkerCrashed",
                           ("closed its pipe", "without reporting a result")),
    "SIGSTOP self": Case(stop_self, RunStatus.TIMED_OUT, Outcome.TIMED_OUT, "RunTimedOut", ("timed out",),
                         signal=signal.SIGKILL),
    "own SIGTERM handler": Case(own_sigterm_handler, RunStatus.TIMED_OUT, Outcome.TIMED_OUT, "RunTimedOut",
                                ("timed out",), signal=signal.SIGKILL),
    "SIGTERM handler raises": Case(sigterm_handler_reports, RunStatus.TIMED_OUT, Outcome.TIMED_OUT, "RunTimedOut",
                                   ("timed out",)),
    "leaves a SIGTERM handler behind": Case(
        leave_sigterm_handler, RunStatus.FAILED, Outcome.FAILED, "RuntimeError", ("installed a SIGTERM handler",)),
    "changes directory": Case(
        change_directory, RunStatus.FAILED, Outcome.FAILED, "RuntimeError", ("changed directory",)),
    "SystemExit": Case(raise_system_exit, RunStatus.FAILED, Outcome.FAILED, "SystemExit", ("3",)),
    "KeyboardInterrupt": Case(raise_keyboard_interrupt, RunStatus.FAILED, Outcome.FAILED, "KeyboardInterrupt", ()),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", [pytest.param(name, marks=case.marks) for name, case in CASES.items()])
def test_misbehaving_job_costs_only_its_own_run(name: str, db: str) -> None:
    case = CASES[name]
    # One worker: the good runs after the bad one execute where it ran (or on its replacement),
    # so whatever it broke or left behind in the worker would show in them.
    sup = Supervisor(JOBS, workers=1, store=db, kill_grace=0.5)
    try:
        before = sup.submit_many(good, [{"n": n} for n in range(3)])
        bad = sup.submit(case.job, {})
        after = sup.submit_many(good, [{"n": n} for n in range(3, 10)])
        sup.serve(until="drained")
        record = sup.run(bad.id)
        good_records = [sup.run(h.id) for h in before + after]
        with pytest.raises(RunTimedOut if case.status is RunStatus.TIMED_OUT else RunFailed) as raised:
            bad.result(timeout=5)
    finally:
        sup.close()

    assert raised.value.error_type == case.error_type
    assert record.status is case.status, record
    assert record.attempts == 1 and len(record.attempt_log) == 1, record
    attempt = record.attempt_log[0]
    assert attempt.outcome is case.outcome, attempt
    assert record.error_type == attempt.error_type == case.error_type, attempt
    for needle in case.message:
        assert needle in (attempt.message or ""), attempt
        assert needle in (record.message or ""), record
    if case.exit_code is not None:
        assert attempt.exit_code == case.exit_code, attempt
    if case.signal is not None:
        assert attempt.signal == case.signal, attempt
    if case.outcome is Outcome.CRASHED:
        assert attempt.worker_pid is not None and str(attempt.worker_pid) in (attempt.message or ""), attempt

    assert [r.status for r in good_records] == [RunStatus.SUCCEEDED] * 10, good_records
    assert all(len(r.attempt_log) == 1 for r in good_records), "a good run needed a second attempt"
    outputs = [r.result for r in good_records]
    assert [out[0] for out in outputs] == list(range(10))
    assert {out[1] for out in outputs} == {os.getcwd()}, "a good run saw the bad run's working directory"
    assert all(out[2] for out in outputs), "a good run inherited the bad run's SIGTERM handler"
    assert live_descendants() == []


@pytest.mark.timeout(40)
def test_all_misbehaving_jobs_at_once_cost_only_their_own_runs(db: str) -> None:
    """The whole catalogue on two workers, interleaved with good runs that run beside them."""
    sup = Supervisor(JOBS, workers=2, store=db, kill_grace=0.5)
    try:
        bad = {}
        good_handles = sup.submit_many(good, [{"n": n} for n in range(4)])
        for name, case in CASES.items():
            bad[name] = sup.submit(case.job, {})
            good_handles += sup.submit_many(good, [{"n": n} for n in range(len(good_handles), len(good_handles) + 4)])
        started = time.monotonic()
        sup.serve(until="drained")
        elapsed = time.monotonic() - started
        records = {name: sup.run(h.id) for name, h in bad.items()}
        good_records = [sup.run(h.id) for h in good_handles]
    finally:
        sup.close()

    for name, case in CASES.items():
        record = records[name]
        assert (record.status, record.attempt_log[0].outcome, record.error_type) == (
            case.status, case.outcome, case.error_type), (name, record)
        assert record.attempts == 1, (name, record)
    assert [r.status for r in good_records] == [RunStatus.SUCCEEDED] * len(good_records), good_records
    assert [r.result[0] for r in good_records] == list(range(len(good_records)))
    assert all(len(r.attempt_log) == 1 for r in good_records), "a good run needed a second attempt"
    assert elapsed < 20, f"the catalogue took {elapsed:.1f} s"
    assert live_descendants() == []


class Pids(BaseModel):
    pids_file: str


@job(timeout="5s")
def fork_child_exits_the_python_way(paths: Pids) -> int:
    """Forks; the child ends with sys.exit() (SystemExit, not os._exit) and so unwinds into the worker."""
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        raise SystemExit(0)
    Path(paths.pids_file).write_text(f"{parent} {child}")
    os.waitpid(child, 0)
    return 7


@job(timeout="5s")
def my_pid(num: Num) -> int:
    return os.getpid()


@pytest.mark.timeout(30)
def test_forked_child_of_a_job_never_speaks_for_the_worker(db: str, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.txt"
    sup = Supervisor([fork_child_exits_the_python_way, my_pid], workers=1, store=db, kill_grace=0.5)
    try:
        bad = sup.submit(fork_child_exits_the_python_way, {"pids_file": str(pids_file)})
        after = sup.submit_many(my_pid, [{"n": n} for n in range(5)])
        sup.serve(until="drained")
        record = sup.run(bad.id)
        after_records = [sup.run(h.id) for h in after]
    finally:
        sup.close()

    worker, child = map(int, pids_file.read_text().split())
    # The job itself returned 7; whatever its child did, it is not the run's outcome.
    assert record.status is RunStatus.SUCCEEDED, record
    assert record.result == 7
    assert [r.status for r in after_records] == [RunStatus.SUCCEEDED] * 5, after_records
    # Later runs ran in a real worker (the one the attempt log names), never in the job's child.
    for r in after_records:
        assert r.result == r.attempt_log[0].worker_pid != child, r
    assert live_descendants() == []


def test_catalogue_runs_in_the_test_directory() -> None:
    """The good job compares working directories with this process's: make sure it is not '/'."""
    assert Path(os.getcwd()) != Path("/")
