"""The run page of durable runs, against a store a real supervisor served: a parent waiting for
its children says so and links them, a child links its parent, a sleeper says until when."""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
from conftest import wait_until  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_durable import Box, napper, slow_fan  # noqa: E402

from actors import RunStatus, Supervisor  # noqa: E402
from actors.dashboard import create_app  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def test_a_waiting_parent_shows_its_wait_children_and_tenant_and_a_child_its_parent(tmp_path: Path):
    db = str(tmp_path / "runs.db")
    sup = Supervisor([slow_fan, napper], workers=1, store=db)
    parent = sup.submit(slow_fan, Box(dir=str(tmp_path)), tenant="acme")
    pages: dict[str, str] = {}

    def read_while_waiting() -> None:
        try:
            wait_until(lambda: parent.status() is RunStatus.WAITING, timeout=30, what="the parent waiting")
            with TestClient(create_app(db), base_url="http://127.0.0.1") as web:
                pages["parent"] = html.unescape(web.get(f"/runs/{parent.id}").text)
                pages["child"] = html.unescape(web.get(f"/runs/{parent.id + 1}").text)
        finally:
            sup.shutdown(graceful=False)

    thread = threading.Thread(target=read_while_waiting)
    thread.start()
    sup.serve()
    thread.join()
    sup.close()
    first, second = parent.id + 1, parent.id + 2
    waiting = re.search(r'<dd id="waiting-for">([^<]*)</dd>', pages["parent"])
    assert waiting and waiting.group(1) == f"waiting for runs {first}, {second}"
    children = re.search(r'<dd id="children">(.*?)</dd>', pages["parent"], re.S)
    assert children and re.findall(r'href="/runs/(\d+)"', children.group(1)) == [str(first), str(second)]
    assert "napper" in children.group(1)
    assert '<dd id="tenant">acme</dd>' in pages["parent"]
    assert f'<a href="/runs/{parent.id}" id="parent">#{parent.id}</a>' in pages["child"]
    assert 'id="waiting-for"' not in pages["child"] or "sleeping until" in pages["child"]
    steps = pages["parent"].split("<h2>Steps</h2>", 1)[1]
    assert steps.index("run:napper#0") < steps.index("run:napper#1") < steps.index("wait#2")  # in order


def test_a_waiting_run_counts_as_waiting_while_it_waits_and_once_as_succeeded_after(tmp_path: Path):
    from test_durable import listener

    db = str(tmp_path / "runs.db")
    sup = Supervisor([listener], workers=1, store=db)
    handle = sup.submit(listener, Box(dir=str(tmp_path), n=1))
    app = create_app(db)  # one app throughout: its counts are kept incrementally
    pages: dict[str, str] = {}

    def cell(page: str, status: str) -> str:
        row = re.search(r'<tr data-job="listener">(.*?)</tr>', page, re.S)
        assert row, page[:3000]
        found = re.search(rf'data-status="{status}">(?:<a [^>]*>|<span class="zero">)(\d+)<', row.group(1))
        assert found, row.group(1)
        return found.group(1)

    def look_then_emit() -> None:
        try:
            with TestClient(app, base_url="http://127.0.0.1") as web:
                wait_until(lambda: handle.status() is RunStatus.WAITING, timeout=30, what="the run waiting")
                wait_until(lambda: app.state.dashboard.counts.read().ready, timeout=10, what="the first count")
                pages["waiting"] = web.get("/").text
                pages["filtered"] = web.get("/runs?status=waiting").text
                sup.emit("approved", {"n": 1})
                wait_until(lambda: handle.status() is RunStatus.SUCCEEDED, timeout=30, what="the run done")
                pages["after"] = web.get("/").text
        finally:
            sup.shutdown()

    thread = threading.Thread(target=look_then_emit)
    thread.start()
    sup.serve()
    thread.join()
    sup.close()
    assert (cell(pages["waiting"], "waiting"), cell(pages["waiting"], "succeeded")) == ("1", "0")
    assert 'id="waiting-count">1<' in pages["waiting"]
    assert f'id="run-{handle.id}"' in pages["filtered"]
    assert (cell(pages["after"], "waiting"), cell(pages["after"], "succeeded")) == ("0", "1")
