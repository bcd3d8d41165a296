"""`actors serve` and `actors dashboard`: the long-running commands."""

from __future__ import annotations

import logging
from typing import Any

import click

from .. import config as configuration
from .. import logs
from ..supervisor.supervisor import Supervisor
from .common import config_option, load_app, settings
from .errors import CliError

log = logging.getLogger("actors")


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option("--workers", "-w", type=click.IntRange(1), default=None, help="Worker processes (default: CPU count).")
@click.option("--store", "-s", default=None, metavar="PATH", help="The store file.")
@click.option("--grace", default=None, metavar="DURATION", help="Graceful shutdown waits this long for running runs.")
@click.option("--kill-grace", default=None, metavar="DURATION", help="SIGTERM to SIGKILL when a worker is killed.")
@click.option("--max-memory", default=None, metavar="SIZE", help="Memory limit of a worker and its descendants (2GB).")
@click.option("--drain", is_flag=True, help="Return once nothing is queued, running or waiting for a retry.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, help="Logs on stderr: text or one JSON object per line.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default=None, help="The metrics endpoint's address (default 127.0.0.1).")
@config_option
def serve(app_spec: str, workers: int | None, store: str | None, grace: str | None, kill_grace: str | None,
          max_memory: str | None, drain: bool, log_format: str | None, log_level: str | None, metrics_port: int | None,
          metrics_host: str | None, config_path: str | None) -> int:
    """Serve APP's jobs until SIGINT/SIGTERM (or, with --drain, until the queue is empty).

    Exit status as serve(): 0 after a graceful stop, 130 / 143 after a forced one."""
    app = load_app(app_spec)
    flags = {"workers": workers, "store": store, "grace": grace, "kill_grace": kill_grace, "max_memory": max_memory,
             "log_format": log_format, "log_level": log_level, "metrics_port": metrics_port, "metrics_host": metrics_host}
    effective, file, path = settings(flags, app, config_path)
    logs.configure(effective["log_format"].value, effective["log_level"].value)
    sup = build(app, effective, file, path)
    if effective["metrics_port"].value is not None:
        from ..metrics import serve_metrics

        sup.prefork()  # before the metrics thread, so that the fork server may still be a fork

        try:
            _, port = serve_metrics(sup, effective["metrics_port"].value, effective["metrics_host"].value)
        except ImportError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot serve metrics on port {effective['metrics_port'].value}: {exc.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", effective["metrics_host"].value, port)
    log.info("serving %s: store %s, %d workers (pid %d)", app_spec, getattr(sup.store, "path", "?"), sup.workers,
             __import__("os").getpid())
    try:
        result = sup.serve(until="drained" if drain else None)
    finally:
        sup.close()
    log.info("serve returned: %s", result)
    return 0


def build(app: Any, effective: dict[str, configuration.Setting], file: configuration.FileConfig,
          path: str | None) -> Supervisor:
    """APP's Supervisor as is when nothing overrides its code, else a new one on its jobs (with the
    config file's job overrides) and the effective options; event callbacks are carried over."""
    overridden = any(effective[k].source not in ("code", "default") for k in configuration.SUPERVISOR_KEYS)
    if app.sup is not None and not overridden and not file.jobs:
        return app.sup
    jobs = configuration.apply_jobs(app.jobs, file, path)
    options = {key: effective[key].value for key in configuration.SUPERVISOR_KEYS}
    if app.sup is not None:
        options["retry"] = app.sup.default_retry
        listeners = app.sup._listeners
        app.sup.close()
    sup = Supervisor(jobs, **options)
    if app.sup is not None:
        sup._listeners = listeners
    return sup


@click.command()
@click.option("--store", "-s", default=None, metavar="PATH",
              help="The store file, or a PostgreSQL URL (postgresql://...[?schema=NAME]).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--token", default=None, envvar="ACTORS_DASHBOARD_TOKEN",
              help="Required off loopback: the dashboard asks for it ($ACTORS_DASHBOARD_TOKEN).")
@config_option
def dashboard(store: str | None, port: int, host: str, token: str | None, config_path: str | None) -> None:
    """Serve the web dashboard of a store (reads the store; `pip install 'actors[dashboard]'`)."""
    effective, _, _ = settings({"store": store}, None, config_path)
    import os

    from ..stores import is_postgres_url

    path = effective["store"].value  # a PostgreSQL URL (?schema=NAME, default actors) is passed on as given
    if not is_postgres_url(path):
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise CliError(f"store {path} does not exist: start a supervisor on it first, or check --store")
    try:
        import actors.dashboard as board
    except ImportError as exc:
        raise CliError(f"the dashboard is not installed ({exc}): pip install 'actors[dashboard]'") from None
    board.serve(store=path, host=host, port=port, token=token)
