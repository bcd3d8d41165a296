"""examples/workflow.py end to end, in a subprocess: approved unattended (--auto-approve), left
waiting until the command it prints approves it, and failed as NotApproved after its timeout."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, Collector, script_env, wait_until

from actors import Client, RunStatus

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("click")

EXAMPLE = ROOT / "examples" / "workflow.py"
SUMMARY = re.compile(r"^summary: approved=(\d+) not_approved=(\d+) failed=(\d+) left=(\d+) already_done=(\d+) "
                     r"children=(\d+) ", re.M)
APPROVE = re.compile(r"^approve run (\d+) \((.+?)\): (actors emit .+)$", re.M)
CHILDREN = {"thumbnail", "palette", "describe"}

pytestmark = pytest.mark.timeout(120)


def left_in(cwd: Path) -> list[psutil.Process]:
    """Live processes working in `cwd` (the example's, and every process it started, inherit
    it; an orphan is reparented away from this test, so descendants would not show it)."""
    left = []
    for proc in psutil.process_iter(["cwd", "status"]):
        if proc.info["cwd"] == str(cwd) and proc.info["status"] != psutil.STATUS_ZOMBIE and proc.pid != os.getpid():
            left.append(proc)
    return left


def run_example(cwd: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=timeout,
                          env=script_env(), cwd=cwd)


def summary(stdout: str) -> dict[str, int]:
    match = SUMMARY.search(stdout)
    assert match, f"no summary line in:\n{stdout}"
    keys = ("approved", "not_approved", "failed", "left", "already_done", "children")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def make_images(folder: Path) -> dict[str, Path]:
    """Three small images: a JPEG with EXIF, a plain JPEG, a PNG."""
    folder.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "test camera"  # Make
    Image.radial_gradient("L").convert("RGB").resize((300, 200)).save(folder / "a.jpg", exif=exif)
    Image.new("RGB", (120, 240), (20, 160, 90)).save(folder / "b.jpg")
    Image.linear_gradient("L").convert("RGB").resize((200, 200)).save(folder / "c.png")
    return {p.name: p for p in folder.iterdir()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parents(db: Path) -> list:
    with Client(str(db)) as client:
        return [client.run(r.id) for r in client.runs(job="review", limit=100)]


def children_of(db: Path, parent_id: int) -> list:
    with Client(str(db)) as client:
        return [r for r in client.runs(limit=1000) if r.parent_id == parent_id]


def approve(cwd: Path, command: str) -> subprocess.CompletedProcess[str]:
    """The printed `actors emit ...` command, run as `python -m actors emit ...`."""
    words = shlex.split(command)
    assert words[0] == "actors"
    return subprocess.run([sys.executable, "-m", "actors", *words[1:]], capture_output=True, text=True, timeout=40,
                          env=script_env(), cwd=cwd)


def test_auto_approve_runs_the_whole_workflow_and_stores_each_result(tmp_path: Path):
    images = make_images(tmp_path / "src")
    done = run_example(tmp_path, str(tmp_path / "src"), "--auto-approve", "--thumb-size", "64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done.stdout) == {"approved": 3, "not_approved": 0, "failed": 0, "left": 0, "already_done": 0,
                                    "children": 9}
    assert "Traceback" not in done.stderr
    printed = {name: command for _, name, command in APPROVE.findall(done.stdout)}
    assert sorted(printed) == sorted(images)
    out, db = tmp_path / "workflow-out", tmp_path / "workflow.db"
    runs = parents(db)
    assert len(runs) == 3
    for record in runs:
        src = Path(json.loads(record.input)["src"])
        fingerprint = sha256(src)
        assert record.status is RunStatus.SUCCEEDED, record
        # suspended for the children, suspended for the approval, then done: never charged
        assert [str(a.outcome) for a in record.attempt_log] == ["suspended", "suspended", "succeeded"]
        assert list(record.steps) == ["fingerprint", "run:thumbnail#1", "run:palette#2", "run:describe#3", "wait#4",
                                      "event:approved#5", "store"]
        assert record.steps["event:approved#5"]["payload"] == {"fingerprint": fingerprint,
                                                                           "by": "auto-approve"}
        assert f'"fingerprint": "{fingerprint}"' in printed[src.name]
        result = record.result
        assert result["fingerprint"] == fingerprint and result["approved_by"] == "auto-approve"
        assert max(result["thumbnail"]["width"], result["thumbnail"]["height"]) == 64
        assert len(result["palette"]["histogram"]) == 16 and result["palette"]["colours"]
        kids = children_of(db, record.id)
        assert sorted(r.job for r in kids) == sorted(CHILDREN)
        assert all(r.status is RunStatus.SUCCEEDED and r.attempts == 1 for r in kids)
        stored = json.loads((out / f"{src.stem}.json").read_text())  # (d), beside the outputs
        assert result["stored"] == str(out / f"{src.stem}.json")
        assert stored["fingerprint"] == fingerprint and stored["run"] == record.id
        assert stored["thumbnail"] == result["thumbnail"] and stored["description"] == result["description"]
        with Image.open(out / f"{src.stem}.thumb.jpg") as thumb:
            assert thumb.size == (result["thumbnail"]["width"], result["thumbnail"]["height"])
        assert (out / f"{src.stem}.palette.png").exists()
    about = {Path(json.loads(r.input)["src"]).name: r.result["description"] for r in runs}
    assert about["a.jpg"]["exif"].get("Make") == "test camera" and about["a.jpg"]["width"] == 300
    assert about["c.png"]["format"] == "PNG" and about["c.png"]["exif"] == {}
    assert left_in(tmp_path) == []  # the example's supervisor, fork server and workers all ended

    again = run_example(tmp_path, str(tmp_path / "src"), "--auto-approve", "--thumb-size", "64")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary(again.stdout)["already_done"] == 3 and summary(again.stdout)["children"] == 0
    assert len(parents(db)) == 3  # the store remembers: nothing ran again


def test_without_approval_a_run_waits_until_the_printed_command_approves_it(tmp_path: Path):
    src = tmp_path / "src"
    images = make_images(src)
    (src / "c.png").unlink()
    db = tmp_path / "workflow.db"
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), str(src), "--approval-timeout", "5m"], cwd=tmp_path,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output, errors = Collector(proc.stdout), Collector(proc.stderr)
        wait_until(lambda: len(APPROVE.findall(output.text)) == 2 or proc.poll() is not None, timeout=60,
                   what="the two approval commands")
        assert proc.poll() is None, output.text + errors.text
        commands = {name: command for _, name, command in APPROVE.findall(output.text)}
        assert sorted(commands) == ["a.jpg", "b.jpg"]
        waiting = {Path(json.loads(r.input)["src"]).name: r for r in parents(db)}
        for name, record in waiting.items():
            assert record.status is RunStatus.WAITING, record
            assert record.wait["event"] == "approved"
            assert record.wait["match"] == {"fingerprint": sha256(images[name])}
            assert [str(a.outcome) for a in record.attempt_log] == ["suspended", "suspended"]
            assert all(r.status is RunStatus.SUCCEEDED for r in children_of(db, record.id))  # only the approval left

        approved = approve(tmp_path, commands["a.jpg"])
        assert approved.returncode == 0, approved.stderr
        assert "the serving supervisor wakes" in approved.stdout
        wait_until(lambda: {r.id: r.status for r in parents(db)}[waiting["a.jpg"].id] is RunStatus.SUCCEEDED,
                   timeout=30, what="a.jpg approved")
        assert (tmp_path / "workflow-out" / "a.json").exists()
        still = parents(db)
        assert {Path(json.loads(r.input)["src"]).name: r.status for r in still}["b.jpg"] is RunStatus.WAITING
        assert not (tmp_path / "workflow-out" / "b.json").exists()  # a's approval did not approve b
        assert proc.poll() is None

        approved = approve(tmp_path, commands["b.jpg"])
        assert approved.returncode == 0, approved.stderr
        proc.wait(timeout=60)
        output.thread.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.text + errors.text
    assert summary(output.text)["approved"] == 2
    assert json.loads((tmp_path / "workflow-out" / "b.json").read_text())["approved_by"]


def test_a_run_not_approved_in_time_fails_as_not_approved_and_stores_nothing(tmp_path: Path):
    src = tmp_path / "src"
    make_images(src)
    for name in ("a.jpg", "c.png"):
        (src / name).unlink()
    done = run_example(tmp_path, str(src), "--approval-timeout", "1s")
    assert done.returncode == 1, done.stdout + done.stderr
    assert summary(done.stdout) == {"approved": 0, "not_approved": 1, "failed": 0, "left": 0, "already_done": 0,
                                    "children": 3}
    assert "b.jpg: failed NotApproved: b.jpg (sha256 " in done.stdout
    (record,) = parents(tmp_path / "workflow.db")
    assert record.status is RunStatus.FAILED and record.error_type == "NotApproved"
    assert [str(a.outcome) for a in record.attempt_log] == ["suspended", "suspended", "failed"]
    assert record.steps["event:approved#5"].get("timed_out") is True
    out = tmp_path / "workflow-out"
    assert (out / "b.thumb.jpg").exists() and not (out / "b.json").exists()

    rerun = run_example(tmp_path, str(src), "--auto-approve")  # a failed run is run again under its key
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert summary(rerun.stdout)["approved"] == 1
    assert (out / "b.json").exists()
