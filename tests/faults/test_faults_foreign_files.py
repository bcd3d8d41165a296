"""Other people's files, run as a table: a store path that is not (and cannot become) an actors
store is a clear `StoreError` naming it, for a `Supervisor` and a `Client` alike, and nothing
changes on disk: the file keeps its bytes and no -wal, -shm or .lock file appears beside it.
Stores the code made are marked (`PRAGMA application_id`) and open again; stores made before
the mark are recognised by their schema and stamped.

Tests may run as root, whom permission bits do not stop: a read-only directory is then one
marked immutable with `chattr +i`, which binds root too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_script
from pydantic import BaseModel

from actors import Client, RunStatus, StoreError, StoreLocked, Supervisor, job
from actors.stores.base import SCHEMA_VERSION
from actors.stores.sqlite_file import APPLICATION_ID


class Num(BaseModel):
    n: int


@job(timeout="10s")
def double(num: Num) -> int:
    return 2 * num.n


# -- the files ---------------------------------------------------------------------------------


def _database(path: Path, *, version: int = 0, application_id: int = 0, wal: bool = False,
              tables: tuple[str, ...] = ("photos",)) -> Path:
    """An SQLite database of someone else's: tables with a row each, closed (no -wal left)."""
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    for table in tables:
        db.execute(f"CREATE TABLE {table} (name TEXT, taken REAL)")
        db.execute(f"INSERT INTO {table} VALUES ('beach.jpg', 1.5)")
    db.execute(f"PRAGMA user_version={version}")
    db.execute(f"PRAGMA application_id={application_id}")
    db.commit()
    db.close()
    return path


def _their_db(home: Path) -> Path:
    return _database(home / "photos.db")


def _their_db_at_version_7(home: Path) -> Path:
    return _database(home / "photos.db", version=7)


def _their_wal_db(home: Path) -> Path:
    return _database(home / "photos.db", wal=True)


def _their_db_with_our_table_names(home: Path) -> Path:
    return _database(home / "runs.db", version=1, tables=("runs", "attempts", "steps"))


def _another_applications_db(home: Path) -> Path:
    return _database(home / "map.gpkg", application_id=0x47504B47)  # GeoPackage's mark


def _text_file(home: Path) -> Path:
    path = home / "notes.txt"
    path.write_text("shopping: milk, eggs\n" * 100)
    return path


def _a_few_bytes(home: Path) -> Path:
    path = home / "runs.db"
    path.write_bytes(b"SQLite")
    return path


def _our_store_from_a_newer_actors(home: Path) -> Path:
    return _database(home / "runs.db", version=SCHEMA_VERSION + 6, application_id=APPLICATION_ID,
                     tables=("runs", "attempts", "steps"))


def _directory(home: Path) -> Path:
    path = home / "runs.db"
    path.mkdir()
    return path


def _missing_directory(home: Path) -> Path:
    return home / "no-such-dir" / "runs.db"


def _new_store_in_read_only_directory(home: Path) -> Path:
    (home / "frozen").mkdir()
    return home / "frozen" / "runs.db"


@dataclass
class Case:
    make: Callable[[Path], Path]  # builds the path in an empty directory and returns it
    words: tuple[str, ...]  # what the StoreError's message must say (besides the path)
    absent: tuple[str, ...] = ()  # what it must not say
    read_only: bool = False  # make the store's directory read-only once built


UNTOUCHED = ("not an actors store", "left untouched")
CASES = {
    "their database": Case(_their_db, (*UNTOUCHED, "tables of its own", "photos")),
    "their database at user_version 7": Case(_their_db_at_version_7, (*UNTOUCHED, "photos"), absent=("newer",)),
    "their database in WAL mode": Case(_their_wal_db, (*UNTOUCHED, "photos")),
    "their database with our table names": Case(_their_db_with_our_table_names, (*UNTOUCHED, "runs")),
    "another application's database": Case(_another_applications_db, (*UNTOUCHED, "application_id 1196444487")),
    "a text file": Case(_text_file, (*UNTOUCHED, "not a database")),
    "a few bytes": Case(_a_few_bytes, (*UNTOUCHED, "not a database")),
    "our store from a newer actors": Case(_our_store_from_a_newer_actors,
                                          (f"schema version {SCHEMA_VERSION + 6}", "newer", "left untouched")),
    "a directory": Case(_directory, ("is a directory",)),
    "a missing directory": Case(_missing_directory, ("no-such-dir", "does not exist")),
    "a read-only directory": Case(_new_store_in_read_only_directory, ("cannot create", "writable"), read_only=True),
}


# -- a read-only directory, for root too --------------------------------------------------------


