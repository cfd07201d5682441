"""`trading-agent experiments ...`: A/B experiments (wired in `app.cli` as `experiments`)."""

from __future__ import annotations

import typer

experiments_app = typer.Typer(help="A/B experiments: create, list, results, stop.", no_args_is_help=True)


@experiments_app.callback()
def _group() -> None:
    """A/B experiment commands."""
