"""The examples about retries and steps run as they stand and print what happened.

Each runs in a subprocess with a fresh temporary directory as its working directory (where it
keeps its store), and must exit 0 quickly, leaving no process behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, live_descendants, script_env

pytestmark = pytest.mark.timeout(60)


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                            timeout=30, env=script_env(), cwd=cwd)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert live_descendants() == []
    return result


def test_retries_example_shows_each_runs_attempt_log(tmp_path: Path):
    out = run_example("retries.py", tmp_path).stdout
    assert (tmp_path / "retries.db").exists()
    assert re.search(r"^run \d+ steady \(fails 0x\): succeeded after 1 attempt\(s\)$", out, re.M), out
    assert re.search(r"^run \d+ hiccup \(fails 1x\): succeeded after 2 attempt\(s\)$", out, re.M), out
    assert re.search(r"^run \d+ wobbly \(fails 3x\): succeeded after 4 attempt\(s\)$", out, re.M), out
    assert re.search(r"^run \d+ broken \(fails 9x\): failed after 4 attempt\(s\)$", out, re.M), out
    assert "  attempt 1: failed TransientError: hiccup: attempt 1 hit a transient error" in out
    # exponential backoff from 100 ms with 10% jitter: about 0.1, 0.2, 0.4 s between attempts
    broken = out[out.index("broken (fails 9x)"):]
    waits = [float(w) for w in re.findall(r"attempt \d: failed \(\+(\d+\.\d+) s\)", broken)]
    assert len(waits) == 3, broken
    assert waits[0] >= 0.08 and waits[1] >= 0.17 and waits[2] >= 0.35, waits
    assert out.rstrip().endswith("3 of 4 runs succeeded")


def test_steps_example_runs_the_first_stage_once_across_a_crash(tmp_path: Path):
    out = run_example("steps.py", tmp_path).stdout
    assert (tmp_path / "steps.db").exists()
    assert "attempt 1: crashed WorkerCrashed" in out
    assert "attempt 2: succeeded" in out
    assert "stored steps: download, transform" in out
    assert "download ran 1 time(s)" in out
    assert "transform ran 1 time(s)" in out
    assert re.search(r"^result: .*words=1000", out, re.M), out
    stages = (tmp_path / "stages.log").read_text().split("\n")
    assert [line.split()[:2] for line in stages if line] == [["download", "attempt=1"], ["transform", "attempt=2"]]
