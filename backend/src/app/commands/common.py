"""What the commands share: a refusal printed with its reason, and the settings read once with logging set up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from app.core.config import Settings


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr; the caller raises what this returns (exit `code`)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def load_settings() -> Settings:
    """The settings (environment and .env), with logging configured to hide their secrets; a bad value exits 2."""
    from pydantic import ValidationError

    from app.core.config import Settings
    from app.core.logging import configure_logging

    try:
        settings = Settings()
    except ValidationError as exc:
        raise fail(f"bad configuration: {exc}") from exc
    configure_logging(settings.log_level, json_lines=settings.log_json, secrets=settings.secret_values())
    return settings


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or time (`2025-03-01`, `2025-03-01T12:00`, `...Z`); without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an ISO 8601 time, e.g. 2025-03-06 or 2025-03-06T00:00") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
