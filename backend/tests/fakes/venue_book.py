"""The fake venues' matching core: one account on a perpetual-futures venue, pure Python, thread-safe, no HTTP.

The protocol layers (`binance_trading`, `hyperliquid_trading`) turn wire requests into calls here and the
results (orders, fills, positions, `VenueReject`) into the venue's own bodies and error codes. It is the
yardstick the agent's own paper venue is checked against, so it shares no code with it.

Rules (deterministic, one-way mode, isolated margin):
- Margin mode: `set_margin_mode` / `margin_mode` only record what the protocol layer shows (default "cross");
  the arithmetic is always isolated.
- Prices: `tick()` reads `price_of(asset)` for every asset with open orders or a position (unless `set_price`
  pinned the asset) and applies it; `set_price` pins and applies. Between two prices the events that the path
  from the old to the new price crosses (conditional triggers, resting limits, liquidation) happen in the order
  the path meets them (nearest to the old price first).
- Market orders fill at the mark, taker fee. A market order with a `price` (Hyperliquid's IOC slippage cap)
  expires unfilled when the mark is beyond the cap. Limit orders: marketable at placement (or `ioc`) fill at the
  mark as taker; otherwise they rest and fill at their price as maker when the mark reaches it; an `ioc` limit
  that is not marketable expires.
- Conditionals: stop_market sell fires when mark <= trigger, buy when mark >= trigger; take_profit_market sell
  fires when mark >= trigger, buy when mark <= trigger. One that would fire at placement is refused
  (`would_trigger_immediately`). A fired conditional becomes `triggered`, and a market order (its `child_id`)
  with the same client id is executed at the mark; the parent copies the child's filled quantity and price.
- Reduce-only orders never increase or flip a position: clipped to the position; refused (`reduce_only`) when
  there is nothing to reduce. `close_position` (conditionals only) closes the whole position when it fires.
  When a position goes to zero, the asset's open reduce-only / close-position conditionals are cancelled
  (as Binance does for closePosition orders and Hyperliquid for position TP/SL; documented simplification).
- `min_notional` applies to orders that are neither reduce-only nor close-position (notional at the limit
  price, the trigger, else the mark). Margin check for orders that may increase exposure: the increasing part's
  quantity * price / leverage + the taker fee on it <= available, else `insufficient_margin`.
- Fees on every fill: taker bps for market / conditional / marketable or IOC limits, maker bps for resting limits.
- Margin: isolated; a position's margin grows by notional / leverage per increase and shrinks pro rata on
  reduction. Wallet = deposits + realized PnL - fees + funding. Available = wallet - margin used (position
  margins + open non-reduce-only limit orders' margin).
- Liquidation (Binance isolated, one-way, cum 0): long LP = (Q*EP - M) / (Q*(1 - mmr)), short
  LP = (Q*EP + M) / (Q*(1 + mmr)), M the isolated margin. When the mark crosses LP the position is closed at LP by
  a fill flagged `liquidation`, and the whole isolated margin is lost (the remainder is charged as the fee, as
  Binance's liquidation clearance fee does).
- Client ids: a client id used by any order ever placed on the account (any status) is refused
  (`duplicate_client_id`). A refused placement is not recorded and does not use up its client id.
"""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

RejectKind = Literal[
    "insufficient_margin",
    "min_notional",
    "duplicate_client_id",
    "reduce_only",
    "unknown_order",
    "bad_quantity",
    "would_trigger_immediately",
    "bad_leverage",
    "unknown_symbol",
]
Side = Literal["buy", "sell"]
BookOrderType = Literal["market", "limit", "stop_market", "take_profit_market"]
BookOrderStatus = Literal["open", "filled", "canceled", "expired", "triggered", "rejected"]
CONDITIONALS = ("stop_market", "take_profit_market")
EPS = 1e-12


