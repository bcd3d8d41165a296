"""Signals: the first SIGINT/SIGTERM asks for a graceful stop, the second forces it.

The handlers only count and hand the signal to the loop; the loop logs and acts (logging
inside a real signal handler is unsafe). Dispositions are saved before `serve()` installs its
handlers and restored by hand afterwards: uvloop's `remove_signal_handler` does nothing once its
loop has stopped, and a caught SIGTERM left behind would be inherited by every process forked
later, which could then not be terminated.

Exit status: after a graceful stop `serve()` returns (a script exits 0); after a forced stop
caused by a signal (a second signal, or the grace period running out) it raises
`SystemExit(128 + signal number)`: 130 for SIGINT, 143 for SIGTERM, as shells report a
process killed by that signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STATUS_SIGNAL = signal.SIGUSR1


class SignalGuard:
    """Installs the supervisor's handlers on a loop and restores the previous dispositions."""

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._wakeup_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def save(self) -> None:
        """Remember the dispositions and wakeup fd; call before the loop starts (it changes them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._wakeup_fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(self._wakeup_fd)
        for sig in (*STOP_SIGNALS, STATUS_SIGNAL):
            self._saved[sig] = signal.getsignal(sig)

    def install(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[int], None],
                on_status: Callable[[], None]) -> bool:
        """Install handlers; False (and nothing done) outside the main thread."""
        if not self._saved:
            return False
        self._loop = loop
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, on_stop, sig)
        loop.add_signal_handler(STATUS_SIGNAL, on_status)
        return True

    def restore(self) -> None:
        """Put back what was there before `install`. Idempotent."""
        if not self._saved:
            return
        loop = self._loop
        for sig in self._saved if loop is not None else ():
            try:
                loop.remove_signal_handler(sig)  # type: ignore[union-attr]
            except Exception:
                pass
        for sig, handler in self._saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        try:
            signal.set_wakeup_fd(self._wakeup_fd)
        except (ValueError, OSError):
            signal.set_wakeup_fd(-1)
        self._saved.clear()
        self._loop = None
