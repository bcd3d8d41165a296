"""Models, helpers and jobs that several of the semantics test files share.

Those files: test_retries, test_limits_and_priorities, test_cron_and_delays,
test_unique_and_keys, test_steps_and_progress, test_cancellation, test_events_and_stats,
test_hooks_and_setup and test_versions_and_result_size. Their tests run real worker processes
on a real SQLite store. Workers import jobs by reference, so jobs live at the top level of an
importable module: this one for the jobs that several test files use, the test file itself for
the others.

Jobs report what happened by appending to files in a directory the test gives them (the
input's `dir`), because the test cannot see inside worker processes otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import wait_until
from pydantic import BaseModel

from actors import Context, RunRecord, Supervisor, job

# How early a due run may start: event-loop timers have millisecond resolution, and the
# supervisor treats a run due within half a millisecond as due.
EARLY = 0.005


# -- models and helpers the jobs share -----------------------------------------------------------


class Task(BaseModel):
    dir: str
    tag: str = ""
    n: int = 0


def note(directory: str, name: str, text: str) -> None:
    """Append one line to a file; the way jobs tell the test what they did."""
    with open(os.path.join(directory, name), "a") as f:
        f.write(text + "\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def floats(path: Path) -> list[float]:
    return [float(line.split()[-1]) for line in lines(path)]


def task(tmp_path: Path, tag: str = "", n: int = 0) -> Task:
    return Task(dir=str(tmp_path), tag=tag, n=n)


@contextlib.contextmanager
def serving(sup: Supervisor) -> Iterator[Supervisor]:
    """Serve in a background thread (no signal handlers there) while the test body runs."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            sup.serve()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=target, name="serve", daemon=True)
    thread.start()
    try:
        wait_until(lambda: sup.stats()["workers"] or errors, what="the supervisor to start its workers")
        yield sup
    finally:
        sup.shutdown(graceful=True, timeout=15)
        if thread.is_alive():
            sup.shutdown(graceful=False, timeout=15)
        thread.join(15)
        alive = thread.is_alive()
        if not alive:
            sup.close()
    assert not alive, "serve() did not return after shutdown()"
    assert not errors, f"serve() raised {errors!r}"


def attempts_of(record: RunRecord) -> list[str | None]:
    return [a.outcome.value if a.outcome else None for a in record.attempt_log]


# -- jobs more than one test file uses -----------------------------------------------------------


@job
def stamp(t: Task) -> float:
    now = time.time()
    note(t.dir, "stamps.txt", f"{t.tag} {now!r}")
    return now


@job
def cooperative(t: Task, ctx: Context) -> str:
    note(t.dir, "coop.txt", "started")
    deadline = time.monotonic() + 30
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    note(t.dir, "coop.txt", "returned" if ctx.cancelled else "gave up")
    return "stopped"


@job
def double(t: Task) -> int:
    return t.n * 2
