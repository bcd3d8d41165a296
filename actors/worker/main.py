"""The worker process's entry point: signal dispositions, handshake, then the run loop.

A worker is forked by the fork server (never by the supervisor, which holds threads, an event
loop and a database connection: see `forkserver.py`). At start it:
- moves into its own process group, so a timeout kill reaches everything it started with one
  `killpg`, and a terminal's Ctrl-C (sent to the foreground group) never reaches it;
- ignores SIGINT (only the supervisor decides), resets every other inherited Python handler
  and the wakeup fd, and unblocks all signals;
- becomes a child subreaper, so descendants that double-fork or `setsid` stay its descendants
  and the supervisor can find and kill them;
- watches a liveness pipe in a thread: when the supervisor dies (even by `kill -9`) the pipe
  reaches EOF, and the worker kills its descendants and exits within milliseconds.

Every write on the pipe is one whole frame, whoever sends it (see `Inbox.send`): the main
thread (results, steps, progress), a job's own threads (progress), or a signal handler; a
frame cut by another one, or by an exception from a handler, would break the pipe for good.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..protocol import (
    Assign,
    Cancel,
    FrameReader,
    Logged,
    Order,
    Ready,
    SetupFailed,
    Spawned,
    Stop,
    encode,
    write_frame,
)
from .execute import _describe, execute

_PR_SET_CHILD_SUBREAPER = 36
# A frame up to this size goes into the socket in one piece or not at all (Linux sends up to
# about 32 KiB of a unix stream write as one buffer), so no signal can cut it; a longer one is
# written with signals blocked (see `_write_unbroken`).
_ONE_PIECE = 16 * 1024
_BLOCKED = frozenset(int(sig) for sig in signal.valid_signals()) - {int(signal.SIGTERM)}
# What every run starts with; a job that changes these changes them for itself only.
_DISPOSITIONS = {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_DFL, signal.SIGALRM: signal.SIG_DFL,
                 signal.SIGCHLD: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL, signal.SIGUSR1: signal.SIG_DFL,
                 signal.SIGUSR2: signal.SIG_DFL}


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux); silently a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _prepare_process() -> None:
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    become_subreaper()


def _kill_descendants() -> None:
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    except Exception:
        pass


def _watch_supervisor(alive_fd: int) -> None:
    """Block on the liveness pipe; EOF means the supervisor is gone: take everything down."""
    try:
        while os.read(alive_fd, 1):
            pass
    except OSError:
        pass
    _kill_descendants()
    os._exit(1)


def reaped() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of each child that has exited, collected now without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def _reap_orphans() -> None:
    """Collect adopted descendants that exited (we are their subreaper)."""
    for _ in reaped():
        pass


class Inbox:
    """The worker's side of its pipe: frames in (runs, cancels, stop), frames out.

    The main thread reads it when idle (blocking), before each run, and whenever a job asks
    `ctx.cancelled` (without blocking), so a cancel reaches a run that is executing.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.main_thread = threading.get_ident()
        # Reentrant: a signal handler may send while the main thread waits on a full socket (it
        # runs between the EINTR and the retry of a frame that wrote nothing yet).
        self.lock = threading.RLock()
        self.reader = FrameReader()
        self.pending: deque[Order] = deque()
        self.cancelled: set[int] = set()
        self.stopping = False
        self.closed = False
        self.replies: dict[int, Any] = {}  # run id -> the supervisor's reply to its last call

    def send(self, message: Any) -> None:
        """Write one whole frame, from any thread: frames of two threads never interleave."""
        if os.getpid() != self.pid:  # a process forked by a job never writes (nor takes the lock)
            return
        frame = encode(message)
        with self.lock:
            if len(frame) <= _ONE_PIECE or threading.get_ident() != self.main_thread:
                _write_all(self.fd, frame)  # Python runs signal handlers in the main thread only
            else:
                _write_unbroken(self.fd, frame)

    def receive(self, block: bool) -> None:
        """Take what the supervisor sent; block until something arrives if asked."""
        if os.getpid() != self.pid:  # a forked child asking ctx.cancelled must not steal frames
            return
        if not block and not select.select([self.fd], [], [], 0)[0]:
            return
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.closed = True
            return
        for message in self.reader.feed(data):
            kind = type(message)
            if kind is Assign:
                self.pending.extend(message.runs)
            elif kind is Cancel:
                self.cancelled.add(message.run_id)
            elif kind is Stop:
                self.stopping = True
            elif kind is Spawned:
                self.replies[message.run_id] = message

    def call(self, message: Any) -> Any:
        """Send a request for the run `message.run_id` and wait for the supervisor's reply
        (runs and cancels that arrive meanwhile are kept, as always)."""
        self.send(message)
        while message.run_id not in self.replies:
            if self.closed:
                raise RuntimeError("the supervisor is gone: no reply to the request of this run")
            self.receive(block=True)
        return self.replies.pop(message.run_id)

    def is_cancelled(self, run_id: int) -> bool:
        self.receive(block=False)
        return run_id in self.cancelled


