"""actors.handle: a Handle reads, waits and cancels only through its RunOwner.

An owner made here (a dict of records) stands for a Supervisor or a Client: no store, no process.
"""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

from actors import Handle, RunCancelled, RunNotFound, RunRecord, RunStatus, job
from actors.handle import MAX_PAUSE


class N(BaseModel):
    x: int


class Doubled(BaseModel):
    doubled: int


@job
def double(n: N) -> Doubled:
    return Doubled(doubled=n.x * 2)


class Owner:
    """A RunOwner over records in a dict; `wait_for` sleeps the slice it is given, as an owner
    that cannot wake the handle would, and may end the run once."""

    def __init__(self, *records: RunRecord) -> None:
        self.records = {r.id: r for r in records}
        self.waits: list[float] = []
        self.cancelled: list[int] = []
        self.end_after: int | None = None  # end run 1 at this wait
        self.reads: list[tuple[int, bool]] = []

    def get(self, run_id: int, attempts: bool = False) -> RunRecord | None:
        self.reads.append((run_id, attempts))
        return self.records.get(run_id)

    def wait_for(self, run_id: int, timeout: float) -> bool:
        self.waits.append(timeout)
        if self.end_after is not None and len(self.waits) == self.end_after:
            record = self.records[run_id]
            record.status, record.output = RunStatus.SUCCEEDED, '{"doubled": 4}'
            return True
        time.sleep(timeout)
        return False

    def cancel(self, run_id: int) -> bool:
        self.cancelled.append(run_id)
        return True


def queued(run_id: int = 1) -> RunRecord:
    return RunRecord(run_id, "double", RunStatus.QUEUED, '{"x": 2}')


def test_result_waits_through_the_owner_in_slices_growing_to_50_ms():
    owner = Owner(queued())
    owner.end_after = 9
    handle: Handle[Doubled] = Handle(owner, 1, double)
    assert handle.result(timeout=10) == Doubled(doubled=4)
    assert owner.waits == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, MAX_PAUSE, MAX_PAUSE, MAX_PAUSE]
    assert Handle(owner, 1, None).result(timeout=0) == {"doubled": 4}  # job unknown here: plain data


def test_result_times_out_with_the_last_slice_cut_to_the_deadline():
    owner = Owner(queued())
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still queued"):
        Handle(owner, 1, double).result(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert max(owner.waits) == MAX_PAUSE and owner.waits[-1] <= MAX_PAUSE
    assert sum(owner.waits) == pytest.approx(0.2, abs=0.05)


def test_result_of_a_run_its_owner_holds_live_waits_for_the_end_before_reading_the_store():
    """A supervisor that holds the run (queued or running in its loop) notifies its end: the
    handle waits first and reads once, instead of reading a run it knows is not done."""
    owner = Owner(queued())
    owner.holds = lambda run_id: run_id == 1 and not owner.waits  # type: ignore[attr-defined]
    owner.end_after = 1
    assert Handle(owner, 1, double).result() == Doubled(doubled=4)
    assert owner.waits == [MAX_PAUSE] and owner.reads == [(1, False)]
    owner.reads.clear()
    assert Handle(owner, 1, double).result() == Doubled(doubled=4)  # ended: no longer held, read at once
    assert owner.reads == [(1, False)] and owner.waits == [MAX_PAUSE]


def test_record_status_progress_and_cancel_go_to_the_owner():
    record = queued()
    record.progress, record.progress_message = 0.5, "half"
    owner = Owner(record)
    handle = Handle(owner, 1, double)
    assert handle.status() is RunStatus.QUEUED
    assert handle.progress() == (0.5, "half")
    handle.record(attempts=True)
    assert owner.reads[-1] == (1, True)
    assert handle.cancel() is True and owner.cancelled == [1]
    assert repr(handle).startswith("<Handle 1 double queued attempts=0/1 queued ")  # read from the owner
    assert repr(Handle(owner, 2, None)) == "<Handle 2 ? (not in the store)>"


def test_an_ended_run_raises_its_error_and_a_missing_one_run_not_found():
    record = queued()
    record.status, record.error_type, record.message = RunStatus.CANCELLED, "RunCancelled", "gone"
    handle = Handle(Owner(record), 1, double)
    with pytest.raises(RunCancelled, match="gone"):
        handle.result()
    with pytest.raises(RunNotFound, match="run 2"):
        Handle(Owner(record), 2, None).status()
