"""`actors watch` under a pseudo-terminal of a fixed width, and the metrics endpoint."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from actors import Client

from .conftest import Server, actors, env, wait_until

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_watch_shows_workers_and_their_runs(serving: Server) -> None:
    cwd = serving.cwd
    made = actors(cwd, "submit", "nap", '{"seconds": 8}', "--app", "app.py:sup", "--json")
    assert made.returncode == 0
    with Client(str(cwd / "app.db")) as client:
        wait_until(lambda: any(w.run_id is not None for w in client.store.workers()), what="a busy worker row")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    extra = env()
    extra.pop("COLUMNS")
    extra["TERM"] = "xterm-256color"
    process = subprocess.Popen([sys.executable, "-m", "actors", "watch", "--store", "app.db", "--interval", "0.2"],
                               cwd=cwd, env=extra, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break
            text = ANSI.sub("", screen.decode(errors="replace"))
            if "halfway" in text and "nap" in text:
                break
    finally:
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=10)
        os.close(leader)
    text = ANSI.sub("", screen.decode(errors="replace"))
    assert "serving: pid" in text
    assert "workers" in text and "SLOT" in text
    assert "halfway" in text and "50%" in text  # the running run's progress bar
    assert "queue depth" in text
    assert max(len(line) for line in text.splitlines()) <= 120  # fits the terminal's width


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_endpoint_serves_prometheus_text(app_dir: Path) -> None:
    port = free_port()
    server = Server(app_dir, "app.py:sup", "--metrics-port", str(port))
    try:
        server.wait_serving()
        assert actors(app_dir, "submit", "nap", "{}", "--app", "app.py:sup", "--wait", "--timeout", "30").returncode == 0
        assert actors(app_dir, "submit", "boom", "{}", "--app", "app.py:sup", "--wait", "--timeout", "30").returncode == 1

        def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            found: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    found.setdefault(sample.name, []).append((sample.labels, sample.value))
            return found

        metrics = wait_until(lambda: (m := scrape()) and any(lbl.get("job") == "boom" for lbl, _ in m.get("actors_runs_total", [])) and m,
                             what="the runs in the metrics")
        runs = {(lbl["job"], lbl["status"]): v for lbl, v in metrics["actors_runs_total"]}
        assert runs[("nap", "succeeded")] == 1 and runs[("boom", "failed")] == 1
        assert any(lbl.get("job") == "nap" for lbl, _ in metrics["actors_run_duration_seconds_count"])
        assert metrics["actors_store_commit_seconds_count"][0][1] > 0
        assert {lbl["reason"] for lbl, _ in metrics["actors_worker_kills_total"]} == {"timeout", "memory", "cancel"}
        assert "actors_worker_restarts_total" in metrics
    finally:
        server.stop()
