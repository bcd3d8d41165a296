"""The run tracker driven alone, with no process, no loop and no store: what a report, a
deadline, a worker's death or a cancel means for the runs a worker holds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from actors import Outcome, Retry, RunStatus, job
from actors.protocol import Assign, Cancel, Done, Failed, Progress, StepDone, Stop
from actors.supervisor.tracker import Policy, Tracker, Window


class N(BaseModel):
    x: int = 0


@job(timeout="1s", retry=Retry(attempts=3, backoff="fixed", base="1s"))
def work(n: N) -> int:
    return n.x


class Timer:
    def __init__(self, delay: float, fn: Any, args: tuple[Any, ...]) -> None:
        self.delay, self.fn, self.args, self.cancelled = delay, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.fn(*self.args)


class FakeEffects:
    """Records what the tracker asks of the loop."""

    listening = False

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.sent: list[tuple[int, Any]] = []
        self.killed: list[tuple[int, str | None]] = []
        self.notified: list[int] = []

    def later(self, delay: float, fn: Any, *args: Any) -> Timer:
        timer = Timer(delay, fn, args)
        self.timers.append(timer)
        return timer

    def send(self, window: Window, message: Any) -> None:
        self.sent.append((window.index, message))

    def terminate(self, window: Window, note: str | None = None) -> bool:
        if any(index == window.index for index, _ in self.killed):
            return False
        self.killed.append((window.index, note))
        return True

    def emit(self, event: str, ticket: Any) -> None:
        pass

    def notify(self, run_id: int) -> None:
        self.notified.append(run_id)

    def wake(self) -> None:
        pass

    def deadlines(self) -> list[Timer]:
        return [t for t in self.timers if t.fn.__name__ == "on_deadline" and not t.cancelled]


def make(runs: int = 3, workers: int = 1) -> tuple[Tracker, FakeEffects, Window]:
    effects = FakeEffects()
    tracker = Tracker({"work": Policy(work.retry, work.timeout)}, effects, workers, kill_grace=0.5,
                      max_runs_per_worker=None)
    tracker.load([_row(i) for i in range(1, runs + 1)], {"work": work}, lambda run_id: {})
    window = tracker.windows[0]
    window.attach(4242)
    tracker.worker_ready(window)
    return tracker, effects, window


def _row(run_id: int) -> Any:
    from actors.stores.base import Pending

    return Pending(run_id, "work", f'{{"x": {run_id}}}', 0, 0, 0, 3, None, 0.0, "queued", 1)


def dispatch(tracker: Tracker, window: Window) -> list[int]:
    """One turn: claim, 'commit', act; the ids sent to the worker."""
    sends = tracker.dispatch([window])
    tracker.take_changes()
    tracker.act(sends, set())
    return [t.id for _, batch in sends for t in batch]


def test_runs_are_claimed_and_sent_in_one_assign_in_order():
    tracker, effects, window = make(runs=3)
    sends = tracker.dispatch([window])
    changes = tracker.take_changes()
    assert [(run_id, attempt) for run_id, attempt in changes.claims] == [(1, 1)]  # unknown cost: one at a time
    tracker.act(sends, set())
    (index, message), = effects.sent
    assert isinstance(message, Assign) and [order.run_id for order in message.runs] == [1]
    assert [t.id for t in window.inflight] == [1]
    assert len(effects.deadlines()) == 1 and effects.deadlines()[0].delay == 1.0  # the head is timed


def test_a_result_that_races_a_timeout_kill_loses_cleanly():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    effects.deadlines()[0].fire()  # the timeout: the worker is killed, the verdict kept
    assert effects.killed == [(0, None)] and window.kill is not None
    tracker.report(window, Done(1, 1, "1", 0.01, 0))  # its result, written as the kill came
    tracker.worker_exited(window, -9, forcing=False)
    changes = tracker.take_changes()
    assert not changes.successes  # the kill was decided first: the result loses
    (finish,) = changes.finishes
    assert (finish.run_id, finish.attempt, finish.outcome) == (1, 1, "timed_out")


def test_runs_sent_ahead_to_a_worker_that_dies_are_requeued_once_and_the_head_is_charged():
    tracker, effects, window = make(runs=4)
    tracker.estimates.observe("work", 0.0001)  # cheap runs: several travel together
    assert dispatch(tracker, window) == [1, 2, 3, 4]
    expected = tracker.worker_exited(window, 1, forcing=False)
    assert expected is False  # a crash
    changes = tracker.take_changes()
    (finish,) = changes.finishes
    assert (finish.run_id, finish.outcome, finish.status, finish.charged) == (1, "crashed", "retrying", True)
    assert sorted(changes.unclaims) == [(2, 1), (3, 1), (4, 1)]
    tracker.act([], set())
    assert [tracker.tickets[i].attempts for i in (2, 3, 4)] == [0, 0, 0]
    queued = []
    while tracker.ready:
        queued.append(tracker.ready.pop().id)
    assert sorted(queued) == [2, 3, 4]  # each exactly once; run 1 waits for its backoff
    assert tracker.tickets[1].retrying and tracker.tickets[1].waiting is not None


def test_a_cancel_racing_a_finish_ends_the_run_cancelled_once():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    tracker.cancel_running(1)
    assert (0, Cancel(1)) in effects.sent
    assert effects.deadlines()[-1].delay == 0.5  # the kill after kill_grace is armed
    tracker.report(window, Done(1, 1, "1", 0.01, 0))  # the run finished anyway
    changes = tracker.take_changes()
    (finish,) = changes.finishes
    assert (finish.status, finish.outcome, finish.error_type) == ("cancelled", "cancelled", "RunCancelled")
    assert not changes.successes
    assert all(t.cancelled for t in effects.timers if t.fn.__name__ == "on_deadline")
    tracker.worker_exited(window, 0, forcing=False)  # nothing held any more: nothing more recorded
    assert not tracker.take_changes().finishes


def test_a_step_or_progress_after_the_attempt_ended_is_dropped():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    tracker.report(window, Failed(1, 1, "ValueError", "boom", "tb", True, 0.01, 0))
    tracker.take_changes()
    tracker.report(window, StepDone(1, 1, "late", '"x"'))
    tracker.report(window, Progress(1, 1, 0.5, "late", None))
    changes = tracker.take_changes()
    assert not changes.steps and not changes.progress


def test_a_result_out_of_order_kills_the_worker_saying_so():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    tracker.report(window, Done(99, 1, "1", 0.01, 0))
    assert effects.killed == [(0, "the worker reported run 99 out of order")]


def test_a_timeout_kill_is_recorded_timed_out_and_retried():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    effects.deadlines()[0].fire()
    tracker.worker_exited(window, -9, forcing=False)
    (finish,) = tracker.take_changes().finishes
    assert (finish.outcome, finish.status, finish.signal) == (Outcome.TIMED_OUT.value, "retrying", 9)
    assert "timed out after" in (finish.message or "")


@pytest.mark.parametrize("interrupted_before", [False, True])
def test_an_interrupted_attempt_is_free_once_in_a_row(interrupted_before):
    tracker, effects, window = make(runs=1)
    tracker.tickets[1].interrupted = interrupted_before
    dispatch(tracker, window)
    tracker.worker_exited(window, -9, forcing=True)
    (finish,) = tracker.take_changes().finishes
    assert finish.outcome == "interrupted" and finish.charged is interrupted_before
    assert finish.status == RunStatus.QUEUED.value


def test_a_retiring_worker_is_told_to_stop_once_it_reported_what_it_holds():
    tracker, effects, window = make(runs=1)
    dispatch(tracker, window)
    tracker.retire(window)
    assert not any(isinstance(m, Stop) for _, m in effects.sent)  # it still holds run 1
    tracker.report(window, Done(1, 1, "1", 0.01, 0))
    assert [m for _, m in effects.sent if isinstance(m, Stop)] == [Stop()]
    assert dispatch(tracker, window) == []  # and it gets nothing more
