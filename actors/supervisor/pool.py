"""Worker processes: spawn through a fork server, talk over one pipe each, kill trees, restart.

This module knows processes and bytes, not runs: it does the handshake itself (`Ready`,
`SetupFailed`), and tells the loop about readiness (`on_ready`), the workers' reports on runs
(`on_message`), deaths (`on_exit`) and orphans of a lost fork server (`on_orphaned`); the loop
and the tracker decide what they mean.

Start method: our fork server (`processes.ForkServer`, `worker/forkserver.py`), which forks
each worker: a start or a restart costs a fork, not an interpreter start. It outlives this
pool (one per supervisor, across `serve()` calls), and so do the workers idle at a graceful
end (`keep`): the next pool takes them before it forks any (`ForkServers.take`). A forked
fork server hands each worker the jobs as objects; a fresh-interpreter one hands them pickled
with dill (so closures and lambdas from a script's `__main__` work), as bytes the worker
unpickles itself so that a failure there is reported, not lost.

Deaths are learnt from the worker's own process, never from the fork server: each worker's
`pidfd` (Linux 5.3+) becomes readable when the process has exited, even while it is an unreaped
zombie. The fork server, the worker's parent, reaps it and writes its exit status on the
worker's status pipe (its sentinel); we wait up to `EXIT_REPORT_WAIT` after the pidfd fires for that
report, and without it the exit status is unknown (`on_exit(slot, None)`, and the slot's note
says so). Where there is no pidfd the sentinel's report is the death notice, as before.

A lost fork server (dead: a sentinel's EOF without a report; stuck: psutil finds it stopped, or
it does not answer a spawn) is replaced, and its orphaned workers are retired: see `processes.py`.

Restarts: a worker that dies unexpectedly is replaced at once the first time; repeated deaths
back off exponentially (100 ms doubling to 30 s, `compute_backoff`), and a worker that lived
`HEALTHY_AFTER` seconds resets the count (OTP's intensity/period). Deaths we caused (timeout,
memory limit, recycling, cancel) restart at once.

Memory (`max_memory`) is measured as PSS over the process tree: see `processes.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

import psutil

from ..protocol import BadFrame, FrameReader, Ready, SetupFailed, encode
from ..retry import Retry, compute_backoff
from .processes import (
    ForkServers,
    ForkServerStuck,
    IdleWorker,
    pidfd_open,
    process_state,
    readable,
    signal_tree,
    tree,
    wait_gone,
)

log = logging.getLogger("actors")
RESTART_BACKOFF = Retry(attempts=1, backoff="exponential", base=0.1, cap=30.0)
HEALTHY_AFTER = 10.0
EOF_GRACE = 0.1  # a worker whose pipe closed and who has not exited after this is killed
EXIT_REPORT_WAIT = 1.0  # after a worker's pidfd fires, how long the fork server has to report its exit status
SERVER_CHECK = 1.0  # how often the fork server's state is checked while serving (about 50 µs each)


class WorkerSlot:
    """One place in the pool: the current worker process and its facts (no runs: see the tracker)."""

    __slots__ = (
        "index", "sentinel", "pid", "fd", "reader", "outbox", "ready", "spawned_at", "exited", "terminating",
        "note", "failures", "setup_error", "restart_handle", "procs", "pidfd", "server", "gone", "unreported",
        "report_wait", "orphan", "runs_before",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.sentinel = -1  # the worker's status pipe: its exit code from the fork server, or EOF
        self.pid = 0
        self.fd = -1
        self.reader = FrameReader()
        self.outbox = bytearray()
        self.ready = False  # it sent Ready: setup done, accepting runs
        self.spawned_at = 0.0
        self.exited = True
        self.terminating = False
        self.note: str | None = None  # what we know about why it is going away
        self.failures = 0
        self.setup_error: tuple[str, str, str] | None = None
        self.restart_handle: asyncio.TimerHandle | None = None
        self.procs: list[psutil.Process] = []
        self.pidfd = -1  # the worker's own process, readable once it exited (-1: none, use the sentinel)
        self.server = 0  # pid of the fork server that forked it
        self.gone = False  # its process has exited (the pidfd fired)
        self.unreported = False  # its sentinel ended without an exit status: the fork server is gone
        self.report_wait: asyncio.TimerHandle | None = None
        self.orphan = False  # its fork server is gone; it is retired and stopped once idle
        self.runs_before = 0  # the runs a worker kept from the last serve() did then

    @property
    def alive(self) -> bool:
        return not self.exited

    def __repr__(self) -> str:
        return f"<WorkerSlot {self.index} pid={self.pid}>"


class Pool:
    """N worker slots over a fork server; reports messages and exits to the supervisor."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        servers: ForkServers,
        on_message: Callable[[WorkerSlot, Any], None],
        on_exit: Callable[[WorkerSlot, int | None], None],
        on_spawn: Callable[[WorkerSlot], None],
        kill_grace: float,
        max_result_size: int,
        *,
        on_ready: Callable[[WorkerSlot], None],
        on_orphaned: Callable[[WorkerSlot], None],
    ) -> None:
        self.loop = loop
        self.servers = servers
        self.on_message = on_message
        self.on_exit = on_exit
        self.on_spawn = on_spawn
        self.on_ready = on_ready
        self.on_orphaned = on_orphaned
        self.kill_grace = kill_grace
        self.max_result_size = max_result_size
        self.max_frame = max_result_size + (1 << 20)  # the result plus room for its envelope
        self.slots = [WorkerSlot(i) for i in range(size)]
        self.closing = False
        self._conns: dict[int, Any] = {}  # slot index -> the supervisor's end of its pipe
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
        bad = self.servers.check()
        if bad is not None:
            self._lose_server(bad[0], f"is {bad[1]}")

    def spawn(self, slot: WorkerSlot) -> None:
        slot.restart_handle = None
        if self.closing:
            return
        self._server_ok()  # never talk to a stopped one
        if self._defer(slot):
            return
        idle = self.servers.take()
        try:
            if idle is None:
                server = self.servers.server()
                pid, parent, sentinel = server.spawn()
            else:
                pid, parent, sentinel = idle.pid, idle.sock, idle.status_r
        except Exception as exc:  # the fork server is gone or stuck, no fds left...: retry later, never spin
            lost = len(self.servers.lost)
            if isinstance(exc, ForkServerStuck):
                self._lose_server(exc.server, str(exc))
            else:
                self._server_ok()
            if len(self.servers.lost) > lost:  # the fork server's fault: its replacement's backoff applies
                if not self._defer(slot):
                    slot.restart_handle = self.loop.call_later(0, self.spawn, slot)
                return
            slot.failures += 1
            delay = compute_backoff(RESTART_BACKOFF, slot.failures)
            log.error("could not start worker %d (%s: %s); trying again in %.1f s", slot.index,
                      type(exc).__name__, exc, delay)
            slot.restart_handle = self.loop.call_later(delay, self.spawn, slot)
            return
        slot.sentinel, slot.pid, slot.fd = sentinel, pid, parent.fileno()
        self._conns[slot.index] = parent
        os.set_blocking(slot.fd, False)
        slot.reader, slot.outbox = FrameReader(self.max_frame), bytearray()
        slot.ready = slot.exited = slot.terminating = False
        slot.gone = slot.unreported = slot.orphan = False
        slot.note = slot.setup_error = slot.report_wait = None
        slot.procs = []
        slot.spawned_at = time.monotonic()
        slot.server = server.pid if idle is None else idle.server
        slot.runs_before = 0 if idle is None else idle.runs_done
        self.servers.used(slot.server, slot.spawned_at)
        slot.pidfd = pidfd_open(slot.pid) if idle is None else idle.pidfd
        self.loop.add_reader(slot.fd, self._on_readable, slot)
        self.loop.add_reader(sentinel, self._on_sentinel, slot)
        if slot.pidfd >= 0:
            self.loop.add_reader(slot.pidfd, self._on_pidfd, slot)
        elif slot.pidfd == -2:  # it is gone already; the sentinel says how
            slot.gone, slot.pidfd = True, -1
        self.on_spawn(slot)
        if idle is not None and idle.ready:  # kept from the last serve(): its Ready was read then
            slot.ready = True
            self.on_ready(slot)

    def keep(self, slot: WorkerSlot, runs_done: int) -> bool:
        """Hand an idle, ready worker over to the fork servers for the next `serve()` instead of
        stopping it (see `processes.IdleWorker`); False if it cannot be kept as it is."""
        if slot.exited or slot.terminating or slot.gone or slot.orphan or not slot.ready:
            return False
        self._drain(slot)  # nothing is due from an idle worker, but what came is read now
        if slot.outbox or slot.reader.partial or slot.server != self.servers.pid or slot.exited:
            return False
        self.loop.remove_reader(slot.fd)
        self.loop.remove_reader(slot.sentinel)
        if slot.pidfd >= 0:
            self.loop.remove_reader(slot.pidfd)
        self.servers.idle.append(IdleWorker(slot.pid, self._conns.pop(slot.index), slot.sentinel, slot.pidfd,
                                            slot.server, ready=True, runs_done=runs_done))
        slot.sentinel = slot.pidfd = slot.fd = -1
        slot.exited = True
        return True

    def _defer(self, slot: WorkerSlot) -> bool:
        """While a lost fork server's replacement backs off, spawns wait for it."""
        wait = self.servers.hold - time.monotonic()
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
            kind = type(message)
            if kind is Ready:
                slot.ready = True
                self.on_ready(slot)
            elif kind is SetupFailed:
                slot.setup_error = (message.error_type, message.message, message.traceback)
            else:
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

    def _on_pidfd(self, slot: WorkerSlot) -> None:
        """The worker's process exited: wait a moment for the fork server's report of its status."""
        self.loop.remove_reader(slot.pidfd)
        slot.gone = True
        if slot.unreported or process_state(slot.server) != "running":
            self._died(slot, None)  # no report will come: its fork server is gone or stopped
        elif readable(slot.sentinel):
            self._on_sentinel(slot)
        else:
            slot.report_wait = self.loop.call_later(EXIT_REPORT_WAIT, self._died, slot, None)

    def _on_sentinel(self, slot: WorkerSlot) -> None:
        """The fork server reported the worker's exit status, or died (EOF)."""
        self.loop.remove_reader(slot.sentinel)
        try:
            report = os.read(slot.sentinel, 8)
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
        with contextlib.suppress(Exception):
            self.loop.remove_reader(slot.sentinel)
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
        if slot.sentinel >= 0:
            with contextlib.suppress(OSError):
                os.close(slot.sentinel)
            slot.sentinel = -1
        slot.exited = True

    def _poll_orphan(self, slot: WorkerSlot, pid: int) -> None:
        if slot.pid != pid or slot.exited:
            return
        if process_state(pid) != "gone":
            self._orphaned(slot)
            self.loop.call_later(0.1, self._poll_orphan, slot, pid)
        else:
            slot.gone = True
            self._died(slot, None)

    def _orphaned(self, slot: WorkerSlot) -> None:
        """Its fork server is gone: let it finish what it holds, then stop it (it is replaced)."""
        if slot.orphan:
            return
        slot.orphan = True
        self.on_orphaned(slot)

    def _lose_server(self, pid: int, why: str) -> None:
        """A fork server is dead or stuck: SIGKILL and reap it, forget it, and hold the next start
        back when servers keep failing. Its workers that still run are dealt with one by one."""
        delay = self.servers.lose(pid)
        if delay is not None and not self.closing:
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
        slot.procs = tree(slot.pid)
        grace = self.kill_grace if grace is None else grace
        if grace <= 0:
            self._kill_now(slot.pid, slot.procs)
            return
        signal_tree(slot.pid, slot.procs, signal.SIGTERM)
        self.loop.call_later(grace, self._kill_now, slot.pid, slot.procs)

    def _kill_now(self, pgid: int, procs: list[psutil.Process]) -> None:
        signal_tree(pgid, procs, signal.SIGKILL)

    # -- stopping -----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill whatever still runs (the fork server stays, for the next serve()). Idempotent."""
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
            if not slot.exited:
                procs = slot.procs or tree(slot.pid)
                signal_tree(slot.pid, procs, signal.SIGKILL)
                if not slot.gone:
                    wait_gone(slot.pid, slot.pidfd, 5.0)
                with contextlib.suppress(Exception):
                    self._release(slot, None, drain=False)
                slot.exited = True
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
