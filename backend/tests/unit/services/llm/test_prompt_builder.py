"""The prompt builder: what the model is told, how big it is, and that strategy templates stay sandboxed."""

from __future__ import annotations

import json
import random
import re

import pytest
from jinja2.sandbox import SandboxedEnvironment

from app.schemas.trading_decision import (
    AssetMarketData,
    TechnicalIndicatorsSet,
    TradeHistory,
    TradingContext,
    TradingStrategy,
)
from app.services.llm.prompts.builder import PromptBuilder, _environment, decision_schema_json, read_template
from app.services.llm.strategy_manager import builtin_strategies
from tests import factories as f

PROMPT_BUDGET_CHARS = 12_000
PRICES = {"BTC": 97_123.456789, "ETH": 3_412.987654, "SOL": 187.6543219}


def noisy(rnd: random.Random, value: float, count: int = 10) -> list[float]:
    return [value * (1 + rnd.uniform(-0.01, 0.01)) for _ in range(count)]


def realistic_set(rnd: random.Random, price: float) -> TechnicalIndicatorsSet:
    """Ten points of every indicator with full float precision, as the indicator service gives them."""
    return TechnicalIndicatorsSet(
        ema_20=noisy(rnd, price),
        ema_50=noisy(rnd, price),
        macd=noisy(rnd, price * 0.001),
        macd_signal=noisy(rnd, price * 0.001),
        rsi=noisy(rnd, 55.0),
        bb_upper=noisy(rnd, price * 1.02),
        bb_middle=noisy(rnd, price),
        bb_lower=noisy(rnd, price * 0.98),
        atr=noisy(rnd, price * 0.004),
    )


def realistic_market(rnd: random.Random, symbol: str) -> AssetMarketData:
    price = PRICES[symbol]
    data = f.asset_market_data(
        symbol, price=price, interval=realistic_set(rnd, price), long_interval=realistic_set(rnd, price), history=24
    )
    history = [
        p.model_copy(update={"close": c}) for p, c in zip(data.price_history, noisy(rnd, price, 24), strict=True)
    ]
    return data.model_copy(update={"price_history": history})


@pytest.fixture
def strategy() -> TradingStrategy:
    return builtin_strategies()[0]


@pytest.fixture
def context(strategy: TradingStrategy) -> TradingContext:
    """Three assets on both timeframes, a long BTC and a short ETH with their exit plans."""
    rnd = random.Random(7)
    positions = [
        f.position("BTC", "long", current_price=PRICES["BTC"], exit_plan="Trail the stop under the 4h EMA20."),
        f.position("ETH", "short", current_price=PRICES["ETH"], exit_plan="Cover at the 3200 support."),
    ]
    return f.trading_context(
        account=f.account_context(positions=positions, active_strategy=strategy),
        market={s: realistic_market(rnd, s) for s in PRICES},
    )


def build(context: TradingContext, strategy: TradingStrategy) -> tuple[str, str]:
    return PromptBuilder(interval="5m", long_interval="4h").build(context, strategy)


def test_the_prompt_for_three_assets_and_two_positions_fits_the_budget(
    context: TradingContext, strategy: TradingStrategy
) -> None:
    system, user = build(context, strategy)
    size = len(system) + len(user)
    print(f"\nprompt size: system {len(system)} + user {len(user)} = {size} characters")
    assert size < PROMPT_BUDGET_CHARS


def test_the_prompt_states_its_units_and_timeframes(context: TradingContext, strategy: TradingStrategy) -> None:
    _, user = build(context, strategy)
    assert "All prices in USD" in user
    assert "Decision timeframe 5m, trend timeframe 4h" in user
    assert "allocation_usd is the margin you commit" in user
    assert "notional = allocation_usd x leverage (3.0x)" in user
    assert "taker 5.0 bps of notional" in user
    assert "equity 10000.00 USD" in user
    assert "Max margin per position 2500.00 USD" in user
    assert "Funding rate in %" in user


def test_series_are_labelled_and_rendered_oldest_to_newest(context: TradingContext, strategy: TradingStrategy) -> None:
    _, user = build(context, strategy)
    assert "Series are oldest -> newest" in user

    btc = context.market_data.assets["BTC"]
    closes = ", ".join(f"{p.close:.7g}" for p in btc.price_history[-10:])
    assert f"closes (5m): {closes}" in user
    # the last three EMA20 points of the decision timeframe, oldest first, newest (the current value) last
    ema = btc.technical_indicators.interval.ema_20
    assert ema is not None
    assert "EMA20 " + ", ".join(f"{v:.6g}" for v in ema[-3:]) in user
    for asset in ("BTC", "ETH", "SOL"):
        assert re.search(rf"^{asset}: price ", user, re.MULTILINE)
    assert user.count("  5m: EMA20") == 3
    assert user.count("  4h: EMA20") == 3


def test_open_positions_are_shown_with_their_stops_targets_and_exit_plans(
    context: TradingContext, strategy: TradingStrategy
) -> None:
    _, user = build(context, strategy)
    for position in context.account_state.open_positions:
        line = next(line for line in user.splitlines() if line.startswith(f"- {position.symbol} {position.side}"))
        assert f"SL {position.stop_loss:.7g}" in line
        assert f"TP {position.take_profit:.7g}" in line
        assert f"exit plan: {position.exit_plan}" in line
    assert "OPEN POSITIONS: none" not in user


def test_no_open_positions_is_said_explicitly(strategy: TradingStrategy) -> None:
    _, user = build(f.trading_context(account=f.account_context(active_strategy=strategy)), strategy)
    assert "OPEN POSITIONS: none" in user


