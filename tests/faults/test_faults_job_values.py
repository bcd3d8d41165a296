"""Values a job hands over that the store cannot hold as they are, run as a table (issue 9).

- Text with a lone surrogate (`"bad \\ud800"`) in an exception, a traceback, an error type's
  name or a progress message is escaped in the worker (`\\ud800`, visible), because the store
  writes UTF-8; in a step value, metadata or an output, which are data, it is refused in the
  worker with a clear error.
- NaN and infinity: JSON has neither, so they are refused, at submit (a pydantic
  ValidationError, nothing stored) and in the worker (the run fails as OutputValidationError),
  rather than stored as `null` and read back as something else.
- Frames from two threads of a worker, or cut by a signal handler, never interleave: a job's
  helper thread reporting progress while the main thread stores big steps breaks nothing.

Each row costs only its own run: it ends in a terminal state, `serve(until="drained")` returns,
and good runs beside it (before and after, on the same worker) succeed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import live_descendants
from pydantic import BaseModel, ValidationError

from actors import Context, RunFailed, RunRecord, RunStatus, Supervisor, job


class Empty(BaseModel):
    pass


class Num(BaseModel):
    n: int


class Measured(BaseModel):
    name: str
    ratio: float


# -- text with a lone surrogate -----------------------------------------------------------------


@job(timeout="10s")
def raise_surrogate(_: Empty) -> int:
    raise ValueError("bad \ud800")


@job(timeout="10s")
def raise_surrogate_named(_: Empty) -> int:
    class Oddly(Exception):
        pass

    Oddly.__qualname__ = "Bad\udcff"  # type() would refuse such a name; the attribute takes it
    raise Oddly("its class name holds a lone surrogate")


@job(timeout="10s")
def progress_surrogate(_: Empty, ctx: Context) -> int:
    ctx.progress(0.5, "half \ud800 done")
    return 1


@job(timeout="10s")
def metadata_surrogate(_: Empty, ctx: Context) -> int:
    ctx.metadata(note="x \ud800")
    return 1


@job(timeout="10s")
def step_surrogate(_: Empty, ctx: Context) -> str:
    return ctx.step("name", lambda: "x \ud800")


@job(timeout="10s")
def return_surrogate(_: Empty) -> str:
    return "x \ud800"


# -- NaN and infinity ---------------------------------------------------------------------------


@job(timeout="10s")
def return_nan(_: Empty) -> float:
    return float("nan")


@job(timeout="10s")
def return_inf_in_any(_: Empty) -> Any:
    return {"a": [1.0, float("inf")]}


@job(timeout="10s")
def return_nan_in_dict(_: Empty) -> dict[str, float]:
    return {"a": float("-inf")}


@job(timeout="10s")
def return_nan_in_model(_: Empty) -> Measured:
    return Measured(name="m", ratio=float("nan"))


@job(timeout="10s")
def metadata_nan(_: Empty, ctx: Context) -> int:
    ctx.metadata(score=float("nan"))
    return 1


@job(timeout="10s")
def step_inf(_: Empty, ctx: Context) -> float:
    return ctx.step("score", lambda: float("inf"))


@job(timeout="10s")
def return_none(_: Empty) -> None:
    return None


@job(timeout="10s")
def return_optional_none(_: Empty) -> float | None:
    return None


@job(timeout="10s")
def return_nulls_and_words(_: Empty, ctx: Context) -> Any:
    """Legitimate nulls, and strings that say NaN: nothing here is refused."""
    ctx.metadata(word="NaN", words=["Infinity", "-Infinity"])
    ctx.step("words", lambda: ["NaN", "Infinity", None])
    return {"a": None, "word": "NaN", "ratio": 0.5}


# -- frames from two threads, frames cut by a signal ----------------------------------------------


@job(timeout="20s")
def progress_from_thread_during_big_steps(_: Empty, ctx: Context) -> int:
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            ctx.progress(0.5, "tick")

    helper = threading.Thread(target=hammer)
    helper.start()
    try:
        for i in range(5):
            ctx.step(f"big{i}", lambda: "x" * 300_000)
    finally:
        stop.set()
        helper.join()
    return 5


@job(timeout="5s", soft_timeout="0.2s")
def soft_timeout_during_big_steps(_: Empty, ctx: Context) -> int:
    """Stores big steps until its soft timeout: SoftTimeout often fires inside a step's write."""
    i = 0
    while True:
        ctx.step(f"big{i}", lambda: "x" * 300_000)
        i += 1


