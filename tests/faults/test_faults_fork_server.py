"""The fork server is no single point of failure: a job that kills or stops its worker's parent
(the fork server) costs nothing but that server, which is replaced.

Each row pairs a fault, done by a job to `os.getppid()` while another run executes beside it on
the second worker, with that other run: it executes exactly once and ends as it would have
anyway (a success, a timeout still enforced, a crash whose exit status is unknown). Runs after
it succeed on workers forked by a new fork server; serve(until="drained") returns; the old
fork server and every process the jobs ran in are gone afterwards.

Workers orphaned by a dead fork server are no longer descendants of this process, so every job
records its pid in a file and the test checks each one with psutil after close. A zombie whose
parent is not us counts as gone: reaping it is init's job (this container's init does not).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import live_descendants, wait_until
from pydantic import BaseModel

from actors import Outcome, RunStatus, Supervisor, job


class Where(BaseModel):
    dir: str


def _record(where: Where, name: str) -> None:
    """Note a process a job ran in (pids/<pid>) and one execution of `name` (appended)."""
    d = Path(where.dir)
    (d / "pids" / str(os.getpid())).write_text(str(os.getppid()))
    with open(d / f"{name}.log", "a") as f:
        f.write(f"{os.getpid()}\n")


def _await(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} never appeared")
        time.sleep(0.01)


def _hit_fork_server(where: Where, sig: int, wait: bool = True) -> int:
    """Wait for the run beside to start, send `sig` to the fork server, then (if `wait`) wait
    until the supervisor reaped it: so no later run is sent to this worker before the supervisor
    knows its fork server is gone (one that were would simply run here)."""
    _record(where, "fault")
    _await(Path(where.dir) / "started")
    server = os.getppid()
    os.kill(server, sig)
    (Path(where.dir) / "faulted").write_text(str(server))
    deadline = time.monotonic() + 10
    while wait and psutil.pid_exists(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    return server


@job(timeout="15s")
def kill_fork_server(where: Where) -> int:
    return _hit_fork_server(where, signal.SIGKILL)


@job(timeout="15s")
def stop_fork_server(where: Where) -> int:
    return _hit_fork_server(where, signal.SIGSTOP)


@job(timeout="15s")
def stop_fork_server_and_return(where: Where) -> int:
    return _hit_fork_server(where, signal.SIGSTOP, wait=False)


# -- the runs beside them -------------------------------------------------------------------------


@job(timeout="20s")
def slow(where: Where) -> int:
    """2.5 s of work that spans the fault."""
    _record(where, "beside")
    (Path(where.dir) / "started").touch()
    _await(Path(where.dir) / "faulted")
    time.sleep(2.5)
    return os.getpid()


@job(timeout="1s")
def hang(where: Where) -> int:
    """Never ends by itself: only the timeout's kill ends it."""
    _record(where, "beside")
    (Path(where.dir) / "started").touch()
    while True:
        time.sleep(0.05)


@job(timeout="10s")
def crash_after_fault(where: Where) -> int:
    """Dies without reporting once the fork server was hit: nobody is left to report its exit code."""
    _record(where, "beside")
    (Path(where.dir) / "started").touch()
    _await(Path(where.dir) / "faulted")
    time.sleep(0.2)
    os._exit(3)


@job(timeout="10s")
def where_am_i(where: Where) -> list[int]:
    _record(where, "after")
    return [os.getpid(), os.getppid()]


JOBS = [kill_fork_server, stop_fork_server, stop_fork_server_and_return, slow, hang, crash_after_fault, where_am_i]


@dataclass
class Case:
    fault: Any
    beside: Any
    status: RunStatus
    outcome: Outcome
    message: tuple[str, ...] = ()  # substrings of the beside run's message


FAULTS = {"SIGKILL": kill_fork_server, "SIGSTOP": stop_fork_server}
CASES = {}
for name, fault in FAULTS.items():
    CASES[f"{name} the fork server beside a 2.5 s run"] = Case(fault, slow, RunStatus.SUCCEEDED, Outcome.SUCCEEDED)
    CASES[f"{name} the fork server beside a run that times out"] = Case(
        fault, hang, RunStatus.TIMED_OUT, Outcome.TIMED_OUT, ("timed out",))
    CASES[f"{name} the fork server beside a run that crashes"] = Case(
        fault, crash_after_fault, RunStatus.FAILED, Outcome.CRASHED, ("without reporting", "exit status is unknown"))


