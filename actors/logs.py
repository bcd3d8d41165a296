"""Logging for operators: the standard `logging` module, with the run on every record about one.

Records the supervisor logs about a run carry `run_id`, `job`, `attempt` and `worker_pid` as
attributes (`extra=`; `run_extra()` makes them), and so do `ctx.log` records made inside a
run (run id, job and attempt; the worker pid is the process's own). `configure()` installs one
handler on the "actors" logger: `text` (the run fields appended in brackets) or `json`, one
object per line with `ts` (epoch seconds), `level`, `logger`, `message`, the run fields that the
record has, and `exc` (the formatted traceback) when there is one. `actors serve --log-format
json` uses it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

__all__ = ["RUN_FIELDS", "JSONFormatter", "TextFormatter", "configure", "run_extra"]

RUN_FIELDS = ("run_id", "job", "attempt", "worker_pid")


def run_extra(run_id: int, job: str, attempt: int, worker_pid: int | None = None) -> dict[str, Any]:
    """The `extra=` of a record about one run."""
    return {"run_id": run_id, "job": job, "attempt": attempt, "worker_pid": worker_pid}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in RUN_FIELDS if getattr(record, name, None) is not None}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the run fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage(), **_fields(record)}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """`2026-05-09 07:35:25 WARNING actors: message [run=42 job=thumbnail attempt=1 worker_pid=4242]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def configure(format: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send the "actors" loggers' records to `stream` (default stderr) as `format` ("text" or
    "json"); returns the handler (replacing one that an earlier call installed)."""
    if format not in ("text", "json"):
        raise ValueError(f"invalid log format {format!r}: expected 'text' or 'json'")
    logger = logging.getLogger("actors")
    for old in [h for h in logger.handlers if getattr(h, "_actors_handler", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if format == "json" else TextFormatter())
    handler._actors_handler = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