# -- the good job beside them --------------------------------------------------------------------


@job(timeout="10s")
def good(num: Num) -> int:
    return num.n


JOBS = [raise_surrogate, raise_surrogate_named, progress_surrogate, metadata_surrogate, step_surrogate,
        return_surrogate, return_nan, return_inf_in_any, return_nan_in_dict, return_nan_in_model, metadata_nan,
        step_inf, return_none, return_optional_none, return_nulls_and_words, progress_from_thread_during_big_steps,
        soft_timeout_during_big_steps, good]


def _progress_escaped(record: RunRecord) -> None:
    assert record.progress_message == "half \\ud800 done", record


def _traceback_escaped(record: RunRecord) -> None:
    assert "bad \\ud800" in (record.traceback or ""), record


def _all_steps_stored(record: RunRecord) -> None:
    assert sorted(record.steps) == [f"big{i}" for i in range(5)], sorted(record.steps)
    assert all(len(value) == 300_000 for value in record.steps.values())


def _nulls_kept(record: RunRecord) -> None:
    assert record.metadata == {"word": "NaN", "words": ["Infinity", "-Infinity"]}, record
    assert record.steps == {"words": ["NaN", "Infinity", None]}, record


@dataclass
class Case:
    job: Any
    status: RunStatus
    error_type: str | None = None
    message: tuple[str, ...] = ()  # substrings the message must contain
    result: Any = None  # what `result()` returns, for a run that succeeds
    runs: int = 1  # how many runs of it (a race needs a few)
    check: Callable[[RunRecord], None] | None = None  # more to say about each record


FAILED, SUCCEEDED = RunStatus.FAILED, RunStatus.SUCCEEDED
NAN = "NaN and Infinity cannot be stored as JSON"
CASES = {
    "exception message with a lone surrogate": Case(raise_surrogate, FAILED, "ValueError", ("bad \\ud800",),
                                                    check=_traceback_escaped),
    "exception type named with a lone surrogate": Case(raise_surrogate_named, FAILED, "Bad\\udcff",
                                                       ("its class name",)),
    "progress message with a lone surrogate": Case(progress_surrogate, SUCCEEDED, result=1, check=_progress_escaped),
    "metadata with a lone surrogate": Case(metadata_surrogate, FAILED, "TypeError",
                                           ("metadata cannot be stored as JSON", "\\ud800")),
    "step value with a lone surrogate": Case(step_surrogate, FAILED, "TypeError",
                                             ("step 'name'", "cannot be stored as JSON", "\\ud800")),
    "returned string with a lone surrogate": Case(return_surrogate, FAILED, "OutputSerializationError",
                                                  ("cannot be serialized to JSON", "\\ud800")),
    "returns NaN as a float": Case(return_nan, FAILED, "OutputValidationError", ("NaN or an infinity", NAN)),
    "returns infinity inside Any": Case(return_inf_in_any, FAILED, "OutputValidationError", (NAN,)),
    "returns -infinity in a dict[str, float]": Case(return_nan_in_dict, FAILED, "OutputValidationError", (NAN,)),
    "returns NaN in a model's field": Case(return_nan_in_model, FAILED, "OutputValidationError", (NAN, "ratio")),
    "metadata with NaN": Case(metadata_nan, FAILED, "TypeError", ("metadata cannot be stored as JSON", "NaN")),
    "step value infinity": Case(step_inf, FAILED, "TypeError", ("step 'score'", "NaN or Infinity")),
    "returns None for -> None": Case(return_none, SUCCEEDED, result=None),
    "returns None for -> float | None": Case(return_optional_none, SUCCEEDED, result=None),
    "legitimate nulls and the words NaN and Infinity": Case(
        return_nulls_and_words, SUCCEEDED, result={"a": None, "word": "NaN", "ratio": 0.5}, check=_nulls_kept),
    "progress from a helper thread while big steps are stored": Case(
        progress_from_thread_during_big_steps, SUCCEEDED, result=5, runs=6, check=_all_steps_stored),
    "soft timeout while a big step is written": Case(
        soft_timeout_during_big_steps, FAILED, "SoftTimeout", ("soft timeout",), runs=4),
}