def _write_all(fd: int, frame: bytes) -> None:
    view = memoryview(frame)
    while view:
        view = view[os.write(fd, view) :]


def _write_unbroken(fd: int, frame: bytes) -> None:
    """Write a long frame from the main thread with signals blocked, so that no Python handler
    (a soft timeout's SoftTimeout, a job's own) runs between two partial writes and leaves half
    a frame on the pipe. SIGTERM stays deliverable when it kills at once (no Python handler).
    The three mask calls cost about 0.4 ms, against the copy of a frame of 16 KiB or more."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # may run a pending handler: nothing written yet
    blocked = _BLOCKED if not callable(signal.getsignal(signal.SIGTERM)) else _BLOCKED | {int(signal.SIGTERM)}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        _write_all(fd, frame)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # handlers of what arrived meanwhile run now


def worker_main(fd: int, alive_fd: int, setup: bytes | tuple[Any, Any], max_result_size: int) -> None:
    """Entry point in the worker process; never returns. `setup` is (jobs, default retry), or
    those pickled with dill when the fork server is a fresh interpreter."""
    _prepare_process()
    threading.Thread(target=_watch_supervisor, args=(alive_fd,), daemon=True, name="actors-watchdog").start()
    try:
        if isinstance(setup, bytes):
            import dill

            jobs, default_retry = dill.loads(setup)
        else:
            jobs, default_retry = setup
        resources = {name: job.setup() for name, job in jobs.items() if job.setup is not None}
    except BaseException as exc:
        write_frame(fd, SetupFailed(*_describe(exc)))
        os._exit(1)
    code = 0
    try:
        _serve(Inbox(fd), jobs, resources, max_result_size, default_retry)
    except BaseException:
        import traceback

        traceback.print_exc()  # outside any run: the worker's own failure, on its stderr
        code = 70
    os._exit(code)


def _serve(inbox: Inbox, jobs: dict[str, Any], resources: dict[str, Any], max_result_size: int,
           default_retry: Any) -> None:
    home = os.open(".", os.O_RDONLY)  # the working directory every run starts in
    polled = 0.0
    _forward_job_logs(inbox)
    inbox.send(Ready(os.getpid()))
    pending = inbox.pending
    while True:
        if not pending:
            _reap_orphans()
            if inbox.stopping or inbox.closed:
                return
            inbox.receive(block=True)
            continue
        now = time.monotonic()
        if now - polled > 0.001:  # cancels for runs sent ahead; a syscall, so at most once a millisecond
            polled = now
            inbox.receive(block=False)
        order = pending.popleft()
        name = order.job
        inbox.send(execute(jobs[name], order, inbox, resources.get(name), max_result_size, default_retry, jobs))
        _restore(home)


class _ToSupervisor(logging.Handler):
    """Sends `ctx.log` records up the pipe: the supervisor's handlers write them, with the run's
    fields and the worker's pid, wherever its other records go (the worker has no handler of
    its own when it is a fresh interpreter, and would print them twice when it is a fork)."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__(logging.NOTSET)
        self.inbox = inbox

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "run_id", None)
        if run_id is None or os.getpid() != self.inbox.pid:  # not a run's record, or a job's own child
            return
        try:
            self.inbox.send(Logged(run_id, getattr(record, "attempt", 0), record.levelno, record.name,
                                   self.format(record), record.created))
        except Exception:
            self.handleError(record)


def _forward_job_logs(inbox: Inbox) -> None:
    logger = logging.getLogger("actors.job")
    logger.handlers = [_ToSupervisor(inbox)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # the supervisor's own level decides what is written


def _restore(home: int) -> None:
    """Undo what a job may have changed in the process for the next run: the working directory
    and the signal dispositions we set."""
    os.fchdir(home)
    for sig, wanted in _DISPOSITIONS.items():
        if signal.getsignal(sig) is not wanted:
            signal.signal(sig, wanted)
