"""`Context`: what a running job knows and can say about its run, and how it orchestrates.

A job that takes a second parameter gets one per attempt, in the worker. It carries the run id,
the attempt number and the job name, a logger whose records carry them, the per-worker
resource made by the job's `setup`, memoized steps, progress and metadata (sent to the
supervisor, which stores them while the run is still running), and `cancelled`.

Durable execution. `sleep`, `invoke`, `dispatch`, `wait_for` and `wait_for_event` never hold
the worker while they wait: the run is suspended (its attempt ends `suspended`, not charged,
its status is `waiting`) and the job function runs again from the top when the wait is over.
Every step, sleep, invoke and wait is a record stored with its position in the run: a replay
returns the stored value of each one it reaches, in order, and one that reaches a different
record at a position raises `NondeterministicRun` (the run fails rather than mix results). So
code between records may run more than once, as after a retry; the records themselves run once.

What it sends must be storable as it is, since the supervisor writes it without looking: a step
value or metadata that JSON cannot carry (a lone surrogate in a string, a NaN, an infinity) is
a TypeError in the job, where it can be handled; a progress message is free text, so a lone
surrogate in it is escaped instead (`protocol.storable`).

Limits, enforced here with `DurableLimitExceeded`: MAX_RECORDS records per run, a step's JSON
at most the supervisor's `max_result_size`, all records of a run at most MAX_RUN_BYTES.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import pydantic_core

from .durations import Duration, parse_duration
from .errors import (
    ChildFailed,
    DurableLimitExceeded,
    NondeterministicRun,
    SoftTimeout,
    WaitTimedOut,
)
from .job import find_nonfinite
from .protocol import CancelRun, Progress, Spawn, StepDone, StepStarted, storable

T = TypeVar("T")
_log = logging.getLogger("actors.job")
MAX_RECORDS = 10_000  # steps, sleeps, invokes and waits of one run
MAX_RUN_BYTES = 256 * 2**20  # JSON of all the records of one run
_EARLY = 0.005  # seconds a sleep may be woken early (timer and clock granularity) and still count as over


class Child(NamedTuple):
    """A child run made by `ctx.dispatch`: its id and job name, for `ctx.wait_for` and
    `ctx.cancel` (the parent's own `Handle`, inside the worker, which never reads the store)."""

    id: int
    job: str


class Suspended(BaseException):
    """Unwinds a job that waits durably (not an Exception: a job's `except Exception` must not
    swallow it). `execute` turns it into a `Suspend` report."""

    def __init__(self, wait: dict[str, Any], wake_at: float | None) -> None:
        super().__init__(wait)
        self.wait = wait
        self.wake_at = wake_at


class _StepTimedOut(BaseException):
    pass


class Context:
    """Given to a job that takes a second parameter. Lives in the worker for one attempt.

    The worker makes it; a test of a job function may make one to call it directly (then
    `invoke`, `dispatch` and `cancel` raise RuntimeError: they need a serving supervisor).

    Args:
        run_id: the run's id (also `.run_id`).
        attempt: the attempt's number, 1 for the first (also `.attempt`).
        job: the job's name (also `.job`).
        resource: what the job's `setup` returned in this worker process (default None).
        steps: the records stored by earlier attempts, {name: JSON text} (default none).
        send: where progress, metadata and records go (the worker's pipe; default: nowhere).
        is_cancelled: tells whether a run id was cancelled (default: never).
        max_size: the most bytes of JSON a step value or metadata may take (default 64 MiB,
            the supervisor's `max_result_size`).
        positions: each record's position, {name: position} (default: none known).
        call: sends a message to the supervisor and returns its reply (the worker's pipe).
        jobs: the jobs this worker knows, by name (to validate a child's input and output).
        hooks: the job's (before_step, after_step) hooks.
    """

    __slots__ = ("run_id", "attempt", "job", "resource", "_log", "_send", "_steps", "_seen", "_is_cancelled",
                 "_max_size", "_positions", "_by_position", "_position", "_call", "_jobs", "_hooks", "_bytes")

    def __init__(self, run_id: int, attempt: int, job: str, *, resource: Any = None,
                 steps: dict[str, str] | None = None, send: Callable[[Any], None] | None = None,
                 is_cancelled: Callable[[int], bool] | None = None, max_size: int = 64 * 2**20,
                 positions: dict[str, int] | None = None, call: Callable[[Any], Any] | None = None,
                 jobs: dict[str, Any] | None = None,
                 hooks: tuple[Callable[..., Any] | None, Callable[..., Any] | None] = (None, None)) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.job = job
        self.resource = resource  # what the job's `setup` returned in this worker process
        self._log: logging.LoggerAdapter[Any] | None = None
        self._send = send or (lambda message: None)
        self._steps = dict(steps or {})
        self._seen: set[str] = set()
        self._is_cancelled = is_cancelled
        self._max_size = max_size  # the supervisor's max_result_size: steps and metadata obey it too
        self._positions = dict(positions or {})
        self._by_position = {p: name for name, p in self._positions.items()}
        self._position = 0
        self._call = call
        self._jobs = jobs or {}
        self._hooks = hooks
        self._bytes = sum(len(text) for text in self._steps.values())

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """A logger whose records carry run_id, job and attempt (as `extra`)."""
        if self._log is None:
            self._log = logging.LoggerAdapter(_log, {"run_id": self.run_id, "job": self.job, "attempt": self.attempt})
        return self._log

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this run was requested; a long loop can check it and stop."""
        return self._is_cancelled is not None and self._is_cancelled(self.run_id)

    # -- records -------------------------------------------------------------------------------

    def _enter(self, name: str) -> int:
        """The next record's position; the determinism guard and the limit on records."""
        position = self._position
        self._position += 1
        if name in self._seen:
            raise ValueError(f"step {name!r} was already used in run {self.run_id}: step names are unique within a run")
        self._seen.add(name)
        recorded = self._by_position.get(position)
        if (recorded is not None and recorded != name) or self._positions.get(name, position) != position:
            raise NondeterministicRun(
                f"run {self.run_id} replayed {name!r} at position {position}, but it recorded "
                f"{recorded!r} there" + (f" and {name!r} at position {self._positions[name]}" if name in self._positions
                                         else "") + ": the job's code or the arguments of its steps changed")
        if position >= MAX_RECORDS:
            raise DurableLimitExceeded(f"run {self.run_id} reached {MAX_RECORDS} steps, sleeps, invokes and waits, "
                                       "the most a run may record: split the work into child runs")
        return position

    def _record(self, name: str, position: int, value: Any, what: str) -> str:
        text = _to_json(value, what)
        self._check_size(what, text)
        if self._bytes + len(text) > MAX_RUN_BYTES and self._bytes + len(text.encode()) > MAX_RUN_BYTES:
            raise DurableLimitExceeded(f"{what} would take run {self.run_id} over {MAX_RUN_BYTES} bytes of stored "
                                       "steps: store paths instead of data")
        self._bytes += len(text)
        self._steps[name] = text
        self._positions[name] = position
        self._send(StepDone(self.run_id, self.attempt, name, text, position))
        return text

    def step(self, name: str, fn: Callable[[], T], *, retry: Any = None, timeout: Duration | None = None,
             output: Any = None) -> T:
        """Run `fn` once per run: its JSON result is stored when it returns, and a replay (a
        later attempt, a resume after a wait) gets the stored value instead of running it again.

        Args:
            name: the step's name, unique within the run (ValueError if used twice or empty).
            fn: called with no arguments; its value must be JSON-serializable (TypeError).
            retry: a `Retry`: the step's own attempts, inside this attempt of the run (each
                failure is logged and counted in the run's metadata under "step_failures").
            timeout: a duration: a call of `fn` that takes longer raises TimeoutError in it
                (by SIGALRM, as the job's soft timeout: the main thread only).
            output: a type the stored JSON is validated into on replay (a model, a tuple...),
                so a replay returns what the first run returned; without it, JSON data.

        Returns:
            What `fn` returned, or on replay the stored value (as `output`, else JSON data).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid step name {name!r}: expected a non-empty string")
        position = self._enter(name)
        if name in self._steps:
            value = json.loads(self._steps[name])
            return _validated(output, value) if output is not None else value
        seconds = None if timeout is None else parse_duration(timeout, what="step timeout")
        before, after = self._hooks
        if before is not None:
            before(self, name)
        self._send(StepStarted(self.run_id, self.attempt, name))
        failures = 0
        while True:
            try:
                value = fn() if seconds is None else _timed(fn, seconds, name)
                break
            except Exception as exc:
                failures += 1
                if (retry is None or isinstance(exc, SoftTimeout) or failures >= retry.attempts
                        or not retry.retries_exception(exc)):
                    if after is not None:
                        after(self, name, exc)
                    raise
                from .retry import compute_backoff

                delay = compute_backoff(retry, failures)
                self.log.warning("step %r failed (attempt %d of %d): %s: %s; again in %.3f s", name, failures,
                                 retry.attempts, type(exc).__name__, exc, delay)
                self._send(Progress(self.run_id, self.attempt, None, None, json.dumps(
                    {"step_failures": {name: {"failures": failures, "error": f"{type(exc).__name__}: {exc}"[:500]}}})))
                time.sleep(delay)
        self._record(name, position, value, f"step {name!r} returned a value that")
        if after is not None:
            after(self, name, None)
        return value

    # -- durable waits ---------------------------------------------------------------------------

    def sleep(self, name: str, duration: Duration) -> None:
        """Sleep durably for `duration` ("1h", seconds...): the run is suspended, the worker
        freed, and the run resumes after it, even across restarts of the supervisor.

        Args:
            name: the sleep's name, unique within the run.
            duration: how long.
        """
        seconds = parse_duration(duration, what="sleep duration")
        self._sleep(name, lambda: time.time() + seconds)

    def sleep_until(self, name: str, when: datetime) -> None:
        """Sleep durably until `when`, as `sleep`.

        Args:
            name: the sleep's name, unique within the run.
            when: a datetime (a naive one is local time).
        """
        if not isinstance(when, datetime):
            raise TypeError(f"sleep_until takes a datetime, got {when!r}")
        self._sleep(name, when.timestamp)

    def _sleep(self, name: str, due: Callable[[], float]) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid sleep name {name!r}: expected a non-empty string")
        record = f"sleep:{name}"
        position = self._enter(record)
        text = self._steps.get(record)
        until = json.loads(text)["until"] if text is not None else due()
        if text is None:
            self._record(record, position, {"until": until}, f"sleep {name!r}")
        if time.time() < until - _EARLY:
            raise Suspended({"until": until}, until)

    def dispatch(self, job: Any, input: Any, *, key: str | None = None, delay: Duration | None = None) -> Child:
        """Start a child run of `job` without waiting; its `Child` handle (for `wait_for`,
        `cancel`). `key`: an idempotency key across runs (the same key gives the same run);
        without one, a replay of this call gives back the child it made the first time.

        Args:
            job: the child's `Job`, or its name (one the supervisor serves).
            input: its input, validated here.
            key: an idempotency key (default None).
            delay: hold the child this long before it may start (default None).
        """
        found = self._job(job)
        record = f"run:{found.name}#{self._position}"
        position = self._enter(record)
        text = self._steps.get(record)
        if text is not None:
            return Child(json.loads(text)["run"], found.name)
        if self._call is None:
            raise RuntimeError("ctx.dispatch and ctx.invoke need a serving supervisor (this Context has none)")
        data = found.validate_input(input)
        seconds = None if delay is None else parse_duration(delay, what="delay")
        reply = self._call(Spawn(self.run_id, self.attempt, found.name, data,
                                 key if key is not None else f"child:{self.run_id}:{position}", seconds))
        if reply.child_id is None:
            raise RuntimeError(f"run {self.run_id} could not start a child run of {found.name!r}: {reply.error}")
        self._record(record, position, {"run": reply.child_id}, f"the invoke of {found.name!r}")
        return Child(reply.child_id, found.name)

    def invoke(self, job: Any, input: Any, *, key: str | None = None) -> Any:
        """Run a child of `job` and return its validated output; the parent is suspended (no
        worker held) until the child ends. A child that fails raises `ChildFailed` here.

        Args:
            job: the child's `Job`, or its name.
            input: its input.
            key: an idempotency key: the same key gives the same child's output (default None).
        """
        return self.wait_for([self.dispatch(job, input, key=key)])[0]

    def wait_for(self, handles: Sequence[Child] | Iterable[Child], timeout: Duration | None = None) -> list[Any]:
        """The outputs of children made by `dispatch`, in order, once all ended (they run in
        parallel meanwhile; the parent holds no worker). Raises `ChildFailed` for the first
        (in order) that failed, `WaitTimedOut` if `timeout` passes first.

        Args:
            handles: `Child` handles from `dispatch`.
            timeout: a duration (default None: no limit).
        """
        children = list(handles)
        records = {}
        for child in children:
            name = next((n for n, text in self._steps.items() if n.startswith("run:") and
                         json.loads(text).get("run") == getattr(child, "id", None)), None)
            if name is None:
                raise ValueError(f"wait_for waits for children this run dispatched: {child!r} is not one")
            records[child.id] = name
        record = f"wait#{self._position}"
        position = self._enter(record)
        text = self._steps.get(record)
        if text is None:
            until = None if timeout is None else time.time() + parse_duration(timeout, what="timeout")
            self._record(record, position, {"until": until}, "wait_for")
        else:
            until = json.loads(text)["until"]
        ended = {child.id: json.loads(self._steps[records[child.id]]) for child in children}
        pending = [run_id for run_id, rec in ended.items() if "status" not in rec]
        if pending:
            if until is not None and time.time() >= until - _EARLY:
                raise WaitTimedOut(f"run {self.run_id}: children {pending} had not ended after the timeout")
            raise Suspended({"runs": pending, "until": until}, until)
        outputs = []
        for child in children:
            rec = ended[child.id]
            if rec["status"] != "succeeded":
                raise ChildFailed(child.id, rec.get("error_type") or rec["status"], rec.get("message"))
            found = self._jobs.get(child.job)
            outputs.append(found.parse_output(rec["output"]) if found is not None else json.loads(rec["output"]))
        return outputs

    def wait_for_event(self, name: str, *, match: dict[str, Any] | None = None,
                       timeout: Duration | None = None) -> Any:
        """Suspend until an event `name` (`Supervisor.emit`, `Client.emit`) whose payload holds
        every item of `match` arrives; its payload. An event emitted since the run was created
        counts, even one emitted just before this call. None if `timeout` passes first.

        Args:
            name: the event's name.
            match: items the payload must hold (default None: any payload).
            timeout: a duration (default None: no limit).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid event name {name!r}: expected a non-empty string")
        if match is not None and not isinstance(match, dict):
            raise TypeError(f"match must be a dict of payload items, got {match!r}")
        record = f"event:{name}#{self._position}"
        position = self._enter(record)
        text = self._steps.get(record)
        wait: dict[str, Any]
        if text is None:
            deadline = None if timeout is None else time.time() + parse_duration(timeout, what="timeout")
            wait = {"event": name, "match": match or {}, "until": deadline, "record": record}
            self._record(record, position, wait, f"the wait for event {name!r}")
        else:
            wait = json.loads(text)
            if "payload" in wait:
                return wait["payload"]
            if wait.get("timed_out"):
                return None
        due = wait.get("until")
        raise Suspended(wait, due if isinstance(due, float | int) else None)

    def cancel(self, handle: Child) -> None:
        """Cancel a run (a child made by `dispatch`): queued or waiting it ends at once, running
        its worker is told and killed after the grace, as any cancel.

        Args:
            handle: the `Child` to cancel.
        """
        if self._call is None:
            raise RuntimeError("ctx.cancel needs a serving supervisor (this Context has none)")
        self._send(CancelRun(self.run_id, self.attempt, int(handle.id)))

    def _job(self, job: Any) -> Any:
        name = job if isinstance(job, str) else getattr(job, "name", None)
        found = self._jobs.get(name) if isinstance(name, str) else None
        if found is None:
            raise ValueError(f"job {name or job!r} is not one of the supervisor's jobs: a child must be a job it serves")
        return found

    # -- progress ----------------------------------------------------------------------------------

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report progress and an optional message; visible through `Handle.progress()` and
        `Supervisor.run()` while the run is running.

        Args:
            fraction: done so far, from 0.0 to 1.0 (ValueError outside), or None for none.
            message: free text, or None (default).
        """
        if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"invalid progress {fraction!r}: expected a fraction between 0 and 1")
        if message is not None:
            message = storable(str(message))
        self._send(Progress(self.run_id, self.attempt, None if fraction is None else float(fraction), message, None))

    def metadata(self, **values: Any) -> None:
        """Attach JSON-serializable values to the run (merged with earlier ones)."""
        text = _to_json(values, "metadata")
        self._check_size("metadata", text)
        self._send(Progress(self.run_id, self.attempt, None, None, text))

    def _check_size(self, what: str, text: str) -> None:
        if len(text) * 4 > self._max_size and len(text.encode()) > self._max_size:
            raise DurableLimitExceeded(f"{what} is {len(text.encode())} bytes of JSON, over max_result_size "
                                       f"({self._max_size} bytes): store a path instead")

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} attempt={self.attempt} job={self.job}>"


def _validated(kind: Any, value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(kind).validate_python(value)


def _timed(fn: Callable[[], T], seconds: float, name: str) -> T:
    """fn() with a timeout by SIGALRM, the job's own itimer (a soft timeout) put back after."""
    def expired(signum: int, frame: Any) -> None:
        raise _StepTimedOut()

    previous = signal.signal(signal.SIGALRM, expired)
    left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    began = time.monotonic()
    try:
        return fn()
    except _StepTimedOut:
        raise TimeoutError(f"step {name!r} timed out after {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if left:  # the soft timeout keeps running: what was left of it, less the step's time
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - began), 0.001))


def _to_json(value: Any, what: str) -> str:
    """JSON text of a step's value or of metadata, or a TypeError saying why it has none."""
    try:
        raw = pydantic_core.to_json(value)  # fails on a lone surrogate; writes NaN and Infinity as such
    except SoftTimeout:
        raise  # the job's soft timeout, which only happened to expire here
    except Exception as exc:
        raise TypeError(f"{what} cannot be stored as JSON: {exc}") from exc
    if b"NaN" in raw or b"Infinity" in raw:  # else the store would hold text that is not JSON
        found = find_nonfinite(pydantic_core.to_jsonable_python(value, serialize_unknown=True))
        if found is not None:
            raise TypeError(f"{what} cannot be stored as JSON: {found[1]} at {list(found[0])} (JSON has no NaN "
                            f"or Infinity)")
    return raw.decode()
