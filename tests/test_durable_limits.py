"""The durable records' limits and step hooks, on a `Context` alone (no process): records per
run, bytes per step and per run, each a `DurableLimitExceeded` that says what to do; hooks run
around a step that runs, not around one replayed from the store."""

from __future__ import annotations

import pytest

from actors import Context, DurableLimitExceeded
from actors import context as context_module
from actors.protocol import StepDone


def test_a_run_records_at_most_max_records_and_the_next_one_is_refused():
    sent: list[object] = []
    ctx = Context(1, 1, "test", send=sent.append)
    for i in range(context_module.MAX_RECORDS):
        ctx.step(f"s{i}", lambda: 0)
    with pytest.raises(DurableLimitExceeded, match="reached 10000 steps.*split the work into child runs"):
        ctx.step("one too many", lambda: 0)
    assert sum(isinstance(m, StepDone) for m in sent) == context_module.MAX_RECORDS


def test_a_step_over_max_result_size_is_refused_and_nothing_is_recorded():
    sent: list[object] = []
    ctx = Context(1, 1, "test", send=sent.append, max_size=1000)
    assert ctx.step("small", lambda: "x" * 10) == "x" * 10
    with pytest.raises(DurableLimitExceeded, match="over max_result_size .1000 bytes.: store a path instead"):
        ctx.step("big", lambda: "x" * 2000)
    assert [m.name for m in sent if isinstance(m, StepDone)] == ["small"]


def test_the_records_of_a_run_are_limited_in_bytes_counting_the_stored_ones(monkeypatch):
    monkeypatch.setattr(context_module, "MAX_RUN_BYTES", 100)
    ctx = Context(1, 2, "test", steps={"earlier": '"' + "y" * 60 + '"'})  # 62 bytes stored by attempt 1
    ctx.step("earlier", lambda: "never called")
    with pytest.raises(DurableLimitExceeded, match="over 100 bytes of stored steps"):
        ctx.step("more", lambda: "z" * 50)
    assert ctx.step("little", lambda: "z") == "z"


def test_step_hooks_run_around_a_step_that_runs_with_its_error_and_not_on_replay():
    calls: list[tuple[str, str, str | None]] = []

    def before(ctx, name):
        calls.append(("before", name, None))

    def after(ctx, name, error):
        calls.append(("after", name, None if error is None else type(error).__name__))

    ctx = Context(1, 2, "test", steps={"done": "1"}, hooks=(before, after))
    assert ctx.step("done", lambda: 2) == 1  # replayed: no hooks
    assert ctx.step("fresh", lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        ctx.step("broken", lambda: 1 / 0)
    assert calls == [("before", "fresh", None), ("after", "fresh", None),
                     ("before", "broken", None), ("after", "broken", "ZeroDivisionError")]
