"""The worker process's entry point: signal dispositions, handshake, then the run loop.

A worker is forked by the fork server (never by the supervisor, which holds threads, an event
loop and a database connection). At start it:
- moves into its own process group, so a timeout kill reaches everything it started with one
  `killpg`, and a terminal's Ctrl-C (sent to the foreground group) never reaches it;
- ignores SIGINT (only the supervisor decides), resets every other inherited Python handler
  and the wakeup fd, and unblocks all signals;
- becomes a child subreaper, so descendants that double-fork or `setsid` stay its descendants
  and the supervisor can find and kill them;
- watches a liveness pipe in a thread: when the supervisor dies (even by `kill -9`) the pipe
  reaches EOF, and the worker kills its descendants and exits within milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections import deque
from typing import Any

from ..context import Context
from ..protocol import Assign, FrameReader, Ready, SetupFailed, Stop, write_frame
from .execute import _describe, execute

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux); silently a no-op elsewhere."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _prepare_process() -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
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
            try:
                child.kill()
            except psutil.Error:
                pass
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


def _reap_orphans() -> None:
    """Collect adopted descendants that exited (we are their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def worker_main(conn: Any, alive: Any, registry: bytes) -> None:
    """Entry point in the worker process; never returns."""
    _prepare_process()
    fd = conn.fileno()
    threading.Thread(target=_watch_supervisor, args=(alive.fileno(),), daemon=True, name="actors-watchdog").start()
    try:
        import dill

        jobs = dill.loads(registry)
    except BaseException as exc:
        write_frame(fd, SetupFailed(*_describe(exc)))
        os._exit(1)
    code = 0
    try:
        _serve(fd, jobs)
    except BaseException:
        code = 70
    os._exit(code)


def _serve(fd: int, jobs: dict[str, Any]) -> None:
    write_frame(fd, Ready(os.getpid()))
    reader = FrameReader()
    pending: deque[tuple[int, int, str, str, float | None]] = deque()
    current: list[Context | None] = [None]
    stopping = False
    while True:
        if not pending:
            if stopping:
                return
            data = os.read(fd, 1 << 20)
            if not data:
                return
            for message in reader.feed(data):
                if type(message) is Assign:
                    pending.extend(message.runs)
                elif type(message) is Stop:
                    stopping = True
            continue
        run_id, attempt, name, input_json, soft_timeout = pending.popleft()
        write_frame(fd, execute(jobs[name], run_id, attempt, input_json, soft_timeout, current))
        _reap_orphans()
