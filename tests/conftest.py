"""Shared fixtures: a store path, a runner for scripts in a subprocess, and a leak check."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh SQLite store path."""
    return str(tmp_path / "runs.db")


def write_script(tmp_path: Path, code: str, name: str = "script.py") -> Path:
    """A script file (dedented) that imports actors from this checkout."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_script(tmp_path: Path, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a script to completion in a subprocess; its output and exit status."""
    path = write_script(tmp_path, code)
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout,
                          env=script_env(), cwd=tmp_path)


def start_script(tmp_path: Path, code: str, *args: str, **kwargs) -> subprocess.Popen[str]:
    """Start a script in a subprocess (stdout/stderr piped, text)."""
    path = write_script(tmp_path, code)
    return subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=script_env(), cwd=tmp_path, **kwargs)


class Collector:
    """Reads a child's pipe in a thread, so the test can wait for a line without blocking."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll predicate until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def live_descendants(pid: int | None = None) -> list[psutil.Process]:
    """Descendants of a process (default: this one) that are alive and not zombies."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.Error:
            pass
    return alive


def workers_of(pid: int | None = None) -> list[psutil.Process]:
    """Live worker processes of a supervisor (default: this process): the fork server's children."""
    found = []
    for child in live_descendants(pid):
        try:
            parent = child.parent()
            if parent is not None and parent.name() == "actors-forksrv":
                found.append(child)
        except psutil.Error:
            continue
    return found


class _LoopErrors(logging.Handler):
    """Collects what a supervisor's loop reported as an exception escaping a callback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "actors_loop_error", False):
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_loop_errors(request: pytest.FixtureRequest):
    """Fail any test during which a supervisor in this process reported an exception escaping its
    loop (a broken turn must never pass unnoticed); a test that provokes one on purpose is marked
    `@pytest.mark.loop_errors`."""
    handler = _LoopErrors()
    logger = logging.getLogger("actors")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("loop_errors") is None:
        pytest.fail("a supervisor's loop reported an exception: "
                    + "; ".join(record.getMessage() for record in handler.records), pytrace=False)


# -- PostgreSQL: a server from $ACTORS_TEST_POSTGRES (.ci/postgres starts one), a schema per test --


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test server's DSN. Unset outside CI: the test skips, loudly; in CI (CI=true) a
    missing or unreachable server fails the test."""
    dsn = os.environ.get("ACTORS_TEST_POSTGRES")
    in_ci = os.environ.get("CI") == "true"
    if not dsn:
        why = ("ACTORS_TEST_POSTGRES is not set: no PostgreSQL server for the PostgreSQL store tests "
               "(start one with `eval \"$(.ci/postgres start)\"`, or run `.ci/postgres run -- pytest ...`)")
        if in_ci:
            pytest.fail(why + "; under CI this is a failure", pytrace=False)
        pytest.skip("SKIPPED LOUDLY: " + why)
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=5).close()
    except Exception as exc:
        pytest.fail(f"the PostgreSQL server at ACTORS_TEST_POSTGRES={dsn} is unreachable: {exc}", pytrace=False)
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn: str, request: pytest.FixtureRequest):
    """A schema name of this test's own on the test server (dropped after the test)."""
    import re
    import uuid

    import psycopg

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:30]
    schema = f"t_{name}_{uuid.uuid4().hex[:8]}"
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