def test_context_errors_reach_the_model(strategy: TradingStrategy) -> None:
    context = f.trading_context(["BTC", "ETH"], market={"BTC": f.asset_market_data("BTC")}, errors=["ETH: stale data"])
    _, user = build(context, strategy)
    assert "DATA PROBLEMS: ETH: stale data" in user
    assert "Decide for each of: BTC, ETH." in user


def test_the_system_prompt_carries_the_strategy_rules_and_the_json_schema(
    context: TradingContext, strategy: TradingStrategy
) -> None:
    system, _ = build(context, strategy)
    assert "Risk at most 0.5% of equity per trade" in system
    assert "at most 3 open positions" in system
    assert decision_schema_json() in system
    schema = json.loads(decision_schema_json())
    assert set(schema["required"]) >= {"decisions", "total_allocation_usd", "portfolio_risk_level"}
    assert "sl_price required" in system


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("Risk {{ risk.nope }}%.", "nope"),
        ("{% if risk.max_leverage > 2 %}high", "end of template"),
        ("{{ risk.max_leverage ", "end of print statement"),
        ("{% for x in range(10**9) %}{% endfor %}", "Range too big"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_a_strategy_template_error_is_a_value_error_with_the_reason(template: str, reason: str) -> None:
    bad = f.strategy(prompt_template=template, strategy_id="broken")
    with pytest.raises(ValueError, match="strategy broken: prompt template error") as info:
        PromptBuilder(interval="5m", long_interval="4h").render_strategy(bad)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ risk.__class__ }}",
        "{{ strategy.__dict__ }}",
        "{{ risk.__init__.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_unsafe_template_access(template: str) -> None:
    bad = f.strategy(prompt_template=template)
    with pytest.raises(ValueError, match="unsafe"):
        PromptBuilder(interval="5m", long_interval="4h").render_strategy(bad)


def test_a_template_error_stops_the_whole_build(context: TradingContext) -> None:
    bad = f.strategy(prompt_template="{{ risk.nope }}")
    with pytest.raises(ValueError, match="nope"):
        build(context, bad)


def test_the_market_section_is_rendered_once_per_market_context(
    context: TradingContext, strategy: TradingStrategy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every account of a cycle shares the cycle's market context: its section is rendered for the first and
    reused for the others, each still with its own account; a different market context gets its own."""
    builder = PromptBuilder(interval="5m", long_interval="4h")
    renders: list[object] = []
    render = builder._market.render
    monkeypatch.setattr(builder._market, "render", lambda **kw: renders.append(kw) or render(**kw))

    _, first = builder.build(context, strategy)
    poorer = context.model_copy(update={"account_state": f.account_context(balance=1_234.5, active_strategy=strategy)})
    _, second = builder.build(poorer, strategy)
    assert len(renders) == 1
    assert "equity 1234.50 USD" in second and "equity 1234.50 USD" not in first
    assert first.split("\nBTC: price ")[1] == second.split("\nBTC: price ")[1]  # the same market lines

    moved = context.market_data.model_copy(
        update={"assets": {**context.market_data.assets, "BTC": f.asset_market_data("BTC", price=50_000.0)}}
    )
    _, third = builder.build(context.model_copy(update={"market_data": moved}), strategy)
    assert len(renders) == 2
    assert "BTC: price 50000;" in third


@pytest.mark.parametrize("version", ["v1", "lean"])
def test_the_built_in_templates_render_the_same_text_outside_the_sandbox(
    context: TradingContext, strategy: TradingStrategy, version: str
) -> None:
    """The decision templates (ours) render in a plain Jinja environment, for speed: byte for byte the text the
    sandbox gives, on a context with positions, trades, data problems, a missing funding rate and liquidation."""
    trade = TradeHistory(
        symbol="BTC",
        side="short",
        size=0.0123456,
        entry_price=97_000.123456,
        exit_price=96_500.987654,
        realized_pnl=6.1234567,
        fees=0.987654,
        exit_reason="take_profit",
        closed_at=f.NOW,
    )
    eth = context.market_data.assets["ETH"].model_copy(update={"funding_rate": None, "open_interest": None})
    positions = [*context.account_state.open_positions]
    positions[1] = positions[1].model_copy(update={"liquidation_price": None, "take_profit": None})
    assets = {**context.market_data.assets, "ETH": eth}
    full = context.model_copy(
        update={
            "recent_trades": {"BTC": [trade, trade.model_copy(update={"side": "long", "realized_pnl": -3.5})]},
            "errors": ["SOL: funding rate unavailable", "ETH: open interest unavailable"],
            "market_data": context.market_data.model_copy(update={"assets": assets}),
            "account_state": context.account_state.model_copy(update={"open_positions": positions}),
        }
    )
    plain = PromptBuilder(interval="1h", long_interval="4h")
    sandboxed = PromptBuilder(interval="1h", long_interval="4h")
    sandbox = _environment()
    sandboxed._user = sandbox.from_string(read_template("decision_user.j2"))
    sandboxed._market = sandbox.from_string(read_template("decision_market.j2"))
    assert isinstance(sandbox, SandboxedEnvironment)
    assert not isinstance(plain._user.environment, SandboxedEnvironment)
    assert not isinstance(plain._market.environment, SandboxedEnvironment)

    system, user = plain.build(full, strategy, version)
    assert (system, user) == sandboxed.build(full, strategy, version)
    assert ("RECENT BTC TRADES" in user) == (version == "v1")
    assert "DATA PROBLEMS" in user and "funding n/a" in user and "liq n/a" in user
