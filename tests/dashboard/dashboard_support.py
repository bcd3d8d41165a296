"""Helpers for the dashboard's tests: a store filled by a real supervisor, and a real server.

(Not a conftest.py: tests elsewhere import the root one as `conftest`.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import run_script

FILL = """
import sys, time
from pydantic import BaseModel
from actors import Supervisor, job, Context

class Nightly(BaseModel):
    depth: int = 1

@job
def ok(x: int) -> int:
    return x * 2

@job
def boom(x: int) -> int:
    raise ValueError(f"boom {x}: the pixels are wrong")

@job(timeout="300ms")
def slow(x: float) -> int:
    time.sleep(x)
    return 0

@job
def stepper(x: int, ctx: Context) -> int:
    ctx.step("decode", lambda: {"pages": 3})
    ctx.progress(0.5, "half way")
    ctx.metadata(pages=3)
    return x

@job(cron="0 3 * * *", timeout="5s", priority=2)
def nightly(n: Nightly) -> int:
    return n.depth

if __name__ == "__main__":
    sup = Supervisor([ok, boom, slow, stepper, nightly], workers=2, store=sys.argv[1], kill_grace="200ms")
    sup.submit_many(ok, list(range(30)))
    sup.submit(boom, 1)
    sup.submit(boom, 2)
    sup.submit(slow, 5.0)
    sup.submit(stepper, 3)
    print(sup.serve(until="drained"))
    sup.close()
"""


def fill_store(tmp_path: Path) -> str:
    """A store a real supervisor served to the end: 30 `ok` runs succeeded, two `boom` runs
    failed with a traceback, a `slow` run timed out, a `stepper` run with a step, progress and
    metadata; then, with no supervisor, two `ok` runs submitted by a Client, one cancelled."""
    from actors import Client

    path = str(tmp_path / "runs.db")
    result = run_script(tmp_path, FILL, path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "drained" in result.stdout
    with Client(path) as client:
        client.submit("ok", 100)
        client.cancel(client.submit("ok", 101).id)
    return path


class Server:
    """uvicorn serving an app on a free loopback port, in a thread of this process."""

    def __init__(self, app: object) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",  # type: ignore[arg-type]
                                timeout_graceful_shutdown=1, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard-test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard server did not start in 10 s"
            assert self.thread.is_alive(), "the dashboard server thread died"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serving(app: object) -> Iterator[Server]:
    with Server(app) as server:
        yield server
