"""Processes below the pool: the fork server (started, asked for workers with every wait
bounded, replaced when lost), process states, pidfds, and process trees (signalled and measured).

The fork server is ours (`worker/forkserver.py`): forked from the supervisor before its event
loop exists when no other thread runs (a start costs a fork, and workers inherit the modules
the script imported), else a fresh interpreter. One lives per `Supervisor`, from its first
`serve()` (or `prefork()`) until `close()` (or the process's exit: it ends when its socket
reaches EOF). Between two `serve()` calls the workers that ended the last one idle wait beside
it (`IdleWorker`; also those `prefork()` started), so the next one gives them runs at once;
they end at `close()`, or when the process exits (EOF on their pipes). A job can kill or stop
the fork server (`os.getppid()` of a worker is the fork server): it is found dead when a
worker's status pipe reaches EOF without a report or its socket breaks (its workers live on,
as orphans), and found stuck when psutil says it is stopped (checked every `pool.SERVER_CHECK` and before each spawn) or when it does
not answer a spawn in time (`FORK_TIMEOUT`, or `SERVER_START_TIMEOUT` for a new fresh
interpreter; the wait checks every 50 ms that the server is not stopped). A lost fork server
is SIGKILLed (a stopped one too), reaped, and forgotten; the next spawn starts a new one, right
away the first time and with `compute_backoff` delays when servers keep failing within
`HEALTHY_AFTER` of each other. The orphans of a lost server finish what they hold and are
then stopped (they are retired), so every worker again descends from a live server and
reports its exit status; their slots refill at once from the new server. The supervisor is
never made a child subreaper.

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
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from ..retry import Retry, compute_backoff
from ..worker.forkserver import close_all_but, serve_forks

FORK_TIMEOUT = 5.0  # a running fork server answers a spawn within this (it takes milliseconds)
SERVER_START_TIMEOUT = 60.0  # a fresh interpreter imports the user's __main__ before it answers
POLL = 0.05  # how often a spawn waiting for the fork server checks that it is not stopped


class ForkServerStuck(OSError):
    """Raised when the fork server does not answer a spawn: it is stopped, hangs or died."""

    def __init__(self, server: int, message: str) -> None:
        super().__init__(message)
        self.server = server


class Setup:
    """What every worker gets: the jobs and default retry, as objects (for a forked server) and
    pickled (for a fresh interpreter, on demand), and the largest result it may send. `fork`:
    whether the server may be a fork of the supervisor; not with `max_memory`, because a worker
    forked from the supervisor shares its pages, and a share of every page counts in the
    worker's tree (PSS): the limit would then charge it for the supervisor's memory."""

    def __init__(self, jobs: dict[str, Any], default_retry: Any, max_result_size: int, fork: bool = True) -> None:
        self.objects = (jobs, default_retry)
        self.max_result_size = max_result_size
        self.fork = fork
        self._pickled: bytes | None = None

    def pickled(self) -> bytes:
        if self._pickled is None:
            import warnings

            import dill

            with warnings.catch_warnings():  # jobs from __main__ are found by reference in the worker
                warnings.simplefilter("ignore", dill.PicklingWarning)
                self._pickled = dill.dumps(self.objects, recurse=True, byref=True)
        return self._pickled


def may_fork() -> bool:
    """Whether the supervisor may fork its fork server: no other thread runs (a fork would copy
    the locks they hold) and no event loop runs on this thread."""
    if threading.active_count() != 1:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class ForkServer:
    """The supervisor's end of one running fork server."""

    def __init__(self, pid: int, sock: socket.socket, forked: bool) -> None:
        self.pid = pid
        self.sock = sock
        self.forked = forked
        self.answered = forked  # a forked server answers at once; a fresh one after its imports

    @classmethod
    def start(cls, setup: Setup, alive_r: int) -> ForkServer:
        ours, theirs = socket.socketpair()
        try:
            if setup.fork and may_fork():
                for stream in (sys.stdout, sys.stderr):  # or the children would write it again
                    with contextlib.suppress(Exception):
                        stream.flush()
                pid = os.fork()
                if pid == 0:  # the fork server
                    try:
                        close_all_but({theirs.fileno(), alive_r})
                        serve_forks(theirs, alive_r, setup.objects, setup.max_result_size)
                    finally:
                        os._exit(70)
                return cls(pid, ours, forked=True)
            return cls._exec(setup, alive_r, ours, theirs)
        finally:
            theirs.close()

    @classmethod
    def _exec(cls, setup: Setup, alive_r: int, ours: socket.socket, theirs: socket.socket) -> ForkServer:
        import dill
        from multiprocess import spawn

        prep = spawn.get_preparation_data("actors-forkserver")
        prep.pop("authkey", None)  # multiprocess's, unused by us (and not picklable outside its spawn)
        data = dill.dumps((prep, setup.pickled(), setup.max_result_size))
        child = subprocess.Popen(
            [sys.executable, "-c", "from actors.worker.forkserver import main; main()", str(theirs.fileno()),
             str(alive_r)],
            pass_fds=(theirs.fileno(), alive_r), stdin=subprocess.DEVNULL,
        )
        child.returncode = 0  # reaped by us (`reap`), never by subprocess
        server = cls(child.pid, ours, forked=False)
        try:
            ours.sendall(struct.pack("q", len(data)) + data)
        except OSError as exc:
            server.kill()
            raise ForkServerStuck(child.pid, f"died before it started ({exc})") from None
        return server

    def spawn(self) -> tuple[int, socket.socket, int]:
        """Fork a worker: its pid, the supervisor's end of its pipe, and its status pipe (8 bytes,
        the exit code, when it exits; EOF without them if the server died first)."""
        ours, theirs = socket.socketpair()
        status_r, status_w = os.pipe()
        try:
            try:
                socket.send_fds(self.sock, [b"S"], [theirs.fileno(), status_w])
            except OSError as exc:
                raise ForkServerStuck(self.pid, f"cannot be reached ({exc.strerror or exc})") from None
            finally:
                theirs.close()
                os.close(status_w)
            limit = FORK_TIMEOUT if self.answered else SERVER_START_TIMEOUT
            deadline = time.monotonic() + limit
            answer = b""
            while len(answer) < 8:
                if not readable(self.sock.fileno(), POLL):
                    if process_state(self.pid) == "stopped":
                        raise ForkServerStuck(self.pid, "is stopped")
                    if time.monotonic() > deadline:
                        raise ForkServerStuck(self.pid, f"did not answer a spawn within {limit:.0f} s")
                    continue
                chunk = self.sock.recv(8 - len(answer))
                if not chunk:
                    raise ForkServerStuck(self.pid, "died")
                answer += chunk
        except BaseException:
            ours.close()
            os.close(status_r)
            raise
        self.answered = True
        return struct.unpack("q", answer)[0], ours, status_r

    def kill(self) -> None:
        """SIGKILL (a stopped process dies of it too) and reap."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        reap(self.pid, 5.0)
        self.sock.close()

    def stop(self, grace: float = 2.0) -> None:
        """Let it go (EOF on its socket ends it), SIGKILL after `grace`, and reap."""
        self.sock.close()
        if process_state(self.pid) == "stopped" or not reap(self.pid, grace):
            self.kill()


class IdleWorker:
    """A worker that no pool holds: forked ahead by `prefork()` (its `Ready` is still in its
    pipe) or kept, ready and idle, from the last `serve()` (with the runs it did, for
    `max_runs_per_worker`), so that the next `serve()` gives it runs at once."""

    __slots__ = ("pid", "sock", "status_r", "pidfd", "server", "ready", "runs_done")

    def __init__(self, pid: int, sock: socket.socket, status_r: int, pidfd: int, server: int, ready: bool,
                 runs_done: int = 0) -> None:
        self.pid, self.sock, self.status_r, self.pidfd = pid, sock, status_r, pidfd
        self.server, self.ready, self.runs_done = server, ready, runs_done

    def alive(self) -> bool:
        """Its process runs (its pidfd is quiet) and its fork server has not reported its exit
        or died (its status pipe is quiet)."""
        return not readable(self.status_r) and (self.pidfd < 0 or not readable(self.pidfd))

    def release(self, deadline: float = 0.0) -> None:
        """Close our end of its pipe (EOF: it exits, with its descendants), wait until `deadline`
        (monotonic) for it to go, SIGKILL it if it has not, and close what we held of it."""
        self.sock.close()
        if deadline and self.alive():
            wait_gone(self.pid, self.pidfd, max(0.0, deadline - time.monotonic()))
            if self.alive():
                with contextlib.suppress(OSError):
                    if self.pidfd >= 0:
                        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                    else:  # still its fork server's unreaped child: the pid is not reused yet
                        os.kill(self.pid, signal.SIGKILL)
        for fd in (self.status_r, self.pidfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


class ForkServers:
    """The current fork server of one supervisor, those found dead or stuck, and when the next
    may start: the first replacement is immediate; servers that keep failing within
    `healthy_after` of each other back off. Owns the liveness pipe every worker watches, and
    the workers that no pool holds between two `serve()` calls (`idle`)."""

    def __init__(self, healthy_after: float, backoff: Retry) -> None:
        self.healthy_after = healthy_after
        self.backoff = backoff
        self.current: ForkServer | None = None
        self.setup: Setup | None = None
        self.alive_r, self.alive_w = os.pipe()  # EOF on it (we exited) ends every worker
        self.failures = 0  # servers lost in quick succession
        self.lost: set[int] = set()  # pids
        self.seen = 0  # the server the last spawn used...
        self.since = 0.0  # ...and since when (monotonic)
        self.hold = 0.0  # monotonic time before which no new server is started
        self.idle: list[IdleWorker] = []

    def server(self) -> ForkServer:
        """The running server, started now if there is none."""
        if self.current is None:
            assert self.setup is not None
            self.current = ForkServer.start(self.setup, self.alive_r)
        return self.current

    @property
    def pid(self) -> int:
        return self.current.pid if self.current is not None else 0

    def spawn_ahead(self, count: int) -> None:
        """Fork workers now, until `count` wait idle for the next pool; their setups run meanwhile."""
        for worker in [worker for worker in self.idle if not worker.alive()]:
            self.idle.remove(worker)
            worker.release()
        server = self.server()
        while len(self.idle) < count:
            pid, sock, status_r = server.spawn()
            self.idle.append(IdleWorker(pid, sock, status_r, pidfd_open(pid), server.pid, ready=False))

    def take(self) -> IdleWorker | None:
        """An idle worker of the current fork server that still runs; the others are let go."""
        while self.idle:
            worker = self.idle.pop(0)
            if worker.server == self.pid and worker.pidfd != -2 and worker.alive():
                return worker
            worker.release()
        return None

    def used(self, server: int, now: float) -> None:
        if server != self.seen:
            self.seen, self.since = server, now

    def check(self) -> tuple[int, str] | None:
        """The current server and its state, if psutil finds it stopped or dead (and it is not
        known lost yet)."""
        server = self.pid
        if server and server not in self.lost and (found := process_state(server)) != "running":
            return server, found
        return None

    def lose(self, pid: int) -> float | None:
        """SIGKILL, reap and forget a lost server; the delay before its replacement may start, or
        None if it was known lost already."""
        if not pid or pid in self.lost:
            return None
        self.lost.add(pid)
        if self.current is not None and self.current.pid == pid:
            self.current.kill()
            self.current = None
        now = time.monotonic()
        if now - self.since > self.healthy_after:
            self.failures = 0
        self.failures += 1
        delay = 0.0 if self.failures <= 1 else compute_backoff(self.backoff, self.failures - 1)
        self.hold = max(self.hold, now + delay)
        self.since = self.hold  # the replacement's life starts then, spawned or not
        return delay

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """End the idle workers and the server, and the liveness pipe: nothing of ours is left
        running. Idempotent."""
        idle, self.idle = self.idle, []
        for worker in idle:
            worker.sock.close()  # all at once: they exit side by side
        deadline = time.monotonic() + 2.0
        for worker in idle:
            with contextlib.suppress(Exception):
                worker.release(deadline)
        if self.current is not None:
            with contextlib.suppress(Exception):
                self.current.stop()
            self.current = None
        for fd in (self.alive_w, self.alive_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.alive_r = self.alive_w = -1


# -- processes ---------------------------------------------------------------------------------


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

