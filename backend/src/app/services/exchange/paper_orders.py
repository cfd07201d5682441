"""Orders of the paper venue without account state: request validation, and resting orders along a candle path.

`check` says why a request must be rejected; `schedule` turns the open orders of one symbol into events on
the path, `liquidation_event` adds the position's liquidation, `Event.key` sorts them. The rules are in the
module docstring of `app.services.exchange.paper`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.services.exchange import paper_math as pm
from app.services.exchange.base import FeeProfile, Order, OrderRequest, OrderSide, Position, PositionSide
from app.services.market_data.base import MarketRules

CONDITIONAL = ("stop_market", "take_profit_market")
AFTER_PATH = 10.0  # added to a target's path time to put it after every stop (stop-first rule)

LIQUIDATION, STOP, LIMIT, TARGET = 0, 1, 2, 3  # tie-break at equal path times


def limit_price(request: OrderRequest, rules: MarketRules | None) -> float | None:
    """Return the limit price of a limit request rounded to the tick (None for other types)."""
    if request.type != "limit" or request.price is None:
        return None
    return request.price if rules is None else pm.round_to_tick(request.price, rules.tick_size)


def build_order(
    request: OrderRequest,
    quantity: float,
    venue_order_id: str,
    now: datetime,
    rules: MarketRules | None,
    reject_reason: str | None = None,
) -> Order:
    """Return the order for `request`: rejected when `reject_reason` is given, else open.

    Trigger and limit prices are rounded to the tick (when the market is known); a field that does not
    belong to the order type is dropped.
    """
    trigger = request.trigger_price
    if trigger is not None and rules is not None:
        trigger = pm.round_to_tick(trigger, rules.tick_size)
    return Order(
        client_order_id=request.client_order_id,
        venue_order_id=venue_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        quantity=quantity,
        status="open" if reject_reason is None else "rejected",
        created_at=now,
        updated_at=now,
        trigger_price=trigger if request.type in CONDITIONAL else None,
        reduce_only=request.reduce_only,
        reason=request.reason,
        reject_reason=reject_reason,
        price=limit_price(request, rules),
    )


def marketable(side: OrderSide, limit: float, mark: float) -> bool:
    """Return whether a limit at `limit` would take liquidity at `mark` (a buy at or above the mark)."""
    return limit >= mark if side == "buy" else limit <= mark


def check(
    request: OrderRequest, rules: MarketRules | None, mark: float | None, position: Position | None, fees: FeeProfile
) -> str | None:
    """Return why `request` must be rejected on a market with `rules` (None: unknown) at `mark`, or None.

    Duplicates are the caller's to check. The minimum notional (the larger of the market's and the venue's)
    applies to orders that are not reduce-only, valued at the limit price of a limit that would rest.
    """
    if rules is None:
        return f"unknown symbol {request.symbol}"
    if mark is None:
        return f"no mark price yet for {request.symbol}"
    minimum = max(rules.min_notional, fees.min_notional)
    conditional = request.type in CONDITIONAL
    if conditional and not request.reduce_only:
        return "stop and take-profit orders must be reduce_only on this venue"
    if conditional and (request.trigger_price is None or request.trigger_price <= 0):
        return "stop and take-profit orders need a positive trigger price"
    limit = limit_price(request, rules)
    if request.type == "limit" and (limit is None or limit <= 0):
        return "limit orders need a positive price"
    quantity = pm.round_down_to_step(request.quantity, rules.lot_size)
    if quantity <= 0:
        return f"quantity {request.quantity} is zero after rounding to lot size {rules.lot_size}"
    reduces = position is not None and pm.closing_side(position.side) == request.side
    if request.reduce_only and not reduces:
        return "reduce-only order would not reduce the position"
    if conditional and request.trigger_price is not None:
        trigger = pm.round_to_tick(request.trigger_price, rules.tick_size)
        direction = pm.trigger_direction(request.side, request.type)
        if (direction == "down" and trigger >= mark) or (direction == "up" and trigger <= mark):
            return f"trigger {trigger} is on the wrong side of the mark price {mark}"
    reference = mark if limit is None or marketable(request.side, limit, mark) else limit
    if not request.reduce_only and quantity * reference < minimum:
        return f"notional {quantity * reference:.2f} below the minimum {minimum:g}"
    if reduces and not request.reduce_only and position is not None and quantity > position.size:
        return "order would flip the position; close it first"
    return None


def restorable(order: Order) -> bool:
    """Return whether `order` can rest on a restarted venue: an open stop, take-profit or priced limit."""
    priced = order.type == "limit" and order.price is not None and order.price > 0
    return order.status == "open" and (order.type in CONDITIONAL or priced)


@dataclass(frozen=True, slots=True)
class Event:
    """Something the path reaches: an order (or the liquidation when `order` is None)."""

    when: float  # sort time: path time, plus AFTER_PATH for targets pushed behind a stop
    kind: int
    rank: int  # age of the order among the symbol's open orders
    order: Order | None
    at: float  # real path time: 0.0 means at the first point (a gap, or a one-point path)
    level: float  # trigger, limit or liquidation price

    @property
    def key(self) -> tuple[float, int, int]:
        return (self.when, self.kind, self.rank)


def is_target(order: Order, closing: OrderSide | None) -> bool:
    """Return whether `order` is a profit-side exit: a take-profit, or a limit that is reduce-only or on the
    `closing` side of the position (limits always rest on the profitable side of the mark)."""
    if order.type == "limit":
        return order.reduce_only or order.side == closing
    return order.type == "take_profit_market"


def order_event(order: Order, rank: int, path: tuple[float, ...], closing: OrderSide | None = None) -> Event | None:
    """Return when the path first reaches `order`'s trigger or limit price, or None."""
    if order.type == "limit":
        if order.price is None:
            return None
        level, direction = order.price, pm.limit_direction(order.side)
        kind = TARGET if is_target(order, closing) else LIMIT
    elif order.type in CONDITIONAL:
        if order.trigger_price is None:
            return None
        level, direction = order.trigger_price, pm.trigger_direction(order.side, order.type)
        kind = STOP if order.type == "stop_market" else TARGET
    else:
        return None
    when = pm.first_touch(path, level, direction)
    return None if when is None else Event(when, kind, rank, order, when, level)


def schedule(orders: list[Order], path: tuple[float, ...], closing: OrderSide | None = None) -> list[Event]:
    """Return the events of `orders` on `path`, sorted; targets go after every stop when a stop is reached.

    A target reached at the first point of the path (a gap) is not a guess and keeps its place.
    """
    events = [e for rank, order in enumerate(orders) if (e := order_event(order, rank, path, closing)) is not None]
    if any(e.kind == STOP for e in events):
        events = [
            Event(e.when + AFTER_PATH, e.kind, e.rank, e.order, e.at, e.level) if e.kind == TARGET and e.at > 0 else e
            for e in events
        ]
    return sorted(events, key=lambda e: e.key)


def liquidation_event(
    side: PositionSide, liquidation_price: float | None, path: tuple[float, ...], start: float
) -> Event | None:
    """Return when the path, from path time `start`, first reaches the liquidation price, or None."""
    if liquidation_price is None:
        return None
    when = pm.first_touch(path, liquidation_price, pm.liquidation_direction(side), start)
    return None if when is None else Event(when, LIQUIDATION, 0, None, when, liquidation_price)


def insert(events: list[Event], event: Event) -> None:
    """Insert `event` into the sorted `events`, after any event with the same key."""
    index = len(events)
    while index > 0 and events[index - 1].key > event.key:
        index -= 1
    events.insert(index, event)
