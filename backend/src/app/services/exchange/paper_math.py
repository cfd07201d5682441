"""Pure arithmetic for the paper venue: rounding, PnL, slippage, liquidation price and the candle path.

Nothing here holds state; every function takes plain floats so it is cheap and easy to test.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from app.services.exchange.base import OrderSide, OrderType, PositionSide
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


def trigger_direction(side: OrderSide, order_type: OrderType) -> Direction:
    """Return which way the price must move to fire a conditional order.

    A sell stop (a long's stop) and a buy take-profit (a short's target) fire on the way down.
    """
    if order_type == "stop_market":
        return "down" if side == "sell" else "up"
    return "up" if side == "sell" else "down"


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


def first_touch(path: tuple[float, ...], level: float, direction: Direction) -> float | None:
    """Return when the path first reaches `level` (0 = at the first point; i + f along leg i), or None."""
    if touched(path[0], level, direction):
        return 0.0
    for leg in range(len(path) - 1):
        start, end = path[leg], path[leg + 1]
        if touched(end, level, direction):
            return leg + (start - level) / (start - end)
    return None
