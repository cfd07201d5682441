"""`trading-agent experiments ...`: A/B experiments (wired in `app.cli` as `experiments`).

The commands work on the database named by DATABASE_URL, as an admin would through the API; offline, the
rule-based baseline (`model=baseline`) with different strategies or prompt versions can be a variant:

    trading-agent experiments create --name trend --assignment shadow --min-samples 50 \\
        --variant control:model=baseline,strategy=conservative --variant aggr:model=baseline,strategy=aggressive
    trading-agent experiments results 1
    trading-agent experiments stop 1 --reason "enough"

An agent running on the same database picks a started or stopped experiment up within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from app.bootstrap import Agent
    from app.schemas.experiments import Difference, Estimate, ExperimentResults, ExperimentView

experiments_app = typer.Typer(help="A/B experiments: create, list, results, stop.", no_args_is_help=True)

T = TypeVar("T")
# `--variant name:key=value,...`: the keys and the request fields they set.
VARIANT_KEYS = {
    "model": "model",
    "strategy": "strategy_id",
    "prompt": "prompt_version",
    "temperature": "temperature",
    "weight": "weight",
    "budget": "daily_budget_usd",
    "control": "is_control",
}
_NUMBERS = ("temperature", "weight", "daily_budget_usd")


@experiments_app.callback()
def _group() -> None:
    """A/B experiment commands."""


def parse_variant(text: str) -> dict[str, Any]:
    """`aggr:model=baseline,strategy=aggressive,prompt=lean,temperature=0.2,weight=2,budget=1,control=true` -> the
    variant's request fields (a name alone keeps every account setting). ValueError with the reason."""
    name, _, options = text.partition(":")
    variant: dict[str, Any] = {"name": name.strip()}
    for option in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = option.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in VARIANT_KEYS:
            raise ValueError(
                f"{option!r} in --variant {text!r}: expected key=value, key one of {', '.join(VARIANT_KEYS)}"
            )
        field = VARIANT_KEYS[key]
        if field in _NUMBERS:
            try:
                variant[field] = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in --variant {text!r} is not a number") from None
        elif field == "is_control":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(f"control={value!r} in --variant {text!r}: true or false")
            variant[field] = value.lower() in ("true", "yes", "1")
        else:
            variant[field] = value
    return variant


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _run(work: Callable[[Agent], Awaitable[T]]) -> T:
    """Build the agent on DATABASE_URL, run `work` with it, close it; a refusal is printed and exits 1."""
    from app.bootstrap import build_agent
    from app.core.config import Settings
    from app.core.errors import ConfigurationError
    from app.core.logging import configure_logging
    from app.services.llm.llm_exceptions import DecisionEngineError

    settings = Settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, secrets=settings.secret_values())

    async def main() -> T:
        agent = await build_agent(settings)
        try:
            return await work(agent)
        finally:
            await agent.close()

    try:
        return asyncio.run(main())
    except ConfigurationError as exc:
        raise _fail(f"configuration: {exc}", 2) from exc
    except DecisionEngineError as exc:  # refused: the reason, nothing stored
        raise _fail(str(exc)) from exc


@experiments_app.command("create")
def create(
    name: Annotated[str | None, typer.Option(help="A name to tell experiments apart")] = None,
    assignment: Annotated[
        str | None, typer.Option(help="shadow (every variant decides, the control trades; default) or accounts")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="mean_return (default), hit_rate or brier")] = None,
    horizon: Annotated[int | None, typer.Option(help="Candles after the decision: 1, 4 (default), 12 or 24")] = None,
    min_samples: Annotated[
        int | None, typer.Option("--min-samples", help="Cycles per variant the verdict rests on (20 at least)")
    ] = None,
    confidence_level: Annotated[float | None, typer.Option("--confidence-level", help="Default 0.95")] = None,
    seed: Annotated[int | None, typer.Option(help="Of the bootstrap and the accounts split (default: drawn)")] = None,
    account: Annotated[
        list[int] | None, typer.Option("--account", help="An account it runs on (repeat; default: every account)")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="name:model=..,strategy=..,prompt=..,temperature=..,weight=..,budget=..,control=true (repeat; "
            "the first is the control unless one says control=true)",
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it tests, and why")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A JSON spec (the API's request body); options override it")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the experiment as JSON")] = False,
) -> None:
    """Start an experiment: checked, its expected daily cost shown, refused (nothing stored) over the budget."""
    from pydantic import ValidationError

    from app.schemas.experiments import ExperimentCreate

    body: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read {file}: {exc}", 2) from exc
        if not isinstance(loaded, dict):
            raise _fail(f"{file} must hold a JSON object (the API's request body)", 2)
        body.update(loaded)
    options = {
        "name": name,
        "assignment": assignment,
        "metric": metric,
        "horizon": horizon,
        "min_samples": min_samples,
        "confidence_level": confidence_level,
        "seed": seed,
        "accounts": account or None,
        "description": description,
    }
    body.update({key: value for key, value in options.items() if value is not None})
    if variant:
        try:
            body["variants"] = [parse_variant(v) for v in variant]
        except ValueError as exc:
            raise _fail(str(exc), 2) from exc
    try:
        spec = ExperimentCreate.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise _fail(f"invalid experiment: {problems}", 2) from exc

    async def work(agent: Agent) -> ExperimentView:
        return await agent.experiments.create(spec)

    view = _run(work)
    if as_json:
        typer.echo(view.model_dump_json())
        return
    _print_experiment(view)


