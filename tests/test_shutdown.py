"""Signals and shutdown, end to end: a real script in a subprocess, signals sent by pid.

What is checked (see actors/supervisor/shutdown.py for the contract):
- the first SIGINT/SIGTERM is graceful: running runs finish, queued runs stay queued, the
  script exits 0, and a line on stderr says how to force;
- a second signal, or the grace period running out, forces: running runs are killed, put back
  to `queued` with an `interrupted` (uncharged) attempt, and the script exits 128 + signum;
- a terminal's Ctrl-C (SIGINT to the whole process group) reaches only the supervisor;
- a restart after a forced stop finishes every run exactly once;
- `shutdown()` from another thread and the context manager stop a serving supervisor;
- dispositions are restored once `serve()` returns; SIGUSR1 logs a status line;
- nothing the script started is left alive afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import live_descendants, run_script, start_script, wait_until

from actors import Client

# One job, `nap`: it marks its start with a file `start-<n>-<worker pid>`, sleeps, then marks
# its end with `done-<n>-<worker pid>`. The script is configured by one JSON argument:
#   runs: seconds for each run to submit (run n sleeps runs[n]); store, workers, grace,
#   kill_grace; until: None or "drained"; shutdown_after: call sup.shutdown() from another
#   thread once that many runs have started.
PRELUDE = """
import json, os, sys, threading, time
from pathlib import Path

from pydantic import BaseModel

from actors import Supervisor, job

MARKS = Path(__file__).resolve().parent / "marks"


class Nap(BaseModel):
    n: int
    seconds: float


@job
def nap(arg: Nap) -> int:
    (MARKS / f"start-{arg.n}-{os.getpid()}").touch()
    time.sleep(arg.seconds)
    (MARKS / f"done-{arg.n}-{os.getpid()}").touch()
    return arg.n
"""

SCRIPT = PRELUDE + """

def started():
    return len(list(MARKS.glob("start-*")))


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    MARKS.mkdir(exist_ok=True)
    sup = Supervisor([nap], workers=cfg.get("workers", 2), store=cfg["store"], grace=cfg.get("grace", 30),
                     kill_grace=cfg.get("kill_grace", 0.5))
    for n, seconds in enumerate(cfg.get("runs", [])):
        sup.submit(nap, {"n": n, "seconds": seconds})
    if cfg.get("shutdown_after"):
        def stop():
            while started() < cfg["shutdown_after"]:
                time.sleep(0.01)
            sup.shutdown(graceful=True, timeout=30)
            print("shutdown returned", flush=True)
        stopper = threading.Thread(target=stop, daemon=True)
        stopper.start()
    print("serving", flush=True)
    sup.serve(until=cfg.get("until"))
    print("serve returned", flush=True)
    if cfg.get("shutdown_after"):
        stopper.join(10)  # a daemon thread may not get to print once the main thread has exited
