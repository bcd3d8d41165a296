"""What the commands share: loading APP, finding the store and the config, opening a Client.

APP is `module:obj` or `path/to/script.py:obj`, where obj is a `Supervisor`, a list of jobs,
or a function returning one of those. A script's directory is put first on `sys.path` (and
on PYTHONPATH, for the worker processes, which import its jobs by module name).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click

from .. import config as configuration
from ..client import Client
from ..job import Job
from ..run import _span
from ..stores import is_postgres_url
from ..supervisor.supervisor import Supervisor
from .errors import CliError

store_option = click.option("--store", "-s", default=None, metavar="PATH",
                            help="The store file (default: $ACTORS_STORE, the config file, the app's, actors.db).")
app_option = click.option("--app", "-a", "app_spec", default=None, metavar="APP",
                          help="module:obj or path/to/script.py:obj (a Supervisor, a list of jobs, or a function returning one).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
config_option = click.option("--config", "config_path", default=None, metavar="PATH",
                             help="The config file (default: $ACTORS_CONFIG, ./actors.toml, ./pyproject.toml [tool.actors]).")


@dataclass
class App:
    """What APP names: its jobs, and the Supervisor if it is one (its options are the code's)."""

    spec: str
    jobs: list[Job[Any, Any]]
    sup: Supervisor | None = None
    code: dict[str, Any] = field(default_factory=dict)


def load_app(spec: str) -> App:
    target, colon, name = spec.rpartition(":")
    if not colon or not target or not name:
        raise CliError(f"invalid APP {spec!r}: expected module:obj or path/to/script.py:obj (e.g. app.py:sup)")
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise CliError(f"cannot import APP {spec!r}: no file {target}")
        directory, module_name = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
    else:
        directory, module_name = os.getcwd(), target
    if directory not in sys.path:
        sys.path.insert(0, directory)
    paths = os.environ.get("PYTHONPATH", "")
    if directory not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = directory + (os.pathsep + paths if paths else "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(f"cannot import APP {spec!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       ) from exc
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise CliError(f"cannot import APP {spec!r}: module {module_name!r} has no {name!r}") from None
    if callable(obj) and not isinstance(obj, Job | Supervisor | type):
        try:
            obj = obj()
        except Exception as exc:
            raise CliError(f"APP {spec!r}: calling {name}() raised {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Supervisor):
        store = getattr(obj.store, "path", None)
        code = {"workers": obj.workers, "grace": obj.grace, "kill_grace": obj.kill_grace, "max_memory": obj.max_memory,
                "max_runs_per_worker": obj.max_runs_per_worker, "poll_interval": obj.poll_interval,
                "max_result_size": obj.max_result_size}
        if store is not None:
            code["store"] = store
        return App(spec, list(obj.jobs.values()), obj, code)
    if isinstance(obj, Job):
        obj = [obj]
    if isinstance(obj, list | tuple) and obj and all(isinstance(j, Job) for j in obj):
        return App(spec, list(obj))
    raise CliError(f"APP {spec!r} is a {type(obj).__name__}: expected a Supervisor, a list of jobs, or a function "
                   "returning one")


def settings(flags: dict[str, Any], app: App | None, config_path: str | None) -> tuple[
        dict[str, configuration.Setting], configuration.FileConfig, str | None]:
    """The effective settings (flag > env > file > code > default), the file's config and its path."""
    path = configuration.find(explicit=config_path)
    file = configuration.load(path)
    return configuration.resolve(flags, file, path, app.code if app else None), file, path


def open_client(store: str | None, app_spec: str | None = None, config_path: str | None = None) -> tuple[Client, App | None]:
    """A Client on the effective store (refusing a missing one), knowing APP's jobs if given."""
    app = load_app(app_spec) if app_spec else None
    effective, _, _ = settings({"store": store}, app, config_path)
    jobs = app.jobs if app else []
    if is_postgres_url(effective["store"].value):  # a PostgreSQL database: the store makes its schema
        return Client(effective["store"].value, jobs=jobs), app
    path = os.path.abspath(effective["store"].value)
    if not os.path.exists(path):
        raise CliError(f"store {path} does not exist ({effective['store'].source}): start `actors serve APP` on it "
                       "first, or give the right one with --store or $ACTORS_STORE")
    client = Client(path, jobs=jobs)
    return client, app


def serving_line(client: Client, now: float | None = None) -> str:
    """"serving: pid 4242 on host, 2 workers, heartbeat 0.4s ago" or "not serving, last heartbeat 5m ago"."""
    now = time.time() if now is None else now
    info = client.store.supervisor_info()
    serving = client.serving()
    if info is None:
        return "serving: a supervisor holds the lock (no status written yet)" if serving else "not serving (never served)"
    beat = f"heartbeat {_span(now - info.heartbeat_at)} ago"
    if serving and info.stopped_at is None:
        return f"serving: pid {info.pid} on {info.host}, {info.workers} workers, up {_span(now - info.started_at)}, {beat}"
    if info.stopped_at is not None:
        return f"not serving: stopped {_span(now - info.stopped_at)} ago (pid {info.pid} on {info.host})"
    return f"not serving, last {beat} (pid {info.pid} on {info.host} is gone)"


def parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    from ..durations import parse_duration

    try:
        return time.time() - parse_duration(text, what="--since")
    except ValueError as exc:
        raise CliError(str(exc)) from None
