"""`actors emit NAME [PAYLOAD]`: the event is stored durably (a Client finds it), it wakes a run
waiting for it under a serving supervisor or one that serves later, and a mistake is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actors import Client, RunStatus

from .conftest import Server, actors, env, wait_until

pytestmark = pytest.mark.timeout(90)

LISTENER_APP = '''
from pydantic import BaseModel

from actors import Context, Supervisor, job


class Ask(BaseModel):
    n: int


@job
def listener(ask: Ask, ctx: Context) -> dict:
    return ctx.wait_for_event("approved", match={"n": ask.n}, timeout="60s")


sup = Supervisor([listener], workers=1, store="app.db")
'''


@pytest.fixture
def listener_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(LISTENER_APP))
    return tmp_path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    Client(str(tmp_path / "events.db"), create=True).close()
    (tmp_path / "notours.txt").write_text("hello\n")
    return tmp_path


def stored_events(path: Path) -> list[tuple[str, object]]:
    with Client(str(path)) as client:
        return [(e.name, json.loads(e.payload)) for e in client.store.new_events(0)]


def test_emit_stores_the_event_and_prints_its_id(store: Path) -> None:
    first = actors(store, "emit", "approved", '{"fingerprint": "abc", "by": "ann"}', "--store", "events.db")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("event 1 (approved) stored")
    assert "no supervisor serves this store now" in first.stdout
    second = actors(store, "emit", "approved", '[1, 2]', "--store", "events.db", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"event": 2, "name": "approved", "payload": [1, 2], "serving": False}
    bare = json.loads(actors(store, "emit", "ping", "--store", "events.db", "--json").stdout)
    assert bare["event"] == 3 and bare["payload"] is None
    assert stored_events(store / "events.db") == [("approved", {"fingerprint": "abc", "by": "ann"}),
                                                  ("approved", [1, 2]), ("ping", None)]


def test_emit_reads_the_payload_from_stdin_and_finds_the_store_in_the_environment(store: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "actors", "emit", "uploaded", "-", "--json"], cwd=store,
                          env=env(ACTORS_STORE="events.db"), input='{"path": "a.jpg"}\n', capture_output=True,
                          text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event"] == 1
    assert stored_events(store / "events.db") == [("uploaded", {"path": "a.jpg"})]


CASES = [
    ("invalid_json", ["emit", "approved", "{bad", "--store", "events.db"], "invalid JSON payload"),
    ("nan_payload", ["emit", "approved", '{"x": NaN}', "--store", "events.db"], "cannot be stored as JSON"),
    ("empty_name", ["emit", "", "{}", "--store", "events.db"], "invalid event name ''"),
    ("long_name", ["emit", "x" * 201, "{}", "--store", "events.db"], "at most 200 characters"),
    ("missing_store", ["emit", "approved", "{}", "--store", "missing.db"], "does not exist"),
    ("not_an_actors_file", ["emit", "approved", "{}", "--store", "notours.txt"], "not an actors store"),
    ("no_name", ["emit", "--store", "events.db"], "Missing argument 'NAME'"),
    ("extra_argument", ["emit", "a", "{}", "more", "--store", "events.db"], "unexpected extra argument"),
]


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_and_exit_3(store: Path, args: list[str], expected: str) -> None:
    result = actors(store, *args)
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actors: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert stored_events(store / "events.db") == []  # nothing stored


def test_a_payload_over_the_limit_is_refused_in_one_line(store: Path) -> None:
    big = json.dumps({"data": "x" * (1 << 20)})  # through stdin: too long for one argument
    done = subprocess.run([sys.executable, "-m", "actors", "emit", "approved", "-", "--store", "events.db"],
                          cwd=store, env=env(), input=big, capture_output=True, text=True, timeout=40)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("actors: error: ") and "over 1048576" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert stored_events(store / "events.db") == []


def test_an_emitted_event_wakes_the_run_waiting_for_it_under_a_serving_supervisor(listener_dir: Path) -> None:
    server = Server(listener_dir, "app.py:sup")
    try:
        server.wait_serving()
        made = actors(listener_dir, "submit", "listener", '{"n": 3}', "--app", "app.py:sup", "--json")
        run_id = json.loads(made.stdout)["run"]
        with Client(str(listener_dir / "app.db")) as client:
            wait_until(lambda: client.run(run_id).status is RunStatus.WAITING, timeout=30, what="the run waiting")
            assert client.run(run_id).wait["event"] == "approved"
            other = actors(listener_dir, "emit", "approved", '{"n": 4}', "--store", "app.db")
            assert other.returncode == 0 and "the serving supervisor wakes" in other.stdout, other.stderr
            woke = actors(listener_dir, "emit", "approved", '{"n": 3, "by": "cli"}', "--store", "app.db", "--json")
            assert json.loads(woke.stdout)["serving"] is True
            wait_until(lambda: client.run(run_id).status.is_terminal, timeout=30, what="the run woken")
            record = client.run(run_id)
        assert record.status is RunStatus.SUCCEEDED, record
        assert record.result == {"n": 3, "by": "cli"}  # not the event for n=4
        assert [str(a.outcome) for a in record.attempt_log] == ["suspended", "succeeded"]
    finally:
        code, err = server.stop()
    assert code == 0, err


def test_an_event_emitted_while_no_one_serves_wakes_the_run_when_a_supervisor_serves(listener_dir: Path) -> None:
    made = actors(listener_dir, "submit", "listener", '{"n": 7}', "--app", "app.py:sup", "--json")
    assert made.returncode == 0, made.stderr
    run_id = json.loads(made.stdout)["run"]
    emitted = actors(listener_dir, "emit", "approved", '{"n": 7}', "--store", "app.db")
    assert emitted.returncode == 0 and "no supervisor serves" in emitted.stdout, emitted.stderr
    served = actors(listener_dir, "serve", "app.py:sup", "--drain", "--workers", "1", timeout=60)
    assert served.returncode == 0, served.stderr
    with Client(str(listener_dir / "app.db")) as client:
        record = client.run(run_id)
    assert record.status is RunStatus.SUCCEEDED and record.result == {"n": 7}
