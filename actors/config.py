"""The operator's configuration: `actors.toml` (or `[tool.actors]` in `pyproject.toml`).

An operator changes a limit or a schedule without touching code: supervisor options at the top
level, and per-job overrides under `[jobs.<name>]`:

    store = "runs.db"
    workers = 4
    grace = "1m"

    [jobs.thumbnail]
    timeout = "2m"
    retry = 5            # attempts (the job's backoff is kept)
    concurrency = 2
    rate = "10/s"

    [jobs.nightly]
    cron = "0 3 * * *"
    enabled = false      # its cron schedule is off; runs submitted to it still run

Precedence, for each key: a command-line flag > an environment variable (`ACTORS_STORE`,
`ACTORS_WORKERS`, ... : `ACTORS_` and the key in capitals) > the config file > the code (what
the app's `Supervisor(...)` or `@job(...)` says) > the default. `resolve()` returns each value
with where it came from, which `actors config` prints. The file is found in the current
directory: `actors.toml` first, else `pyproject.toml` with a `[tool.actors]` table; `--config
PATH` (or `ACTORS_CONFIG`) names one. It is validated at start by the pydantic models below,
and an error names the key (`actors.toml: jobs.thumbnail.timout: unknown key`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .durations import parse_duration, parse_rate, parse_size

__all__ = ["ConfigError", "FileConfig", "JobConfig", "Setting", "apply_jobs", "find", "load", "resolve"]

# Supervisor options the file, the environment and flags may set, in the order `actors config` shows them.
SUPERVISOR_KEYS = ("store", "workers", "durability", "grace", "kill_grace", "max_memory", "max_runs_per_worker",
                   "poll_interval", "max_result_size")
OTHER_KEYS = ("log_format", "log_level", "metrics_port", "metrics_host")
DEFAULTS: dict[str, Any] = {"store": "actors.db", "workers": os.cpu_count() or 1, "durability": "normal",
                            "grace": 30.0, "kill_grace": 2.0, "max_memory": None, "max_runs_per_worker": None,
                            "poll_interval": 0.05, "max_result_size": "64MB", "log_format": "text",
                            "log_level": "INFO", "metrics_port": None, "metrics_host": "127.0.0.1"}


class ConfigError(ValueError):
    """Raised when the config file or an ACTORS_ variable is invalid; the message names the key."""


def _duration(value: Any, what: str) -> Any:
    if value is not None:
        parse_duration(value, what=what)
    return value


class JobConfig(BaseModel):
    """Overrides of one job's options (`[jobs.<name>]`)."""

    model_config = ConfigDict(extra="forbid")

    timeout: str | float | None = None
    retry: int | None = None  # attempts
    priority: int | None = None
    concurrency: int | None = None
    rate: str | None = None
    cron: str | None = None
    enabled: bool = True

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return _duration(value, "timeout")

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("retry", "concurrency")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value is not None and value < 1:
            raise ValueError("expected an int >= 1")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: Any) -> Any:
        if value is not None:
            from croniter import croniter

            if not croniter.is_valid(value):
                raise ValueError(f"invalid cron expression {value!r}")
        return value