class VenueReject(Exception):
    """The venue refused a request; the protocol layer maps `kind` to the venue's code and text."""

    def __init__(self, kind: RejectKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: RejectKind = kind
        self.message = message


@dataclass
class BookOrder:
    id: int
    client_id: str | None
    asset: str
    side: Side
    type: BookOrderType
    quantity: float
    price: float | None
    trigger: float | None
    reduce_only: bool
    close_position: bool
    ioc: bool
    status: BookOrderStatus
    filled: float
    avg_price: float | None
    created_ms: int
    updated_ms: int
    child_id: int | None = None
    parent_id: int | None = None  # a child market order: the conditional it came from


@dataclass
class BookFill:
    id: int
    order_id: int
    client_id: str | None
    asset: str
    side: Side
    quantity: float
    price: float
    fee: float
    realized_pnl: float
    maker: bool
    time_ms: int
    liquidation: bool


@dataclass
class BookPosition:
    asset: str
    size: float  # signed: + long, - short
    entry_price: float
    leverage: float
    margin: float  # isolated
    liquidation_price: float | None
    mark: float
    unrealized: float
    opened_ms: int


@dataclass
class _Pos:
    size: float = 0.0
    entry: float = 0.0
    margin: float = 0.0
    opened_ms: int = 0


@dataclass
class _RejectRule:
    match: Callable[[BookOrder], bool]
    kind: RejectKind
    message: str
    times: int


@dataclass
class _State:
    positions: dict[str, _Pos] = field(default_factory=dict)
    orders: list[BookOrder] = field(default_factory=list)
    fills: list[BookFill] = field(default_factory=list)
    funding: list[dict[str, Any]] = field(default_factory=list)


class VenueBook:
    """One account's orders, positions, fills and balance on a simulated perpetual-futures venue."""

    keeps_orphans = False  # True: reduce-only conditionals outlive their position (Binance keeps them)

    def __init__(
        self,
        *,
        balance: float,
        maker_bps: float,
        taker_bps: float,
        min_notional: float,
        price_of: Callable[[str], float],
        now_ms: Callable[[], int],
        max_leverage: Callable[[str], float] | None = None,
        maintenance_rate: float = 0.004,
        lot: Callable[[str], float] | None = None,
        default_leverage: float = 20.0,
    ) -> None:
        self.lock = threading.RLock()
        self.wallet = float(balance)
        self.maker_rate = maker_bps / 10_000
        self.taker_rate = taker_bps / 10_000
        self.min_notional = min_notional
        self.price_of = price_of
        self.now_ms = now_ms
        self.max_leverage = max_leverage
        self.maintenance_rate = maintenance_rate
        self.lot = lot
        self.default_leverage = default_leverage
        self._s = _State()
        self._leverage: dict[str, float] = {}
        self._mode: dict[str, str] = {}
        self._pinned: dict[str, float] = {}
        self._marks: dict[str, float] = {}
        self._used_ids: set[str] = set()
        self._next_order = 1_000_001
        self._next_fill = 5_000_001
        self._partial: float | None = None
        self._rejects: list[_RejectRule] = []
        self._spans: list[list[Any]] = []  # [asset, from_ms, to_ms | None]

    # ------------------------------------------------------------------------------------- prices

    def tick(self) -> list[BookFill]:
        """Apply the current price of every asset with open orders or a position; the fills this caused."""
        with self.lock:
            out: list[BookFill] = []
            for asset in sorted(self._active_assets()):
                price = self._pinned.get(asset)
                out += self._move(asset, price if price is not None else float(self.price_of(asset)))
            return out

    def set_price(self, asset: str, price: float) -> list[BookFill]:
        """Pin `asset`'s price (tests) and apply it as `tick` does."""
        with self.lock:
            self._pinned[asset] = float(price)
            return self._move(asset, float(price))

    def mark(self, asset: str) -> float:
        with self.lock:
            if asset in self._pinned:
                return self._pinned[asset]
            if asset in self._marks and asset in self._active_assets():
                return self._marks[asset]
            return float(self.price_of(asset))  # not followed by tick: the source's price now

    # ------------------------------------------------------------------------------------- settings

    def set_leverage(self, asset: str, leverage: float) -> float:
        with self.lock:
            cap = self.max_leverage(asset) if self.max_leverage is not None else 125.0
            if leverage < 1 or leverage > cap:
                raise VenueReject("bad_leverage", f"leverage {leverage:g} is not valid for {asset} (max {cap:g})")
            self._leverage[asset] = float(leverage)
            return float(leverage)

    def leverage(self, asset: str) -> float:
        with self.lock:
            return self._leverage.get(asset, self.default_leverage)

    def set_margin_mode(self, asset: str, mode: Literal["isolated", "cross"]) -> None:
        with self.lock:
            self._mode[asset] = mode

    def margin_mode(self, asset: str) -> str:
        with self.lock:
            return self._mode.get(asset, "cross")

    # ------------------------------------------------------------------------------------- orders

    def place(
        self,
        asset: str,
        side: Side,
        type: BookOrderType,
        quantity: float,
        *,
        client_id: str | None = None,
        price: float | None = None,
        trigger: float | None = None,
        reduce_only: bool = False,
        close_position: bool = False,
        ioc: bool = False,
    ) -> BookOrder:
        """Place an order (it may fill at once); raises `VenueReject` if the venue refuses it."""
        with self.lock:
            now = self.now_ms()
            if asset not in self._pinned:  # the price now (tick follows only assets with orders or a position)
                self._move(asset, float(self.price_of(asset)))
            order = BookOrder(
                id=0,
                client_id=client_id,
                asset=asset,
                side=side,
                type=type,
                quantity=float(quantity),
                price=None if price is None else float(price),
                trigger=None if trigger is None else float(trigger),
                reduce_only=reduce_only,
                close_position=close_position,
                ioc=ioc,
                status="open",
                filled=0.0,
                avg_price=None,
                created_ms=now,
                updated_ms=now,
            )
            self._check(order)
            order.id = self._new_order_id()
            if client_id is not None:
                self._used_ids.add(client_id)
            self._s.orders.append(order)
            mark = self.mark(asset)
            if type == "market":
                self._execute(order, mark)
            elif type == "limit":
                assert order.price is not None
                if self._marketable(order, mark):
                    self._execute(order, mark)
                elif ioc:
                    order.status = "expired"
            self._after(asset)
            return replace(order)

    def cancel(self, *, order_id: int | None = None, client_id: str | None = None) -> BookOrder:
        with self.lock:
            order = self._find(order_id, client_id, open_only=True)
            if order is None:
                raise VenueReject("unknown_order", "Unknown order sent.")
            order.status = "canceled"
            order.updated_ms = self.now_ms()
            self._after(order.asset)
            return replace(order)

    def order(self, *, order_id: int | None = None, client_id: str | None = None) -> BookOrder | None:
        """The order with this venue id or client id (a client id names the order placed with it, not a child)."""
        with self.lock:
            found = self._find(order_id, client_id, open_only=False)
            return replace(found) if found is not None else None

    def orders(self) -> list[BookOrder]:
        with self.lock:
            return [replace(o) for o in self._s.orders]

    def open_orders(self, asset: str | None = None) -> list[BookOrder]:
        with self.lock:
            return [replace(o) for o in self._s.orders if o.status == "open" and asset in (None, o.asset)]

    # ------------------------------------------------------------------------------------- account

    def positions(self) -> list[BookPosition]:
        with self.lock:
            out = []
            for asset, p in sorted(self._s.positions.items()):
                if abs(p.size) <= EPS:
                    continue
                mark = self.mark(asset)
                out.append(
                    BookPosition(
                        asset=asset,
                        size=p.size,
                        entry_price=p.entry,
                        leverage=self.leverage(asset),
                        margin=p.margin,
                        liquidation_price=self._liq_price(p),
                        mark=mark,
                        unrealized=p.size * (mark - p.entry),
                        opened_ms=p.opened_ms,
                    )
                )
            return out

    def balance(self) -> dict[str, float]:
        with self.lock:
            unrealized = sum(p.unrealized for p in self.positions())
            used = self._margin_used()
            return {
                "wallet": self.wallet,
                "unrealized": unrealized,
                "margin_used": used,
                "available": self.wallet - used,
            }

    def fills(self, since_ms: int | None = None) -> list[BookFill]:
        with self.lock:
            return [replace(f) for f in self._s.fills if since_ms is None or f.time_ms >= since_ms]

    def funding(self, since_ms: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(f) for f in self._s.funding if since_ms is None or f["time_ms"] >= since_ms]

    def settle_funding(self, asset: str, rate: float, time_ms: int) -> None:
        """Settle one funding payment on `asset`'s position: -sign(size) * |size| * mark * rate (longs pay when > 0)."""
        with self.lock:
            p = self._s.positions.get(asset)
            if p is None or abs(p.size) <= EPS:
                return
            mark = self.mark(asset)
            payment = -p.size * mark * rate
            self.wallet += payment
            self._s.funding.append(
                {"asset": asset, "rate": rate, "payment": payment, "time_ms": time_ms, "size": p.size, "mark": mark}
            )

    # ------------------------------------------------------------------------------------- faults and checks

    def partial_next(self, fraction: float) -> None:
        """The next market execution (a market order or a fired conditional) fills only `fraction`; the rest expires."""
        with self.lock:
            self._partial = fraction

    def reject_next(self, match: Callable[[BookOrder], bool], kind: RejectKind, message: str, times: int = 1) -> None:
        """The next `times` placements that `match` are refused with (kind, message)."""
        with self.lock:
            self._rejects.append(_RejectRule(match, kind, message, times))

    def unprotected_spans(self) -> list[tuple[str, int, int | None]]:
        """Each stretch where an asset had a position and no open reduce-only / close-position stop_market order."""
        with self.lock:
            return [(a, int(f), t) for a, f, t in self._spans]

    # ------------------------------------------------------------------------------------- internals

    def _active_assets(self) -> set[str]:
        assets = {o.asset for o in self._s.orders if o.status == "open"}
        return assets | {a for a, p in self._s.positions.items() if abs(p.size) > EPS}

    def _new_order_id(self) -> int:
        self._next_order += 1
        return self._next_order

    def _find(self, order_id: int | None, client_id: str | None, *, open_only: bool) -> BookOrder | None:
        for o in self._s.orders:
            if open_only and o.status != "open":
                continue
            if order_id is not None and o.id == order_id:
                return o
            if order_id is None and client_id is not None and o.client_id == client_id and o.parent_id is None:
                return o
        return None

    def _pos(self, asset: str) -> _Pos:
        return self._s.positions.setdefault(asset, _Pos())

    def _reducible(self, asset: str, side: Side) -> float:
        """How much an order on `side` can reduce the position (0 if none or the same side)."""
        size = self._pos(asset).size
        if side == "sell" and size > EPS:
            return size
        if side == "buy" and size < -EPS:
            return -size
        return 0.0

    def _check(self, order: BookOrder) -> None:
        """Refuse the order as the venue would (before it gets an id)."""
        for rule in self._rejects:
            if rule.match(order):
                rule.times -= 1
                if rule.times <= 0:
                    self._rejects.remove(rule)
                raise VenueReject(rule.kind, rule.message)
        if order.client_id is not None and order.client_id in self._used_ids:
            raise VenueReject("duplicate_client_id", f"client order id {order.client_id} was already used")
        mark = self.mark(order.asset)
        if order.type in CONDITIONALS:
            if order.trigger is None or order.trigger <= 0:
                raise VenueReject("bad_quantity", "a conditional order needs a positive trigger price")
            if self._fires(order, mark):
                raise VenueReject("would_trigger_immediately", "Order would immediately trigger.")
        elif order.close_position:
            raise VenueReject("bad_quantity", "close position is only for conditional orders")
        if order.type == "limit" and (order.price is None or order.price <= 0):
            raise VenueReject("bad_quantity", "a limit order needs a positive price")
        if not order.close_position:
            if not order.quantity > 0 or not math.isfinite(order.quantity):
                raise VenueReject("bad_quantity", f"quantity {order.quantity} must be positive")
            if self.lot is not None:
                step = self.lot(order.asset)
                units = order.quantity / step
                if abs(units - round(units)) > 1e-6:
                    raise VenueReject("bad_quantity", f"quantity {order.quantity} is not a multiple of {step:g}")
        if order.reduce_only or order.close_position:
            if self._reducible(order.asset, order.side) <= EPS:
                raise VenueReject("reduce_only", "reduce-only order would increase the position")
            return
        ref = order.price if order.type == "limit" else order.trigger if order.type in CONDITIONALS else mark
        assert ref is not None
        if order.quantity * ref < self.min_notional - 1e-9:
            raise VenueReject("min_notional", f"order's notional must be no smaller than {self.min_notional:g}")
        if order.type in ("market", "limit"):
            self._check_margin(order, ref)

    def _check_margin(self, order: BookOrder, price: float) -> None:
        increase = max(0.0, order.quantity - self._reducible(order.asset, order.side))
        need = increase * price / self.leverage(order.asset) + increase * price * self.taker_rate
        available = self.wallet - self._margin_used()
        if need > available + 1e-9:
            raise VenueReject("insufficient_margin", f"Margin is insufficient: needs {need:.4f}, has {available:.4f}")

    def _margin_used(self) -> float:
        used = sum(p.margin for p in self._s.positions.values() if abs(p.size) > EPS)
        for o in self._s.orders:
            if o.status == "open" and o.type == "limit" and not o.reduce_only and o.price is not None:
                used += (o.quantity - o.filled) * o.price / self.leverage(o.asset)
        return used

    @staticmethod
    def _fires(order: BookOrder, mark: float) -> bool:
        assert order.trigger is not None
        below = mark <= order.trigger
        above = mark >= order.trigger
        if order.type == "stop_market":
            return below if order.side == "sell" else above
        return above if order.side == "sell" else below

    @staticmethod
    def _marketable(order: BookOrder, mark: float) -> bool:
        assert order.price is not None
        return mark <= order.price if order.side == "buy" else mark >= order.price

    def _liq_price(self, p: _Pos) -> float | None:
        if abs(p.size) <= EPS:
            return None
        q, mmr = abs(p.size), self.maintenance_rate
        long = p.size > 0
        lp = (q * p.entry - p.margin) / (q * (1 - mmr)) if long else (q * p.entry + p.margin) / (q * (1 + mmr))
        return max(lp, 0.0)

    def _move(self, asset: str, price: float) -> list[BookFill]:
        """Move `asset` from its last price to `price`, applying the events the path crosses in order."""
        old = self._marks.get(asset, price)
        self._marks[asset] = price
        before = len(self._s.fills)
        done: set[int] = set()
        while True:
            event = self._next_event(asset, old, price, done)
            if event is None:
                break
            level, what, order = event
            if what == "liquidation":
                self._liquidate(asset, level)
            elif order is not None and order.type == "limit":
                done.add(order.id)
                self._execute(order, level, maker=True)
            elif order is not None:
                done.add(order.id)
                self._trigger(order, price)
            self._cancel_orphans(asset)
        self._after(asset)
        return [replace(f) for f in self._s.fills[before:]]

    def _next_event(
        self, asset: str, old: float, new: float, done: set[int]
    ) -> tuple[float, str, BookOrder | None] | None:
        candidates: list[tuple[float, int, str, BookOrder | None]] = []
        p = self._s.positions.get(asset)
        if p is not None and abs(p.size) > EPS:
            lp = self._liq_price(p)
            if lp is not None and ((p.size > 0 and new <= lp) or (p.size < 0 and new >= lp)):
                candidates.append((abs(lp - old), 0, "liquidation", None))
        for o in self._s.orders:
            if o.asset != asset or o.status != "open" or o.id in done:
                continue
            if o.type in CONDITIONALS and self._fires(o, new):
                assert o.trigger is not None
                candidates.append((abs(o.trigger - old), o.id, "trigger", o))
            elif o.type == "limit" and self._marketable(o, new):
                assert o.price is not None
                candidates.append((abs(o.price - old), o.id, "limit", o))
        if not candidates:
            return None
        _, _, what, order = min(candidates, key=lambda c: (c[0], c[1]))
        if what == "liquidation":
            assert p is not None
            lp = self._liq_price(p)
            assert lp is not None
            return lp, what, None
        assert order is not None
        return (order.price if what == "limit" else order.trigger) or new, what, order

    def _trigger(self, order: BookOrder, mark: float) -> None:
        now = self.now_ms()
        order.status = "triggered"
        order.updated_ms = now
        reducible = self._reducible(order.asset, order.side)
        if order.close_position:
            qty = reducible
        elif order.reduce_only:
            qty = min(order.quantity, reducible)
        else:
            qty = order.quantity
        child = BookOrder(
            id=self._new_order_id(),
            client_id=order.client_id,
            asset=order.asset,
            side=order.side,
            type="market",
            quantity=qty,
            price=None,
            trigger=None,
            reduce_only=order.reduce_only or order.close_position,
            close_position=False,
            ioc=False,
            status="open",
            filled=0.0,
            avg_price=None,
            created_ms=now,
            updated_ms=now,
            parent_id=order.id,
        )
        order.child_id = child.id
        self._s.orders.append(child)
        if qty <= EPS:
            child.status = "expired"
            return
        if not child.reduce_only:
            try:
                self._check_margin(child, mark)
            except VenueReject:
                child.status = "rejected"
                return
        self._execute(child, mark)
        order.filled, order.avg_price = child.filled, child.avg_price

    def _execute(self, order: BookOrder, price: float, *, maker: bool = False) -> None:
        """Fill `order` (what is left of it) at `price`; market orders may be capped, clipped or partial."""
        now = self.now_ms()
        order.updated_ms = now
        qty = order.quantity - order.filled
        if order.type == "market" and order.price is not None and not self._marketable(order, price):
            order.status = "expired"  # beyond the slippage cap
            return
        if order.reduce_only:
            qty = min(qty, self._reducible(order.asset, order.side))
        partial = False
        if order.type == "market" and self._partial is not None:
            qty *= self._partial
            self._partial = None
            partial = True
            if self.lot is not None:
                step = self.lot(order.asset)
                qty = math.floor(qty / step + 1e-9) * step
        if qty > EPS:
            self._fill(order, qty, price, maker=maker)
        complete = abs(order.quantity - order.filled) <= 1e-9
        gone = self._reducible(order.asset, order.side) <= EPS
        clipped = order.reduce_only and not partial and order.filled > 0 and gone
        if order.type == "market" or order.ioc:
            order.status = "filled" if (complete or clipped) and not partial else "expired"
        elif complete or clipped:
            order.status = "filled"
        elif order.reduce_only and gone:
            order.status = "expired"

    def _fill(self, order: BookOrder, qty: float, price: float, *, maker: bool, liquidation: bool = False) -> BookFill:
        now = self.now_ms()
        p = self._pos(order.asset)
        signed = qty if order.side == "buy" else -qty
        realized = 0.0
        lev = self.leverage(order.asset)
        if abs(p.size) <= EPS or (p.size > 0) == (signed > 0):
            if abs(p.size) <= EPS:
                p.opened_ms, p.entry, p.margin = now, 0.0, 0.0
            new = p.size + signed
            p.entry = (abs(p.size) * p.entry + qty * price) / abs(new)
            p.margin += qty * price / lev
            p.size = new
        else:
            closing = min(qty, abs(p.size))
            realized = closing * (price - p.entry) * (1 if p.size > 0 else -1)
            release = p.margin * closing / abs(p.size)
            p.margin -= release
            p.size += closing if signed > 0 else -closing
            rest = qty - closing
            if abs(p.size) <= 1e-12:
                p.size, p.margin = 0.0, 0.0
            if rest > EPS:
                p.size = rest if signed > 0 else -rest
                p.entry, p.margin, p.opened_ms = price, rest * price / lev, now
        fee = qty * price * (self.maker_rate if maker else self.taker_rate)
        self.wallet += realized - fee
        total = order.filled + qty
        order.avg_price = ((order.avg_price or 0.0) * order.filled + price * qty) / total
        order.filled = total
        order.updated_ms = now
        self._next_fill += 1
        fill = BookFill(
            id=self._next_fill,
            order_id=order.id,
            client_id=order.client_id,
            asset=order.asset,
            side=order.side,
            quantity=qty,
            price=price,
            fee=fee,
            realized_pnl=realized,
            maker=maker,
            time_ms=now,
            liquidation=liquidation,
        )
        self._s.fills.append(fill)
        return fill

    def _liquidate(self, asset: str, lp: float) -> None:
        p = self._s.positions[asset]
        now = self.now_ms()
        margin = p.margin
        side: Side = "sell" if p.size > 0 else "buy"
        order = BookOrder(
            id=self._new_order_id(),
            client_id=None,
            asset=asset,
            side=side,
            type="market",
            quantity=abs(p.size),
            price=None,
            trigger=None,
            reduce_only=True,
            close_position=False,
            ioc=False,
            status="open",
            filled=0.0,
            avg_price=None,
            created_ms=now,
            updated_ms=now,
        )
        self._s.orders.append(order)
        fill = self._fill(order, abs(p.size), lp, maker=False, liquidation=True)
        # the whole isolated margin is lost: what the loss at LP leaves is the liquidation clearance fee
        self.wallet += fill.fee  # undo the taker fee charged by _fill
        clearance = max(0.0, margin + fill.realized_pnl)
        self.wallet -= clearance
        fill.fee = clearance
        order.status = "filled"

    def _after(self, asset: str) -> None:
        """Housekeeping after any change on `asset`: cancel orphaned protective orders, track unprotected spans."""
        now = self.now_ms()
        flat = self._cancel_orphans(asset)
        protected = any(
            o.asset == asset
            and o.status == "open"
            and o.type == "stop_market"
            and (o.reduce_only or o.close_position)
            and self._reducible(asset, o.side) > EPS
            for o in self._s.orders
        )
        span = next((s for s in self._spans if s[0] == asset and s[2] is None), None)
        exposed = not flat and not protected
        if exposed and span is None:
            self._spans.append([asset, now, None])
        elif not exposed and span is not None:
            span[2] = now

    def _cancel_orphans(self, asset: str) -> bool:
        """Cancel the asset's open reduce-only / close-position conditionals if it has no position; True if flat.
        With `keeps_orphans` (as Binance does) only close-position ones go: reduce-only ones stay open."""
        p = self._s.positions.get(asset)
        if p is not None and abs(p.size) > EPS:
            return False
        now = self.now_ms()
        for o in self._s.orders:
            protective = o.type in CONDITIONALS and (o.close_position or (o.reduce_only and not self.keeps_orphans))
            if o.asset == asset and o.status == "open" and protective:
                o.status, o.updated_ms = "canceled", now
        return True


def add_open_by_hand_option(parser: argparse.ArgumentParser) -> None:
    """The standalone fakes' `--open-by-hand ASSET:SIZE` (the README's dry run)."""
    parser.add_argument(
        "--open-by-hand",
        metavar="ASSET:SIZE",
        help="open a position at start as if by hand, with no stop (e.g. BTC:0.01 long, ETH:-0.5 short): the agent "
        "adopts it and gives it a protective stop",
    )


def open_by_hand(book: VenueBook, spec: str) -> None:
    """A market order with no client id and no stop, as a trader would place it in the venue's own app."""
    asset, _, size = spec.partition(":")
    quantity = float(size)
    order = book.place(asset.strip().upper(), "buy" if quantity > 0 else "sell", "market", abs(quantity))
    print(f"opened by hand, no stop: {order.side} {order.filled:g} {order.asset} at {order.avg_price}", flush=True)
