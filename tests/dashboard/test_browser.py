"""End to end in a real headless Chromium (Debian's `chromium`, driven by the playwright package;
no browser is downloaded): a real supervisor serves in a subprocess, the dashboard in a uvicorn
thread, and the pages update themselves over server-sent events.

Without chromium or playwright these tests skip with the reason, except under CI (CI=true),
where they fail: .ci/run installs chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000


def _need_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        missing.append("the dashboard extra (pip install -e '.[dashboard]')")
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must have them (.ci/run installs chromium)", pytrace=False)
        pytest.skip(f"!!! NOT RUN: {reason}", allow_module_level=True)


_need_browser()

from conftest import start_script, wait_until  # noqa: E402
from dashboard_support import Server  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from actors import Client, RunFailed  # noqa: E402
from actors.dashboard import create_app  # noqa: E402

SERVE = """
import os, sys, time
from pydantic import BaseModel
from actors import Supervisor, job

class File(BaseModel):
    path: str

@job
def gate(file: File) -> str:
    deadline = time.monotonic() + 60
    while not os.path.exists(file.path):
        if time.monotonic() > deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.02)
    return "through " + file.path

@job
def flaky(flag: File) -> str:
    if not os.path.exists(flag.path):
        raise ValueError("flaky: " + flag.path + " is missing")
    return "fixed"

if __name__ == "__main__":
    sup = Supervisor([gate, flaky], workers=2, store=sys.argv[1], poll_interval="20ms")
    print("serving", flush=True)
    sup.serve()
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A supervisor serving a store in a subprocess, the dashboard on it, and Chromium."""
    tmp = tmp_path_factory.mktemp("browser")
    store = str(tmp / "runs.db")
    Client(store, create=True).close()
    supervisor = start_script(tmp, SERVE, store)
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().strip() == "serving", supervisor.stderr.read() if supervisor.stderr else ""
        with Server(create_app(store)) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield {"store": store, "url": server.url, "browser": browser, "tmp": tmp}
            finally:
                browser.close()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=15)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait(timeout=5)


@pytest.fixture
def page(world: dict[str, Any]) -> Iterator[Page]:
    context = world["browser"].new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"script errors on the page: {errors}"


def test_overview_shows_a_run_go_from_running_to_succeeded_without_reloading(
        world: dict[str, Any], page: Page, tmp_path: Path) -> None:
    gate = tmp_path / "open"
    with Client(world["store"]) as client:
        run_id = client.submit("gate", {"path": str(gate)}).id
        page.goto(world["url"] + "/")
        page.evaluate("window.__sameDocument = true")
        expect(page.locator("#live-dot")).to_have_class("dot on")
        running = page.locator('tr[data-job="gate"] td[data-status="running"]')
        expect(running).to_have_text("1")
        expect(page.locator("#supervisor-state")).to_have_text("serving")
        expect(page.locator(f'#workers a[href="/runs/{run_id}"]')).to_be_visible()  # the worker holds it
        gate.touch()
        expect(page.locator('tr[data-job="gate"] td[data-status="succeeded"]')).to_have_text("1")
        expect(running).to_have_text("0")
        assert client.run(run_id).status == "succeeded"
    expect(page.locator(f'#workers a[href="/runs/{run_id}"]')).to_have_count(0)  # the worker is idle again
    assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    shot = tmp_path / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("ACTORS_SCREENSHOTS"):  # where a maintainer wants the README's picture
        Path(os.environ["ACTORS_SCREENSHOTS"], "dashboard-overview.png").write_bytes(shot.read_bytes())


def test_a_failed_run_shows_its_traceback_and_a_retry_from_the_page_succeeds(
        world: dict[str, Any], page: Page, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    with Client(world["store"]) as client:
        handle = client.submit("flaky", {"path": str(flag)})
        with pytest.raises(RunFailed):
            handle.result(timeout=20)
        page.goto(f"{world['url']}/runs/{handle.id}")
        expect(page.locator("#run-status")).to_have_text("failed")
        traceback = page.locator("#traceback").inner_text()
        assert "Traceback (most recent call last)" in traceback
        assert f"ValueError: flaky: {flag} is missing" in traceback
        flag.touch()
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#retry")
        page.wait_for_url(re.compile(r"/runs/\d+\?note=retried$"))
        new_id = int(re.search(r"/runs/(\d+)", page.url).group(1))  # type: ignore[union-attr]
        assert new_id != handle.id
        expect(page.locator("#rerun-of")).to_have_text(f"#{handle.id}")
        expect(page.locator("#run-status")).to_have_text("succeeded")  # live, on the same page
        expect(page.locator("#output")).to_have_text('"fixed"')
        wait_until(lambda: client.run(new_id).status == "succeeded", timeout=5, what="the retry in the store")
        assert client.run(handle.id).status == "failed"  # the old run keeps its history


def test_cancel_needs_the_confirmation(world: dict[str, Any], page: Page, tmp_path: Path) -> None:
    with Client(world["store"]) as client:
        later = client.submit("gate", {"path": str(tmp_path / "never")}, delay="1h")
        page.goto(f"{world['url']}/runs/{later.id}")
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.click("#cancel")
        page.wait_for_timeout(300)
        assert client.run(later.id).status == "queued"  # dismissed: nothing sent
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        expect(page.locator("#note")).to_contain_text("Cancelled.")
        assert client.run(later.id).status == "cancelled"
