"""The commands against a real store file and a real serving supervisor (`actors serve`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from actors import Client

from .conftest import Server, actors, env, wait_until


def test_submit_wait_exit_status_follows_the_run(serving: Server) -> None:
    cwd = serving.cwd
    ok = actors(cwd, "submit", "nap", '{"seconds": 0.05}', "--app", "app.py:sup", "--wait", "--timeout", "30")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "0.05"
    failed = actors(cwd, "submit", "boom", "{}", "--app", "app.py:sup", "--wait", "--timeout", "30")
    assert failed.returncode == 1
    assert "failed" in failed.stderr and "boom after 0.05" in failed.stderr


def test_runs_show_retry_and_stats(serving: Server) -> None:
    cwd = serving.cwd
    failed = actors(cwd, "submit", "boom", '{"seconds": 1}', "--app", "app.py:sup", "--wait", "--timeout", "30")
    assert failed.returncode == 1
    listed = json.loads(actors(cwd, "runs", "--status", "failed", "--json", "--store", "app.db").stdout)
    assert [r["job"] for r in listed] == ["boom"]
    run_id = listed[0]["id"]
    shown = json.loads(actors(cwd, "show", str(run_id), "--json", "--store", "app.db").stdout)
    assert shown["input"] == {"seconds": 1.0}
    assert shown["attempts_log"][0]["error_type"] == "ValueError"
    assert "boom after 1.0" in shown["attempts_log"][0]["traceback"]
    human = actors(cwd, "show", str(run_id), "--store", "app.db")
    assert "ValueError: boom after 1.0" in human.stdout and "traceback" in human.stdout
    retried = json.loads(actors(cwd, "retry", str(run_id), "--json", "--store", "app.db").stdout)
    new_id = retried["retried"][0]["new_run"]
    with Client(str(cwd / "app.db")) as client:
        wait_until(lambda: client.run(new_id).status.is_terminal, what="the retried run to end")
        assert client.run(new_id).rerun_of == run_id
    # --failed skips runs that were retried already: only the new failure is retried
    again = json.loads(actors(cwd, "retry", "--failed", "--json", "--store", "app.db").stdout)
    assert [r["run"] for r in again["retried"]] == [new_id]
    stats = json.loads(actors(cwd, "stats", "--json", "--store", "app.db").stdout)
    assert stats["serving"] is True
    assert stats["jobs"]["boom"]["counts"]["failed"] >= 2
    assert stats["finished_last_hour"] >= 2
    assert stats["jobs"]["boom"]["p50_seconds"] is not None
    assert [w["slot"] for w in stats["workers"]] == [0, 1]
    assert stats["supervisor"]["kills"] == {"timeout": 0, "memory": 0, "cancel": 0}


def test_cancel_a_delayed_run_and_purge(app_dir: Path) -> None:
    queued = json.loads(actors(app_dir, "submit", "nap", "{}", "--app", "app.py:sup", "--delay", "1h", "--json").stdout)
    run_id = queued["run"]
    assert actors(app_dir, "cancel", str(run_id), "--store", "app.db").stdout.strip() == f"run {run_id} cancelled"
    again = actors(app_dir, "cancel", str(run_id), "--store", "app.db")
    assert again.returncode == 1 and "already ended (cancelled)" in again.stderr
    kept = actors(app_dir, "purge", "--older-than", "1h", "--store", "app.db", "--json")
    assert json.loads(kept.stdout) == {"purged": 0}
    gone = actors(app_dir, "purge", "--older-than", "0s", "--status", "cancelled", "--store", "app.db", "--json")
    assert json.loads(gone.stdout) == {"purged": 1}
    assert actors(app_dir, "show", str(run_id), "--store", "app.db").returncode == 3


def test_submit_file_stores_a_batch(app_dir: Path) -> None:
    (app_dir / "inputs.jsonl").write_text('{"seconds": 0.1}\n\n{"seconds": 0.2}\n')
    made = json.loads(actors(app_dir, "submit", "nap", "--file", "inputs.jsonl", "--app", "app.py:sup", "--json").stdout)
    assert len(made["runs"]) == 2
    (app_dir / "bad.jsonl").write_text('{"seconds": 0.1}\n{"seconds": "x"}\n')
    bad = actors(app_dir, "submit", "nap", "--file", "bad.jsonl", "--app", "app.py:sup")
    assert bad.returncode == 3 and "invalid input" in bad.stderr
    assert len(json.loads(actors(app_dir, "runs", "--json", "--store", "app.db").stdout)) == 2  # all or nothing


def test_jobs_and_run_now(serving: Server) -> None:
    cwd = serving.cwd
    jobs = {j["name"]: j for j in json.loads(actors(cwd, "jobs", "--app", "app.py:sup", "--json").stdout)}
    assert jobs["nightly"]["cron"] == "0 3 * * *"
    assert jobs["nightly"]["next_fire_utc"].endswith("03:00:00+00:00")
    assert jobs["nap"]["timeout"] == 20.0
    made = json.loads(actors(cwd, "run-now", "nightly", "--app", "app.py:sup", "--json").stdout)
    with Client(str(cwd / "app.db")) as client:
        wait_until(lambda: client.run(made["run"]).status.is_terminal, what="the run-now run to end")
        record = client.run(made["run"])
    assert str(record.status) == "succeeded" and record.result == "tick"
    assert record.key is not None and record.key.startswith("run-now:")
    jobs = {j["name"]: j for j in json.loads(actors(cwd, "jobs", "--app", "app.py:sup", "--json").stdout)}
    assert jobs["nightly"]["runs_per_version"] == {"1": 1}


def test_config_precedence_flag_env_file_code(app_dir: Path) -> None:
    (app_dir / "actors.toml").write_text('workers = 3\ngrace = "5s"\n[jobs.nap]\ntimeout = "9s"\n')
    result = actors(app_dir, "config", "--app", "app.py:sup", "--json", "--store", "flag.db", ACTORS_GRACE="7s")
    settings = {s["key"]: s for s in json.loads(result.stdout)["settings"]}
    assert (settings["store"]["value"], settings["store"]["source"]) == ("flag.db", "flag")
    assert (settings["grace"]["value"], settings["grace"]["source"]) == ("7s", "env ACTORS_GRACE")
    assert settings["workers"]["source"].startswith("file ") and settings["workers"]["value"] == 3
    assert (settings["kill_grace"]["value"], settings["kill_grace"]["source"]) == (2.0, "code")
    assert settings["jobs.nap.timeout"]["value"] == "9s" and settings["jobs.nap.timeout"]["source"].startswith("file ")
    assert settings["jobs.boom.timeout"]["source"] == "code"


def test_serving_supervisor_does_not_lock_out_submitters(serving: Server) -> None:
    """`actors serve app.py:sup` serves while `actors submit --app app.py:sup` and a plain
    `import app; app.sup.submit(...)` in another process both store runs that it runs."""
    cwd = serving.cwd
    by_cli = actors(cwd, "submit", "nap", '{"seconds": 0.01}', "--app", "app.py:sup", "--wait", "--timeout", "30")
    assert by_cli.returncode == 0, by_cli.stderr
    code = textwrap.dedent("""
        import app
        handle = app.sup.submit(app.nap, {"seconds": 0.02})
        print(handle.result(timeout=30))
    """)
    plain = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env(), capture_output=True, text=True, timeout=40)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "0.02"


def test_serve_stops_cleanly_on_sigterm_and_says_so(serving: Server) -> None:
    code, err = serving.stop()
    assert code == 0, err
    with Client(str(serving.cwd / "app.db")) as client:
        info = client.store.supervisor_info()
        assert info is not None and info.stopped_at is not None
        assert client.store.workers() == []
    stats = actors(serving.cwd, "stats", "--store", "app.db")
    assert "not serving: stopped" in stats.stdout


def test_serve_log_format_json(app_dir: Path) -> None:
    actors(app_dir, "submit", "boom", "{}", "--app", "app.py:sup")
    result = actors(app_dir, "serve", "app.py:sup", "--drain", "--log-format", "json", "--workers", "1")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    failed = [r for r in records if r.get("job") == "boom"]
    assert failed and failed[0]["run_id"] == 1 and failed[0]["attempt"] == 1 and failed[0]["worker_pid"] > 0
    assert failed[0]["level"] == "WARNING"
