"""Large payloads: inputs and outputs of 10 MB and more cross the pipes and the store, results
over `max_result_size` fail their own run, and nothing else stalls or crashes meanwhile.

Every test starts real workers on a real SQLite file. Timings are checked loosely (the machine
is shared); the strict latency bound is its own test.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from pydantic import BaseModel

from actors import Context, Priority, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(90)

MB = 1_000_000
BIG = 12 * MB


class Blob(BaseModel):
    data: str
    pause: float = 0.0


class Tick(BaseModel):
    i: int


class Digest(BaseModel):
    size: int
    sha256: str


class Spec(BaseModel):
    kind: str
    n: int = 0


@job(concurrency=1, priority=Priority.HIGH)  # one at a time: the other worker stays free for ticks
def mirror(blob: Blob) -> Blob:
    """12 MB in, 12 MB out (reversed, so an echo of the input would not pass)."""
    time.sleep(blob.pause)
    return Blob(data=blob.data[::-1])


@job
def tick(t: Tick) -> int:
    time.sleep(0.005)
    return os.getpid()


@job
def digest(blob: Blob) -> Digest:
    return Digest(size=len(blob.data), sha256=hashlib.sha256(blob.data.encode()).hexdigest())


@job
def produce(spec: Spec, ctx: Context) -> str:
    if spec.kind == "ascii":
        return "a" * spec.n
    if spec.kind == "emoji":  # 4 bytes of UTF-8 per character
        return "\U0001f600" * spec.n
    if spec.kind == "raise":
        raise ValueError("x" * spec.n)
    if spec.kind == "step":
        return str(len(ctx.step("big", lambda: "s" * spec.n)))
    if spec.kind == "metadata":
        ctx.metadata(blob="m" * spec.n)
        return "ok"
    return "small"


def payload(size: int, seed: int = 0) -> str:
    """A deterministic ASCII string of `size` characters that is not one repeated letter."""
    unit = hashlib.sha256(str(seed).encode()).hexdigest()  # 64 characters
    return (unit * (size // len(unit) + 1))[:size]


def big_and_small_runs(db: str) -> tuple[list, list, dict[int, list]]:
    """3 runs of 12 MB in / 12 MB out on one worker while 600 small runs go through the other."""
    data = payload(BIG)
    with Supervisor([mirror, tick], workers=2, store=db) as sup:
        bigs = [sup.submit(mirror, Blob(data=data, pause=0.3)) for _ in range(3)]
        ticks = sup.submit_many(tick, [{"i": i} for i in range(600)])
        sup.serve(until="drained")
        for handle in bigs:
            assert handle.result(timeout=0) == Blob(data=data[::-1])
        big_records = [sup.run(h.id) for h in bigs]
        tick_records = [sup.run(h.id) for h in ticks]
    assert all(r.status is RunStatus.SUCCEEDED for r in tick_records)
    pids = {r.id: [a.worker_pid for a in r.attempt_log] for r in (*big_records, *tick_records)}
    return big_records, tick_records, pids


def tick_gaps_during(bigs: list, ticks: list) -> list[float]:
    """Gaps between consecutive small-run finishes while the big runs were going on."""
    start = min(r.attempt_log[0].started_at for r in bigs)
    end = max(r.attempt_log[0].finished_at for r in bigs)
    finished = sorted(r.finished_at for r in ticks)
    return [b - a for a, b in zip(finished, finished[1:], strict=False) if a < end and b > start]


def test_12mb_inputs_and_outputs_cross_while_small_runs_on_the_other_worker_keep_completing(db: str):
    bigs, ticks, pids = big_and_small_runs(db)
    for big in bigs:
        attempt = big.attempt_log[0]
        assert len(big.output) > BIG
        during = [t for t in ticks if attempt.started_at <= t.finished_at <= attempt.finished_at]
        others = [t for t in during if pids[t.id][0] != attempt.worker_pid]
        assert len(others) >= 3, f"only {len(others)} small runs finished while big run {big.id} ran"
    gaps = tick_gaps_during(bigs, ticks)
    assert max(gaps) < 2.0, f"small runs stalled for {max(gaps):.2f} s"  # loose: no deadlock, no long hold


def test_a_12mb_result_holds_the_loop_for_less_than_300ms(db: str):
    bigs, ticks, _ = big_and_small_runs(db)
    gaps = tick_gaps_during(bigs, ticks)
    assert max(gaps) < 0.3, f"small runs stalled for {max(gaps):.2f} s around the 12 MB results"


def test_twenty_runs_with_2mb_inputs_all_succeed(db: str):
    inputs = [payload(2 * MB, seed) for seed in range(20)]
    with Supervisor([digest], workers=2, store=db) as sup:
        handles = sup.submit_many(digest, [{"data": data} for data in inputs])
        sup.serve(until="drained")
        results = [h.result(timeout=0) for h in handles]
    assert results == [Digest(size=2 * MB, sha256=hashlib.sha256(d.encode()).hexdigest()) for d in inputs]


def test_a_result_over_max_result_size_fails_its_run_and_the_supervisor_carries_on(db: str):
    specs = [("small", 0), ("ascii", 2 * MB), ("ascii", 900_000), *[("small", 0)] * 5]
    with Supervisor([produce], workers=1, store=db, max_result_size="1MB") as sup:
        handles = [sup.submit(produce, {"kind": kind, "n": n}) for kind, n in specs]
        sup.serve(until="drained")
        records = [sup.run(h.id) for h in handles]
    too_big = records[1]
    assert too_big.status is RunStatus.FAILED
    assert too_big.error_type == "ResultTooLarge"
    assert "max_result_size" in too_big.message and "1000000 bytes" in too_big.message
    assert "2000002 bytes" in too_big.message and "path" in too_big.message
    assert too_big.attempt_log[-1].outcome == "failed"  # the worker reported it: no crash, no kill
    assert records[2].status is RunStatus.SUCCEEDED and len(records[2].output) == 900_002
    assert all(r.status is RunStatus.SUCCEEDED and r.result == "small" for r in records[:1] + records[3:])
    assert len({r.attempt_log[-1].worker_pid for r in records}) == 1  # one worker throughout


@pytest.mark.parametrize("count", [400_000, 600_000])
def test_max_result_size_counts_bytes_not_characters(db: str, count: int):
    with Supervisor([produce], workers=1, store=db, max_result_size="1MB") as sup:
        handle = sup.submit(produce, {"kind": "emoji", "n": count})  # 4 bytes each: over 1 MB
        sup.serve(until="drained")
        record = sup.run(handle.id)
    assert record.status is RunStatus.FAILED
    assert record.error_type == "ResultTooLarge"


@pytest.mark.parametrize("kind", ["raise", "step", "metadata"])
def test_other_oversized_messages_fail_the_run_not_the_worker(db: str, kind: str):
    with Supervisor([produce], workers=1, store=db, max_result_size="1MB") as sup:
        handle = sup.submit(produce, {"kind": kind, "n": 3 * MB})
        after = sup.submit(produce, {"kind": "small"})
        sup.serve(until="drained")
        record, later = sup.run(handle.id), sup.run(after.id)
    assert later.status is RunStatus.SUCCEEDED
    assert record.attempt_log[-1].outcome != "crashed", record.message
    assert record.error_type != "WorkerCrashed", record.message
    assert record.attempt_log[-1].worker_pid == later.attempt_log[-1].worker_pid  # the worker survived
