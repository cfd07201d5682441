"""Table-driven exits of one position (in the style of freqtrade's backtest-detail tests).

Each scenario opens 0.01 BTC at a mark of `entry` with `leverage`, rests a stop and a take-profit, feeds OHLC
rows and expects one exit: its reason, the candle it happened in, its price, the total fees (entry + exit)
and the realized PnL. Binance fees: taker 5 bps; slippage 0 unless the scenario says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from app.core.clock import ManualClock
from app.services.exchange.base import FEE_PROFILES, FillReason, OrderRequest, OrderSide, PositionSide
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import Candle, MarketRules

QTY = 0.01
TAKER = 5e-4
RULES = {"BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=5.0, max_leverage=125)}


def long_lp(entry: float, leverage: float, mmr: float = 0.004) -> float:
    return (QTY * entry - QTY * entry / leverage) / (QTY * (1 - mmr))


def short_lp(entry: float, leverage: float, mmr: float = 0.004) -> float:
    return (QTY * entry + QTY * entry / leverage) / (QTY * (1 + mmr))


@dataclass(frozen=True)
class Scenario:
    name: str
    side: PositionSide
    entry: float
    stop: float
    take_profit: float
    leverage: float
    candles: list[tuple[float, float, float, float]]  # open, high, low, close
    exit_reason: FillReason
    exit_candle: int
    exit_price: float
    fees: float  # entry + exit
    realized_pnl: float
    slippage_bps: float = 0.0


SCENARIOS = [
    Scenario(
        "long take-profit",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 101_000, 99_500, 100_800), (100_800, 103_500, 100_500, 103_200)],
        "take_profit", 1, 103_000, 0.5 + 103_000 * QTY * TAKER, 30.0,
    ),
    Scenario(
        "long stop-loss on a bearish candle",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 100_500, 97_500, 97_800)],
        "stop_loss", 0, 98_000, 0.5 + 98_000 * QTY * TAKER, -20.0,
    ),
    Scenario(
        "long: stop and target in one bullish candle -> stop first",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 103_500, 97_500, 103_200)],
        "stop_loss", 0, 98_000, 0.5 + 98_000 * QTY * TAKER, -20.0,
    ),
    Scenario(
        "long: quiet candles, then the target",
        "long",
        100_000, 98_000, 103_000, 10,
        [
            (100_000, 100_900, 99_100, 100_200),
            (100_200, 101_500, 99_800, 101_400),
            (101_400, 104_000, 101_000, 103_900),
        ],
        "take_profit", 2, 103_000, 0.5 + 103_000 * QTY * TAKER, 30.0,
    ),
    Scenario(
        "long: gap down through the stop fills at the open",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 100_200, 99_800, 100_100), (97_000, 97_500, 96_000, 96_500)],
        "stop_loss", 1, 97_000, 0.5 + 97_000 * QTY * TAKER, -30.0,
    ),
    Scenario(
        "long: gap up through the target fills at the open",
        "long",
        100_000, 98_000, 103_000, 10,
        [(104_000, 104_500, 103_800, 104_200)],
        "take_profit", 0, 104_000, 0.5 + 104_000 * QTY * TAKER, 40.0,
    ),
    Scenario(
        "long: liquidation before a stop placed below it",
        "long",
        100_000, 85_000, 103_000, 10,
        [(100_000, 100_100, 84_000, 89_500)],
        "liquidation", 0, long_lp(100_000, 10), 0.5 + long_lp(100_000, 10) * QTY * TAKER,
        (long_lp(100_000, 10) - 100_000) * QTY,
    ),
    Scenario(
        "long: a stop above the liquidation price is reached first",
        "long",
        100_000, 95_000, 103_000, 10,
        [(100_000, 100_100, 84_000, 89_500)],
        "stop_loss", 0, 95_000, 0.5 + 95_000 * QTY * TAKER, -50.0,
    ),
    Scenario(
        "long: gap through liquidation loses the margin, fee paid from what is left (nothing)",
        "long",
        100_000, 96_000, 103_000, 20,
        [(90_000, 90_500, 89_000, 89_500)],
        "liquidation", 0, 90_000, 0.5, -50.0,
    ),
    Scenario(
        "long, bearish path O-H-L-C: target before liquidation (no stop touched)",
        "long",
        100_000, 80_000, 103_000, 10,
        [(100_000, 103_500, 89_000, 99_500)],
        "take_profit", 0, 103_000, 0.5 + 103_000 * QTY * TAKER, 30.0,
    ),
    Scenario(
        "long, bullish path O-L-H-C: liquidation before target (no stop touched)",
        "long",
        100_000, 80_000, 103_000, 10,
        [(100_000, 103_500, 89_000, 100_500)],
        "liquidation", 0, long_lp(100_000, 10), 0.5 + long_lp(100_000, 10) * QTY * TAKER,
        (long_lp(100_000, 10) - 100_000) * QTY,
    ),
    Scenario(
        "short stop-loss on a bullish candle",
        "short",
        100_000, 102_000, 97_000, 10,
        [(100_000, 102_500, 99_800, 102_300)],
        "stop_loss", 0, 102_000, 0.5 + 102_000 * QTY * TAKER, -20.0,
    ),
    Scenario(
        "short take-profit on a bearish candle",
        "short",
        100_000, 102_000, 97_000, 10,
        [(100_000, 100_300, 96_500, 96_800)],
        "take_profit", 0, 97_000, 0.5 + 97_000 * QTY * TAKER, 30.0,
    ),
    Scenario(
        "short: stop and target in one bearish candle -> stop first",
        "short",
        100_000, 102_000, 97_000, 10,
        [(100_000, 102_500, 96_500, 99_000)],
        "stop_loss", 0, 102_000, 0.5 + 102_000 * QTY * TAKER, -20.0,
    ),
    Scenario(
        "short: gap up through the stop fills at the open",
        "short",
        100_000, 102_000, 97_000, 10,
        [(103_000, 103_500, 102_500, 103_200)],
        "stop_loss", 0, 103_000, 0.5 + 103_000 * QTY * TAKER, -30.0,
    ),
    Scenario(
        "short liquidation",
        "short",
        100_000, 115_000, 97_000, 10,
        [(100_000, 111_000, 99_900, 110_000)],
        "liquidation", 0, short_lp(100_000, 10), 0.5 + short_lp(100_000, 10) * QTY * TAKER,
        (100_000 - short_lp(100_000, 10)) * QTY,
    ),
    Scenario(
        "long stop with 1 bp slippage on entry and exit",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 100_500, 97_500, 97_800)],
        "stop_loss", 0, 98_000 * 0.9999, (100_010 + 98_000 * 0.9999) * QTY * TAKER,
        (98_000 * 0.9999 - 100_010) * QTY, slippage_bps=1.0,
    ),
    Scenario(
        "short target with 1 bp slippage on entry and exit",
        "short",
        100_000, 102_000, 97_000, 10,
        [(100_000, 100_300, 96_500, 96_800)],
        "take_profit", 0, 97_000 * 1.0001, (99_990 + 97_000 * 1.0001) * QTY * TAKER,
        (99_990 - 97_000 * 1.0001) * QTY, slippage_bps=1.0,
    ),
]  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario(scenario: Scenario) -> None:
    fees = replace(FEE_PROFILES["binanceusdm"], slippage_bps=scenario.slippage_bps)
    venue = PaperVenue(
        initial_balance=10_000.0, rules=RULES, fees=fees, clock=ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    )
    await venue.set_leverage("BTC", scenario.leverage)
    venue.set_mark_price("BTC", scenario.entry)
    entry_side: OrderSide = "buy" if scenario.side == "long" else "sell"
    exit_side: OrderSide = "sell" if scenario.side == "long" else "buy"
    orders = [
        OrderRequest("entry", "BTC", entry_side, "market", QTY),
        OrderRequest("sl", "BTC", exit_side, "stop_market", QTY, scenario.stop, reduce_only=True),
        OrderRequest("tp", "BTC", exit_side, "take_profit_market", QTY, scenario.take_profit, reduce_only=True),
    ]
    for request in orders:
        placed = await venue.place_order(request)
        assert placed.status != "rejected", placed.reject_reason

    exits = []
    for index, (o, h, low, c) in enumerate(scenario.candles):
        for fill in venue.on_candle("BTC", Candle(index * 60_000, o, h, low, c, 1.0)):
            exits.append((index, fill))

    assert len(exits) == 1
    index, fill = exits[0]
    assert fill.reason == scenario.exit_reason
    assert index == scenario.exit_candle
    assert fill.quantity == QTY
    assert fill.price == pytest.approx(scenario.exit_price, rel=1e-12)
    assert fill.realized_pnl == pytest.approx(scenario.realized_pnl, abs=1e-9)
    balance = await venue.fetch_balance()
    assert balance.fees_paid == pytest.approx(scenario.fees, abs=1e-9)
    assert balance.realized_pnl == pytest.approx(scenario.realized_pnl, abs=1e-9)
    assert balance.wallet_balance == pytest.approx(10_000.0 + scenario.realized_pnl - scenario.fees, abs=1e-9)
    assert balance.margin_used == 0.0
    assert await venue.fetch_positions() == []
    assert await venue.fetch_open_orders() == []
