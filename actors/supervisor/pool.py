"""Worker processes: spawn through a fork server, talk over one pipe each, kill trees, restart.

This module knows processes and bytes, not runs: it tells the supervisor about messages
(`on_message`), deaths (`on_exit`) and readiness, and the supervisor decides what they mean.

Start method: `multiprocess`'s fork server. The fork server is started fresh (not forked from
the supervisor, which holds threads, an event loop and an SQLite connection), imports
`actors` once, and forks each worker from that clean state: a restart costs a fork, not an
interpreter start. Jobs travel to each worker once, pickled with dill (so closures and
lambdas from a script's `__main__` work), as bytes the worker unpickles itself so that a
failure there is reported, not lost.

Deaths are learnt from the worker's own process, never from the fork server: each worker's
`pidfd` (Linux 5.3+) becomes readable when the process has exited, even while it is an unreaped
zombie. The fork server, the worker's parent, reaps it and writes its exit status on the
multiprocess sentinel pipe; we wait up to `EXIT_REPORT_WAIT` after the pidfd fires for that
report, and without it the exit status is unknown (`on_exit(slot, None)`, and the slot's note
says so). Where there is no pidfd the sentinel's report is the death notice, as before.

The fork server is a single process that a job can kill or stop (`os.getppid()` is the fork
server). It is found dead when a sentinel reaches EOF without a report (its workers live on, as
orphans), and found stuck when psutil says it is stopped (checked every `SERVER_CHECK` and
before each spawn) or when it does not answer a spawn in time (`FORK_TIMEOUT`, or
`SERVER_START_TIMEOUT` for a new one; the wait checks every 50 ms that the server is not
stopped, so the event loop never blocks on one). A lost fork server is SIGKILLed
(a stopped one too, so init reaps the zombies it holds), reaped, and forgotten; the next spawn
starts a new one, right away the first time and with `compute_backoff` delays when servers keep
failing within `HEALTHY_AFTER` of each other. The orphans of a lost server finish what they hold
and are then stopped (they are retired), so every worker again descends from the supervisor
and reports its exit status; their slots refill at once from the new server. The supervisor is
never made a child subreaper.

Restarts: a worker that dies unexpectedly is replaced at once the first time; repeated deaths
back off exponentially (100 ms doubling to 30 s, `compute_backoff`), and a worker that lived
`HEALTHY_AFTER` seconds resets the count (OTP's intensity/period). Deaths we caused (timeout,
memory limit, recycling, cancel) restart at once.

Memory (`tree_memory`, for `max_memory`): the proportional set size (PSS) summed over the
worker's process tree. RSS summed over a tree counts every shared page once per process (50
forked children of a 27 MiB worker "used" 1.4 GiB); PSS splits each shared page between the
processes that map it, so the sum is what the tree really holds, and memory a job allocated
before forking counts once. One sample of a 51-process tree costs 10-20 ms (psutil reads
`/proc/<pid>/smaps_rollup`; 3 ms of it is finding the tree), well inside the 250 ms interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import select
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import multiprocess
import psutil
from multiprocess import forkserver, popen_forkserver, spawn, util
from multiprocess import process as mp_process
from multiprocess.context import ForkServerProcess, reduction, set_spawning_popen

from ..protocol import BadFrame, FrameReader, Stop, encode
from ..retry import Retry, compute_backoff
from ..worker.main import worker_main

log = logging.getLogger("actors")
RESTART_BACKOFF = Retry(attempts=1, backoff="exponential", base=0.1, cap=30.0)
HEALTHY_AFTER = 10.0
EOF_GRACE = 0.1  # a worker whose pipe closed and who has not exited after this is killed
EXIT_REPORT_WAIT = 1.0  # after a worker's pidfd fires, how long the fork server has to report its exit status
FORK_TIMEOUT = 5.0  # a running fork server answers a spawn within this (it takes milliseconds)
SERVER_START_TIMEOUT = 60.0  # a new fork server imports the user's __main__ before it answers
SERVER_CHECK = 1.0  # how often the fork server's state is checked while serving (about 50 µs each)
_POLL = 0.05  # how often a spawn waiting for the fork server checks that it is not stopped
_PRELOAD = ["__main__", "actors.worker.forkserver", "actors.worker.main", "pydantic"]


class WorkerSlot:
    """One place in the pool: the current worker process and everything the pool tracks of it."""

    __slots__ = (
        "index", "process", "pid", "fd", "reader", "outbox", "inflight", "ahead", "runs_done", "ready",
        "spawned_at", "exited", "terminating", "kill_target", "note", "failures", "setup_error", "rss",
        "head_started", "deadline", "retiring", "restart_handle", "procs",
        "pidfd", "server", "gone", "unreported", "report_wait", "orphan", "stop_sent",
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
        self.rss = 0  # peak memory of the tree (PSS, see tree_memory), bytes
        self.head_started = 0.0
        self.deadline: asyncio.TimerHandle | None = None
        self.retiring = False  # no new runs: it is being recycled or stopped
        self.restart_handle: asyncio.TimerHandle | None = None
        self.procs: list[psutil.Process] = []
        self.pidfd = -1  # the worker's own process, readable once it exited (-1: none, use the sentinel)
        self.server = 0  # pid of the fork server that forked it
        self.gone = False  # its process has exited (the pidfd fired)
        self.unreported = False  # its sentinel ended without an exit status: the fork server is gone
        self.report_wait: asyncio.TimerHandle | None = None
        self.orphan = False  # its fork server is gone; it is retired and stopped once idle
        self.stop_sent = False

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
        self.server_failures = 0  # fork servers lost in quick succession
        self._server_seen = 0  # the fork server the last spawn used, and since when
        self._server_since = 0.0
        self._server_hold = 0.0  # monotonic time before which no new fork server is started
        self._lost: set[int] = set()  # fork servers found dead or stuck (pids)
        self._watch: asyncio.TimerHandle | None = None

    # -- starting -------------------------------------------------------------------------

    def start(self) -> None:
        for slot in self.slots:
            self.spawn(slot)
        self._watch = self.loop.call_later(SERVER_CHECK, self._check_server)

    def _check_server(self) -> None:
        """A stopped fork server holds its dead workers as zombies and answers no spawn: replace it
        now rather than when a spawn meets it."""
        if self.closing:
            return
        self._server_ok()
        self._watch = self.loop.call_later(SERVER_CHECK, self._check_server)

    def _server_ok(self) -> None:
        """Lose the current fork server if psutil finds it stopped or dead."""
        server = _server_pid()
        if server is not None and server not in self._lost and (state := _state(server)) != "running":
            self._lose_server(server, f"is {state}")

    def spawn(self, slot: WorkerSlot) -> None:
        slot.restart_handle = None
        if self.closing:
            return
        self._server_ok()  # never talk to a stopped one
        if self._defer(slot):
            return
        parent, child = self._ctx.Pipe(duplex=True)
        process = _WorkerProcess(
            target=worker_main, args=(child, self._alive_r, self.registry, self.max_result_size),
            name=f"actors-worker-{slot.index}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:  # the fork server is gone or stuck, no fds left...: retry later, never spin
            parent.close()
            child.close()
            lost = len(self._lost)
            if isinstance(exc, _ForkServerStuck):
                self._lose_server(exc.server, str(exc))
            else:
                self._server_ok()
            if len(self._lost) > lost:  # the fork server's fault: its replacement's backoff applies
                if not self._defer(slot):
                    slot.restart_handle = self.loop.call_later(0, self.spawn, slot)
                return
            slot.failures += 1
            delay = compute_backoff(RESTART_BACKOFF, slot.failures)
            log.error("could not start worker %d (%s: %s); trying again in %.1f s", slot.index,
                      type(exc).__name__, exc, delay)
            slot.restart_handle = self.loop.call_later(delay, self.spawn, slot)
            return
        mp_process._children.discard(process)  # ours alone: multiprocess must never join it (at exit)
        child.close()
        slot.process, slot.pid, slot.fd = process, process.pid, parent.fileno()
        self._conns[slot.index] = parent
        os.set_blocking(slot.fd, False)
        slot.reader, slot.outbox = FrameReader(self.max_frame), bytearray()
        slot.inflight.clear()
        slot.ahead, slot.runs_done, slot.ready, slot.rss = 0.0, 0, False, 0
        slot.exited = slot.terminating = slot.retiring = False
        slot.gone = slot.unreported = slot.orphan = slot.stop_sent = False
        slot.kill_target = slot.note = slot.setup_error = slot.report_wait = None
        slot.procs = []
        slot.spawned_at = time.monotonic()
        slot.server = _server_pid() or 0
        if slot.server != self._server_seen:
            self._server_seen, self._server_since = slot.server, slot.spawned_at
        slot.pidfd = _pidfd_open(slot.pid)
        self.loop.add_reader(slot.fd, self._on_readable, slot)
        self.loop.add_reader(process.sentinel, self._on_sentinel, slot)
        if slot.pidfd >= 0:
            self.loop.add_reader(slot.pidfd, self._on_pidfd, slot)
        elif slot.pidfd == -2:  # it is gone already; the sentinel says how
            slot.gone, slot.pidfd = True, -1
        self.on_spawn(slot)

    def _defer(self, slot: WorkerSlot) -> bool:
        """While a lost fork server's replacement backs off, spawns wait for it."""
        wait = self._server_hold - time.monotonic()
        if wait <= 0:
            return False
        slot.restart_handle = self.loop.call_later(wait, self.spawn, slot)
        return True

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
            return  # the worker is going away; its pidfd tells the rest
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
        if slot.pid == pid and not slot.exited and not slot.gone:
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
        if slot.orphan and not slot.inflight and not slot.stop_sent:
            self._stop_orphan(slot)

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

    def _on_pidfd(self, slot: WorkerSlot) -> None:
        """The worker's process exited: wait a moment for the fork server's report of its status."""
        self.loop.remove_reader(slot.pidfd)
        slot.gone = True
        if slot.unreported or _state(slot.server) != "running":
            self._died(slot, None)  # no report will come: its fork server is gone or stopped
        elif _readable(slot.process.sentinel):
            self._on_sentinel(slot)
        else:
            slot.report_wait = self.loop.call_later(EXIT_REPORT_WAIT, self._died, slot, None)

    def _on_sentinel(self, slot: WorkerSlot) -> None:
        """The fork server reported the worker's exit status, or died (EOF)."""
        self.loop.remove_reader(slot.process.sentinel)
        try:
            report = os.read(slot.process.sentinel, 8)
        except OSError:
            report = b""
        if len(report) == 8:
            self._died(slot, struct.unpack("q", report)[0])  # reaped by the fork server: gone
            return
        slot.unreported = True
        self._lose_server(slot.server, "died")
        if slot.gone:
            self._died(slot, None)
        elif slot.pidfd < 0:
            self._poll_orphan(slot, slot.pid)  # no pidfd: look for its end with psutil
        else:
            self._orphaned(slot)

    def _died(self, slot: WorkerSlot, exitcode: int | None) -> None:
        """The worker's process is gone: read what it wrote, release it, tell the supervisor."""
        if slot.exited:
            return
        self._release(slot, exitcode)
        if exitcode is None:
            unknown = "its exit status is unknown: the fork server did not report it"
            slot.note = f"{slot.note}; {unknown}" if slot.note else unknown
        if slot.terminating:
            self._kill_now(slot.pid, slot.procs)  # the tree goes with it, grace or not
        self.on_exit(slot, exitcode)

    def _release(self, slot: WorkerSlot, exitcode: int | None, drain: bool = True) -> None:
        """Stop watching a worker that is gone and close everything we held of it."""
        if slot.report_wait is not None:
            slot.report_wait.cancel()
            slot.report_wait = None
        process = slot.process
        with contextlib.suppress(Exception):
            self.loop.remove_reader(process.sentinel)
        if slot.pidfd >= 0:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(slot.pidfd)
            os.close(slot.pidfd)
            slot.pidfd = -1
        if drain:
            self._drain(slot)
        self.loop.remove_reader(slot.fd)
        if slot.outbox:
            self.loop.remove_writer(slot.fd)
            slot.outbox = bytearray()
        conn = self._conns.pop(slot.index, None)
        if conn is not None:
            conn.close()
        popen = process._popen
        if popen is not None and popen.returncode is None:
            popen.returncode = 255 if exitcode is None else exitcode  # multiprocess's own "unknown"
        with contextlib.suppress(Exception):
            process.close()  # closes the sentinel
        slot.exited = True

    def _poll_orphan(self, slot: WorkerSlot, pid: int) -> None:
        if slot.pid != pid or slot.exited:
            return
        if _state(pid) != "gone":
            self._orphaned(slot)
            self.loop.call_later(0.1, self._poll_orphan, slot, pid)
        else:
            slot.gone = True
            self._died(slot, None)

    def _orphaned(self, slot: WorkerSlot) -> None:
        """Its fork server is gone: let it finish what it holds, then stop it (it is replaced)."""
        if slot.orphan:
            return
        slot.orphan = slot.retiring = True
        if not slot.inflight:
            self._stop_orphan(slot)

    def _stop_orphan(self, slot: WorkerSlot) -> None:
        slot.stop_sent = True
        self.send(slot, Stop())

    def _lose_server(self, pid: int, why: str) -> None:
        """A fork server is dead or stuck: SIGKILL and reap it, forget it, and hold the next start
        back when servers keep failing. Its workers that still run are dealt with one by one."""
        if not pid or pid in self._lost:
            return
        self._lost.add(pid)
        if _server_pid() == pid:
            _discard_fork_server(kill=True)
        now = time.monotonic()
        if now - self._server_since > HEALTHY_AFTER:
            self.server_failures = 0
        self.server_failures += 1
        failures = self.server_failures
        delay = 0.0 if failures <= 1 else compute_backoff(RESTART_BACKOFF, failures - 1)
        self._server_hold = max(self._server_hold, now + delay)
        self._server_since = self._server_hold  # the replacement's life starts then, spawned or not
        if not self.closing:
            log.error("the fork server (pid %d) %s; it is replaced%s, its workers once they are idle", pid,
                      why, f" in {delay:.1f} s" if delay else "")

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
        if self._watch is not None:
            self._watch.cancel()
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
            if not slot.exited:
                procs = slot.procs or _tree(slot.pid)
                _signal_tree(slot.pid, procs, signal.SIGKILL)
                _wait_gone(slot, 5.0)
                with contextlib.suppress(Exception):
                    self._release(slot, None, drain=False)
                slot.exited = True
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._alive_w.close()
        self._alive_r.close()
        _stop_fork_server()


