"""A timeout kills the whole tree a job started, even parts that ignore SIGTERM or escaped its
process group (DESIGN invariant 5), and a job over `max_memory` is killed for it.

The supervisor runs in this process; the jobs are module-level so workers import them by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import live_descendants, wait_until
from pydantic import BaseModel

from actors import Outcome, RunStatus, Supervisor, job


class Paths(BaseModel):
    pids_file: str


class Size(BaseModel):
    mb: int


def _write_json_atomically(path: str, data: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@job(timeout="1s")
def stubborn_tree(paths: Paths) -> None:
    """Ignores SIGTERM, starts a grandchild and a double-forked (setsid) descendant, sleeps forever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through fork and exec: `sleep` ignores it too
    grandchild = subprocess.Popen(["sleep", "300"])
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: new session, fork the escapee, exit at once
        os.close(read_end)
        os.setsid()
        escapee = os.fork()
        if escapee == 0:
            os.close(write_end)
            while True:
                time.sleep(60)
        os.write(write_end, str(escapee).encode())
        os._exit(0)
    os.close(write_end)
    escapee_pid = int(os.read(read_end, 64).decode())
    os.close(read_end)
    os.waitpid(middle, 0)
    _write_json_atomically(paths.pids_file, {"worker": os.getpid(), "grandchild": grandchild.pid,
                                             "middle": middle, "escapee": escapee_pid})
    while True:
        time.sleep(60)


@job(timeout="20s")
def memory_hog(size: Size) -> int:
    """Allocates `mb` MB in 10 MB steps (touched, so resident), then holds it; never returns early."""
    chunks = []
    for _ in range(size.mb // 10):
        chunks.append(bytearray(b"x" * (10 * 1000 * 1000)))
        time.sleep(0.02)
    time.sleep(60)
    return len(chunks)


@job(timeout="10s")
def ok(size: Size) -> int:
    return size.mb


def _alive(pid: int) -> bool:
    """True while the pid is a running process (a zombie counts as alive: nobody reaped it)."""
    try:
        psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return True


def _describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"{pid} ({proc.status()}, ppid {proc.ppid()}, {' '.join(proc.cmdline())!r})"
    except psutil.Error:
        return f"{pid} (gone)"


@pytest.mark.timeout(30)
def test_timeout_kills_worker_and_grandchildren(db: str, tmp_path: Path) -> None:
    pids_file = str(tmp_path / "pids.json")
    sup = Supervisor([stubborn_tree, ok], workers=2, store=db, kill_grace=0.5)
    try:
        handle = sup.submit(stubborn_tree, {"pids_file": pids_file})
        good = sup.submit_many(ok, [{"mb": n} for n in range(5)])
        started = time.monotonic()
        sup.serve(until="drained")
        elapsed = time.monotonic() - started
        record = sup.run(handle.id)
        good_records = [sup.run(h.id) for h in good]
    finally:
        sup.close()

    assert Path(pids_file).exists(), "the job never got as far as starting its descendants"
    pids = json.loads(Path(pids_file).read_text())

    assert record.status is RunStatus.TIMED_OUT, record
    assert record.error_type == "RunTimedOut"
    assert len(record.attempt_log) == 1
    attempt = record.attempt_log[0]
    assert attempt.outcome is Outcome.TIMED_OUT
    assert attempt.worker_pid == pids["worker"]
    # The worker ignored SIGTERM, so only the SIGKILL after kill_grace ended it.
    assert attempt.signal == signal.SIGKILL, attempt
    assert "timed out" in (attempt.message or ""), attempt
    assert attempt.finished_at is not None
    lasted = attempt.finished_at - attempt.started_at
    assert 1.0 <= lasted < 4.0, f"a 1 s timeout with 0.5 s kill_grace ended the attempt after {lasted:.2f} s"
    assert elapsed < 10, f"a 1 s timeout with 0.5 s grace took {elapsed:.1f} s to settle"
    assert all(r.status is RunStatus.SUCCEEDED for r in good_records), good_records

    # Every process of the tree is gone, and reaped: no orphan, no zombie.
    wait_until(lambda: not any(_alive(pid) for pid in pids.values()), timeout=5,
               what="the worker's tree to be gone: " + ", ".join(_describe(p) for p in pids.values()))
    assert live_descendants() == []


@pytest.mark.timeout(30)
def test_memory_hog_over_max_memory_ends_memory_exceeded(db: str) -> None:
    sup = Supervisor([memory_hog, ok], workers=2, store=db, kill_grace=0.5, max_memory="150MB")
    try:
        handle = sup.submit(memory_hog, {"mb": 400})
        good = sup.submit_many(ok, [{"mb": n} for n in range(5)])
        sup.serve(until="drained")
        record = sup.run(handle.id)
        good_records = [sup.run(h.id) for h in good]
    finally:
        sup.close()

    assert record.status is RunStatus.FAILED, record
    assert record.error_type == "MemoryExceeded", record
    assert len(record.attempt_log) == 1
    attempt = record.attempt_log[0]
    assert attempt.outcome is Outcome.MEMORY_EXCEEDED, attempt
    assert "max_memory" in (attempt.message or ""), attempt
    assert attempt.peak_rss is not None and attempt.peak_rss > 150 * 1000 * 1000, attempt
    assert attempt.signal in (signal.SIGTERM, signal.SIGKILL), attempt
    assert all(r.status is RunStatus.SUCCEEDED for r in good_records), good_records
    assert live_descendants() == []
