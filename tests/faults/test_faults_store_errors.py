"""A store that cannot be used is a clear `StoreError` when the supervisor is made, at once and
without leaving a lock behind; a new store file is private to its owner (invariants 8 and 9).

Tests run as root, for whom permission bits stop nothing: the unusable stores here are ones
root cannot use either (garbage, a missing directory, a directory, a read-only filesystem, and
files or directories marked immutable with `chattr +i`, which binds root too).
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from actors import RunStatus, StoreError, StoreLocked, Supervisor, job


class Num(BaseModel):
    n: int


@job(timeout="10s")
def double(num: Num) -> int:
    return 2 * num.n


def _refused(store: str) -> StoreError:
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        Supervisor([double], workers=1, store=store)
    assert time.monotonic() - started < 5, "a bad store must fail fast, not retry"
    assert not isinstance(caught.value, StoreLocked), caught.value
    return caught.value


@pytest.mark.timeout(20)
def test_garbage_store_file_is_a_store_error(db: str) -> None:
    garbage = b"this is not an SQLite database\n" * 200
    Path(db).write_bytes(garbage)
    error = _refused(db)
    assert db in str(error), error
    assert "not a database" in str(error), error
    assert Path(db).read_bytes() == garbage  # refused, not "repaired"


@pytest.mark.timeout(20)
def test_store_in_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    store = str(tmp_path / "no-such-dir" / "runs.db")
    error = _refused(store)
    assert "no-such-dir" in str(error), error
    assert not (tmp_path / "no-such-dir").exists()


@pytest.mark.timeout(20)
def test_store_path_that_is_a_directory_is_a_store_error(tmp_path: Path) -> None:
    store = tmp_path / "a-directory"
    store.mkdir()
    _refused(str(store))


@pytest.mark.timeout(20)
def test_store_on_a_read_only_filesystem_is_a_store_error() -> None:
    target = "/proc/actors-test-runs.db"  # procfs refuses new files, root or not
    if os.path.exists(target):
        pytest.skip("unexpected file in /proc")
    _refused(target)


class Immutable:
    """Marks files and directories immutable (`chattr +i`); the fixture unmarks them at the end."""

    def __init__(self) -> None:
        self.marked: list[str] = []

    def mark(self, path: str | Path) -> None:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mark files immutable here: {done.stderr.strip()}")
        self.marked.append(str(path))

    def unmark(self, path: str | Path) -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True)
        self.marked.remove(str(path))


@pytest.fixture
def immutable() -> Iterator[Immutable]:
    marks = Immutable()
    yield marks
    for path in reversed(marks.marked):
        subprocess.run(["chattr", "-i", path], check=True)


def _stored_run(db: str) -> None:
    """A store with one queued run in it."""
    sup = Supervisor([double], workers=1, store=db)
    sup.submit(double, {"n": 1})
    sup.close()


@pytest.mark.timeout(30)
def test_read_only_store_file_is_a_store_error(db: str, immutable: Immutable) -> None:
    _stored_run(db)
    immutable.mark(db)
    error = _refused(db)
    assert "readonly" in str(error) or "read-only" in str(error), error


def _lock_is_free(db: str) -> bool:
    if not os.path.exists(db + ".lock"):  # refused before a lock file was made: nothing can hold it
        return True
    fd = os.open(db + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.timeout(30)
@pytest.mark.parametrize("problem", [
    "garbage",
    "read-only",
])
def test_refused_store_leaves_no_lock_behind(db: str, immutable: Immutable, problem: str) -> None:
    if problem == "garbage":
        Path(db).write_bytes(b"garbage " * 1000)
    else:
        _stored_run(db)
        immutable.mark(db)
    _refused(db)
    gc.collect()
    assert _lock_is_free(db), "the refused supervisor still holds the serving lock"
    _refused(db)  # refused again for what is wrong with the store, not as "locked"
    if problem == "garbage":
        os.unlink(db)
    else:
        immutable.unmark(db)
    Supervisor([double], workers=1, store=db).close()  # once the store is fixed, it opens


@pytest.mark.timeout(20)
def test_store_in_a_read_only_directory_is_a_store_error(tmp_path: Path, immutable: Immutable) -> None:
    directory = tmp_path / "frozen"
    directory.mkdir()
    immutable.mark(directory)
    _refused(str(directory / "runs.db"))
    assert list(directory.iterdir()) == []


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Make the process umask permissive, so only the library's own mode choice restricts files."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.timeout(30)
def test_store_files_are_created_0600(db: str, open_umask: None) -> None:
    sup = Supervisor([double], workers=1, store=db)
    try:
        handle = sup.submit(double, {"n": 21})
        sup.serve(until="drained")
        assert sup.run(handle.id).status is RunStatus.SUCCEEDED
        created = sorted(p for p in Path(db).parent.iterdir() if p.name.startswith(Path(db).name))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in created}
    finally:
        sup.close()
    assert Path(db).name in modes, modes
    assert modes == {name: 0o600 for name in modes}, {name: oct(mode) for name, mode in modes.items()}


class Blob(BaseModel):
    data: str


@job(timeout="10s")
def blob_size(blob: Blob) -> int:
    return len(blob.data)


def _fill(sup: Supervisor) -> None:
    """Cap the database where it stands: SQLite then reports "database or disk is full"."""
    pages = sup.store._db.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
    sup.store._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_a_full_store_refuses_submit_clearly_and_keeps_what_it_had(db: str) -> None:
    sup = Supervisor([blob_size], workers=1, store=db)
    try:
        kept = sup.submit(blob_size, {"data": "x" * 10})
        _fill(sup)
        started = time.monotonic()
        with pytest.raises(StoreError, match="full"):
            for _ in range(20):
                sup.submit(blob_size, {"data": "y" * 20_000})
        assert time.monotonic() - started < 5
        sup.store._db.execute("PRAGMA max_page_count = 1073741823")  # type: ignore[attr-defined]
        sup.serve(until="drained")
        assert kept.result(timeout=0) == 10  # what was stored before is intact and runs
    finally:
        sup.close()


@pytest.mark.timeout(60)
def test_a_store_that_fills_while_serving_stops_the_supervisor_instead_of_spinning(db: str) -> None:
    sup = Supervisor([blob_size], workers=1, store=db)
    try:
        handles = sup.submit_many(blob_size, [{"data": "z" * 30_000} for _ in range(3)])
        _fill(sup)
        sup.store._db.execute("PRAGMA max_page_count = 1")  # type: ignore[attr-defined]  # no room at all
        started = time.monotonic()
        with pytest.raises(StoreError, match="full"):
            sup.serve(until="drained")
        assert time.monotonic() - started < 10
    finally:
        sup.close()
    with Supervisor([blob_size], workers=1, store=db) as again:  # a new start finds every run
        again.serve(until="drained")
        assert [again.run(h.id).status for h in handles] == [RunStatus.SUCCEEDED] * 3
