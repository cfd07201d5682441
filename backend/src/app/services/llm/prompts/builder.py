"""Render a strategy and a `TradingContext` into the system and user prompts (Jinja2; strategies' templates
sandboxed)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from app.schemas.trading_decision import MarketContext, TradingContext, TradingDecision, TradingStrategy

PROMPTS_DIR = Path(__file__).parent
MAX_COMPILED_TEMPLATES = 64  # built-in and custom strategies; a bound so edited templates cannot pile up
MAX_MARKET_SECTIONS = 8  # rendered market sections kept (one per candle and set of assets)
# Prompt versions an A/B experiment can compare (the name -> what it changes). `v1` is the prompt every decision
# gets unless an experiment's variant names another.
DEFAULT_PROMPT_VERSION = "v1"
PROMPT_VERSIONS = {
    "v1": "the full prompt: account, open positions, the account's performance and recent trades, the market",
    "lean": "v1 without the account's own performance and recent trades (does its record help the model?)",
}

ANSWER_FORMAT = """Answer with one JSON object and nothing else, matching this JSON schema:
{schema}
One entry in "decisions" per asset. Actions: buy/sell open a position (sl_price required, on the losing side
of the price; tp_price on the winning side); close_position closes one; adjust_orders moves its TP/SL;
adjust_position increases or decreases it; hold does nothing. total_allocation_usd is the sum of the buy/sell
allocations."""


def _fmt(series: list[float] | None, count: int = 3) -> str:
    if not series:
        return "n/a"
    return ", ".join(f"{v:.6g}" for v in series[-count:])


def _num(value: float | None) -> str:
    """A price or size with 7 significant figures (no float noise), or n/a."""
    return "n/a" if value is None else f"{value:.7g}"


def _environment(kind: type[Environment] = SandboxedEnvironment) -> Environment:
    """A Jinja environment of `kind` with the prompt filters: sandboxed for strategies' templates (users edit
    them), plain for the built-in decision templates (ours: the sandbox's check of every attribute they read cost
    ~0.6 s in 500 cycles, half of their rendering)."""
    env = kind(undefined=StrictUndefined, autoescape=False, trim_blocks=False)
    env.filters["fmt"] = _fmt
    env.filters["num"] = _num
    return env


@lru_cache(maxsize=1)
def decision_schema_json() -> str:
    """The compact JSON schema of `TradingDecision` that the model must answer with."""
    return json.dumps(TradingDecision.model_json_schema(), separators=(",", ":"))


def read_template(name: str) -> str:
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


class PromptBuilder:
    """Renders prompts; a template error is reported as a ValueError with the reason."""

    def __init__(self, *, interval: str, long_interval: str) -> None:
        self.interval = interval
        self.long_interval = long_interval
        self._env = _environment()
        builtin = _environment(Environment)
        self._user = builtin.from_string(read_template("decision_user.j2"))
        self._market = builtin.from_string(read_template("decision_market.j2"))
        self._compiled: dict[str, Template] = {}  # strategy templates by their text: compiled once
        # The market section by the market context it shows: every account of a cycle shares that context (the
        # context builder builds it once per candle), so the section is rendered once, not once per account.
        # The context is kept with its text, so its id cannot be reused while the entry lives.
        self._market_sections: dict[tuple[int, str, str], tuple[MarketContext, str]] = {}

    def _compile(self, source: str) -> Template:
        template = self._compiled.get(source)
        if template is None:
            if len(self._compiled) >= MAX_COMPILED_TEMPLATES:
                self._compiled.pop(next(iter(self._compiled)))
            template = self._compiled[source] = self._env.from_string(source)
        return template

    def render_strategy(self, strategy: TradingStrategy) -> str:
        try:
            template = self._compile(strategy.prompt_template)
            return template.render(
                risk=strategy.risk_parameters,
                max_positions=strategy.max_positions,
                strategy=strategy,
            ).strip()
        except TemplateError as exc:
            raise ValueError(f"strategy {strategy.strategy_id}: prompt template error: {exc}") from exc
        except Exception as exc:  # a strategy's own template can fail in other ways, e.g. range(10**9), 1/0
            raise ValueError(
                f"strategy {strategy.strategy_id}: prompt template error: {type(exc).__name__}: {exc}"
            ) from exc

    def build(
        self, context: TradingContext, strategy: TradingStrategy, prompt_version: str | None = None
    ) -> tuple[str, str]:
        """(system prompt, user prompt) for one decision, in `prompt_version` (one of PROMPT_VERSIONS; None: v1)."""
        version = prompt_version or DEFAULT_PROMPT_VERSION
        if version not in PROMPT_VERSIONS:
            raise ValueError(f"unknown prompt version {version!r}: one of {', '.join(PROMPT_VERSIONS)}")
        system = self.render_strategy(strategy) + "\n\n" + ANSWER_FORMAT.format(schema=decision_schema_json())
        interval = (context.market_data.timeframes or [self.interval])[0]
        long_interval = (context.market_data.timeframes or [self.interval, self.long_interval])[-1]
        user = self._user.render(
            ctx=context,
            acct=context.account_state,
            perf=context.account_state.recent_performance,
            risk=strategy.risk_parameters,
            market=self._market_section(context.market_data, interval, long_interval),
            symbols=context.symbols,
            interval=interval,
            long_interval=long_interval,
            show_record=version != "lean",
        )
        return system, user.strip()

    def _market_section(self, market: MarketContext, interval: str, long_interval: str) -> str:
        key = (id(market), interval, long_interval)
        cached = self._market_sections.get(key)
        if cached is not None and cached[0] is market:
            return cached[1]
        text = self._market.render(assets=market.assets, interval=interval, long_interval=long_interval)
        if len(self._market_sections) >= MAX_MARKET_SECTIONS:
            self._market_sections.pop(next(iter(self._market_sections)))
        self._market_sections[key] = (market, text)
        return text
