"""actors/__init__.py: one public surface, every name in __all__ importable."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from conftest import ROOT, script_env

import actors

EXPECTED = {
    "Supervisor", "job", "Job", "Context", "Retry", "Priority", "Client", "Handle",
    "RunStatus", "Outcome", "RunRecord", "Attempt",
    "Store", "SQLiteStore", "MemoryStore",
    "ActorsError", "JobNotFound", "DuplicateJob", "StoreError", "StoreLocked", "RunNotFound", "RunError",
    "RunFailed", "RunTimedOut", "RunCancelled", "SoftTimeout",
    "compute_backoff", "parse_duration",
}


@pytest.mark.parametrize("name", actors.__all__)
def test_every_name_in_all_imports(name):
    namespace: dict[str, object] = {}
    exec(f"from actors import {name}", namespace)
    assert namespace[name] is getattr(actors, name)
    assert namespace[name] is not None


def test_all_has_no_duplicates_and_no_private_names():
    assert len(actors.__all__) == len(set(actors.__all__))
    assert not [name for name in actors.__all__ if name.startswith("_")]


def test_all_holds_the_documented_surface():
    assert set(actors.__all__) >= EXPECTED


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from actors import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(actors.__all__)


def test_every_public_error_but_soft_timeout_derives_from_actors_error():
    errors = [getattr(actors, n) for n in actors.__all__ if isinstance(getattr(actors, n), type)
              and issubclass(getattr(actors, n), BaseException)]
    assert {e.__name__ for e in errors} >= {"RunFailed", "RunTimedOut", "RunCancelled", "JobNotFound"}
    for error in errors:
        if error is actors.SoftTimeout:
            continue  # raised inside the user's job, not by the library to its caller
        assert issubclass(error, actors.ActorsError), error
    for kind in (actors.RunFailed, actors.RunTimedOut, actors.RunCancelled):
        assert issubclass(kind, actors.RunError)


def test_import_actors_works_in_a_fresh_interpreter_and_starts_nothing():
    code = (
        "import threading, actors, multiprocess.forkserver as f\n"
        "assert actors.Supervisor and actors.job\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert f._forkserver._forkserver_pid is None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env=script_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_package_ships_py_typed():
    assert (ROOT / "actors" / "py.typed").exists()
    assert importlib.import_module("actors").__file__.startswith(str(ROOT))
