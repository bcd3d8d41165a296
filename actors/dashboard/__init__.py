"""A web monitor of one store: runs, workers and failures, read from the store alone.

    pip install "actors[dashboard]"
    actors dashboard --store runs.db            # http://127.0.0.1:8787

    from actors.dashboard import create_app, serve
    serve("runs.db")                            # or create_app("runs.db") for your ASGI server

What it promises, and how (the complaints about Flower, rq-dashboard and others were the brief):
- History survives anything: every page is read from the durable store, never from a
  supervisor's memory; what it shows of live processes (workers, their runs, RSS) is what the
  serving supervisor writes to the store about once a second. A dead or hung supervisor shows
  as `silent` (its heartbeat is old), and the pages still work.
- It never slows a serving supervisor: the app opens the file read-only (`mode=ro`, WAL, one
  statement per read transaction), and every page's queries are bounded on a store of a
  million runs (queries.py says how; `benchmarks/dashboard.py` measures it).
- Closed by default: `serve()` binds 127.0.0.1 and answers only to loopback Host names;
  another address needs a token (`token=` or `ACTORS_DASHBOARD_TOKEN`), and every request
  then needs it. Actions (cancel, retry) are CSRF-checked POST forms behind a confirmation,
  going through `actors.Client` like the `actors` command. See guard.py.
- Live: pages subscribe to `/events` (server-sent events) and swap in their changed parts
  (static/dashboard.js, vendored, no build step, no CDN).
"""

from __future__ import annotations

import os
from typing import Any

from .guard import is_loopback

__all__ = ["create_app", "serve"]

TOKEN_VARIABLE = "ACTORS_DASHBOARD_TOKEN"


def create_app(store: str, token: str | None = None) -> Any:
    """The dashboard of the SQLite store at `store`, or of the PostgreSQL store at the URL
    `store` ("postgresql://user@host/db?schema=actors": `schema` defaults to "actors"), as an
    ASGI app (a Starlette app).

    `token`: when given, every request must carry it (see `serve`). The store must exist and be
    an actors store (StoreError otherwise); it is only ever opened read-only, except by the
    actions, which go through `actors.Client`. Needs the `dashboard` extra."""
    from ..stores import is_postgres_url

    if not is_postgres_url(store) and (not isinstance(store, str | os.PathLike) or "://" in os.fspath(store)):
        raise ValueError(f"the dashboard reads an SQLite store file or a PostgreSQL database "
                         f"(postgresql://...): {store!r} is not a path")
    if token is not None and not token:
        raise ValueError("an empty dashboard token would let anyone in: give a real one or none")
    try:
        from .app import create
    except ImportError as exc:  # pragma: no cover - the extra missing
        raise ImportError(f"the dashboard needs its extra: pip install 'actors[dashboard]' ({exc})") from exc
    return create(os.fspath(store), token)


def serve(store: str, host: str = "127.0.0.1", port: int = 8787, token: str | None = None) -> None:
    """Serve the dashboard of `store` with uvicorn until interrupted (Ctrl-C / SIGTERM).

    Binds `host` (default 127.0.0.1, this machine only). Any other host is refused with a
    ValueError unless a token is given, as `token` or in the ACTORS_DASHBOARD_TOKEN environment
    variable; with a token, open `http://HOST:PORT/?token=TOKEN` once (it sets a cookie), or
    send it as `Authorization: Bearer TOKEN`."""
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    if not is_loopback(host) and token is None:
        raise ValueError(f"refusing to serve the dashboard on {host}: an address other machines can reach "
                         f"needs a token (token=... or {TOKEN_VARIABLE}); or bind 127.0.0.1")
    app = create_app(store, token)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, access_log=False)