"""


class Script:
    """A running script whose stdout and stderr are read as they come (so a test can wait for a line)."""

    def __init__(self, tmp_path: Path, code: str, *args: str, **kwargs) -> None:
        self.proc = start_script(tmp_path, code, *args, **kwargs)
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.children: list[psutil.Process] = []

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def err_lines(self) -> list[str]:
        return [line.rstrip("\n") for line in list(self._err)]

    def note_children(self) -> list[psutil.Process]:
        """Remember every live descendant now (workers, fork server, ...), to check later they are gone."""
        for proc in live_descendants(self.pid):
            if all(proc.pid != known.pid for known in self.children):
                self.children.append(proc)
        return self.children

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the script did not exit within {timeout} s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        for proc in [*live_descendants(self.pid), *self.children]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@pytest.fixture
def scripts():
    """Scripts started by a test; whatever is left is killed at the end."""
    started: list[Script] = []
    yield started
    for script in started:
        script.kill()


def start(scripts: list[Script], tmp_path: Path, db: str, *, code: str = SCRIPT, **cfg) -> Script:
    (tmp_path / "marks").mkdir(exist_ok=True)
    script = Script(tmp_path, code, json.dumps({"store": db, **cfg}))
    scripts.append(script)
    return script


def marks(tmp_path: Path, kind: str) -> list[tuple[int, int]]:
    """(run n, worker pid) of each start/done marker."""
    found = []
    for path in (tmp_path / "marks").glob(f"{kind}-*"):
        _, n, pid = path.name.split("-")
        found.append((int(n), int(pid)))
    return sorted(found)


def wait_started(tmp_path: Path, script: Script, count: int, timeout: float = 20) -> list[tuple[int, int]]:
    def enough():
        if script.proc.poll() is not None:
            pytest.fail(f"the script exited early ({script.proc.returncode})\n{script.output()}")
        found = marks(tmp_path, "start")
        return found if len(found) >= count else None

    found = wait_until(enough, timeout=timeout, what=f"{count} runs to start")
    script.note_children()
    return found


def stored_runs(db: str) -> dict[int, object]:
    """Every run in the store with its attempt log, by the `n` of its input."""
    client = Client(store=db)
    try:
        records = [client.run(r.id) for r in client.runs(limit=1000)]
    finally:
        client.close()
    return {json.loads(r.input)["n"]: r for r in records}


def charged_attempts(db: str, run_id: int) -> int:
    with sqlite3.connect(db) as conn:
        attempts, free = conn.execute("SELECT attempts, free_attempts FROM runs WHERE id = ?", (run_id,)).fetchone()
    return attempts - free


def assert_no_children(script: Script) -> None:
    """Every descendant the script ever had (as noted) is gone, and it has none now."""

    def all_gone():
        for proc in script.children:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    wait_until(all_gone, timeout=5, what="the script's child processes to be gone")
    assert live_descendants(script.pid) == []


def statuses(runs: dict) -> dict[int, str]:
    return {n: str(r.status) for n, r in sorted(runs.items())}


def outcomes(record) -> list[str]:
    return [str(a.outcome) for a in record.attempt_log]


# -- graceful ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_is_graceful(tmp_path, db, scripts, sig):
    """Tests 1 and 2: the running runs finish, the queued ones stay queued, exit 0, stderr says how to force."""
    script = start(scripts, tmp_path, db, runs=[1.5, 1.5, 1.5, 1.5])
    running = wait_started(tmp_path, script, 2)
    assert len(script.children) >= 2
    sent = script.signal(sig)
    code = script.wait(30)
    elapsed = time.monotonic() - sent

    assert code == 0, script.output()
    assert elapsed < 10, f"a graceful stop of 1.5 s runs took {elapsed:.1f} s"
    assert "serve returned" in script.stdout
    assert "Traceback" not in script.stderr, script.stderr
    lines = [line for line in script.err_lines() if signal.Signals(sig).name in line]
    assert lines, script.output()
    assert "again" in lines[0] and "stop now" in lines[0], lines[0]  # how to force

    runs = stored_runs(db)
    started_ns = {n for n, _ in running}
    assert len(started_ns) == 2
    assert statuses(runs) == {n: "succeeded" if n in started_ns else "queued" for n in range(4)}
    for n in started_ns:
        assert outcomes(runs[n]) == ["succeeded"]
    for n in set(range(4)) - started_ns:
        assert runs[n].attempt_log == [] and runs[n].attempts == 0
    assert sorted(n for n, _ in marks(tmp_path, "done")) == sorted(started_ns)
    assert_no_children(script)


# -- forced -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_second_signal_forces(tmp_path, db, scripts):
    """Test 3: a second SIGTERM during the grace stops within 2 s + kill_grace, exit 143, runs requeued."""
    kill_grace = 0.5
    script = start(scripts, tmp_path, db, runs=[10, 10, 10, 10], kill_grace=kill_grace)
    running = wait_started(tmp_path, script, 2)
    script.signal(signal.SIGTERM)
    wait_until(lambda: "again" in script.stderr, timeout=10, what="the graceful stop to be logged")
    second = script.signal(signal.SIGTERM)
    code = script.wait(30)
    elapsed = time.monotonic() - second

    # After the forced stop is flushed, serve() restores the dispositions it found (SIG_DFL) and
    # raises SystemExit(143); a storm signal landing in that window terminates the process by the
    # default action instead (-15), which shells, systemd and Kubernetes all report as 143 too.
    assert code in (143, -signal.SIGTERM), script.output()
    assert elapsed < 2 + kill_grace, f"forced stop took {elapsed:.2f} s after the second signal"
    assert "Traceback" not in script.stderr, script.stderr
    assert "serve returned" not in script.stdout
    assert "stopping now" in script.stderr, script.stderr

    runs = stored_runs(db)
    started_ns = {n for n, _ in running}
    assert statuses(runs) == {n: "queued" for n in range(4)}
    for n in started_ns:
        assert outcomes(runs[n]) == ["interrupted"], runs[n].attempt_log
        assert charged_attempts(db, runs[n].id) == 0
    for n in set(range(4)) - started_ns:
        assert runs[n].attempt_log == []
    assert marks(tmp_path, "done") == []
    assert_no_children(script)


@pytest.mark.timeout(60)
def test_grace_expiry_forces(tmp_path, db, scripts):
    """Test 4: grace=1 and runs of 10 s: the stop is forced after the grace, exit 143, runs requeued."""
    script = start(scripts, tmp_path, db, runs=[10, 10, 10], grace=1, kill_grace=0.5)
    running = wait_started(tmp_path, script, 2)
    sent = script.signal(signal.SIGTERM)
    code = script.wait(30)
    elapsed = time.monotonic() - sent

    # After the forced stop is flushed, serve() restores the dispositions it found (SIG_DFL) and
    # raises SystemExit(143); a storm signal landing in that window terminates the process by the
    # default action instead (-15), which shells, systemd and Kubernetes all report as 143 too.
    assert code in (143, -signal.SIGTERM), script.output()
    assert 0.9 <= elapsed < 1 + 0.5 + 3, f"stopped {elapsed:.2f} s after the signal with grace=1"
    assert "grace period" in script.stderr, script.stderr
    assert "Traceback" not in script.stderr, script.stderr

    runs = stored_runs(db)
    assert statuses(runs) == {n: "queued" for n in range(3)}
    for n, _ in running:
        assert outcomes(runs[n]) == ["interrupted"]
        assert charged_attempts(db, runs[n].id) == 0
    assert marks(tmp_path, "done") == []
    assert_no_children(script)


@pytest.mark.timeout(60)
def test_signal_storm(tmp_path, db, scripts):
    """Test 5: ten SIGTERMs within 100 ms: one forced stop, no traceback, exit status 143."""
    script = start(scripts, tmp_path, db, runs=[10, 10, 10], kill_grace=0.5)
    running = wait_started(tmp_path, script, 2)
    for _ in range(10):
        os.kill(script.pid, signal.SIGTERM)
        time.sleep(0.01)
    code = script.wait(30)

    assert "Traceback" not in script.stderr, script.stderr
    assert script.stderr.count("send it again") == 1, script.stderr  # one graceful stop...
    assert script.stderr.count("stopping now") == 1, script.stderr  # ...then one forced stop
    runs = stored_runs(db)
    assert statuses(runs) == {n: "queued" for n in range(3)}
    for n, _ in running:
        assert outcomes(runs[n]) == ["interrupted"], runs[n].attempt_log
    assert_no_children(script)
    # After the forced stop is flushed, serve() restores the dispositions it found (SIG_DFL) and
    # raises SystemExit(143); a storm signal landing in that window terminates the process by the
    # default action instead (-15), which shells, systemd and Kubernetes all report as 143 too.
    assert code in (143, -signal.SIGTERM), script.output()


@pytest.mark.timeout(60)
def test_ctrl_c_reaches_only_the_supervisor(tmp_path, db, scripts):
    """Test 6: SIGINT to the whole process group (a terminal's Ctrl-C): workers ignore it, the
    running runs succeed, the stop is graceful, exit 0."""
    (tmp_path / "marks").mkdir(exist_ok=True)
    script = Script(tmp_path, SCRIPT, json.dumps({"store": db, "runs": [1.5, 1.5, 1.5]}), start_new_session=True)
    scripts.append(script)
    running = wait_started(tmp_path, script, 2)
    pgid = os.getpgid(script.pid)
    assert pgid == script.pid
    os.killpg(pgid, signal.SIGINT)
    code = script.wait(30)

    assert code == 0, script.output()
    assert "Traceback" not in script.stderr, script.stderr
    runs = stored_runs(db)
    started_ns = {n for n, _ in running}
    assert statuses(runs) == {n: "succeeded" if n in started_ns else "queued" for n in range(3)}
    for n in started_ns:
        assert outcomes(runs[n]) == ["succeeded"], runs[n].attempt_log
    assert_no_children(script)


@pytest.mark.timeout(60)
def test_restart_after_forced_stop_runs_each_once(tmp_path, db, scripts):
    """Test 7: force a stop with runs in flight, then serve the store until drained: every run
    succeeds exactly once; the interrupted ones carry their interrupted attempt first."""
    script = start(scripts, tmp_path, db, runs=[1.0, 1.0, 1.0, 1.0, 0.1], kill_grace=0.5)
    running = wait_started(tmp_path, script, 2)
    script.signal(signal.SIGTERM)
    wait_until(lambda: "again" in script.stderr, timeout=10, what="the graceful stop to be logged")
    script.signal(signal.SIGTERM)
    assert script.wait(30) == 143, script.output()
    assert_no_children(script)

    again = run_script(tmp_path, SCRIPT, json.dumps({"store": db, "until": "drained"}), timeout=40)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = stored_runs(db)
    assert statuses(runs) == {n: "succeeded" for n in range(5)}
    interrupted = {n for n, _ in running}
    for n, record in runs.items():
        log = outcomes(record)
        assert log.count("succeeded") == 1, (n, log)
        assert log == (["interrupted", "succeeded"] if n in interrupted else ["succeeded"]), (n, log)
        assert charged_attempts(db, record.id) == 1
    done = Counter(n for n, _ in marks(tmp_path, "done"))
    assert done == {n: 1 for n in range(5)}


# -- from code --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_shutdown_from_another_thread(tmp_path, db, scripts):
    """Test 8: shutdown() from a thread while serve() runs in the main thread: serve returns
    once the runs in flight are finished; shutdown() returns after serve()."""
    script = start(scripts, tmp_path, db, runs=[1.5, 1.5, 1.5, 1.5], shutdown_after=2)
    running = wait_started(tmp_path, script, 2)
    code = script.wait(30)

    assert code == 0, script.output()
    assert "serve returned" in script.stdout
    assert "shutdown returned" in script.stdout, script.output()
    assert "Traceback" not in script.stderr, script.stderr
    runs = stored_runs(db)
    started_ns = {n for n, _ in running}
    assert statuses(runs) == {n: "succeeded" if n in started_ns else "queued" for n in range(4)}
    assert_no_children(script)


DISPOSITIONS = """
import json, os, signal, subprocess, sys, time
from pathlib import Path

from pydantic import BaseModel

from actors import Supervisor, job


class Nap(BaseModel):
    n: int
    seconds: float


@job
def nap(arg: Nap) -> int:
    time.sleep(arg.seconds)
    return arg.n


if __name__ == "__main__":
    sup = Supervisor([nap], workers=2, store=sys.argv[1], kill_grace=0.5)
    sup.submit(nap, {"n": 0, "seconds": 0.05})
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    sup.serve(until="drained")
    report = {
        "sigterm_default": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "sigusr1_default": signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL,
        "unchanged": all(signal.getsignal(s) is h for s, h in before.items()),
        "wakeup_fd": signal.set_wakeup_fd(-1),
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    }
    child = subprocess.Popen(["sleep", "30"])
    child.terminate()
    try:
        report["exec_child"] = child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        report["exec_child"] = "survived SIGTERM"
    pid = os.fork()
    if pid == 0:  # a forked child (no exec) inherits the dispositions as they are
        time.sleep(30)
        os._exit(0)
    time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            report["forked_child"] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            report["forked_child"] = "survived SIGTERM"
            break
        time.sleep(0.01)
    print(json.dumps(report), flush=True)
"""


@pytest.mark.timeout(60)
def test_dispositions_restored_after_serve(tmp_path, db):
    """Test 9: once serve() returns, SIGTERM/SIGINT/SIGUSR1 are as before, and a child started
    afterwards (exec'd or only forked) dies of SIGTERM."""
    result = run_script(tmp_path, DISPOSITIONS, db, timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sigterm_default"], report
    assert report["sigint_default"], report
    assert report["sigusr1_default"], report
    assert report["unchanged"], report
    assert report["wakeup_fd"] == -1, report
    assert report["blocked"] == [], report
    assert report["exec_child"] == -signal.SIGTERM, report
    assert report["forked_child"] == -signal.SIGTERM, report


# -- status -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigusr1_logs_status(tmp_path, db, scripts):
    """Test 10: SIGUSR1 while serving logs `status: ...` naming the queue depth and worker pids;
    serving goes on."""
    script = start(scripts, tmp_path, db, runs=[1.5, 1.5, 1.5, 1.5, 1.5])
    running = wait_started(tmp_path, script, 2)
    script.signal(signal.SIGUSR1)
    line = wait_until(lambda: next((x for x in script.err_lines() if x.startswith("status:")), None), timeout=10,
                      what="a status line on stderr")
    assert "3 queued" in line, line
    for _, pid in running:
        assert str(pid) in line, (pid, line)
    assert script.proc.poll() is None  # still serving
    script.signal(signal.SIGTERM)
    assert script.wait(30) == 0, script.output()
    assert_no_children(script)


# -- context manager --------------------------------------------------------------------------

CONTEXT = PRELUDE + """

if __name__ == "__main__":
    MARKS.mkdir(exist_ok=True)
    with Supervisor([nap], workers=2, store=sys.argv[1], kill_grace=0.5) as sup:
        for n in range(4):
            sup.submit(nap, {"n": n, "seconds": 1.5})
        server = threading.Thread(target=sup.serve, name="serve")
        server.start()
        while len(list(MARKS.glob("start-*"))) < 2:
            time.sleep(0.01)
    print("block exited", flush=True)
    server.join(10)
    print("serving thread alive:", server.is_alive(), flush=True)
"""


@pytest.mark.timeout(60)
def test_context_manager_stops_serving(tmp_path, db, scripts):
    """Test 11: leaving `with Supervisor(...)` while serve() runs in a thread stops it gracefully."""
    (tmp_path / "marks").mkdir(exist_ok=True)
    script = Script(tmp_path, CONTEXT, db)
    scripts.append(script)
    running = wait_started(tmp_path, script, 2)
    code = script.wait(30)

    assert code == 0, script.output()
    assert "block exited" in script.stdout
    assert "serving thread alive: False" in script.stdout, script.output()
    assert "Traceback" not in script.stderr, script.stderr
    runs = stored_runs(db)
    started_ns = {n for n, _ in running}
    assert statuses(runs) == {n: "succeeded" if n in started_ns else "queued" for n in range(4)}
    assert_no_children(script)
