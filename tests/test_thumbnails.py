"""examples/thumbnails.py end to end, in a subprocess: thumbnails made, summary printed, and a
Ctrl-C (graceful, then forced) followed by a rerun that finishes only what was left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Collector, script_env, wait_until

from actors import Client, RunStatus

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("rich")

EXAMPLE = ROOT / "examples" / "thumbnails.py"
SUMMARY = re.compile(r"summary: succeeded=(\d+) failed=(\d+) timed_out=(\d+) already_done=(\d+) left=(\d+)")


def run_example(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=timeout,
                          env=script_env(), cwd=cwd)


def start_example(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Started in its own session, so a signal to its process group is what a terminal's Ctrl-C does."""
    return subprocess.Popen([sys.executable, str(EXAMPLE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=script_env(), cwd=cwd, start_new_session=True)


def summary(stdout: str) -> dict[str, int]:
    match = SUMMARY.search(stdout)
    assert match, f"no summary line in:\n{stdout}"
    return dict(zip(("succeeded", "failed", "timed_out", "already_done", "left"), map(int, match.groups()), strict=True))


def store_runs(path: Path) -> list:
    with Client(store=str(path)) as client:
        return client.runs(limit=1000)


def thumbs(folder: Path, suffix: str = ".jpg") -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))


@pytest.mark.timeout(90)
def test_thumbnails_of_synthetic_images_have_the_size_format_and_summary(tmp_path: Path):
    args = ("--count", "6", "--sample-size", "640x480", "--workers", "2", "--size", "200x200")
    done = run_example(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((tmp_path / "sample-images").glob("*.jpg"))) == 6
    made = thumbs(tmp_path / "thumbnails")
    assert len(made) == 6
    for path in made:
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.size == (200, 150)  # 640x480 into 200x200, aspect kept
    assert summary(done.stdout) == {"succeeded": 6, "failed": 0, "timed_out": 0, "already_done": 0, "left": 0}
    assert "images/s" in done.stdout  # the table
    runs = store_runs(tmp_path / "thumbnails.db")
    assert len(runs) == 6 and all(r.status is RunStatus.SUCCEEDED for r in runs)
    assert all(r.result["width"] == 200 and r.result["bytes"] > 0 for r in runs)

    again = run_example(tmp_path, *args)  # nothing left to do: the store remembers
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary(again.stdout) == {"succeeded": 0, "failed": 0, "timed_out": 0, "already_done": 6, "left": 0}
    assert len(store_runs(tmp_path / "thumbnails.db")) == 6

    webp = run_example(tmp_path, *args[:6], "--size", "120x120", "--format", "webp", "--filter", "blur",
                       "--out", "small")
    assert webp.returncode == 0, webp.stdout + webp.stderr
    assert summary(webp.stdout)["succeeded"] == 6  # another size and format: other keys, new runs
    for path in thumbs(tmp_path / "small", ".webp"):
        with Image.open(path) as img:
            assert img.format == "WEBP" and img.size == (120, 90)
    assert len(thumbs(tmp_path / "small", ".webp")) == 6


@pytest.mark.timeout(90)
def test_a_bad_image_fails_alone_and_the_exit_status_says_so(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(src / "good.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    done = run_example(tmp_path, str(src), "--workers", "2", "--size", "60x60")
    assert done.returncode == 1, done.stdout + done.stderr
    assert summary(done.stdout) == {"succeeded": 1, "failed": 1, "timed_out": 0, "already_done": 0, "left": 0}
    assert "broken.jpg" in done.stdout and "UnidentifiedImageError" in done.stdout
    with Image.open(tmp_path / "thumbnails" / "good.jpg") as img:
        assert img.size == (60, 40)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_gracefully_and_a_rerun_finishes_only_what_was_left(tmp_path: Path):
    args = ("--count", "30", "--workers", "2", "--size", "800x600")
    out, db = tmp_path / "thumbnails", tmp_path / "thumbnails.db"
    proc = start_example(tmp_path, *args)
    try:
        wait_until(lambda: len(thumbs(out)) >= 3 or proc.poll() is not None, timeout=60, what="3 thumbnails")
        assert proc.poll() is None, "finished before the Ctrl-C"
        os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert "received SIGINT" in stderr
    first = summary(stdout)
    assert "stopped before the end" in stdout
    runs = store_runs(db)
    assert len(runs) == 30
    succeeded = [r for r in runs if r.status is RunStatus.SUCCEEDED]
    assert 3 <= len(succeeded) < 30
    assert first["succeeded"] == len(succeeded) and first["left"] == 30 - len(succeeded)
    assert all(r.status is RunStatus.QUEUED and r.attempts == 0 for r in runs if r.status is not RunStatus.SUCCEEDED)
    made = {p.name: p.stat().st_mtime_ns for p in thumbs(out)}
    assert len(made) == len(succeeded)

    rerun = run_example(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert summary(rerun.stdout) == {"succeeded": 30 - len(succeeded), "failed": 0, "timed_out": 0,
                                     "already_done": len(succeeded), "left": 0}
    runs = store_runs(db)
    assert len(runs) == 30  # no run twice
    assert all(r.status is RunStatus.SUCCEEDED and r.attempts == 1 for r in runs)
    assert len(thumbs(out)) == 30
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in made.items())  # not redone


@pytest.mark.timeout(90)
def test_a_second_ctrl_c_forces_the_stop_with_status_130_and_a_rerun_finishes(tmp_path: Path):
    src = tmp_path / "big"
    src.mkdir()
    ramp = Image.linear_gradient("L").resize((6000, 4500))  # about 0.5 s per image to decode
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp)).save(src / "a.png", compress_level=1)
    for i in range(7):
        os.link(src / "a.png", src / f"b{i}.png")
    args = (str(src), "--workers", "2", "--size", "100x100")
    out, db = tmp_path / "thumbnails", tmp_path / "thumbnails.db"
    proc = start_example(tmp_path, *args)
    try:
        errors = Collector(proc.stderr)

        def running() -> bool:
            if proc.poll() is not None:
                return True
            return db.exists() and any(r.status is RunStatus.RUNNING for r in store_runs(db))

        wait_until(running, timeout=60, interval=0.05, what="a running run")
        os.killpg(proc.pid, signal.SIGINT)
        wait_until(lambda: "received SIGINT" in errors.text or proc.poll() is not None, timeout=30,
                   what="the graceful stop to begin")
        os.killpg(proc.pid, signal.SIGINT)
        stdout = proc.stdout.read()
        proc.wait(timeout=30)
        errors.thread.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + errors.text
    assert "stopped at once" in stdout
    assert "Traceback" not in stdout + errors.text
    runs = store_runs(db)
    assert len(runs) == 8
    assert any(r.status is RunStatus.QUEUED for r in runs)  # the interrupted ones went back to the queue

    rerun = run_example(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert summary(rerun.stdout)["left"] == 0
    runs = store_runs(db)
    assert len(runs) == 8 and all(r.status is RunStatus.SUCCEEDED for r in runs)
    assert len(thumbs(out)) == 8
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
