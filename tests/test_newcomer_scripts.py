"""A newcomer's script, as it is first written: each mistake gives one message that says what to do.

Workers import the script again (as `__mp_main__`) to find its jobs and models, so a script
without `if __name__ == "__main__":` would run its top level in every worker, and a model
defined under that guard is never defined there (see `actors/supervisor/scripts.py`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import live_descendants, run_script, script_env
from pydantic import BaseModel

from actors import Client, RunStatus, Supervisor, job
from actors.supervisor import scripts

pytestmark = pytest.mark.timeout(90)

ADVICE = "submit and serve under `if __name__ == \"__main__\":`"

HEAD = """
from pydantic import BaseModel
from actors import Supervisor, job

if __name__ == "__mp_main__":  # a worker imports the script again: leave a mark
    open(f"worker-{__import__('os').getpid()}", "w").close()

class In(BaseModel):
    x: int

@job
def double(n: In) -> int:
    return n.x * 2
"""

NO_GUARD = HEAD + """
sup = Supervisor([double], workers=2, store="runs.db")
handles = [sup.submit(double, {"x": i}) for i in range(3)]
sup.serve(until="drained")
print("results", [h.result(timeout=10) for h in handles])
"""

NO_GUARD_IN_A_FUNCTION = HEAD + """
def main():
    sup = Supervisor([double], workers=2, store="runs.db")
    handles = [sup.submit(double, {"x": i}) for i in range(3)]
    sup.serve(until="drained")
    print("results", [h.result(timeout=10) for h in handles])

main()
"""

SERVED_UNGUARDED = HEAD + """
if __name__ == "__main__":
    sup = Supervisor([double], workers=2, store="runs.db")
    handles = [sup.submit(double, {"x": i}) for i in range(3)]
sup.serve(until="drained")
"""

GUARDED = HEAD + """
if __name__ == "__main__":
    sup = Supervisor([double], workers=2, store="runs.db")
    handles = [sup.submit(double, {"x": i}) for i in range(3)]
    sup.serve(until="drained")
    print("results", [h.result(timeout=10) for h in handles])
"""


def workers_started(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("worker-*"))


@pytest.mark.parametrize("code, at, what", [
    (NO_GUARD, "sup = Supervisor(", "Supervisor(...) is created"),
    (NO_GUARD_IN_A_FUNCTION, "main()", "Supervisor(...) is created"),
    (SERVED_UNGUARDED, "sup.serve(", "serve() is called"),
], ids=["top-level", "main-called-unguarded", "serve-unguarded"])
def test_a_script_without_a_main_guard_fails_once_with_the_advice(tmp_path: Path, code: str, at: str,
                                                                   what: str) -> None:
    line = 1 + next(i for i, text in enumerate(code.splitlines()) if text.startswith(at))
    done = run_script(tmp_path, code, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count(ADVICE) == 1, output
    assert output.count("Traceback") == 1, output
    assert f"RuntimeError: {what} from the top level of {tmp_path / 'script.py'} (line {line})" in output, output
    assert "outside an `if __name__ == \"__main__\":` guard" in output
    assert "StoreLocked" not in output and "WorkerCrashed" not in output
    assert workers_started(tmp_path) == [], "a worker started"
    with Client(store=str(tmp_path / "runs.db")) as client:  # what was submitted is kept
        assert [r.status for r in client.runs()] == [RunStatus.QUEUED] * 3
    assert live_descendants() == []


def test_the_guarded_script_runs(tmp_path: Path) -> None:
    done = run_script(tmp_path, GUARDED, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "results [0, 2, 4]" in done.stdout
    # its workers are forks of a fork server forked from the script: they never run its top level again
    assert workers_started(tmp_path) == []


def test_a_worker_that_runs_an_unguarded_script_again_refuses_before_the_store(tmp_path: Path) -> None:
    """The backstop, for what the parent's stack cannot show: the script run as `__mp_main__`,
    as a worker runs it, stops at Supervisor(...) with the advice (not StoreLocked)."""
    (tmp_path / "script.py").write_text(textwrap.dedent(NO_GUARD))
    runner = "import runpy; runpy.run_path('script.py', run_name='__mp_main__')"
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=30,
                          env=script_env(), cwd=tmp_path)
    assert done.returncode == 1
    assert f"RuntimeError: {scripts.REIMPORTED}" in done.stderr, done.stderr
    assert done.stderr.count(ADVICE) == 1
    assert not (tmp_path / "runs.db").exists(), "the store was opened"


class Plain(BaseModel):
    x: int


@job
def plain(p: Plain) -> int:
    return p.x


def test_a_supervisor_made_while_a_child_process_starts_up_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocess import process

    monkeypatch.setattr(process.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(RuntimeError, match="has no `if __name__ == \"__main__\":` guard"):
        Supervisor([plain], workers=1, store=":memory:")
    monkeypatch.undo()
    sup = Supervisor([plain], workers=1, store=":memory:")
    sup.close()


# -- models a worker's import of the script does not define -------------------------------------

MODEL_IN_MAIN = """
from pydantic import BaseModel
from actors import Supervisor, job

if __name__ == "__mp_main__":
    open("worker-imported-the-script", "w").close()

