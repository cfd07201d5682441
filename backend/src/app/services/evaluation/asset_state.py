"""What each asset was when a decision was made, as its context showed it: the price the decision is measured
from and the position it held (a hold keeps that position's direction, stop and target)."""

from __future__ import annotations

from typing import Any

from app.schemas.trading_decision import TradingContext


def asset_state_of(context: TradingContext) -> dict[str, dict[str, Any]]:
    """`{asset: {"price", "position": "long" | "short" | None, "stop", "target"}}` for the context's assets (those
    with market data: the others have no price to measure from)."""
    positions = {p.symbol: p for p in context.account_state.open_positions}
    state: dict[str, dict[str, Any]] = {}
    for asset, data in context.market_data.assets.items():
        position = positions.get(asset)
        state[asset] = {
            "price": data.current_price,
            "position": position.side if position is not None else None,
            "stop": position.stop_loss if position is not None else None,
            "target": position.take_profit if position is not None else None,
        }
    return state
