"""The pipe protocol between a supervisor and the workers it started (version 1).

One framing rule: every message is a 4-byte big-endian length followed by a pickle of one of the
records below. Pickle only ever crosses these private pipes, never the store. The supervisor
reads everything available per readiness event and splits frames itself (`FrameReader`).

Sequence carries meaning: a worker executes its assigned runs one at a time, in the order they
were sent, and writes each run's result before it starts the next. So the supervisor always
knows which run a worker held when it died: the oldest one it has not reported.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, NamedTuple

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 31


# -- supervisor -> worker ---------------------------------------------------------------------


class Order(NamedTuple):
    """One run for a worker to execute: an attempt of it, the input as the store holds it, and
    the steps earlier attempts completed (so this one skips them). Built positionally by the
    supervisor's hot path: the field order is part of the protocol."""

    run_id: int
    attempt: int
    job: str  # the job's name in the registry the worker was given
    input: str  # JSON, validated by the worker against the job's input model
    soft_timeout: float | None  # seconds until SoftTimeout is raised inside the job; None: none
    steps: dict[str, str] | None  # completed `ctx.step`s, {name: JSON value}; None: none
    positions: dict[str, int] | None = None  # each record's position in the run (the determinism guard)


class Assign(NamedTuple):
    """Runs for the worker to execute, in this order."""

    runs: list[Order]


class Cancel(NamedTuple):
    """Cancel a run: skip it if it has not started, else `ctx.cancelled` turns true."""

    run_id: int


class Stop(NamedTuple):
    """Finish what was assigned, then exit."""


class Spawned(NamedTuple):
    """The reply to `Spawn`: the child's run id, or why none was stored."""

    run_id: int
    child_id: int | None
    error: str | None = None


# -- worker -> supervisor ---------------------------------------------------------------------


class Ready(NamedTuple):
    """The worker finished its setup and accepts runs."""

    pid: int
    protocol: int = PROTOCOL_VERSION


class SetupFailed(NamedTuple):
    """The worker could not load the jobs or run their setup; it exits after sending this."""

    error_type: str
    message: str
    traceback: str


class StepDone(NamedTuple):
    """A durable record of the run is done (a `ctx.step` returned, a sleep, an invoke or an event
    wait was recorded); its JSON value is stored at its position so a replay returns it."""

    run_id: int
    attempt: int
    name: str
    value: str
    position: int | None = None


class StepStarted(NamedTuple):
    """A `ctx.step` starts running its function (the run's current step)."""

    run_id: int
    attempt: int
    name: str


class Suspend(NamedTuple):
    """The run waits durably (a sleep, children, an event): the attempt ends `suspended`, the
    worker is free. `wait` is JSON ({"until": t} | {"runs": [ids]} | {"event": name, "match":
    {...}, "until": t | None}); `wake_at` the time it is due whatever else happens, if any."""

    run_id: int
    attempt: int
    wait: str
    wake_at: float | None
    seconds: float
    peak_rss: int


class Spawn(NamedTuple):
    """Store a child run of this run (`ctx.invoke`, `ctx.dispatch`); the worker waits for the
    `Spawned` reply. `input` is JSON already validated against the child job's input."""

    run_id: int
    attempt: int
    job: str
    input: str
    key: str
    delay: float | None


class CancelRun(NamedTuple):
    """`ctx.cancel(handle)`: cancel another run (a child)."""

    run_id: int
    attempt: int
    target: int


class Progress(NamedTuple):
    """`ctx.progress` / `ctx.metadata` of a running run (metadata as a JSON object, merged)."""

    run_id: int
    attempt: int
    fraction: float | None
    message: str | None
    metadata: str | None


class Done(NamedTuple):
    """A run returned; `output` is JSON text already validated against the job's output type."""

    run_id: int
    attempt: int
    output: str
    seconds: float
    peak_rss: int


class Failed(NamedTuple):
    """A run raised, or its output was invalid; `retryable` is the job's retry policy's verdict."""

    run_id: int
    attempt: int
    error_type: str
    message: str
    traceback: str
    retryable: bool
    seconds: float
    peak_rss: int


class Logged(NamedTuple):
    """A record of `ctx.log` (the "actors.job" logger) made inside a run, for the supervisor's
    handlers: formatted in the worker, logged again there with the run's fields."""

    run_id: int
    attempt: int
    level: int
    logger: str
    message: str
    created: float


def storable(text: str) -> str:
    """`text` with any lone surrogate (a `surrogateescape`d byte from a file name, a bad literal)
    written as a visible backslash escape such as `\\ud800`: the store encodes text as UTF-8,
    which has no surrogates, and one such character would otherwise fail the supervisor's write.
    `backslashreplace` keeps every other character as it was and still shows which code point it
    was, where `replace` would leave a bare `?`; ASCII text (the common case) is returned as is."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def encode(message: Any) -> bytes:
    """One frame: length header + pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: Any) -> None:
    """Write one whole frame to a blocking fd (the worker's side)."""
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view) :]


class BadFrame(Exception):
    """Raised when bytes on a pipe are not a frame of this protocol."""


class FrameReader:
    """Accumulates bytes and splits out whole messages; never raises on partial input."""

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def partial(self) -> bool:
        """Whether it holds the start of a message not complete yet."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the messages completed by them. Raises BadFrame on garbage."""
        buffer = self._buffer
        buffer += data
        messages = []
        offset = 0
        end = len(buffer)
        with memoryview(buffer) as view:
            while end - offset >= 4:
                (size,) = _HEADER.unpack_from(view, offset)
                if size > self._max_frame:
                    raise BadFrame(f"a frame of {size} bytes, over the limit of {self._max_frame}")
                if end - offset - 4 < size:
                    break
                try:
                    messages.append(pickle.loads(view[offset + 4 : offset + 4 + size]))
                except Exception as exc:
                    raise BadFrame(f"undecodable frame: {type(exc).__name__}: {exc}") from exc
                offset += 4 + size
        if offset:
            del buffer[:offset]
        return messages
