"""What followed one asset decision: the pure arithmetic of a decision outcome.

A decision leaves each asset with an exposure, its `direction` (+1 long, -1 short, 0 flat), and maybe a stop and
a target. The direction comes from the action the model proposed (the validator's verdict may have refused or
changed it: the outcome judges the proposal), or from the fallback's hold when the model gave none:

- buy +1, sell -1, with the stop and target the proposal named;
- close_position 0;
- hold, adjust_orders, adjust_position: the side of the position open at the decision (0 without one), with its
  stop and target, or the new ones an adjustment names (a cancelled one is gone).

Its outcome at a horizon of h candles of INTERVAL is measured on the h candles opening at the decision's cycle
time (the decision's price is the close of the candle before, the newest closed when it was made) once the last
of them has closed: the return of the direction from the decision's price to that candle's close, the largest
adverse and favourable excursions over their lows and highs, and whether the stop or the target would have been
reached first. That last question is answered the way the paper venue fills protective orders (see
`app.services.exchange.paper`): each candle is walked along `candle_path` (O-L-H-C when it closed up, else
O-H-L-C); when a stop and a target are both reached inside one candle the stop counts as first (pessimistic),
unless the target was already reached at the candle's open (a gap is not a guess).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

from app.core.timeframes import from_ms
from app.services.exchange.paper_math import Direction, candle_path, first_touch
from app.services.market_data.base import Candle

FirstHit = Literal["stop", "target", "none"]
_SIDES = {"long": 1, "short": -1}


class AssetState(TypedDict):
    """One asset as a decision saw it (`decisions.asset_state[asset]`, see `app.services.evaluation.asset_state`)."""

    price: float  # the context's current price: the close of the newest closed INTERVAL candle
    position: Literal["long", "short"] | None
    stop: float | None
    target: float | None


def asset_state_of_snapshot(snapshot: Mapping[str, Any]) -> dict[str, AssetState]:
    """What `app.services.evaluation.asset_state.asset_state_of` gives (`decisions.asset_state`), read from a
    stored context instead (`decision_provenance.context_snapshot`, a dumped `TradingContext`) for the decisions
    stored before that column: as plain JSON, so that contexts stored by older versions of the schema read too."""
    positions = {p["symbol"]: p for p in (snapshot.get("account_state") or {}).get("open_positions") or []}
    state: dict[str, AssetState] = {}
    for asset, data in ((snapshot.get("market_data") or {}).get("assets") or {}).items():
        position = positions.get(asset)
        state[asset] = AssetState(
            price=float(data["current_price"]),
            position=position["side"] if position is not None else None,
            stop=position.get("stop_loss") if position is not None else None,
            target=position.get("take_profit") if position is not None else None,
        )
    return state


@dataclass(frozen=True, slots=True)
class AssetCall:
    """What one asset decision left, as its outcome is measured."""

    asset: str
    action: str  # the proposed action (a fallback's: hold)
    verdict: str  # accepted | adjusted | rejected | fallback
    direction: int  # +1 long, -1 short, 0 flat
    confidence: float | None  # the model's (None for a fallback: no model spoke)
    entry_price: float
    stop: float | None
    target: float | None


def call_of(verdict: Mapping[str, Any], state: Mapping[str, Any] | None) -> AssetCall | None:
    """The call of one verdict (an `AssetVerdict` dumped as JSON) on the asset as the decision saw it; None when
    the decision had no price for the asset (nothing to measure from)."""
    price = state.get("price") if state is not None else None
    if state is None or price is None or price <= 0:
        return None
    original = verdict.get("original")
    proposed = original if original is not None else verdict["final"]
    action = proposed["action"]
    stop, target = state.get("stop"), state.get("target")
    if action in ("buy", "sell"):
        direction = 1 if action == "buy" else -1
        stop, target = proposed.get("sl_price"), proposed.get("tp_price")
    elif action == "close_position":
        direction = 0
    else:  # hold, adjust_orders, adjust_position: the position stays as it is
        direction = _SIDES.get(state.get("position") or "", 0)
        if action == "adjust_orders":
            stop, target = _adjusted(proposed.get("order_adjustment") or {}, stop, target)
        elif action == "adjust_position":
            change = proposed.get("position_adjustment") or {}
            stop, target = change.get("new_sl_price") or stop, change.get("new_tp_price") or target
    if direction == 0:
        stop = target = None
    return AssetCall(
        asset=verdict["asset"],
        action=action,
        verdict=verdict["status"] if original is not None else "fallback",
        direction=direction,
        confidence=original.get("confidence") if original is not None else None,
        entry_price=float(price),
        stop=stop,
        target=target,
    )


def _adjusted(change: Mapping[str, Any], stop: float | None, target: float | None) -> tuple[float | None, float | None]:
    """The stop and target an `adjust_orders` leaves, as the executor applies it: a new price replaces the old one
    (and wins over a cancel sent with it); a target can be cancelled, a stop never is (every position keeps one)."""
    if change.get("new_sl_price") is not None:
        stop = change["new_sl_price"]
    if change.get("new_tp_price") is not None:
        target = change["new_tp_price"]
    elif change.get("cancel_tp"):
        target = None
    return stop, target


@dataclass(frozen=True, slots=True)
class Outcome:
    """What followed a call over the candles of one horizon (the columns of `decision_outcomes`)."""

    exit_price: float  # the close of the horizon's last candle
    market_return: float  # exit / entry - 1
    direction_return: float  # direction x market_return (0 when flat)
    max_adverse: float | None  # >= 0, a fraction of the entry against the direction; None when flat
    max_favourable: float | None
    first_hit: FirstHit | None  # None when flat
    first_hit_at: datetime | None  # the open time of the candle it happened in
    hit: bool | None  # direction_return > 0; None when flat


def measure(call: AssetCall, candles: Sequence[Candle]) -> Outcome:
    """The outcome of `call` over `candles`: the horizon's candles, oldest first, every one of them closed."""
    if not candles:
        raise ValueError("a horizon has at least one candle")
    entry = call.entry_price
    exit_price = candles[-1].close
    market_return = exit_price / entry - 1.0
    if call.direction == 0:
        return Outcome(exit_price, market_return, 0.0, None, None, None, None, None)
    rise = max(0.0, max(c.high for c in candles) / entry - 1.0)
    fall = max(0.0, 1.0 - min(c.low for c in candles) / entry)
    adverse, favourable = (fall, rise) if call.direction > 0 else (rise, fall)
    first_hit, first_hit_at = _first_hit(call, candles)
    direction_return = call.direction * market_return
    return Outcome(
        exit_price=exit_price,
        market_return=market_return,
        direction_return=direction_return,
        max_adverse=adverse,
        max_favourable=favourable,
        first_hit=first_hit,
        first_hit_at=first_hit_at,
        hit=direction_return > 0,
    )


def _first_hit(call: AssetCall, candles: Sequence[Candle]) -> tuple[FirstHit, datetime | None]:
    """Which of the stop and the target the candles reach first, and the open time of that candle."""
    if call.stop is None and call.target is None:
        return "none", None
    stop_way: Direction = "down" if call.direction > 0 else "up"
    target_way: Direction = "up" if call.direction > 0 else "down"
    for candle in candles:
        path = candle_path(candle)
        stop_at = first_touch(path, call.stop, stop_way) if call.stop is not None else None
        target_at = first_touch(path, call.target, target_way) if call.target is not None else None
        if stop_at is None and target_at is None:
            continue
        at = from_ms(candle.open_time_ms)
        # the venue's stop-first rule: inside one candle the stop goes first, unless the target gapped at the open
        if target_at is not None and (stop_at is None or (target_at == 0.0 and stop_at > 0.0)):
            return "target", at
        return "stop", at
    return "none", None