# -- the fork server ---------------------------------------------------------------------------


class _ForkServerStuck(OSError):
    """Raised when the fork server does not answer a spawn: it is stopped or hangs."""

    def __init__(self, server: int, message: str) -> None:
        super().__init__(message)
        self.server = server


class _BoundedPopen(popen_forkserver.Popen):
    """multiprocess's fork-server launch, with every wait on the fork server bounded.

    The stock launch writes the pickled process and then blocks reading the pid, forever if the
    server is stopped. The server writes the pid as soon as it forked, so we read it first
    (waiting in slices, checking the server is not stopped), then write to the new child."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        before = _server_pid()
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        server = _server_pid() or 0
        parent_w = os.dup(w)  # the child's sentinel of its parent, as in multiprocess
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        try:
            limit = FORK_TIMEOUT if server == before else SERVER_START_TIMEOUT
            deadline = time.monotonic() + limit
            while not _readable(self.sentinel, _POLL):
                state = _state(server)
                if state == "stopped":
                    raise _ForkServerStuck(server, "is stopped")
                if time.monotonic() > deadline:
                    raise _ForkServerStuck(server, f"did not answer a spawn within {limit:.0f} s")
            self.pid = forkserver.read_signed(self.sentinel)
            _write_all(w, buf.getbuffer(), deadline + FORK_TIMEOUT)
        except BaseException:
            self.finalizer()
            raise
        finally:
            os.close(w)


class _WorkerProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _BoundedPopen(process_obj)


def _server_pid() -> int | None:
    return forkserver._forkserver._forkserver_pid


def _state(pid: int) -> str:
    """A process's state: 'running', 'stopped' (by a signal) or 'gone' (exited, a zombie). A debugger's
    stop reads as running: one that lasts is caught by the bounded wait of a spawn."""
    if pid <= 0:
        return "gone"
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return "gone"
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return "gone"
    if status == psutil.STATUS_STOPPED:
        return "stopped"
    return "running"


def _discard_fork_server(kill: bool, grace: float = 2.0) -> None:
    """Stop the fork server multiprocess started (by closing its alive pipe, or at once with SIGKILL;
    SIGKILL also after `grace`), reap it, and forget it, so that the next spawn starts a new one."""
    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return
        if server._forkserver_alive_fd is not None:
            with contextlib.suppress(OSError):
                os.close(server._forkserver_alive_fd)
        if kill or not _reap(pid, grace):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # a stopped process dies of it too
            _reap(pid, 5.0)
        address = server._forkserver_address
        if address and not util.is_abstract_socket_namespace(address):
            with contextlib.suppress(OSError):
                os.unlink(address)
        server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None


def _stop_fork_server() -> None:
    """Stop the fork server (and the resource tracker it started) so a supervisor that stopped
    serving leaves no child process behind; the next `serve()` starts new ones."""
    from multiprocess import resource_tracker

    with contextlib.suppress(Exception):
        _discard_fork_server(kill=_state(_server_pid() or 0) == "stopped")  # a stopped one never exits
    with contextlib.suppress(Exception):
        resource_tracker._resource_tracker._stop()


# -- processes ---------------------------------------------------------------------------------


def _pidfd_open(pid: int) -> int:
    """A pidfd for the worker; -1 where the system has none, -2 if the process is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -2
    except (AttributeError, OSError):
        return -1


def _readable(fd: int, timeout: float = 0.0) -> bool:
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    except (OSError, ValueError):
        return True  # closed or broken: reading it tells


def _write_all(fd: int, data: memoryview, deadline: float) -> None:
    os.set_blocking(fd, False)
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise TimeoutError("the new worker did not read its start data") from None


def _reap(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for a child process to exit and collect it; True once it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _wait_gone(slot: WorkerSlot, timeout: float) -> None:
    """Wait (blocking, bounded) for a worker we SIGKILLed to exit."""
    if slot.gone:
        return
    if slot.pidfd >= 0:
        _readable(slot.pidfd, timeout)
        return
    deadline = time.monotonic() + timeout
    while _state(slot.pid) != "gone" and time.monotonic() < deadline:
        time.sleep(0.005)


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


def tree_memory(pid: int) -> int:
    """Memory a worker and all its descendants hold, in bytes (0 if it is gone): the sum of each
    process's PSS (shared pages split between the processes that map them), where the system
    reports it (Linux), else USS, else RSS. See the module docstring for why and what it costs."""
    total = 0
    for proc in _tree(pid):
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", getattr(info, "uss", info.rss))
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


tree_rss = tree_memory  # the supervisor's name for it
