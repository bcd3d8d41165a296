"""The README cannot drift from the code: every ```python block runs as a script (in a fresh
directory, with a real supervisor), and the test command it shows is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, run_script

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "no ```python block found in README.md"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_python_block_of_the_readme_runs_as_pasted(index: int, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("a file for the tour to read\n")
    done = run_script(tmp_path, BLOCKS[index], timeout=50)
    assert done.returncode == 0, f"README block {index} failed:\n{done.stdout}\n{done.stderr}"


def test_the_tour_drains_and_prints_its_results(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("a file for the tour to read\n")
    done = run_script(tmp_path, BLOCKS[0], timeout=50)
    lines = done.stdout.splitlines()
    assert lines[0] == "drained", done.stdout
    assert any("notes.txt" in line and "sha256=" in line for line in lines[1:]), done.stdout


def test_the_readme_test_command_is_the_one_ci_runs():
    commands = re.findall(r"```\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command.split("&& ")[-1].strip() in (ROOT / ".ci" / "run").read_text()