class ReadOnly:
    """Makes directories read-only: `chattr +i` for root (whom mode bits do not stop), else
    mode 0o555; the fixture undoes it at the end."""

    def __init__(self) -> None:
        self.marked: list[Path] = []

    def mark(self, directory: Path) -> None:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None:
                pytest.skip("root ignores directory permissions and chattr is not installed")
            done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"root ignores directory permissions and chattr +i fails here: {done.stderr.strip()}")
        else:
            directory.chmod(0o555)
        self.marked.append(directory)

    def undo(self) -> None:
        for directory in reversed(self.marked):
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(directory)], check=True)
            else:
                directory.chmod(0o755)


@pytest.fixture
def read_only() -> Iterator[ReadOnly]:
    marks = ReadOnly()
    yield marks
    marks.undo()


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under `root`: a sha256 of each file's bytes, "dir" for a directory."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            seen[os.path.relpath(os.path.join(directory, name), root)] = "dir"
        for name in files:
            path = os.path.join(directory, name)
            seen[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


OPENERS: dict[str, Callable[[str], object]] = {
    "Supervisor": lambda store: Supervisor([double], workers=1, store=store),
    "Client": lambda store: Client(store=store, create=True),  # one that may create a store
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("opener", list(OPENERS))
@pytest.mark.parametrize("name", list(CASES))
def test_a_path_that_is_not_an_actors_store_is_refused_and_left_untouched(
    name: str, opener: str, tmp_path: Path, read_only: ReadOnly
) -> None:
    case = CASES[name]
    store = case.make(tmp_path)
    if case.read_only:
        read_only.mark(store.parent)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError) as caught:
        OPENERS[opener](str(store))
    message = str(caught.value)
    assert not isinstance(caught.value, StoreLocked), message
    assert str(store) in message, message
    for word in case.words:
        assert word in message, message
    for word in case.absent:
        assert word not in message, message
    assert _snapshot(tmp_path) == before, "the refused path, or something beside it, changed"


# -- our own stores -----------------------------------------------------------------------------


def _marks(db: str) -> tuple[int, int]:
    """(application_id, user_version) as the file's header says them."""
    header = Path(db).read_bytes()[:100]
    return int.from_bytes(header[68:72], "big"), int.from_bytes(header[60:64], "big")


@pytest.mark.timeout(30)
def test_a_store_it_made_is_marked_and_opens_again(db: str) -> None:
    with Supervisor([double], workers=1, store=db) as sup:
        handle = sup.submit(double, {"n": 21})
        sup.serve(until="drained")
    assert _marks(db) == (APPLICATION_ID, SCHEMA_VERSION)
    with Client(store=db) as client:
        assert client.run(handle.id).result == 42
    with Supervisor([double], workers=1, store=db) as again:
        assert again.run(handle.id).status is RunStatus.SUCCEEDED


@pytest.mark.timeout(20)
def test_an_empty_file_is_made_a_store(db: str) -> None:
    Path(db).touch(mode=0o600)
    with Client(store=db) as client:
        handle = client.submit(double, {"n": 1})
    assert _marks(db) == (APPLICATION_ID, SCHEMA_VERSION)
    with Client(store=db) as client:
        assert client.run(handle.id).status is RunStatus.QUEUED


@pytest.mark.timeout(30)
@pytest.mark.parametrize("opener", list(OPENERS))
def test_a_store_made_before_the_mark_is_stamped_and_keeps_its_runs(db: str, opener: str) -> None:
    with Client(store=db, create=True) as client:
        handle = client.submit(double, {"n": 2})
    unmark = sqlite3.connect(db)
    unmark.execute("PRAGMA application_id=0")  # as every store was before the mark
    unmark.close()
    assert _marks(db) == (0, SCHEMA_VERSION)
    opened = OPENERS[opener](db)
    try:
        assert opened.run(handle.id).status is RunStatus.QUEUED  # type: ignore[attr-defined]
    finally:
        opened.close()  # type: ignore[attr-defined]
    assert _marks(db) == (APPLICATION_ID, SCHEMA_VERSION)


@pytest.mark.timeout(30)
def test_a_store_whose_maker_died_before_a_checkpoint_is_still_ours(tmp_path: Path, db: str) -> None:
    """Its mark and tables are still only in the -wal file: the header alone says application_id 0."""
    done = run_script(tmp_path, """
        import os, sys
        from actors import Client
        Client(store=sys.argv[1], create=True).submit("double", {"n": 3})
        os._exit(0)  # no close, no checkpoint
    """, db)
    assert done.returncode == 0, done.stderr
    assert _marks(db)[0] == 0 and os.path.getsize(db + "-wal") > 0, "the header was checkpointed: not this case"
    with Client(store=db) as client:
        assert [r.status for r in client.runs()] == [RunStatus.QUEUED]
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
