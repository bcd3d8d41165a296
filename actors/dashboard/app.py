"""The dashboard's ASGI app: routes, the filters a page takes, the actions, the event stream.

Pages are rendered on the server from the store alone (queries.py); a page that shows live
state marks its parts `data-live`, and the vendored script (static/dashboard.js) listens on
`/events` (server-sent events: one `change` event whenever the store's `data_version` moved,
checked once a second) and fetches the page again to swap those parts in. No page asks a
supervisor anything, so the dashboard answers the same whether one serves, hangs or is dead.

Actions (cancel, retry) are POST forms behind a confirmation, checked for CSRF (guard.py), and
go through `actors.Client`, the code path of the `actors` command; the app's own connections
are read-only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..durations import parse_duration
from ..errors import ActorsError
from ..stores import is_postgres_url
from . import format as fmt
from .counts import Counts, Tally
from .guard import Guard
from .queries import CHILDREN_SHOWN, ENDED, LIVE, STATUSES, TEXT_CAP, Reader

log = logging.getLogger("actors.dashboard")

HERE = Path(__file__).resolve().parent
HEARTBEAT_STALE = 5.0  # seconds without a heartbeat after which a supervisor reads as silent
POLL = 1.0  # seconds between two looks at the store's data_version, per event stream
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
FAILURES = ("failed", "timed_out")
NOTES = {  # what an action says on the page it redirects to (by key: no text from the query)
    "cancelled": "Cancelled.",
    "not-cancelled": "Not cancelled: only a queued or retrying run can be cancelled from here "
                     "(a running one is stopped by its supervisor), and an ended run stays as it ended.",
    "retried": "Retried: this is the new run.",
}


class Dashboard:
    """The app's state: the store's reader, the ended-run counts and the templates."""

    def __init__(self, store: str, token: str | None) -> None:
        self.reader: Any
        if is_postgres_url(store):
            from .pg_queries import PostgresReader  # psycopg only for a PostgreSQL store

            self.reader = PostgresReader(store)
            self.store = self.reader.path  # its name on the pages: no password
        else:
            self.store = os.path.abspath(store)
            self.reader = Reader(self.store)
        self.counts = Counts(self.reader)
        self.token = token
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined)
        env.filters.update(fmt.filters())
        env.globals.update(fmt=fmt, TEXT_CAP=TEXT_CAP, CHILDREN_SHOWN=CHILDREN_SHOWN)
        self.templates = Jinja2Templates(env=env)

    def page(self, request: Request, name: str, code: int = 200, **context: Any) -> Response:
        context.setdefault("now", time.time())
        context.setdefault("note", NOTES.get(request.query_params.get("note", "")))
        context.update(csrf=request.scope.get("state", {}).get("csrf", ""), store=self.store, code=code)
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    async def deny(self, status: int, title: str, text: str, offer_token: bool) -> Response:
        return self.templates.TemplateResponse(
            _bare_request(), "error.html",
            {"code": status, "title": title, "text": text, "offer_token": offer_token, "now": time.time(),
             "note": None, "csrf": "", "store": self.store},
            status_code=status)

    # -- pages ------------------------------------------------------------------------------

    def table(self, tally: Tally) -> list[tuple[str, dict[str, int]]]:
        jobs = sorted({job for job, _ in tally.live} | {job for job, _ in tally.ended})
        rows = []
        for job in jobs:
            cells = {s: tally.live.get((job, s), 0) for s in LIVE}
            cells.update({s: tally.ended.get((job, s), 0) for s in ENDED})
            rows.append((job, cells))
        return rows

    def overview(self, request: Request) -> Response:
        now = time.time()
        reader = self.reader
        tally = self.counts.read(now)
        table = self.table(tally)
        totals = {s: sum(cells[s] for _, cells in table) for s in STATUSES}
        hour = {s: sum(c.get(s, 0) for m, c in tally.minutes.items() if m > (now // 60) - 60) for s in ENDED}
        ended_hour = sum(hour.values())
        supervisor = reader.supervisor()
        return self.page(
            request, "overview.html", now=now, table=table, totals=totals, tally=tally, statuses=STATUSES,
            supervisor=supervisor, state=_state(supervisor, now), workers=reader.workers(),
            supervisors=reader.supervisors(),
            next_due=reader.next_due(self.counts.live_ends(500)),
            done_bars=fmt.bars(tally.minutes, ("succeeded",), now),
            fail_bars=fmt.bars(tally.minutes, FAILURES, now),
            hour=hour, ended_hour=ended_hour,
            failure_rate=(hour["failed"] + hour["timed_out"]) / ended_hour if ended_hour else None,
            failures=reader.recent_failures(),
        )

    def runs(self, request: Request) -> Response:
        q = request.query_params
        status = _choice(q.get("status"), STATUSES, "status")
        job = _text(q.get("job"), "job")
        since, until = _moment(q.get("since"), "since"), _moment(q.get("until"), "until")
        before, after = _run_id(q.get("before"), "before"), _run_id(q.get("after"), "after")
        limit = _run_id(q.get("limit"), "limit") or 50
        if limit > 500:
            raise HTTPException(400, "limit: at most 500 runs a page")
        page = self.reader.runs(status=status, job=job, since=since, until=until, before=before, after=after,
                                limit=limit, live_ids=self.counts.live_ids if self.counts.ready else None)
        base = {k: v for k, v in {"status": status, "job": job, "since": q.get("since"), "until": q.get("until"),
                                  "limit": q.get("limit")}.items() if v}
        return self.page(request, "runs.html", page=page, status=status, job=job, base=base,
                         form={"since": q.get("since", ""), "until": q.get("until", "")},
                         statuses=STATUSES, jobs=sorted({j for j, _ in self.counts.read().ended}),
                         top=before is None and after is None)

    def run(self, request: Request) -> Response:
        run_id = _path_run_id(request)
        detail = self.reader.detail(run_id)
        if detail is None:
            raise HTTPException(404, f"There is no run {run_id} in this store.")
        run = detail.run
        complete = {k: detail.sizes.get(k, 0) <= TEXT_CAP for k in ("input", "output", "traceback")}
        return self.page(request, "run.html", run=run, detail=detail, complete=complete,
                         live=run["status"] in LIVE, ended=run["status"] in ENDED)

    def jobs(self, request: Request) -> Response:
        tally = self.counts.read()
        cron = self.reader.cron()
        declared = self.reader.declared_jobs()
        table = dict(self.table(tally))
        names = sorted(set(table) | set(cron) | set(declared))
        latest = self.reader.latest_per_job(names)
        empty = dict.fromkeys(STATUSES, 0)
        now = time.time()
        rows = [{"name": name, "counts": table.get(name, empty), "latest": latest.get(name), "cron": cron.get(name),
                 "declared": declared.get(name), "next_fire": _next_fire(declared.get(name), now)}
                for name in names]
        return self.page(request, "jobs.html", rows=rows, tally=tally)

    # -- actions ----------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        run_id = _path_run_id(request)
        action = request.path_params["action"]
        if action not in ("cancel", "retry"):
            raise HTTPException(404, f"There is no action {action[:40]!r}: a run can be cancelled or retried.")
        await _checked_form(request)
        return await anyio.to_thread.run_sync(self._act, run_id, action)

    async def run_now(self, request: Request) -> Response:
        """A cron job's run now, outside its schedule, through `Client.run_now`."""
        name = request.path_params["name"]
        await _checked_form(request)
        return await anyio.to_thread.run_sync(self._run_now, name)

    def _run_now(self, name: str) -> Response:
        if name not in self.reader.declared_jobs():
            raise HTTPException(404, f"There is no job {name[:80]!r} recorded in this store.")
        try:
            with self.client() as client:
                made: Any = client.run_now(name)
        except (ActorsError, ValueError) as exc:
            raise HTTPException(409, f"Could not run {name!r} now: {exc}") from exc
        return RedirectResponse(f"/runs/{made.id}?note=run-now", status_code=303)

    def client(self) -> Any:
        """An actors.Client on the store: the actions' path, the `actors` command's."""
        from .. import Client  # the public path; imported here so reading pages never needs it

        make = getattr(self.reader, "client_store", None)
        return Client(make() if make is not None else self.store)

    def _act(self, run_id: int, action: str) -> Response:
        if self.reader.detail(run_id) is None:
            raise HTTPException(404, f"There is no run {run_id} in this store.")
        try:
            with self.client() as client:
                if action == "cancel":
                    note = "cancelled" if client.cancel(run_id) else "not-cancelled"
                    return RedirectResponse(f"/runs/{run_id}?note={note}", status_code=303)
                retry = getattr(client, "retry", None)
                if retry is None:
                    raise HTTPException(501, "This version of actors has no Client.retry.")
                made = retry(run_id)
        except (ActorsError, ValueError) as exc:
            raise HTTPException(409, f"Could not {action} run {run_id}: {exc}") from exc
        new_id = getattr(made, "id", made)
        return RedirectResponse(f"/runs/{new_id}?note=retried", status_code=303)

    # -- live updates -----------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        db = await anyio.to_thread.run_sync(self.reader.fresh)

        async def stream() -> Any:
            try:
                version = await anyio.to_thread.run_sync(self.reader.data_version, db)
                yield "retry: 2000\nevent: hello\ndata: {}\n\n"
                quiet = 0.0
                while True:
                    await asyncio.sleep(POLL)
                    now = await anyio.to_thread.run_sync(self.reader.data_version, db)
                    if now != version:
                        version = now
                        quiet = 0.0
                        yield f"event: change\ndata: {version}\n\n"
                    else:
                        quiet += POLL
                        if quiet >= KEEPALIVE:
                            quiet = 0.0
                            yield ": keep-alive\n\n"
            finally:
                db.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})


