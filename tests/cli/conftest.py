"""Helpers for driving the real `actors` command: an app module on disk, the command in a
subprocess, and a serving supervisor (`actors serve`) stopped by its pid when the test ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import Client

ROOT = Path(__file__).resolve().parents[2]

APP = '''
import time

from pydantic import BaseModel

from actors import Context, Supervisor, job


class Nap(BaseModel):
    seconds: float = 0.05


class Ping(BaseModel):
    note: str = "tick"


@job(timeout="20s")
def nap(nap: Nap, ctx: Context) -> float:
    ctx.progress(0.5, "halfway")
    time.sleep(nap.seconds)
    return nap.seconds


@job
def boom(nap: Nap) -> float:
    raise ValueError(f"boom after {nap.seconds}")


@job(cron="0 3 * * *")
def nightly(ping: Ping) -> str:
    return ping.note


sup = Supervisor([nap, boom, nightly], workers=2, store="app.db")
'''


def env(**extra: str) -> dict[str, str]:
    result = {k: v for k, v in os.environ.items() if not k.startswith("ACTORS_")}
    result["PYTHONPATH"] = str(ROOT) + os.pathsep + result.get("PYTHONPATH", "")
    result["PYTHONUNBUFFERED"] = "1"
    result["COLUMNS"] = "200"
    result.update(extra)
    return result


def actors(cwd: Path, *args: str, timeout: float = 40, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m actors ARGS` in `cwd` to completion."""
    return subprocess.run([sys.executable, "-m", "actors", *args], cwd=cwd, env=env(**extra), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    return tmp_path


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """`actors serve` running in a subprocess."""

    def __init__(self, cwd: Path, *args: str, **extra: str) -> None:
        self.cwd = cwd
        self.process = subprocess.Popen([sys.executable, "-m", "actors", "serve", *args], cwd=cwd, env=env(**extra),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_serving(self, store: str = "app.db") -> None:
        path = self.cwd / store

        def up() -> bool:
            assert self.process.poll() is None, self.process.communicate()
            if not path.exists():
                return False
            with Client(str(path)) as client:
                info = client.store.supervisor_info()
                return bool(client.serving()) and info is not None and info.stopped_at is None and len(client.store.workers()) > 0

        wait_until(up, what="actors serve to serve")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            _, err = self.process.communicate(timeout=10)
        return self.process.returncode, err


@pytest.fixture
def serving(app_dir: Path) -> Iterator[Server]:
    server = Server(app_dir, "app.py:sup")
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()