if __name__ == "__main__":
    class In(BaseModel):
        x: int

    @job
    def double(n: In) -> int:
        return n.x * 2

    sup = Supervisor([double], workers=2, store="runs.db")
    handles = [sup.submit(double, {"x": i}) for i in range(3)]
    sup.serve(until="drained")
    print("results", [h.result(timeout=10) for h in handles])
"""

OUTPUT_IN_MAIN = """
from pydantic import BaseModel
from actors import Supervisor, job

class In(BaseModel):
    x: int

if __name__ == "__main__":
    class Out(BaseModel):
        y: int

    @job
    def double(n: In) -> list[Out]:
        return [Out(y=n.x * 2)]

    Supervisor([double], workers=2, store="runs.db").serve(until="drained")
"""

MODEL_IN_A_FUNCTION = """
from pydantic import BaseModel
from actors import Supervisor, job

def make():
    class In(BaseModel):
        x: int
    return In

In = make()

@job
def double(n: In) -> int:
    return n.x * 2

if __name__ == "__main__":
    Supervisor([double], workers=2, store="runs.db").serve(until="drained")
"""

MODEL_AT_TOP = """
from pydantic import BaseModel
from actors import Supervisor, job

class In(BaseModel):
    x: int

if __name__ == "__main__":
    @job  # the job itself may live under the guard: it travels by value
    def double(n: In) -> int:
        return n.x * 2

    sup = Supervisor([double], workers=2, store="runs.db")
    handles = [sup.submit(double, {"x": i}) for i in range(3)]
    sup.serve(until="drained")
    print("results", [h.result(timeout=10) for h in handles])
"""


@pytest.mark.parametrize("code, message", [
    (MODEL_IN_MAIN, "job 'double': its model In is defined inside the `if __name__ == \"__main__\":` block of "
                    "script.py, so worker processes"),
    (OUTPUT_IN_MAIN, "job 'double': its model Out is defined inside the `if __name__ == \"__main__\":` block of "
                     "script.py, so worker processes"),
    (MODEL_IN_A_FUNCTION, "job 'double': its model In is defined inside a function (make.<locals>.In), so worker"),
], ids=["input-in-main", "output-in-main", "in-a-function"])
def test_a_model_workers_cannot_find_is_refused_before_any_worker_starts(tmp_path: Path, code: str,
                                                                        message: str) -> None:
    done = run_script(tmp_path, code, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"TypeError: {message}" in done.stderr, output
    assert "define models at the top level of the script (outside `if __name__ == \"__main__\":`)" in done.stderr
    assert output.count("Traceback") == 1, output
    assert "Can't get attribute" not in output
    assert not (tmp_path / "worker-imported-the-script").exists()
    assert workers_started(tmp_path) == []


def test_a_model_at_the_top_level_with_its_job_under_the_guard_runs(tmp_path: Path) -> None:
    done = run_script(tmp_path, MODEL_AT_TOP, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "results [0, 2, 4]" in done.stdout


def test_a_model_in_a_packages_main_run_with_dash_m_is_refused(tmp_path: Path) -> None:
    """`python -m pkg` runs pkg/__main__.py, which workers never import again (multiprocess
    skips it): every run would fail with "Can't get attribute 'In' on <module '__main__'>"."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(MODEL_AT_TOP))
    env = script_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    done = subprocess.run([sys.executable, "-m", "pkg"], capture_output=True, text=True, timeout=30, env=env,
                          cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"TypeError: job 'double': its model In is defined in {package / '__main__.py'}, a __main__ module "
            "run by name (python -m pkg), which worker processes do not import again") in done.stderr, done.stderr
    assert not (tmp_path / "runs.db").exists()


# -- reading a script -----------------------------------------------------------------------------


def parse(tmp_path: Path, code: str) -> scripts.Script:
    path = tmp_path / "parsed.py"
    path.write_text(textwrap.dedent(code))
    found = scripts._read(str(path))
    assert found is not None
    return found


def test_names_bound_by_a_script_are_split_by_its_main_guard(tmp_path: Path) -> None:
    found = parse(tmp_path, """
        import os.path, json as j
        from typing import Any
        class A: ...
        B = C = 1
        for D in (): pass
        try:
            class E: ...
        except ImportError:
            F = None
        if __name__ == "__main__":
            class G: ...
            A = 2
        else:
            class H: ...
        if __name__ != "__main__":
            class I: ...
        else:
            class J: ...
        if "__main__" == __name__ and True:
            class K: ...
    """)
    assert {"os", "j", "Any", "A", "B", "C", "D", "E", "F", "H", "I"} <= found.top
    assert found.guarded == {"G", "J", "K"}
    assert not found.open
    assert parse(tmp_path, "from os import *\n").open
    assert parse(tmp_path, "globals()['X'] = 1\n").open


def test_an_if_on_name_of_another_shape_is_not_judged(tmp_path: Path) -> None:
    found = parse(tmp_path, """
        import os
        if __name__ == "__main__" or os.environ.get("RUN"):
            class L: ...
            x = 1
    """)
    assert "L" in found.top  # bound when imported too, as far as ast can tell
    assert found.guarded_lines == ((3, 5),)  # and code there is given the benefit of the doubt


def test_this_test_session_is_not_taken_for_an_unguarded_script() -> None:
    """pytest's launcher is the `__main__` here: its top level is guarded (or not re-run)."""
    assert scripts.unguarded(sys._getframe()) is None
    assert not scripts.reimported()
