"""The fork server: the one process that forks workers, so the supervisor never forks one.

It is started by `supervisor.processes.ForkServer`, in one of two ways:
- forked from the supervisor before its event loop exists, while the process runs no other
  thread (the fast way: a start costs a fork, and the workers inherit every module the script
  imported, so a worker is ready within milliseconds). The child closes every descriptor it
  inherited (the store's database, the lock file, the loop's) except its own, so it holds
  nothing of the supervisor's but memory it never touches, and leaves with `os._exit`;
- or, where threads run (a fork would copy locks they hold), as a fresh interpreter
  (`python -c "from actors.worker.forkserver import main; main()"`) that prepares itself as multiprocess's spawn does
  (sys.path, working directory, the script imported again as `__mp_main__`) and unpickles the
  jobs once.

Its protocol, over one unix socket: each request is one byte carrying two descriptors (the
worker's end of its pipe, the write end of a status pipe); the server forks, answers the
child's pid (8 bytes), and when the child exits writes its exit code (8 bytes: the code, or
-signal) on the status pipe and closes it. EOF on the socket (the supervisor closed it, or
died) ends the server. It is a child subreaper: descendants orphaned by a killed worker are
re-parented to it and reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import struct
import sys
from typing import Any

_PR_SET_NAME = 15
SERVER_NAME = b"actors-forksrv"  # the process name (`ps -o comm`, psutil's name())
WORKER_NAME = b"actors-worker"


def set_name(name: bytes) -> None:
    """Name this process as `ps` and psutil show it (Linux); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name, 0, 0, 0)


def close_all_but(keep: set[int]) -> None:
    """Close every inherited descriptor but `keep` (and stdin, stdout, stderr)."""
    keep = keep | {0, 1, 2}
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024))
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def serve_forks(sock: socket.socket, alive_fd: int, setup: Any, max_result_size: int) -> None:
    """The server's loop: fork a worker per request, report exits; never returns."""
    from .main import become_subreaper, worker_main  # here: the supervisor imports this module too

    set_name(SERVER_NAME)
    become_subreaper()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):  # only the supervisor decides
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN)
    server_fd = sock.fileno()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears SIGCHLD
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    statuses: dict[int, int] = {}  # worker pid -> write end of its status pipe
    while True:
        with contextlib.suppress(InterruptedError):
            readable = select.select([server_fd, wake_r], [], [])[0]
        if wake_r in readable:
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
        _reap(statuses)
        if server_fd not in readable:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1, 2)
        except OSError:
            message, fds = b"", []
        if not message:
            os._exit(0)  # the supervisor is gone or let us go; workers leave by their liveness pipe
        conn, status = fds
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            close_all_but({conn, alive_fd})
            set_name(WORKER_NAME)
            worker_main(conn, alive_fd, setup, max_result_size)  # never returns
            os._exit(70)
        os.close(conn)
        statuses[pid] = status
        try:
            sock.sendall(struct.pack("q", pid))
        except OSError:
            os._exit(0)


def _reap(statuses: dict[int, int]) -> None:
    from .main import reaped

    for pid, wait_status in reaped():
        status = statuses.pop(pid, None)
        if status is None:
            continue  # an adopted descendant of a killed worker
        with contextlib.suppress(OSError):
            os.write(status, struct.pack("q", os.waitstatus_to_exitcode(wait_status)))
        with contextlib.suppress(OSError):
            os.close(status)


def main() -> None:
    """A fresh interpreter as the fork server: argv names its socket and liveness fds; the
    preparation data and the pickled jobs arrive on the socket first (each worker unpickles the
    jobs itself, so that a failure there is reported as its SetupFailed)."""
    sock_fd, alive_fd = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    size = struct.unpack("q", _read_exactly(sock, 8))[0]
    import dill
    from multiprocess import process, spawn

    prep, registry, max_result_size = dill.loads(_read_exactly(sock, size))
    process.current_process()._inheriting = True  # a script run again here knows it (scripts.reimported)
    try:
        spawn.prepare(prep)  # sys.path, cwd, and the script imported again as __mp_main__
    finally:
        process.current_process()._inheriting = False
    serve_forks(sock, alive_fd, registry, max_result_size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            os._exit(0)
        data += chunk
    return bytes(data)


if __name__ == "__main__":
    main()
