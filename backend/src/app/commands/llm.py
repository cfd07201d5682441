"""`trading-agent llm ...`: diagnostics for what models answer (wired in `app.cli` as `llm`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.services.llm.response_parser import parse_decision

if TYPE_CHECKING:
    from rich.table import Table

llm_app = typer.Typer(help="LLM answer diagnostics.", no_args_is_help=True)


@llm_app.callback()
def _group() -> None:
    """LLM answer diagnostics (a group even with one command, so `llm parse FILE` works standalone too)."""


def _records(path: Path, text: str, fmt: str) -> Iterator[dict[str, Any]]:
    """One record per answer: `id`, `raw`, optional `finish_reason`/`reasoning`/`kind`, or `input_error`."""
    if fmt == "text" or (fmt == "auto" and not _looks_like_jsonl(path, text)):
        yield {"id": path.name, "raw": text}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield {"id": number, "input_error": f"line {number} is not valid JSON: {exc}"}
            continue
        if not isinstance(record, dict) or "raw" not in record:
            yield {"id": number, "input_error": f"line {number} is not a JSON object with a 'raw' field"}
            continue
        yield {
            "id": record.get("id", number),
            **{k: record[k] for k in ("raw", "finish_reason", "reasoning", "kind") if k in record},
        }


def _looks_like_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".jsonl":
        return True
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "raw" in record


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


@llm_app.command("parse")
def parse(
    file: Annotated[Path, typer.Argument(help="A raw answer (text file) or JSONL whose lines have a 'raw' field")],
    symbols: Annotated[str, typer.Option(help="Comma-separated assets the answer should cover")] = "BTC,ETH,SOL",
    input_format: Annotated[
        str, typer.Option("--format", help="auto (JSONL for .jsonl or when the first line has 'raw'), text, jsonl")
    ] = "auto",
    summary: Annotated[bool, typer.Option("--summary", help="Print counts per outcome to stderr at the end")] = False,
) -> None:
    """Run the response parser on raw model outputs and print one JSON line per answer.

    Exit code 0 even when answers are bad (a diagnostic); 2 when FILE cannot be read.
    """
    if input_format not in ("auto", "text", "jsonl"):
        typer.echo(f"error: --format must be auto, text or jsonl, not {input_format!r}", err=True)
        raise typer.Exit(2)
    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    wanted = [s.strip() for s in symbols.split(",") if s.strip()]
    counts: Counter[str] = Counter()
    for record in _records(file, text, input_format):
        if "input_error" in record:
            row: dict[str, Any] = {
                "id": record["id"],
                "input_error": record["input_error"],
                "json_found": False,
                "failure": None,
                "schema_valid": False,
                "errors": [],
                "notes": [],
            }
            counts["input_error"] += 1
        else:
            outcome = parse_decision(
                _text_or_none(record["raw"]),
                wanted,
                finish_reason=_text_or_none(record.get("finish_reason")),
                reasoning=_text_or_none(record.get("reasoning")),
            )
            row = {
                "id": record["id"],
                "json_found": outcome.json_found,
                "failure": outcome.failure,
                "schema_valid": outcome.schema_valid,
                "errors": outcome.errors,
                "notes": outcome.notes,
            }
            if "kind" in record:
                row["kind"] = record["kind"]
            counts[outcome.failure or ("schema_valid" if outcome.schema_valid else "schema_invalid")] += 1
            counts["json_found"] += outcome.json_found
        counts["answers"] += 1
        typer.echo(json.dumps(row, ensure_ascii=False, default=str))
    if summary:
        typer.echo(json.dumps(dict(sorted(counts.items()))), err=True)


@llm_app.command("usage")
def usage(
    by: Annotated[str, typer.Option(help="Group by model, account or day")] = "model",
    days: Annotated[int, typer.Option(help="Only the last N days (0: all)")] = 0,
) -> None:
    """Calls, failures, tokens and cost of the stored model calls, per model, account or UTC day."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from rich.table import Table

    from app.core.config import Settings
    from app.db.migrate import ensure_migrated
    from app.db.repositories.llm_calls import LLMCallRepository
    from app.db.session import create_engine, create_session_factory

    if by not in ("model", "account", "day"):
        raise typer.BadParameter("--by must be model, account or day")
    settings = Settings()
    since = datetime.now(UTC) - timedelta(days=days) if days > 0 else None

    async def _totals() -> list[Any]:
        engine = create_engine(settings.database_url)
        try:
            await ensure_migrated(engine)
            async with create_session_factory(engine)() as session:
                return await LLMCallRepository(session).totals(by, since=since)  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    table = Table(by, "calls", "failures", "prompt tokens", "completion tokens", "cost USD", title="LLM usage")
    rows = asyncio.run(_totals())
    for row in rows:
        table.add_row(
            row.key,
            str(row.calls),
            str(row.failures),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            f"{row.cost_usd:.4f}",
        )
    total_cost = sum(r.cost_usd for r in rows)
    table.add_row(
        "total", str(sum(r.calls for r in rows)), str(sum(r.failures for r in rows)), "", "", f"{total_cost:.4f}"
    )
    print_whole(table)