def _gone(pid: int) -> bool:
    """Not running: it does not exist, or it is a zombie that is not ours to reap."""
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


def _recorded(d: Path) -> list[int]:
    return [int(p.name) for p in (d / "pids").iterdir()]


@pytest.fixture
def where(tmp_path: Path):
    d = tmp_path / "marks"
    (d / "pids").mkdir(parents=True)
    yield d
    servers = [int((d / "faulted").read_text())] if (d / "faulted").exists() else []
    for pid in _recorded(d) + servers:
        if not _gone(pid):  # a failed test must not leave a stopped fork server or a worker behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_fork_server_fault_costs_only_the_fork_server(name: str, db: str, where: Path) -> None:
    case = CASES[name]
    sup = Supervisor(JOBS, workers=2, store=db, kill_grace=0.5)
    arg = {"dir": str(where)}
    try:
        beside = sup.submit(case.beside, arg)
        fault = sup.submit(case.fault, arg)
        after = sup.submit_many(where_am_i, [arg] * 6)
        started = time.monotonic()
        sup.serve(until="drained")
        elapsed = time.monotonic() - started
        beside_record, fault_record = sup.run(beside.id), sup.run(fault.id)
        after_records = [sup.run(h.id) for h in after]
    finally:
        sup.close()

    server = int((where / "faulted").read_text())
    # The run beside the fault executed exactly once, in one process, and ended as it would have.
    executions = (where / "beside.log").read_text().split()
    assert len(executions) == 1, f"the run beside the fault executed {len(executions)} times: {executions}"
    assert beside_record.status is case.status, beside_record
    assert beside_record.attempts == 1 and len(beside_record.attempt_log) == 1, beside_record
    attempt = beside_record.attempt_log[0]
    assert attempt.outcome is case.outcome, attempt
    assert attempt.worker_pid == int(executions[0]), attempt
    for needle in case.message:
        assert needle in (attempt.message or ""), attempt
    if case.outcome is Outcome.TIMED_OUT:
        lasted = (attempt.finished_at or 0) - attempt.started_at
        assert lasted < 4.0, f"a 1 s timeout with 0.5 s kill_grace ended the attempt after {lasted:.2f} s"
    assert fault_record.status is RunStatus.SUCCEEDED and fault_record.result == server, fault_record

    # Later runs succeeded on workers of a new fork server.
    assert [r.status for r in after_records] == [RunStatus.SUCCEEDED] * 6, after_records
    assert all(len(r.attempt_log) == 1 for r in after_records), after_records
    old_workers = {int(pid) for pid in executions + (where / "fault.log").read_text().split()}
    for r in after_records:
        pid, parent = r.result
        assert pid not in old_workers and parent != server, (r, old_workers, server)
    assert elapsed < 30, f"serving took {elapsed:.1f} s"

    # Nothing is left: not the old fork server (reaped by us), not a worker, orphaned or not.
    wait_until(lambda: not psutil.pid_exists(server) or _gone(server), timeout=5, what="the old fork server to go")
    assert not psutil.pid_exists(server) or psutil.Process(server).ppid() != os.getpid()
    pids = _recorded(where)
    wait_until(lambda: all(_gone(pid) for pid in pids), timeout=5, what=f"the jobs' processes {pids} to go")
    assert live_descendants() == []


@pytest.mark.timeout(60)
def test_serving_again_after_the_fork_server_was_stopped(db: str, where: Path) -> None:
    """A fork server stopped just before serving ends is killed by close() at the latest (never
    waited for), and the next serve starts a new one."""
    sup = Supervisor(JOBS, workers=2, store=db, kill_grace=0.5)
    arg = {"dir": str(where)}
    try:
        sup.submit(slow, arg)
        sup.submit(stop_fork_server_and_return, arg)
        sup.serve(until="drained")
        server = int((where / "faulted").read_text())
        wait_until(lambda: not psutil.pid_exists(server), timeout=5, what="the stopped fork server to go")
        again = sup.submit_many(where_am_i, [arg] * 3)
        sup.serve(until="drained")
        records = [sup.run(h.id) for h in again]
    finally:
        sup.close()
    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 3, records
    assert all(r.result[1] != server for r in records), records
    pids = _recorded(where)
    wait_until(lambda: all(_gone(pid) for pid in pids), timeout=5, what=f"the jobs' processes {pids} to go")
    assert live_descendants() == []
