"""Every error of the command, mapped to one line on stderr and an exit status, in one place.

A user's mistake (an unknown run id, a missing store or one that is not ours, an APP that
cannot be imported, invalid JSON, an input the job's model refuses, a bad config key, a bad
option) is one line `actors: error: ...` and exit status 3; never a traceback. (`submit --wait`
keeps 0 / 1 / 2 for a run that succeeded / failed / timed out or was cancelled, so 3 is kept
apart.) Set ACTORS_DEBUG=1 to get the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
import pydantic

from ..config import ConfigError
from ..errors import ActorsError

EXIT_ERROR = 3


class CliError(Exception):
    """A user's mistake, said in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def validation_line(exc: pydantic.ValidationError, what: str = "invalid input") -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{what}: {where}: {first['msg']}{more}"


def one_line(exc: BaseException) -> tuple[str, int] | None:
    """(the line, the exit status) for an error that is a user's mistake, else None."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, click.UsageError):
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return exc.format_message() + hint, EXIT_ERROR
    if isinstance(exc, click.ClickException):
        return exc.format_message(), EXIT_ERROR
    if isinstance(exc, pydantic.ValidationError):
        return validation_line(exc), EXIT_ERROR
    if isinstance(exc, ConfigError | ActorsError | ValueError | TypeError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_ERROR
    return None


def run(fn: Callable[[], Any]) -> int:
    """Run the command and turn what it raises into an exit status."""
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("actors: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `actors runs | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        said = one_line(exc)
        if said is None or os.environ.get("ACTORS_DEBUG"):
            raise
        click.echo(f"actors: error: {said[0]}", err=True)
        return said[1]
