"""The `actors` command: a thin layer over the public API (`Client`, the stores).

Every command reads or writes the store; none asks live workers, so each answers at once, also
when the supervisor is dead or busy. One module per group of commands: `serve.py` (serve,
dashboard), `submit.py` (submit, run-now), `runs.py` (runs, show, retry, cancel, purge),
`jobs.py` (jobs, config), `stats.py` (stats, watch), `events.py` (emit). Output goes through `output.py` (a rich
table or record, or `--json`), and errors become one line and an exit status in `errors.py`.

Click, not Typer: Typer is Click plus annotations-to-options, and what we need of it (groups,
typed options, choices, completion) Click gives directly, with one dependency fewer and no
runtime introspection of annotations at start. Shell completion: `eval "$(_ACTORS_COMPLETE=bash_source actors)"`.
"""

from __future__ import annotations

import sys

import click

from . import errors
from .events import emit
from .jobs import jobs, show_config
from .runs import cancel, purge, retry, runs, show
from .serve import dashboard, serve
from .stats import stats, watch
from .submit import run_now, submit

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="actors")
def cli() -> None:
    """Run and inspect actors jobs. Commands read the store, so they answer at once, also when
    the supervisor is dead or busy. Store: --store, $ACTORS_STORE, actors.toml, the app's, actors.db."""


for command in (serve, submit, runs, show, retry, cancel, purge, jobs, run_now, stats, watch, dashboard, show_config, emit):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The console script: run the command, map its errors to one line and an exit status."""
    return errors.run(lambda: cli.main(args=argv, prog_name="actors", standalone_mode=False))


if __name__ == "__main__":
    sys.exit(main())
