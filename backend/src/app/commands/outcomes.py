"""`trading-agent outcomes ...`: decision outcomes (wired in `app.cli` as `outcomes`)."""

from __future__ import annotations

import typer

outcomes_app = typer.Typer(help="Decision outcomes: back-fill and inspect.", no_args_is_help=True)


@outcomes_app.callback()
def _group() -> None:
    """Decision outcome commands."""