class FileConfig(BaseModel):
    """What `actors.toml` (or `[tool.actors]`) may hold; every key optional."""

    model_config = ConfigDict(extra="forbid")

    store: str | None = None
    workers: int | None = None
    durability: Literal["normal", "full"] | None = None
    grace: str | float | None = None
    kill_grace: str | float | None = None
    max_memory: str | int | None = None
    max_runs_per_worker: int | None = None
    poll_interval: str | float | None = None
    max_result_size: str | int | None = None
    log_format: Literal["text", "json"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    jobs: dict[str, JobConfig] = {}

    @field_validator("grace", "kill_grace", "poll_interval")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration(value, "duration")

    @field_validator("max_memory", "max_result_size")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("workers", "max_runs_per_worker")
    @classmethod
    def _counts(cls, value: Any) -> Any:
        if value is not None and value < 1:
            raise ValueError("expected an int >= 1")
        return value


class Setting(NamedTuple):
    """One effective value and where it came from: "flag", "env ACTORS_X", "file <path>",
    "code" or "default"."""

    value: Any
    source: str


def find(directory: str = ".", explicit: str | None = None) -> str | None:
    """The config file to read: `explicit` (or $ACTORS_CONFIG), else `actors.toml`, else a
    `pyproject.toml` that has a `[tool.actors]` table, in `directory`; None if there is none."""
    explicit = explicit or os.environ.get("ACTORS_CONFIG") or None
    if explicit is not None:
        if not os.path.isfile(explicit):
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    path = os.path.join(directory, "actors.toml")
    if os.path.isfile(path):
        return path
    path = os.path.join(directory, "pyproject.toml")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as file:
                if "actors" in tomllib.load(file).get("tool", {}):
                    return path
        except (OSError, tomllib.TOMLDecodeError):
            return None  # not ours to judge: it has no [tool.actors] we can read
    return None


def load(path: str | None) -> FileConfig:
    """The validated contents of a config file (empty for None); ConfigError naming the key."""
    if path is None:
        return FileConfig()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if os.path.basename(path) == "pyproject.toml":
        data = data.get("tool", {}).get("actors", {})
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    return f"{where}: {message}" + (f" (got {error['input']!r})" if error["type"] != "extra_forbidden" else "")


def _from_env(key: str, environ: Mapping[str, str]) -> Any:
    name = "ACTORS_" + key.upper()
    text = environ.get(name)
    if text is None or text == "":
        return None
    value: Any = text
    if key in ("workers", "max_runs_per_worker", "metrics_port"):
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected an integer") from None
    try:
        FileConfig.model_validate({key: value})
    except ValidationError as exc:
        raise ConfigError(f"{name}: {_first_error(exc).split(': ', 1)[1]}") from None
    return value


def resolve(flags: Mapping[str, Any], file: FileConfig, path: str | None, code: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, Setting]:
    """Each supervisor option and other setting with its value and source, by precedence flag >
    environment > file > code > default (`flags`: None where not given; `code`: what the app's
    Supervisor was made with, if there is one)."""
    environ = os.environ if environ is None else environ
    code = code or {}
    result: dict[str, Setting] = {}
    for key in SUPERVISOR_KEYS + OTHER_KEYS:
        if flags.get(key) is not None:
            result[key] = Setting(flags[key], "flag")
        elif (value := _from_env(key, environ)) is not None:
            result[key] = Setting(value, f"env ACTORS_{key.upper()}")
        elif getattr(file, key) is not None:
            result[key] = Setting(getattr(file, key), f"file {path}")
        elif key in code:
            result[key] = Setting(code[key], "code")
        else:
            result[key] = Setting(DEFAULTS[key], "default")
    return result


def apply_jobs(jobs: list[Any], file: FileConfig, path: str | None) -> list[Any]:
    """The app's jobs with the file's `[jobs.<name>]` overrides applied (copies; the originals
    are untouched). A name that is no job of the app is a ConfigError."""
    by_name = {j.name: j for j in jobs}
    unknown = sorted(set(file.jobs) - set(by_name))
    if unknown:
        raise ConfigError(f"{path}: jobs.{unknown[0]}: no job of that name in the app (jobs: {', '.join(sorted(by_name))})")
    result = []
    for found in jobs:
        override = file.jobs.get(found.name)
        if override is None:
            result.append(found)
            continue
        changed = copy.copy(found)
        given = override.model_dump(exclude_unset=True)
        if "timeout" in given:
            changed.timeout = parse_duration(override.timeout, what="timeout") if override.timeout is not None else None
        if override.retry is not None:
            from .retry import Retry

            changed.retry = (dataclasses.replace(found.retry, attempts=override.retry) if found.retry is not None
                             else Retry(attempts=override.retry))
        if override.priority is not None:
            changed.priority = override.priority
        if override.concurrency is not None:
            changed.concurrency = override.concurrency
        if override.rate is not None:
            changed.rate, changed.rate_limit = override.rate, parse_rate(override.rate)
        changed.limited = changed.concurrency is not None or changed.rate_limit is not None
        if override.cron is not None:
            changed.cron = override.cron
        if not override.enabled:
            changed.cron = None
        result.append(changed)
    return result


def job_settings(found: Any, file: FileConfig, path: str | None) -> dict[str, Setting]:
    """One job's overridable options with their sources (file or code), for `actors config`."""
    override = file.jobs.get(found.name)
    given = override.model_dump(exclude_unset=True) if override is not None else {}
    code = {"timeout": found.timeout, "retry": found.retry.attempts if found.retry else None,
            "priority": found.priority, "concurrency": found.concurrency, "rate": found.rate, "cron": found.cron,
            "enabled": True}
    return {key: Setting(given[key], f"file {path}") if key in given else Setting(value, "code")
            for key, value in code.items()}