def _bare_request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b"",
                    "root_path": "", "scheme": "http", "server": ("127.0.0.1", 0), "app": None})


def _state(supervisor: dict[str, Any] | None, now: float) -> str:
    if supervisor is None:
        return "never served"
    if supervisor["stopped_at"] is not None:
        return "stopped"
    age = supervisor.get("age")  # PostgreSQL: since its lease was renewed, by the database clock
    if (now - supervisor["heartbeat_at"] if age is None else age) > HEARTBEAT_STALE:
        return "silent"
    return "serving"


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise HTTPException(400, f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _text(value: str | None, name: str) -> str | None:
    if not value:
        return None
    if len(value) > 200 or any(ord(c) < 32 for c in value):
        raise HTTPException(400, f"{name}: not a job name (at most 200 printable characters)")
    return value


def _run_id(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise HTTPException(400, f"{name}: {value[:40]!r} is not a positive whole number")
    return int(value)


async def _checked_form(request: Request) -> None:
    """An action's form: small, and carrying this page's CSRF token (403 otherwise)."""
    body = await request.body()
    if len(body) > 4096:
        raise HTTPException(400, "This form is too large to be one of the dashboard's.")
    form = urllib.parse.parse_qs(body.decode("latin-1"))
    csrf = request.scope.get("state", {}).get("csrf")
    if not csrf or form.get("csrf", [""])[0] != csrf:
        raise HTTPException(403, "This form is stale or came from elsewhere (its CSRF token does not match): "
                                 "reload the page and try again.")


def _next_fire(declared: dict[str, Any] | None, now: float) -> float | None:
    """When a recorded cron job fires next (epoch seconds), or None."""
    if not declared or not declared.get("cron"):
        return None
    from croniter import croniter

    try:
        return float(croniter(declared["cron"], now).get_next(float))
    except (ValueError, KeyError):
        return None


def _path_run_id(request: Request) -> int:
    raw = request.path_params["run_id"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise HTTPException(404, f"There is no run {raw[:40]!r}: run ids are positive whole numbers.")
    return int(raw)


def _moment(value: str | None, name: str) -> float | None:
    """An ISO date or time (UTC unless it names its zone) or a span back from now (`90m`)."""
    if not value:
        return None
    value = value.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    try:
        return time.time() - parse_duration(value, what=name)
    except (ValueError, TypeError):
        raise HTTPException(400, f"{name}: {value[:40]!r} is neither a date and time "
                                 "(2026-12-02T06:30) nor a span back from now (90m, 2h, 7d)") from None


def create(store: str, token: str | None = None) -> Starlette:
    dash = Dashboard(store, token)

    async def page(request: Request) -> Response:
        handler = {"/": dash.overview, "/runs": dash.runs, "/jobs": dash.jobs}.get(request.url.path, dash.run)
        return await anyio.to_thread.run_sync(handler, request)

    async def not_found(request: Request, exc: Exception) -> Response:
        text = exc.detail if isinstance(exc, HTTPException) and exc.detail != "Not Found" else None
        return dash.page(request, "error.html", 404, title="Not found",
                         text=text or f"Nothing here: {request.url.path[:200]}", offer_token=False)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
                  409: "Conflict", 501: "Not available"}
        return dash.page(request, "error.html", exc.status_code, title=titles.get(exc.status_code, "Error"),
                         text=exc.detail, offer_token=False)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("dashboard page %s failed", request.url.path)
        store_errors = (ActorsError, sqlite3.Error, *dash.reader.errors)
        text = "The store could not be read." if isinstance(exc, store_errors) else "This page failed."
        text = f"{text} ({type(exc).__name__}; the dashboard's log has the details)"
        try:
            return dash.page(request, "error.html", 500, title="Error", text=text, offer_token=False)
        except Exception:
            return PlainTextResponse(f"500 Error: {text}", status_code=500)

    routes = [
        Route("/", page),
        Route("/runs", page),
        Route("/runs/{run_id}", page),
        Route("/runs/{run_id}/{action:str}", dash.act, methods=["POST"]),
        Route("/jobs", page),
        Route("/jobs/{name}/run-now", dash.run_now, methods=["POST"]),
        Route("/events", dash.events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, HTTPException: http_error,
                                                       Exception: server_error})
    app.state.dashboard = dash
    dash.counts.start()
    app.add_middleware(_Timing)
    app.add_middleware(Guard, token=token, deny=dash.deny)
    return app


class _Timing:
    """A `Server-Timing: app;dur=<ms>` header on every response (what benchmarks/dashboard.py reads)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)
