"""Processes below the pool: the fork server's launch with every wait bounded, process states,
pidfds, and process trees (signalled and measured).

The fork server is multiprocess's: a single process that a job can kill or stop
(`os.getppid()` is the fork server); `BoundedPopen` replaces its launch so that no spawn ever
blocks on it. It is found dead when a sentinel reaches EOF without a report (its workers live on, as
orphans), and found stuck when psutil says it is stopped (checked every `pool.SERVER_CHECK` and
before each spawn) or when it does not answer a spawn in time (`FORK_TIMEOUT`, or
`SERVER_START_TIMEOUT` for a new one; the wait checks every 50 ms that the server is not
stopped, so the event loop never blocks on one). A lost fork server is SIGKILLed
(a stopped one too, so init reaps the zombies it holds), reaped, and forgotten; the next spawn
starts a new one, right away the first time and with `compute_backoff` delays when servers keep
failing within `HEALTHY_AFTER` of each other. The orphans of a lost server finish what they hold
and are then stopped (they are retired), so every worker again descends from the supervisor
and reports its exit status; their slots refill at once from the new server. The supervisor is
never made a child subreaper.

Memory (`tree_memory`, for `max_memory`): the proportional set size (PSS) summed over the
worker's process tree. RSS summed over a tree counts every shared page once per process (50
forked children of a 27 MiB worker "used" 1.4 GiB); PSS splits each shared page between the
processes that map it, so the sum is what the tree really holds, and memory a job allocated
before forking counts once. One sample of a 51-process tree costs 10-20 ms (psutil reads
`/proc/<pid>/smaps_rollup`; 3 ms of it is finding the tree), well inside the 250 ms interval.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import time
from typing import Any

import psutil
from multiprocess import forkserver, popen_forkserver, spawn, util
from multiprocess.context import ForkServerProcess, reduction, set_spawning_popen

from ..retry import Retry, compute_backoff

FORK_TIMEOUT = 5.0  # a running fork server answers a spawn within this (it takes milliseconds)
SERVER_START_TIMEOUT = 60.0  # a new fork server imports the user's __main__ before it answers
POLL = 0.05  # how often a spawn waiting for the fork server checks that it is not stopped


class ForkServers:
    """The fork servers found dead or stuck, and when the next may start: the first replacement is
    immediate; servers that keep failing within `healthy_after` of each other back off."""

    def __init__(self, healthy_after: float, backoff: Retry) -> None:
        self.healthy_after = healthy_after
        self.backoff = backoff
        self.failures = 0  # servers lost in quick succession
        self.lost: set[int] = set()  # pids
        self.seen = 0  # the server the last spawn used...
        self.since = 0.0  # ...and since when (monotonic)
        self.hold = 0.0  # monotonic time before which no new server is started

    def used(self, server: int, now: float) -> None:
        if server != self.seen:
            self.seen, self.since = server, now

    def check(self) -> tuple[int, str] | None:
        """The current server and its state, if psutil finds it stopped or dead (and it is not
        known lost yet)."""
        server = server_pid()
        if server is not None and server not in self.lost and (found := process_state(server)) != "running":
            return server, found
        return None

    def lose(self, pid: int) -> float | None:
        """SIGKILL, reap and forget a lost server; the delay before its replacement may start, or
        None if it was known lost already."""
        if not pid or pid in self.lost:
            return None
        self.lost.add(pid)
        if server_pid() == pid:
            discard_fork_server(kill=True)
        now = time.monotonic()
        if now - self.since > self.healthy_after:
            self.failures = 0
        self.failures += 1
        delay = 0.0 if self.failures <= 1 else compute_backoff(self.backoff, self.failures - 1)
        self.hold = max(self.hold, now + delay)
        self.since = self.hold  # the replacement's life starts then, spawned or not
        return delay


class ForkServerStuck(OSError):
    """Raised when the fork server does not answer a spawn: it is stopped or hangs."""

    def __init__(self, server: int, message: str) -> None:
        super().__init__(message)
        self.server = server


class BoundedPopen(popen_forkserver.Popen):
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
        before = server_pid()
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        server = server_pid() or 0
        parent_w = os.dup(w)  # the child's sentinel of its parent, as in multiprocess
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        try:
            limit = FORK_TIMEOUT if server == before else SERVER_START_TIMEOUT
            deadline = time.monotonic() + limit
            while not readable(self.sentinel, POLL):
                if process_state(server) == "stopped":
                    raise ForkServerStuck(server, "is stopped")
                if time.monotonic() > deadline:
                    raise ForkServerStuck(server, f"did not answer a spawn within {limit:.0f} s")
            self.pid = forkserver.read_signed(self.sentinel)
            write_all(w, buf.getbuffer(), deadline + FORK_TIMEOUT)
        except BaseException:
            self.finalizer()
            raise
        finally:
            os.close(w)


class WorkerProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return BoundedPopen(process_obj)


def server_pid() -> int | None:
    return forkserver._forkserver._forkserver_pid


def process_state(pid: int) -> str:
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


def discard_fork_server(kill: bool, grace: float = 2.0) -> None:
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
        if kill or not reap(pid, grace):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # a stopped process dies of it too
            reap(pid, 5.0)
        address = server._forkserver_address
        if address and not util.is_abstract_socket_namespace(address):
            with contextlib.suppress(OSError):
                os.unlink(address)
        server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None


def stop_fork_server() -> None:
    """Stop the fork server (and the resource tracker it started) so a supervisor that stopped
    serving leaves no child process behind; the next `serve()` starts new ones."""
    from multiprocess import resource_tracker

    with contextlib.suppress(Exception):
        discard_fork_server(kill=process_state(server_pid() or 0) == "stopped")  # a stopped one never exits
    with contextlib.suppress(Exception):
        resource_tracker._resource_tracker._stop()


# -- processes ---------------------------------------------------------------------------------


def pidfd_open(pid: int) -> int:
    """A pidfd for the worker; -1 where the system has none, -2 if the process is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -2
    except (AttributeError, OSError):
        return -1


def readable(fd: int, timeout: float = 0.0) -> bool:
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    except (OSError, ValueError):
        return True  # closed or broken: reading it tells


def write_all(fd: int, data: memoryview, deadline: float) -> None:
    os.set_blocking(fd, False)
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise TimeoutError("the new worker did not read its start data") from None


def reap(pid: int, timeout: float) -> bool:
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


def wait_gone(pid: int, pidfd: int, timeout: float) -> None:
    """Wait (blocking, bounded) for a process we SIGKILLed to exit: on its pidfd if it has one."""
    if pidfd >= 0:
        readable(pidfd, timeout)
        return
    deadline = time.monotonic() + timeout
    while process_state(pid) != "gone" and time.monotonic() < deadline:
        time.sleep(0.005)


def tree(pid: int) -> list[psutil.Process]:
    """The worker and all its descendants now (subreaping keeps double-forked ones among them)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def signal_tree(pgid: int, procs: list[psutil.Process], sig: int) -> None:
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
    for proc in tree(pid):
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", getattr(info, "uss", info.rss))
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total

