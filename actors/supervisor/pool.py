"""Worker processes: spawn through a fork server, talk over one pipe each, kill trees, restart.

This module knows processes and bytes, not runs: it tells the supervisor about messages
(`on_message`), deaths (`on_exit`) and readiness, and the supervisor decides what they mean.

Start method: `multiprocess`'s fork server. The fork server is started fresh (not forked from
the supervisor, which holds threads, an event loop and an SQLite connection), imports
`actors` once, and forks each worker from that clean state: a restart costs a fork, not an
interpreter start. Jobs travel to each worker once, pickled with dill (so closures and
lambdas from a script's `__main__` work), as bytes the worker unpickles itself so that a
failure there is reported, not lost.

Restarts: a worker that dies unexpectedly is replaced at once the first time; repeated deaths
back off exponentially (100 ms doubling to 30 s, `compute_backoff`), and a worker that lived
`HEALTHY_AFTER` seconds resets the count (OTP's intensity/period). Deaths we caused (timeout,
memory limit, recycling, cancel) restart at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import multiprocess
import psutil

from ..protocol import BadFrame, FrameReader, encode
from ..retry import Retry, compute_backoff
from ..worker.main import worker_main

log = logging.getLogger("actors")
RESTART_BACKOFF = Retry(attempts=1, backoff="exponential", base=0.1, cap=30.0)
HEALTHY_AFTER = 10.0
EOF_GRACE = 0.1  # a worker whose pipe closed and who has not exited after this is killed
_PRELOAD = ["__main__", "actors.worker.forkserver", "actors.worker.main", "pydantic"]


class WorkerSlot:
    """One place in the pool: the current worker process and everything the pool tracks of it."""

    __slots__ = (
        "index", "process", "pid", "fd", "reader", "outbox", "inflight", "ahead", "runs_done", "ready",
        "spawned_at", "exited", "terminating", "kill_target", "note", "failures", "setup_error", "rss",
        "head_started", "deadline", "retiring", "restart_handle", "procs",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.pid = 0
        self.fd = -1
        self.reader = FrameReader()
        self.outbox = bytearray()
        self.inflight: deque[Any] = deque()  # tickets, in execution order
        self.ahead = 0.0  # estimated seconds of work in inflight
        self.runs_done = 0
        self.ready = False
        self.spawned_at = 0.0
        self.exited = True
        self.terminating = False
        self.kill_target: Any = None  # (ticket, outcome, message) the supervisor killed it for
        self.note: str | None = None  # what we know about why it is going away
        self.failures = 0
        self.setup_error: tuple[str, str, str] | None = None
        self.rss = 0
        self.head_started = 0.0
        self.deadline: asyncio.TimerHandle | None = None
        self.retiring = False  # no new runs: it is being recycled or stopped
        self.restart_handle: asyncio.TimerHandle | None = None
        self.procs: list[psutil.Process] = []

    @property
    def alive(self) -> bool:
        return not self.exited

    def __repr__(self) -> str:
        return f"<WorkerSlot {self.index} pid={self.pid} inflight={len(self.inflight)}>"


class Pool:
    """N worker slots over a fork server; reports messages and exits to the supervisor."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        registry: bytes,
        on_message: Callable[[WorkerSlot, Any], None],
        on_exit: Callable[[WorkerSlot, int | None], None],
        on_spawn: Callable[[WorkerSlot], None],
        kill_grace: float,
        max_result_size: int,
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.on_message = on_message
        self.on_exit = on_exit
        self.on_spawn = on_spawn
        self.kill_grace = kill_grace
        self.max_result_size = max_result_size
        self.max_frame = max_result_size + (1 << 20)  # the result plus room for its envelope
        self.slots = [WorkerSlot(i) for i in range(size)]
        self.closing = False
        self._ctx = multiprocess.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._alive_r, self._alive_w = self._ctx.Pipe(duplex=False)
        self._conns: dict[int, Any] = {}  # slot index -> the supervisor's end of its pipe

    # -- starting -------------------------------------------------------------------------

    def start(self) -> None:
        for slot in self.slots:
            self.spawn(slot)

    def spawn(self, slot: WorkerSlot) -> None:
        slot.restart_handle = None
        if self.closing:
            return
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(child, self._alive_r, self.registry, self.max_result_size),
            name=f"actors-worker-{slot.index}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:  # the fork server is gone, no fds left...: try again later, never spin
            parent.close()
            child.close()
            slot.failures += 1
            delay = compute_backoff(RESTART_BACKOFF, slot.failures)
            log.error("could not start worker %d (%s: %s); trying again in %.1f s", slot.index,
                      type(exc).__name__, exc, delay)
            slot.restart_handle = self.loop.call_later(delay, self.spawn, slot)
            return
        child.close()
        slot.process, slot.pid, slot.fd = process, process.pid, parent.fileno()
        self._conns[slot.index] = parent
        os.set_blocking(slot.fd, False)
        slot.reader, slot.outbox = FrameReader(self.max_frame), bytearray()
        slot.inflight.clear()
        slot.ahead, slot.runs_done, slot.ready, slot.rss = 0.0, 0, False, 0
        slot.exited = slot.terminating = slot.retiring = False
        slot.kill_target = slot.note = slot.setup_error = None
        slot.procs = []
        slot.spawned_at = time.monotonic()
        self.loop.add_reader(slot.fd, self._on_readable, slot)
        self.loop.add_reader(process.sentinel, self._on_sentinel, slot)
        self.on_spawn(slot)

    # -- the pipe ---------------------------------------------------------------------------

    def send(self, slot: WorkerSlot, message: Any) -> None:
        """Queue a message for a worker without blocking; the loop drains what the pipe refuses."""
        if slot.exited or slot.terminating:
            return
        data = encode(message)
        if slot.outbox:
            slot.outbox += data
            return
        try:
            written = os.write(slot.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the worker is going away; its sentinel tells the rest
        if written < len(data):
            slot.outbox += data[written:]
            self.loop.add_writer(slot.fd, self._on_writable, slot)

    def _on_writable(self, slot: WorkerSlot) -> None:
        try:
            written = os.write(slot.fd, slot.outbox)
        except BlockingIOError:
            return
        except OSError:
            written = len(slot.outbox)
        del slot.outbox[:written]
        if not slot.outbox:
            self.loop.remove_writer(slot.fd)

    def _on_readable(self, slot: WorkerSlot) -> None:
        try:
            data = os.read(slot.fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(slot.fd)
            self.loop.call_later(EOF_GRACE, self._pipe_closed, slot, slot.pid)
            return
        self._feed(slot, data)

    def _pipe_closed(self, slot: WorkerSlot, pid: int) -> None:
        """EOF without an exit soon after: the worker lives but closed its pipe; it must go."""
        if slot.pid == pid and not slot.exited:
            slot.note = slot.note or "the worker closed its pipe"
            self.terminate(slot)

    def _feed(self, slot: WorkerSlot, data: bytes) -> None:
        try:
            messages = slot.reader.feed(data)
        except BadFrame as exc:
            self.loop.remove_reader(slot.fd)
            slot.note = f"the worker sent a malformed message ({exc})"
            self.terminate(slot)
            return
        for message in messages:
            if slot.terminating:
                return  # a killed worker's late messages lose to the kill
            self.on_message(slot, message)

    def _drain(self, slot: WorkerSlot) -> None:
        """Read what a dead worker wrote before it died."""
        while not slot.terminating:
            try:
                data = os.read(slot.fd, 1 << 20)
            except OSError:
                return
            if not data:
                return
            self._feed(slot, data)

    # -- death ----------------------------------------------------------------------------

    def _on_sentinel(self, slot: WorkerSlot) -> None:
        process = slot.process
        self.loop.remove_reader(process.sentinel)
        self._drain(slot)
        self.loop.remove_reader(slot.fd)
        if slot.outbox:
            self.loop.remove_writer(slot.fd)
            slot.outbox = bytearray()
        exitcode = process.exitcode
        process.join(0)
        conn = self._conns.pop(slot.index, None)
        if conn is not None:
            conn.close()
        slot.exited = True
        if slot.terminating:
            self._kill_now(slot.pid, slot.procs)  # the tree goes with it, grace or not
        self.on_exit(slot, exitcode)

    def schedule_restart(self, slot: WorkerSlot, crashed: bool) -> float:
        """Refill a slot whose worker exited; returns the delay chosen."""
        if self.closing:
            return 0.0
        if crashed:
            if time.monotonic() - slot.spawned_at > HEALTHY_AFTER:
                slot.failures = 0
            slot.failures += 1
        delay = 0.0 if slot.failures <= 1 or not crashed else compute_backoff(RESTART_BACKOFF, slot.failures - 1)
        if delay:
            slot.restart_handle = self.loop.call_later(delay, self.spawn, slot)
        else:
            self.spawn(slot)
        return delay

    def terminate(self, slot: WorkerSlot, grace: float | None = None) -> None:
        """SIGTERM to the worker's group and every descendant, SIGKILL after the grace."""
        if slot.exited or slot.terminating:
            return
        slot.terminating = True
        slot.procs = _tree(slot.pid)
        grace = self.kill_grace if grace is None else grace
        if grace <= 0:
            self._kill_now(slot.pid, slot.procs)
            return
        _signal_tree(slot.pid, slot.procs, signal.SIGTERM)
        self.loop.call_later(grace, self._kill_now, slot.pid, slot.procs)

    def _kill_now(self, pgid: int, procs: list[psutil.Process]) -> None:
        _signal_tree(pgid, procs, signal.SIGKILL)

    # -- stopping -----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill whatever still runs and stop the fork server. Idempotent."""
        self.closing = True
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
            if not slot.exited:
                procs = slot.procs or _tree(slot.pid)
                _signal_tree(slot.pid, procs, signal.SIGKILL)
                try:
                    self.loop.remove_reader(slot.fd)
                    self.loop.remove_writer(slot.fd)
                    self.loop.remove_reader(slot.process.sentinel)
                except Exception:
                    pass
                slot.process.join(5)
                slot.exited = True
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._alive_w.close()
        self._alive_r.close()
        _stop_fork_server()


def _stop_fork_server() -> None:
    """Stop the fork server (and the resource tracker it started) so a supervisor that stopped
    serving leaves no child process behind; the next `serve()` starts new ones."""
    from multiprocess import forkserver, resource_tracker

    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        with contextlib.suppress(Exception):
            helper._stop()


def _tree(pid: int) -> list[psutil.Process]:
    """The worker and all its descendants now (subreaping keeps double-forked ones among them)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _signal_tree(pgid: int, procs: list[psutil.Process], sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)
    for proc in procs:
        try:
            proc.send_signal(sig)  # checks the pid was not reused
        except psutil.Error:
            pass


def tree_rss(pid: int) -> int:
    """Resident memory of a worker and all its descendants, in bytes (0 if it is gone)."""
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total
