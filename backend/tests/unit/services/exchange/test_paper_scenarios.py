"""Table-driven scenarios (in the style of freqtrade's backtest-detail tests).

Exits: each scenario opens 0.01 BTC at a mark of `entry` with `leverage`, rests a stop and a take-profit,
feeds OHLC rows and expects one exit: its reason, the candle it happened in, its price, the total fees
(entry + exit) and the realized PnL. Binance fees (taker 5 bps) unless the row says hyperliquid (taker 4.5
bps, BTC max leverage 40); slippage 0 and no volume impact unless the row says otherwise.
Limits: where and how a limit order fills (maker at its price, the open on a gap, taker when marketable).
Funding: who pays whom, and that the margin and the liquidation price do not move.
Liquidation: the known answers of both venues' formulas.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from app.core.clock import ManualClock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import FEE_PROFILES, FillReason, OrderRequest, OrderSide, PositionSide
from app.services.exchange.paper import PaperVenue
from app.services.market_data.base import Candle, MarketRules

QTY = 0.01
TAKER = 5e-4
RULES = {"BTC": MarketRules("BTC", "BTC/USDT:USDT", tick_size=0.1, lot_size=0.001, min_notional=5.0, max_leverage=125)}


HL_TAKER = 4.5e-4
HL_BTC_MMR = 1 / (2 * 40)  # Hyperliquid: l = 1 / (2 * max leverage)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


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
    impact_bps: float = 0.0  # extra bps per 1% of the previous candle's quote volume
    volume: float = 1.0  # base volume of every candle
    venue: str = "binanceusdm"


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
    Scenario(  # the target sees candle 0's quote volume 0.5 x 100,800: 1,030 USD is 2.0437% of it
        "long target with 1 bp + 2 bps per 1% of the last candle's quote volume",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 101_000, 99_500, 100_800), (100_800, 103_500, 100_500, 103_200)],
        "take_profit", 1, 103_000 * (1 - (1 + 2 * 1_030 / 50_400 * 100) / 1e4),
        (100_010 + 103_000 * (1 - (1 + 2 * 1_030 / 50_400 * 100) / 1e4)) * QTY * TAKER,
        (103_000 * (1 - (1 + 2 * 1_030 / 50_400 * 100) / 1e4) - 100_010) * QTY,
        slippage_bps=1.0, impact_bps=2.0, volume=0.5,
    ),
    Scenario(  # 10 bps + 2 bps x 20.4% would be 50.9 bps: the 100 bps cap is not reached
        "long stop on a thin candle: slippage grows with the order's share of the volume",
        "long",
        100_000, 98_000, 103_000, 10,
        [(100_000, 100_200, 99_900, 100_000), (100_000, 100_100, 97_000, 97_500)],
        "stop_loss", 1, 98_000 * (1 - (10 + 2 * 980 / 4_800 * 100) / 1e4),
        (100_100 + 98_000 * (1 - (10 + 2 * 980 / 4_800 * 100) / 1e4)) * QTY * TAKER,
        (98_000 * (1 - (10 + 2 * 980 / 4_800 * 100) / 1e4) - 100_100) * QTY,
        slippage_bps=10.0, impact_bps=2.0, volume=0.048,
    ),
    Scenario(
        "hyperliquid long liquidation near 91,139 (l = 1/80)",
        "long",
        100_000, 85_000, 103_000, 10,
        [(100_000, 100_100, 90_000, 90_500)],
        "liquidation", 0, long_lp(100_000, 10, HL_BTC_MMR),
        (100_000 + long_lp(100_000, 10, HL_BTC_MMR)) * QTY * HL_TAKER,
        (long_lp(100_000, 10, HL_BTC_MMR) - 100_000) * QTY, venue="hyperliquid",
    ),
    Scenario(
        "hyperliquid: a stop at 91,500 is above the liquidation price and goes first",
        "long",
        100_000, 91_500, 103_000, 10,
        [(100_000, 100_100, 90_000, 90_500)],
        "stop_loss", 0, 91_500, (100_000 + 91_500) * QTY * HL_TAKER, -85.0, venue="hyperliquid",
    ),
    Scenario(
        "hyperliquid short liquidation near 108,642",
        "short",
        100_000, 115_000, 97_000, 10,
        [(100_000, 109_000, 99_900, 108_900)],
        "liquidation", 0, short_lp(100_000, 10, HL_BTC_MMR),
        (100_000 + short_lp(100_000, 10, HL_BTC_MMR)) * QTY * HL_TAKER,
        (100_000 - short_lp(100_000, 10, HL_BTC_MMR)) * QTY, venue="hyperliquid",
    ),
]  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario(scenario: Scenario) -> None:
    fees = replace(
        FEE_PROFILES[scenario.venue], slippage_bps=scenario.slippage_bps, impact_bps_per_pct_volume=scenario.impact_bps
    )
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
        for fill in venue.on_candle("BTC", Candle(index * 60_000, o, h, low, c, scenario.volume)):
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
    assert balance.available == pytest.approx(balance.wallet_balance, abs=1e-9)
    assert balance.margin_used == 0.0
    assert await venue.fetch_positions() == []
    assert await venue.fetch_open_orders() == []


# ---- limit orders -------------------------------------------------------------------------------------

MAKER = 2e-4


@dataclass(frozen=True)
class LimitScenario:
    """Optionally hold 0.01 BTC (`holding`, opened at 100,000, with an optional stop), then place a limit of
    0.01 BTC at a mark of 100,000 and feed candles; `fills` lists (candle, reason, price, liquidity) of every
    fill after the placement, candle -1 meaning at placement."""

    name: str
    holding: PositionSide | None
    side: OrderSide
    price: float
    reduce_only: bool
    candles: list[tuple[float, float, float, float]]
    fills: list[tuple[int, FillReason, float, str]]
    stop: float | None = None
    slippage_bps: float = 0.0


LIMIT_SCENARIOS = [
    LimitScenario(
        "buy limit fills at its price on the way down, as maker",
        None, "buy", 99_000, False,
        [(100_000, 100_500, 99_500, 100_200), (100_200, 100_300, 98_500, 99_800)],
        [(1, "entry", 99_000, "maker")],
    ),
    LimitScenario(
        "buy limit on a gap down fills at the open (better than its price)",
        None, "buy", 99_000, False,
        [(98_000, 98_500, 97_500, 98_200)],
        [(0, "entry", 98_000, "maker")],
    ),
    LimitScenario(
        "buy limit never reached keeps resting",
        None, "buy", 99_000, False,
        [(100_000, 100_500, 99_000.1, 100_200)],
        [],
    ),
    LimitScenario(
        "sell limit opens a short on the way up",
        None, "sell", 101_000, False,
        [(100_000, 101_500, 99_900, 101_200)],
        [(0, "entry", 101_000, "maker")],
    ),
    LimitScenario(
        "marketable buy limit fills at once as taker at the mark",
        None, "buy", 100_500, False,
        [],
        [(-1, "entry", 100_000, "taker")],
    ),
    LimitScenario(
        "marketable buy limit: slippage never takes the fill above the limit",
        None, "buy", 100_050, False,
        [],
        [(-1, "entry", 100_050, "taker")], slippage_bps=10.0,
    ),
    LimitScenario(
        "a buy limit below a long adds to it",
        "long", "buy", 99_000, False,
        [(100_000, 100_100, 98_900, 99_500)],
        [(0, "increase", 99_000, "maker")],
    ),
    LimitScenario(
        "reduce-only sell limit takes profit at its price, as maker",
        "long", "sell", 103_000, True,
        [(100_000, 103_500, 99_800, 103_200)],
        [(0, "close", 103_000, "maker")],
    ),
    LimitScenario(
        "reduce-only limit target and stop in one candle: the stop goes first, the limit is canceled",
        "long", "sell", 103_000, True,
        [(100_000, 103_500, 97_500, 103_200)],
        [(0, "stop_loss", 98_000, "taker")], stop=98_000,
    ),
    LimitScenario(
        "a buy limit reached after a stop closed the long opens a new long in the same candle",
        "long", "buy", 97_000, False,
        [(100_000, 100_100, 96_000, 96_500)],
        [(0, "stop_loss", 98_000, "taker"), (0, "entry", 97_000, "maker")], stop=98_000,
    ),
]  # fmt: skip


@pytest.mark.parametrize("scenario", LIMIT_SCENARIOS, ids=[s.name for s in LIMIT_SCENARIOS])
async def test_limit_scenario(scenario: LimitScenario) -> None:
    fees = replace(FEE_PROFILES["binanceusdm"], slippage_bps=scenario.slippage_bps, impact_bps_per_pct_volume=0.0)
    venue = PaperVenue(initial_balance=10_000.0, rules=RULES, fees=fees, clock=ManualClock(T0), default_leverage=10)
    venue.set_mark_price("BTC", 100_000)
    if scenario.holding is not None:
        side: OrderSide = "buy" if scenario.holding == "long" else "sell"
        assert (await venue.place_order(OrderRequest("hold", "BTC", side, "market", QTY))).status == "filled"
        if scenario.stop is not None:
            stop = OrderRequest("sl", "BTC", "sell", "stop_market", QTY, scenario.stop, reduce_only=True)
            assert (await venue.place_order(stop)).status == "open"
    before = len(await venue.fetch_fills())
    request = OrderRequest("lim", "BTC", scenario.side, "limit", QTY, reduce_only=scenario.reduce_only)
    placed = await venue.place_order(replace(request, price=scenario.price))
    assert placed.status != "rejected", placed.reject_reason
    assert placed.price == scenario.price
    seen = [(-1, f) for f in (await venue.fetch_fills())[before:]]
    for index, (o, h, low, c) in enumerate(scenario.candles):
        seen.extend((index, f) for f in venue.on_candle("BTC", Candle(index * 60_000, o, h, low, c, 1.0)))

    got = [(i, f.reason, f.price, f.liquidity) for i, f in seen]
    assert got == [(i, r, pytest.approx(p, rel=1e-12), liq) for i, r, p, liq in scenario.fills]
    for _, fill in seen:
        rate = MAKER if fill.liquidity == "maker" else TAKER
        assert fill.fee == pytest.approx(fill.quantity * fill.price * rate, rel=1e-12)
    order = await venue.fetch_order("BTC", "lim")
    assert order is not None
    filled = any(f.client_order_id == "lim" for _, f in seen)
    assert order.status == ("filled" if filled else "canceled" if scenario.stop and scenario.reduce_only else "open")
    balance = await venue.fetch_balance()
    positions = await venue.fetch_positions()
    reserved = 0.0 if filled or scenario.reduce_only else QTY * scenario.price * (1 / 10 + MAKER)
    assert balance.margin_used == pytest.approx(sum(p.margin for p in positions) + reserved, abs=1e-9)
    assert balance.equity == pytest.approx(
        10_000.0 + balance.realized_pnl + balance.unrealized_pnl - balance.fees_paid, abs=1e-9
    )


# ---- funding ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundingScenario:
    name: str
    venue: str
    side: PositionSide
    rate: float
    mark: float | None  # None: settle at the current mark (100,000)
    amount: float  # > 0 received, < 0 paid


FUNDING_SCENARIOS = [
    FundingScenario("long pays on a positive rate", "binanceusdm", "long", 0.0001, None, -0.1),
    FundingScenario("short receives on a positive rate", "binanceusdm", "short", 0.0001, None, 0.1),
    FundingScenario("long receives on a negative rate", "binanceusdm", "long", -0.0002, 101_000, 0.202),
    FundingScenario("short pays on a negative rate", "binanceusdm", "short", -0.0002, 99_000, -0.198),
    FundingScenario("hyperliquid hourly: long pays 1/8 of 1 bp", "hyperliquid", "long", 0.0001 / 8, None, -0.0125),
    FundingScenario("zero rate: a payment of nothing", "hyperliquid", "short", 0.0, None, 0.0),
]  # fmt: skip


@pytest.mark.parametrize("scenario", FUNDING_SCENARIOS, ids=[s.name for s in FUNDING_SCENARIOS])
async def test_funding_scenario(scenario: FundingScenario) -> None:
    fees = replace(FEE_PROFILES[scenario.venue], slippage_bps=0.0)
    venue = PaperVenue(initial_balance=10_000.0, rules=RULES, fees=fees, clock=ManualClock(T0), default_leverage=10)
    venue.set_mark_price("BTC", 100_000)
    side: OrderSide = "buy" if scenario.side == "long" else "sell"
    await venue.place_order(OrderRequest("e", "BTC", side, "market", QTY))
    [before] = await venue.fetch_positions()
    at = datetime(2025, 1, 1, 8, tzinfo=UTC)

    payment = venue.apply_funding("BTC", scenario.rate, at, mark_price=scenario.mark)
    assert payment is not None
    assert payment.amount == pytest.approx(scenario.amount, abs=1e-12)
    assert (payment.position_side, payment.position_size, payment.rate) == (scenario.side, QTY, scenario.rate)
    assert payment.mark_price == (scenario.mark or 100_000)
    assert venue.apply_funding("BTC", scenario.rate, at) is None  # the same settlement again: nothing
    assert await venue.fetch_funding_payments() == [payment]

    balance = await venue.fetch_balance()
    assert balance.funding_paid == pytest.approx(max(0.0, -scenario.amount), abs=1e-12)
    assert balance.funding_received == pytest.approx(max(0.0, scenario.amount), abs=1e-12)
    entry_fee = QTY * 100_000 * fees.taker_bps / 1e4
    assert balance.wallet_balance == pytest.approx(10_000.0 - entry_fee + scenario.amount, abs=1e-9)
    [after] = await venue.fetch_positions()
    assert (after.margin, after.liquidation_price) == (before.margin, before.liquidation_price)


# ---- liquidation price known answers ------------------------------------------------------------------

LIQUIDATION_ANSWERS = [
    # venue, side, symbol, size, entry, margin, expected liquidation price, tolerance
    ("binanceusdm", "long", "BTC", 0.01, 100_000.0, 100.0, 90_361.0, 1.0),
    ("binanceusdm", "short", "BTC", 0.01, 100_000.0, 100.0, 109_562.0, 1.0),
    ("hyperliquid", "long", "BTC", 0.01, 100_000.0, 100.0, 91_139.0, 1.0),
    ("hyperliquid", "short", "BTC", 0.01, 100_000.0, 100.0, 1_100 / (0.01 * (1 + 1 / 80)), 1e-6),
    ("hyperliquid", "long", "ETH", 1.0, 3_000.0, 300.0, 2_700 / (1 - 1 / 50), 1e-6),  # max 25x: l = 1/50
    ("hyperliquid", "long", "SOL", 10.0, 200.0, 2_000.0, None, 0.0),  # 1x long: never liquidated
]


@pytest.mark.parametrize(
    ("venue_name", "side", "symbol", "size", "entry", "margin", "expected", "tolerance"), LIQUIDATION_ANSWERS
)
def test_liquidation_known_answers(
    venue_name: str,
    side: PositionSide,
    symbol: str,
    size: float,
    entry: float,
    margin: float,
    expected: float | None,
    tolerance: float,
) -> None:
    fees = FEE_PROFILES[venue_name]
    maximum = fees.max_leverage.get(symbol, 125.0)
    mmr = fees.maintenance_rate(maximum)
    got = pm.venue_liquidation_price(fees.liquidation_formula, side, size, entry, margin, mmr, maximum)
    if expected is None:
        assert got is None
        return
    assert got == pytest.approx(expected, abs=tolerance)
    # Hyperliquid's formula is Binance's with MMR = l: both agree when given the same rate.
    assert pm.liquidation_price(side, size, entry, margin, mmr) == pytest.approx(got, rel=1e-12)