def print_whole(table: Table) -> None:
    """Print `table` without cutting a cell: rich shrinks columns to the terminal's width and ends cut text with
    an ellipsis (`baseline/tre…`); a table wider than the terminal is printed at its own width instead (the
    terminal wraps the lines, the names stay whole)."""
    from rich.console import Console

    console = Console()
    natural = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    if natural > console.width:
        console = Console(width=natural)
    console.print(table)


async def _with_store(settings: Any, work: Any) -> Any:
    """Run `work(store)` on the database named by DATABASE_URL, with the agent's SecretBox."""
    from pathlib import Path

    from app.core.security import SecretBox
    from app.db.migrate import ensure_migrated
    from app.db.session import create_engine, create_session_factory
    from app.services.llm.llm_settings import LLMSettingsStore

    engine = create_engine(settings.database_url)
    try:
        await ensure_migrated(engine)
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        store = LLMSettingsStore(
            create_session_factory(engine), SecretBox.from_settings(secret, Path(settings.secret_key_file))
        )
        return await work(store)
    finally:
        await engine.dispose()


def _read_key(from_stdin: bool) -> str:
    import sys

    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return str(typer.prompt("New OpenRouter key (not echoed)", hide_input=True)).strip()


@llm_app.command("set-key")
def set_key(
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the key from standard input (one line)")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Ask OpenRouter (GET /key) before storing the key")
    ] = True,
) -> None:
    """Rotate the OpenRouter key: stored encrypted, used by a running agent from its next model call (a stored
    key wins over OPENROUTER_API_KEY). The key is read from a hidden prompt or standard input, never from the
    command line (it would stay in the shell's history and the process list)."""
    import asyncio

    from app.core.config import Settings
    from app.services.llm.llm_settings import check_key_text, key_fingerprint
    from app.services.llm.providers.key_check import KeyChecker

    settings = Settings()
    if settings.llm_base_url:
        typer.echo(
            f"error: LLM_BASE_URL is set ({settings.llm_base_url}): an OpenRouter key would not be used", err=True
        )
        raise typer.Exit(2)
    try:
        key = check_key_text(_read_key(stdin))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if verify:
        health = asyncio.run(KeyChecker(settings.openrouter_base_url).ask(key, source="stored", fingerprint=None))
        if health.status == "invalid":
            typer.echo(f"error: OpenRouter does not accept this key: {health.detail}; nothing was changed", err=True)
            raise typer.Exit(1)
        if health.status not in ("ok", "no_credit"):
            typer.echo(
                f"error: the key cannot be checked now ({health.detail}); nothing was changed "
                "(--no-verify stores it unchecked)",
                err=True,
            )
            raise typer.Exit(1)
        if health.status == "no_credit":
            typer.echo(f"warning: {health.detail}: calls fail until credit is added", err=True)

    async def save(store: Any) -> None:
        await store.save_openrouter_key(key, by="cli")

    asyncio.run(_with_store(settings, save))
    typer.echo(f"OpenRouter key {key_fingerprint(key)} stored (encrypted); a running agent uses it from its next call.")


@llm_app.command("clear-key")
def clear_key() -> None:
    """Remove the stored OpenRouter key: OPENROUTER_API_KEY is used again from the next call."""
    import asyncio

    from app.core.config import Settings

    settings = Settings()

    async def clear(store: Any) -> bool:
        return bool(await store.clear_openrouter_key())

    if not asyncio.run(_with_store(settings, clear)):
        typer.echo("no OpenRouter key is stored")
        raise typer.Exit(1)
    has_env = settings.openrouter_api_key is not None and bool(settings.openrouter_api_key.get_secret_value())
    typer.echo(
        "stored OpenRouter key removed; "
        + ("OPENROUTER_API_KEY is used from the next call" if has_env else "no key is left: model calls will fail")
    )
