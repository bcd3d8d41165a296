"""A user's mistake is one line on stderr and a non-zero exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import actors


@pytest.fixture
def store(app_dir: Path) -> Path:
    result = actors(app_dir, "submit", "nap", "{}", "--app", "app.py:sup")  # makes app.db
    assert result.returncode == 0, result.stderr
    (app_dir / "notours.txt").write_text("hello\n")
    (app_dir / "broken.py").write_text("import no_such_module_here\n")
    (app_dir / "bad.toml").write_text("[jobs.nap]\ntimout = '5s'\n")
    return app_dir


CASES = [
    ("unknown_run_id", ["show", "999", "--store", "app.db"], "run 999"),
    ("missing_store", ["runs", "--store", "missing.db"], "does not exist"),
    ("not_an_actors_file", ["runs", "--store", "notours.txt"], "not an actors store"),
    ("app_cannot_be_imported", ["jobs", "--app", "broken.py:sup"], "cannot import APP"),
    ("app_file_missing", ["jobs", "--app", "nothere.py:sup"], "no file nothere.py"),
    ("app_without_object", ["jobs", "--app", "app.py:nothing"], "has no 'nothing'"),
    ("invalid_json", ["submit", "nap", "{bad", "--store", "app.db"], "invalid JSON input"),
    ("validation_error", ["submit", "nap", '{"seconds": "x"}', "--app", "app.py:sup"], "invalid input: seconds"),
    ("unknown_field", ["submit", "nap", '{"secs": 1}', "--app", "app.py:sup"], "invalid input: secs"),
    ("job_not_in_app", ["submit", "nope", "{}", "--app", "app.py:sup"], "job 'nope' is not in APP"),
    ("bad_config_key", ["config", "--config", "bad.toml"], "jobs.nap.timout: unknown key"),
    ("bad_env_value", ["config"], "ACTORS_WORKERS"),
    ("bad_duration", ["runs", "--since", "soon", "--store", "app.db"], "invalid --since"),
    ("unknown_option", ["runs", "--colour"], "No such option"),
    ("retry_live_run", ["retry", "1", "--store", "app.db"], "only a run that ended"),
    ("run_now_not_cron", ["run-now", "nap", "--app", "app.py:sup"], "has no cron schedule"),
]


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_and_exit_3(store: Path, args: list[str], expected: str) -> None:
    extra = {"ACTORS_WORKERS": "many"} if expected == "ACTORS_WORKERS" else {}
    result = actors(store, *args, **extra)
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actors: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
