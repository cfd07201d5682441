"""Pure arithmetic for the paper venue: rounding, PnL, slippage, liquidation price, funding and the candle path.

Nothing here holds state; every function takes plain floats so it is cheap and easy to test.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from app.services.exchange.base import FeeProfile, LiquidationFormula, OrderSide, OrderType, Position, PositionSide
from app.services.market_data.base import Candle

Direction = Literal["down", "up"]  # "down": fires when price <= level; "up": when price >= level

_EPS = 1e-9


def step_decimals(step: float) -> int:
    """Return how many decimals a lot or tick size has (0.001 -> 3, 0.5 -> 1, 10 -> 0)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def snap(value: float, step: float) -> float:
    """Remove float noise by rounding to the decimals of `step`."""
    return round(value, step_decimals(step) + 2)


def round_down_to_step(value: float, step: float) -> float:
    """Round `value` down to a whole number of `step` (quantities)."""
    if step <= 0:
        return value
    return round(math.floor(value / step + _EPS) * step, step_decimals(step))


def round_to_tick(price: float, tick: float) -> float:
    """Round `price` to the nearest multiple of `tick` (trigger prices)."""
    if tick <= 0:
        return price
    return round(round(price / tick) * tick, step_decimals(tick))


def direction_of(side: PositionSide) -> float:
    """Return +1 for a long and -1 for a short."""
    return 1.0 if side == "long" else -1.0


def closing_side(side: PositionSide) -> OrderSide:
    """Return the order side that reduces a position of `side`."""
    return "sell" if side == "long" else "buy"


def position_side(side: OrderSide) -> PositionSide:
    """Return the position side an order of `side` opens."""
    return "long" if side == "buy" else "short"


def realized_pnl(side: PositionSide, entry: float, exit_price: float, quantity: float) -> float:
    """Return the gross PnL of closing `quantity` of a position opened at `entry` at `exit_price`."""
    return direction_of(side) * (exit_price - entry) * quantity


def with_slippage(price: float, side: OrderSide, slippage_bps: float) -> float:
    """Worsen a taker fill price against the trader: buys pay more, sells receive less."""
    factor = slippage_bps / 1e4
    return price * (1.0 + factor) if side == "buy" else price * (1.0 - factor)


def taker_slippage_bps(fees: FeeProfile, notional: float, quote_volume: float | None) -> float:
    """Return the slippage of a taker fill: `slippage_bps + impact * (notional / quote_volume * 100)`, capped.

    Each 1% of the last candle's quote volume that the order takes costs `fees.impact_bps_per_pct_volume`
    more, up to `fees.max_slippage_bps` in all; with no known volume (None or <= 0) the slippage is
    `fees.slippage_bps` alone. The cap never lowers `slippage_bps`.
    """
    base, impact = fees.slippage_bps, fees.impact_bps_per_pct_volume
    if quote_volume is None or quote_volume <= 0 or impact <= 0:
        return base
    return max(base, min(fees.max_slippage_bps, base + impact * notional / quote_volume * 100.0))


def order_reserve(quantity: float, price: float, leverage: float, maker_bps: float) -> float:
    """Return what a resting limit holds back: its initial margin plus its maker fee, both at its price."""
    return quantity * price * (1.0 / leverage + maker_bps / 1e4)


def not_beyond(price: float, side: OrderSide, limit: float | None) -> float:
    """Return `price`, but no worse than `limit` for an order of `side` (a buy pays at most `limit`)."""
    if limit is None:
        return price
    return min(price, limit) if side == "buy" else max(price, limit)


def funding_amount(side: PositionSide, size: float, mark: float, rate: float) -> float:
    """Return the signed funding of a position: size x mark x rate, paid by longs when the rate is positive."""
    return -direction_of(side) * size * mark * rate


def liquidation_price(side: PositionSide, size: float, entry: float, margin: float, mmr: float) -> float | None:
    """Return the Binance one-way isolated liquidation price (cum = 0), or None if it cannot be reached.

    long LP = (Q*EP - WB) / (Q*(1 - MMR)); short LP = (Q*EP + WB) / (Q*(1 + MMR)); WB = isolated margin.
    """
    if size <= 0:
        return None
    if side == "long":
        price = (size * entry - margin) / (size * (1.0 - mmr))
        return price if price > 0 else None
    return (size * entry + margin) / (size * (1.0 + mmr))