def _assert_ended_as(case: Case, record: RunRecord, handle: Any) -> None:
    assert record.status is case.status, record
    assert record.attempts == 1 and len(record.attempt_log) == 1, record
    if case.status is SUCCEEDED:
        assert handle.result(timeout=5) == case.result
    else:
        with pytest.raises(RunFailed) as raised:
            handle.result(timeout=5)
        assert raised.value.error_type == record.error_type == case.error_type, record
        for needle in case.message:
            assert needle in (record.message or ""), record
            assert needle in (record.attempt_log[0].message or ""), record
    for text in (record.message, record.traceback, record.error_type, record.progress_message):
        (text or "").encode()  # storable text reads back as valid UTF-8
    if case.check is not None:
        case.check(record)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_job_value_costs_only_its_own_run(name: str, db: str) -> None:
    case = CASES[name]
    # One worker: the good runs after the bad ones execute where they ran, so a broken pipe or a
    # stranded run would show in them.
    sup = Supervisor(JOBS, workers=1, store=db, kill_grace=0.5)
    try:
        before = sup.submit_many(good, [{"n": n} for n in range(3)])
        bad = sup.submit_many(case.job, [{}] * case.runs)
        after = sup.submit_many(good, [{"n": n} for n in range(3, 8)])
        sup.serve(until="drained")
        for handle in bad:
            _assert_ended_as(case, sup.run(handle.id), handle)
        good_records = [sup.run(h.id) for h in before + after]
    finally:
        sup.close()

    assert [(r.status, r.result) for r in good_records] == [(SUCCEEDED, n) for n in range(8)], good_records
    assert all(len(r.attempt_log) == 1 for r in good_records), "a good run needed a second attempt"
    assert live_descendants() == []


@pytest.mark.timeout(60)
def test_all_job_values_at_once_cost_only_their_own_runs(db: str) -> None:
    """The whole table on two workers, interleaved with good runs."""
    sup = Supervisor(JOBS, workers=2, store=db, kill_grace=0.5)
    try:
        bad = {}
        good_handles = sup.submit_many(good, [{"n": n} for n in range(2)])
        for name, case in CASES.items():
            bad[name] = sup.submit_many(case.job, [{}] * case.runs)
            good_handles += sup.submit_many(good, [{"n": n} for n in range(len(good_handles), len(good_handles) + 2)])
        sup.serve(until="drained")
        for name, handles in bad.items():
            for handle in handles:
                _assert_ended_as(CASES[name], sup.run(handle.id), handle)
        good_records = [sup.run(h.id) for h in good_handles]
    finally:
        sup.close()
    assert [(r.status, r.result) for r in good_records] == [(SUCCEEDED, n) for n in range(len(good_records))]
    assert live_descendants() == []


# -- NaN and infinity at submit ------------------------------------------------------------------


class Reading(BaseModel):
    v: float
    vs: list[float] = []
    extra: dict[str, Any] = {}
    note: str | None = None


@job(timeout="10s")
def read(reading: Reading) -> float:
    return reading.v


SUBMITS = {
    "NaN": ({"v": float("nan")}, ("v",)),
    "+infinity": ({"v": float("inf")}, ("v",)),
    "-infinity": ({"v": float("-inf")}, ("v",)),
    "NaN in a list": ({"v": 1.0, "vs": [0.5, float("nan")]}, ("vs", 1)),
    "infinity in an Any value": ({"v": 1.0, "extra": {"deep": [float("inf")]}}, ("extra", "deep", 0)),
    "NaN in a model instance": (Reading(v=float("nan")), ("v",)),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(SUBMITS))
def test_submit_refuses_nan_and_infinity_and_stores_nothing(name: str, db: str) -> None:
    value, loc = SUBMITS[name]
    sup = Supervisor([read], workers=1, store=db)
    try:
        kept = sup.submit(read, {"v": 1.5})
        with pytest.raises(ValidationError) as raised:
            sup.submit(read, value)
        with pytest.raises(ValidationError):
            sup.submit_many(read, [{"v": 2.5}, value])  # all or nothing
        assert isinstance(raised.value, ValueError)
        assert NAN in str(raised.value) and "'read'" in str(raised.value), str(raised.value)
        error = raised.value.errors()[0]
        assert error["type"] == "finite_number" and error["loc"] == loc, error
        assert not math.isfinite(error["input"])
        assert [r.id for r in sup.runs(limit=100)] == [kept.id], "a refused input was stored"
        allowed = sup.submit(read, {"v": 2.5, "note": None, "extra": {"word": "NaN", "none": None}})
        sup.serve(until="drained")
        assert kept.result(timeout=5) == 1.5 and allowed.result(timeout=5) == 2.5
    finally:
        sup.close()