@experiments_app.command("list")
def list_(
    status: Annotated[str, typer.Option(help="running, stopped or all")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the experiments as JSON")] = False,
) -> None:
    """The experiments, newest first."""
    if status not in ("running", "stopped", "all"):
        raise _fail(f"--status must be running, stopped or all, not {status!r}", 2)

    async def work(agent: Agent) -> list[ExperimentView]:
        return await agent.experiments.list_all(status=None if status == "all" else status)

    views = _run(work)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "status", "assignment", "metric", "horizon", "min samples", "accounts", "variants")
    table.add_column("USD/day", justify="right")
    table.add_column("started (market clock)")
    for v in views:
        table.add_row(
            str(v.id),
            v.name,
            v.status,
            v.assignment,
            v.metric,
            f"{v.horizon} x {v.interval}",
            str(v.min_samples),
            ", ".join(map(str, v.accounts)),
            ", ".join(x.name + (" (control)" if x.is_control else "") for x in v.variants),
            f"{v.expected_daily_cost_usd:.4f}",
            f"{v.started_cycle:%Y-%m-%d %H:%M}",
        )
    Console().print(table if views else "no experiment")


@experiments_app.command("results")
def results(
    experiment_id: Annotated[int, typer.Argument(help="The experiment's id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
) -> None:
    """Each variant's decisions, cost, metric with its interval, and the verdict against the control."""

    async def work(agent: Agent) -> ExperimentResults:
        return await agent.experiments.results(experiment_id)

    found = _run(work)
    if as_json:
        typer.echo(found.model_dump_json())
        return
    _print_results(found)


@experiments_app.command("stop")
def stop(
    experiment_id: Annotated[int, typer.Argument(help="The experiment's id")],
    reason: Annotated[str | None, typer.Option(help="Why (stored with it)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the experiment as JSON")] = False,
) -> None:
    """Stop an experiment: its accounts decide with their own settings again; its results stay."""

    async def work(agent: Agent) -> ExperimentView:
        return await agent.experiments.stop(experiment_id, reason)

    view = _run(work)
    if as_json:
        typer.echo(view.model_dump_json())
        return
    typer.echo(f"experiment {view.id} ({view.name}) stopped" + (f": {reason}" if reason else ""))


def _print_experiment(view: ExperimentView) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"experiment [bold]{view.id}[/bold] {view.name!r} {view.status}: {view.assignment} on account(s) "
        f"{', '.join(map(str, view.accounts))}; {view.metric} at {view.horizon} x {view.interval}, "
        f"verdict after {view.min_samples} cycles per variant; seed {view.seed}"
    )
    console.print(
        f"expected daily cost {view.expected_daily_cost_usd:.4f} USD ({view.extra_daily_cost_usd:.4f} USD more than "
        "the accounts' own decisions)"
    )
    table = Table("variant", "model", "strategy", "prompt", "temperature", "weight", "accounts")
    table.add_column("USD/day", justify="right")
    table.add_column("budget USD/day", justify="right")
    for v in view.variants:
        table.add_row(
            v.name + (" (control)" if v.is_control else ""),
            v.model or "(account's)",
            v.strategy_id or "(account's)",
            v.prompt_version or "v1",
            "" if v.temperature is None else f"{v.temperature:g}",
            f"{v.weight:g}",
            ", ".join(map(str, v.accounts)),
            f"{v.expected_daily_cost_usd:.4f}",
            "accounts'" if v.daily_budget_usd is None else f"{v.daily_budget_usd:.2f}",
        )
    console.print(table)


def _interval(found: Estimate | Difference | None) -> str:
    return "" if found is None else f"{found.value:.4g} [{found.low:.4g}, {found.high:.4g}]"


def _print_results(found: ExperimentResults) -> None:
    from rich.console import Console
    from rich.table import Table

    view = found.experiment
    console = Console()
    better = "higher" if view.higher_is_better else "lower"
    console.print(
        f"experiment [bold]{view.id}[/bold] {view.name!r} ({view.status}, {view.assignment}): {view.metric} at "
        f"{view.horizon} x {view.interval} ({better} is better), {view.confidence_level:.0%} intervals, verdict on "
        f"the first {view.min_samples} cycles"
    )
    table = Table("variant", "decisions", "fallback", "errors", "latency ms", "cost USD", "cycles")
    for name in (view.metric, "vs control", "p", "verdict"):
        table.add_column(name)
    for v in found.variants:
        table.add_row(
            v.name + (" (control)" if v.is_control else ""),
            f"{v.decisions}" + (f" ({v.shadow_decisions} shadow)" if v.shadow_decisions else ""),
            "" if v.fallback_rate is None else f"{v.fallback_rate:.0%}",
            "" if v.error_rate is None else f"{v.error_rate:.0%}",
            "" if v.mean_latency_ms is None else f"{v.mean_latency_ms:.0f}",
            f"{v.cost_usd:.4f}",
            f"{v.units_analysed}/{view.min_samples}",
            _interval(v.estimate),
            _interval(v.difference),
            "" if v.difference is None else f"{v.difference.p_value:.3g}",
            "control" if v.is_control else (v.verdict or ""),
        )
    console.print(table)
    for v in found.variants:
        console.print(f"{v.name}: {v.note}")