def hyperliquid_liquidation_price(
    side: PositionSide, size: float, entry: float, margin: float, max_leverage: float
) -> float | None:
    """Return Hyperliquid's isolated liquidation price, or None if it cannot be reached.

    liq = price - side * margin_available / size / (1 - l * side), l = 1 / (2 * max leverage),
    margin_available = isolated margin - maintenance margin, maintenance margin = l * size * entry.
    (Algebraically the Binance formula with MMR = l: at liq the margin left is l x the notional at liq.)
    """
    if size <= 0:
        return None
    rate = 1.0 / (2.0 * max_leverage)
    sign = direction_of(side)
    available = margin - rate * size * entry
    price = entry - sign * available / size / (1.0 - rate * sign)
    return price if price > 0 else None


def venue_liquidation_price(
    formula: LiquidationFormula,
    side: PositionSide,
    size: float,
    entry: float,
    margin: float,
    mmr: float,
    max_leverage: float,
) -> float | None:
    """Return the liquidation price by `formula` (`mmr` for Binance, `max_leverage` for Hyperliquid)."""
    if formula == "hyperliquid":
        return hyperliquid_liquidation_price(side, size, entry, margin, max_leverage)
    return liquidation_price(side, size, entry, margin, mmr)


def position_liquidation_price(fees: FeeProfile, position: Position, max_leverage: float) -> float | None:
    """Return the liquidation price of `position` by the venue's formula (`max_leverage` of its asset)."""
    mmr = fees.maintenance_rate(max_leverage)
    return venue_liquidation_price(
        fees.liquidation_formula, position.side, position.size, position.entry_price, position.margin, mmr, max_leverage
    )


def trigger_direction(side: OrderSide, order_type: OrderType) -> Direction:
    """Return which way the price must move to fire a conditional order.

    A sell stop (a long's stop) and a buy take-profit (a short's target) fire on the way down.
    """
    if order_type == "stop_market":
        return "down" if side == "sell" else "up"
    return "up" if side == "sell" else "down"


def limit_direction(side: OrderSide) -> Direction:
    """Return which way the price must move to fill a resting limit: a buy fills at or below its price."""
    return "down" if side == "buy" else "up"


def liquidation_direction(side: PositionSide) -> Direction:
    """Return which way the price must move to liquidate a position of `side`."""
    return "down" if side == "long" else "up"


def touched(price: float, level: float, direction: Direction) -> bool:
    """Return whether `price` is at or beyond `level` in `direction`."""
    return price <= level if direction == "down" else price >= level


def candle_path(candle: Candle) -> tuple[float, ...]:
    """Return the assumed intra-candle path: O-L-H-C if close >= open (dip, then rally), else O-H-L-C."""
    if candle.close >= candle.open:
        return (candle.open, candle.low, candle.high, candle.close)
    return (candle.open, candle.high, candle.low, candle.close)


def price_at(path: tuple[float, ...], when: float) -> float:
    """Return the price at path time `when` (linear along each leg)."""
    leg = min(int(when), len(path) - 1)
    if leg >= len(path) - 1:
        return path[-1]
    fraction = when - leg
    return path[leg] + (path[leg + 1] - path[leg]) * fraction


def first_touch(path: tuple[float, ...], level: float, direction: Direction, start: float = 0.0) -> float | None:
    """Return when the path first reaches `level` at or after path time `start` (0 = at the first point;
    i + f along leg i), or None."""
    down = direction == "down"
    first = path[0] if start == 0.0 else price_at(path, start)
    if (first <= level) if down else (first >= level):
        return start
    for leg in range(int(start), len(path) - 1):
        end = path[leg + 1]
        if (end <= level) if down else (end >= level):
            begin = path[leg]
            return max(start, leg + (begin - level) / (begin - end))
    return None
