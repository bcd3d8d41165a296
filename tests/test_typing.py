"""Types as a user's checker sees them: `mypy --strict` on tests/typing/check_types.py passes.

That file asserts what `@job` makes of a function (`Job[In, Out]`, an `async def` unwrapped, a
lambda with `input=`/`output=`) and what `handle.result()` returns, and marks the calls that
must be refused. mypy runs outside the checkout, so it finds `actors` the way a user's project
does, through the install (the README's `pip install -e`), not as a folder beside it.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from actors.job import Job, JobOptions

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ROOT / "tests" / "typing" / "check_types.py"


@pytest.mark.timeout(120)
def test_mypy_strict_accepts_the_typing_checks(tmp_path: Path):
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed: install the test extra, pip install -e \".[test]\"")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / ".mypy_cache" / "check_types"), str(CHECKED)],
        cwd=tmp_path, capture_output=True, text=True, timeout=110,
    )
    output = done.stdout + done.stderr
    hint = ("\n(mypy cannot find actors: install it with the README's `pip install -e`, whose .pth file "
            "type checkers follow)" if 'module named "actors"' in output else "")
    assert done.returncode == 0, output + hint


def test_the_typed_options_of_job_are_those_job_takes():
    taken = {name for name, p in inspect.signature(Job).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(typing.get_type_hints(JobOptions)) | {"input", "output"} == taken, \
        "a new option of Job needs its line in actors.job.JobOptions (the keywords type checkers accept)"
