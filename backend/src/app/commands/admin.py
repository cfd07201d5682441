"""`trading-agent admin ...`: a way back in when the admin key is lost (wired in `app.cli` as `admin`).

`admin new-key` issues a new admin key on the database named by DATABASE_URL, prints it once, and stores only its
SHA-256 (like every key). `--revoke-others` also revokes every other admin key (a lost key may have been found by
someone else); a running server refuses them within a second (its cache of verified keys trusts a key for 1 s).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

admin_app = typer.Typer(help="Administration: issue a new admin key.", no_args_is_help=True)


@admin_app.callback()
def _group() -> None:
    """Administration commands (a group even with one command, so `admin new-key` works standalone too)."""


async def issue_admin_key(database_url: str, *, name: str, revoke_others: bool) -> tuple[str, int, int]:
    """A new admin key (the key itself, its row id) and how many other admin keys were revoked."""
    from sqlalchemy import update

    from app.db.migrate import ensure_migrated
    from app.db.models import ApiKey
    from app.db.repositories.api_keys import ApiKeyRepository
    from app.db.session import create_engine, create_session_factory

    engine = create_engine(database_url)
    try:
        await ensure_migrated(engine)
        now = datetime.now(UTC)  # a key's times are operational records: wall clock
        async with create_session_factory(engine).begin() as session:
            key, row = await ApiKeyRepository(session).create(role="admin", account_id=None, name=name, now=now)
            revoked = 0
            if revoke_others:
                done = await session.execute(
                    update(ApiKey)
                    .where(ApiKey.role == "admin", ApiKey.id != row.id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                revoked = int(getattr(done, "rowcount", 0) or 0)
            return key, row.id, revoked
    finally:
        await engine.dispose()


@admin_app.command("new-key")
def new_key(
    name: Annotated[str, typer.Option(help="A name to tell the key apart in lists")] = "issued by the CLI",
    revoke_others: Annotated[
        bool, typer.Option("--revoke-others", help="Also revoke every other admin key (ADMIN_API_KEY included)")
    ] = False,
) -> None:
    """Issue a new admin API key (for a lost one): printed once, only its hash is stored."""
    from app.core.config import Settings

    settings = Settings()
    name = name.strip()
    if not name or len(name) > 100:
        typer.echo("error: --name must be 1 to 100 characters", err=True)
        raise typer.Exit(2)
    key, key_id, revoked = asyncio.run(issue_admin_key(settings.database_url, name=name, revoke_others=revoke_others))
    typer.echo(f"New admin API key (id {key_id}), shown only now; store it, e.g. as ADMIN_API_KEY:")
    typer.echo(key)
    if revoke_others:
        typer.echo(f"{revoked} other admin key(s) revoked.")
        if settings.admin_api_key is not None and settings.admin_api_key.get_secret_value():
            typer.echo(
                "ADMIN_API_KEY is set in this environment: its key is revoked too, and stays revoked at the next "
                "start; replace it with the new key.",
                err=True,
            )
