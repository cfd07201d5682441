"""`PaperVenue`: an isolated-margin, one-way-mode USD-M perpetuals simulator behind the `Exchange` port.

Prices come in through `on_candle` (or `set_mark_price`). Each candle is walked along an assumed path:
O -> L -> H -> C when the candle is bullish (close >= open: it dipped, then rallied to the close) and
O -> H -> L -> C when it is bearish (the usual convention of backtesters).
Resting stop / take-profit orders and liquidations fire where the path first reaches them, with these rules:

- Gap: a trigger already reached at the open fills at the open, not at its trigger price.
- Stop first: when a stop and a take-profit of a symbol are both touched inside one candle, every stop goes
  before every take-profit (pessimistic), whatever the path says. A take-profit reached at the open is not a
  guess and still fills first.
- Liquidation competes with stops along the path: a long's stop above its liquidation price is reached first.
  When both are reached at the open (a gap), the liquidation wins.
- `set_mark_price` is a one-point path: anything it reaches fills like a gap.

Fills: every taker fill (market, stop, take-profit) is worsened by `fees.slippage_bps` and pays
`fees.taker_bps` on its notional. A liquidation closes at the liquidation price (or at the open on a gap)
with no slippage; its loss is capped at the position's isolated margin (the insurance fund takes the rest)
and its taker fee is paid out of the margin that is left, so a liquidation never costs the wallet more
than the isolated margin. Other closes happen before the liquidation price, where the margin left exceeds
taker fee + slippage whenever taker_bps + slippage_bps < maintenance margin (true for the built-in profiles),
so `available` cannot go negative. Fill reasons: entry / increase / decrease / close for market orders,
stop_loss, take_profit and liquidation (a venue-made market order "paper-liquidation-<n>") otherwise.

Positions: one per symbol (one-way mode). Orders that would flip a position are rejected ("order would flip
the position; close it first"). A position that becomes flat cancels its symbol's reduce-only orders; a
partially reduced one keeps them, and at trigger they fill min(order quantity, position size).

Money: `wallet_balance = initial + realized_pnl - fees_paid` (funding is not simulated yet),
`available = wallet_balance - margin_used`, so `equity = initial + realized + unrealized - fees` holds.
Restart: `restore(**old_venue.snapshot())` brings back money, positions, resting orders, leverage and the
order counter (fill history is not kept).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TypedDict

from app.core.clock import Clock
from app.services.exchange import paper_math as pm
from app.services.exchange.base import (
    Balance,
    ExchangeError,
    FeeProfile,
    Fill,
    FillReason,
    Order,
    OrderRequest,
    OrderSide,
    Position,
)
from app.services.market_data.base import Candle, MarketRules, UnknownSymbolError

_CONDITIONAL = ("stop_market", "take_profit_market")
_AFTER_PATH = 10.0  # added to a take-profit's path time to put it after every stop (stop-first rule)


class PaperVenueSnapshot(TypedDict):
    """Everything `PaperVenue.restore` needs to put a venue back where it was."""

    initial_balance: float
    wallet_balance: float
    realized_pnl: float
    fees_paid: float
    positions: list[Position]
    open_orders: list[Order]
    leverage: dict[str, float]
    next_order_seq: int


class PaperVenue:
    """Simulate one isolated-margin account on a perpetual futures venue (see the module docstring)."""

    is_simulated = True

    def __init__(
        self,
        *,
        initial_balance: float,
        rules: dict[str, MarketRules],
        fees: FeeProfile,
        clock: Clock,
        default_leverage: float = 1.0,
    ) -> None:
        if initial_balance < 0:
            raise ValueError("initial_balance must not be negative")
        if default_leverage < 1:
            raise ValueError("default_leverage must be at least 1")
        self.name = f"paper-{fees.venue}"
        self._rules = dict(rules)
        self._fees = fees
        self._clock = clock
        self._initial = float(initial_balance)
        self._realized = 0.0
        self._fees_paid = 0.0
        self._leverage = {s: min(default_leverage, self._max_leverage(s)) for s in self._rules}
        self._marks: dict[str, float] = {}
        self._positions: dict[str, Position] = {}
        self._orders: dict[str, Order] = {}  # every order, by client order id
        self._open: dict[str, Order] = {}  # the resting ones (insertion order = age)
        self._fills: list[Fill] = []
        self._seq = 0

    # ---- market data in -------------------------------------------------------------------------------

    def on_candle(self, symbol: str, candle: Candle) -> list[Fill]:
        """Walk `candle` along its path, fire stops / take-profits / liquidation, then mark at the close."""
        if not candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high:
            raise ValueError(f"inconsistent candle: {candle}")
        fills = self._walk(symbol, pm.candle_path(candle))
        self._mark(symbol, candle.close)
        return fills

    def set_mark_price(self, symbol: str, price: float) -> list[Fill]:
        """Move the mark price to `price`; anything it reaches fills as on a gap."""
        if price <= 0:
            raise ValueError("price must be positive")
        fills = self._walk(symbol, (price,))
        self._mark(symbol, price)
        return fills

    # ---- Exchange port --------------------------------------------------------------------------------

    async def set_leverage(self, symbol: str, leverage: float) -> float:
        """Set the leverage used by new positions and increases of `symbol`; return it."""
        if symbol not in self._rules:
            raise ExchangeError(f"unknown symbol {symbol}")
        maximum = self._max_leverage(symbol)
        if not 1.0 <= leverage <= maximum:
            raise ExchangeError(f"leverage {leverage} outside 1..{maximum:g} for {symbol}")
        self._leverage[symbol] = float(leverage)
        return float(leverage)

    async def place_order(self, request: OrderRequest) -> Order:
        """Fill a market order now or rest a reduce-only trigger order; rejections come back as orders."""
        existing = self._orders.get(request.client_order_id)
        if existing is not None:
            return self._new_order(request, request.quantity, "duplicate client order id", store=False)
        reason = self._check(request)
        if reason is not None:
            return self._new_order(request, request.quantity, reason)
        rules = self._rules[request.symbol]
        quantity = pm.round_down_to_step(request.quantity, rules.lot_size)
        position = self._positions.get(request.symbol)
        if request.type in _CONDITIONAL:
            return replace(self._new_order(request, quantity))
        mark = self._marks[request.symbol]
        price = pm.with_slippage(mark, request.side, self._fees.slippage_bps)
        if position is not None and pm.closing_side(position.side) == request.side:
            quantity = min(quantity, position.size)
            order = self._new_order(request, quantity)
            self._reduce(position, quantity, price, order, reason=None)
            return replace(order)
        leverage = self._leverage[request.symbol]
        fee = quantity * price * self._fees.taker_bps / 1e4
        if quantity * price / leverage + fee > self._available() + 1e-9:
            return self._new_order(request, quantity, "insufficient available balance for margin and fee")
        order = self._new_order(request, quantity)
        self._increase(request.symbol, request.side, quantity, price, fee, leverage, order)
        return replace(order)

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        """Cancel an open order; raise ExchangeError if it is unknown or no longer open."""
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            raise ExchangeError(f"unknown order {client_order_id} on {symbol}")
        if order.status != "open":
            raise ExchangeError(f"order {client_order_id} is {order.status}, not open")
        self._cancel(order)
        return replace(order)

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order | None:
        """Return the order with this client order id, or None."""
        order = self._orders.get(client_order_id)
        return replace(order) if order is not None and order.symbol == symbol else None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Return open orders, oldest first, optionally of one symbol."""
        return [replace(o) for o in self._open_orders(symbol)]

    async def fetch_positions(self) -> list[Position]:
        """Return copies of the open positions."""
        return [replace(p) for p in self._positions.values()]

    async def fetch_balance(self) -> Balance:
        """Return wallet, unrealized PnL, margin and available balance."""
        wallet = self._wallet()
        margin_used = self._margin_used()
        return Balance(
            wallet_balance=wallet,
            unrealized_pnl=sum(p.unrealized_pnl for p in self._positions.values()),
            margin_used=margin_used,
            available=wallet - margin_used,
            realized_pnl=self._realized,
            fees_paid=self._fees_paid,
        )

    async def fetch_fills(self, since: datetime | None = None) -> list[Fill]:
        """Return fills with timestamp >= `since` (all when None), in the order they happened."""
        return [f for f in self._fills if since is None or f.timestamp >= since]

    # ---- restart --------------------------------------------------------------------------------------

    def snapshot(self) -> PaperVenueSnapshot:
        """Return the state a restarted venue needs (pass it to `restore(**snapshot)`)."""
        return PaperVenueSnapshot(
            initial_balance=self._initial,
            wallet_balance=self._wallet(),
            realized_pnl=self._realized,
            fees_paid=self._fees_paid,
            positions=[replace(p) for p in self._positions.values()],
            open_orders=[replace(o) for o in self._open_orders(None)],
            leverage=dict(self._leverage),
            next_order_seq=self._seq + 1,
        )

    def restore(
        self,
        *,
        wallet_balance: float,
        realized_pnl: float,
        fees_paid: float,
        positions: list[Position],
        open_orders: list[Order],
        initial_balance: float,
        leverage: dict[str, float] | None = None,
        next_order_seq: int | None = None,
    ) -> None:
        """Replace the whole state with a saved one; fill history starts empty.

        `wallet_balance` must equal `initial_balance + realized_pnl - fees_paid` (no funding yet).
        """
        if abs(wallet_balance - (initial_balance + realized_pnl - fees_paid)) > 1e-6 * max(1.0, abs(wallet_balance)):
            raise ValueError("wallet_balance != initial_balance + realized_pnl - fees_paid")
        for symbol in [*(p.symbol for p in positions), *(o.symbol for o in open_orders)]:
            if symbol not in self._rules:
                raise UnknownSymbolError(symbol)
        if any(o.status != "open" or o.type not in _CONDITIONAL for o in open_orders):
            raise ValueError("only open stop / take-profit orders can be restored")
        self._initial, self._realized, self._fees_paid = initial_balance, realized_pnl, fees_paid
        self._marks, self._positions, self._orders, self._open, self._fills = {}, {}, {}, {}, []
        for position in positions:
            restored = replace(position)
            restored.liquidation_price = pm.liquidation_price(
                restored.side, restored.size, restored.entry_price, restored.margin, self._mmr
            )
            self._positions[restored.symbol] = restored
            if restored.mark_price > 0:
                self._marks[restored.symbol] = restored.mark_price
        for order in open_orders:
            self._orders[order.client_order_id] = self._open[order.client_order_id] = replace(order)
        for symbol, value in (leverage or {}).items():
            if symbol in self._rules:
                self._leverage[symbol] = min(max(1.0, value), self._max_leverage(symbol))
        numeric = [int(o.venue_order_id) for o in open_orders if o.venue_order_id.isdigit()]
        self._seq = max([(next_order_seq or 1) - 1, *numeric])

    # ---- internals ------------------------------------------------------------------------------------

    @property
    def _mmr(self) -> float:
        return self._fees.maintenance_margin_rate

    def _max_leverage(self, symbol: str) -> float:
        return min(self._rules[symbol].max_leverage, self._fees.max_leverage.get(symbol, float("inf")))

    def _wallet(self) -> float:
        return self._initial + self._realized - self._fees_paid

    def _margin_used(self) -> float:
        return sum(p.margin for p in self._positions.values())

    def _available(self) -> float:
        return self._wallet() - self._margin_used()

    def _open_orders(self, symbol: str | None) -> list[Order]:
        return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def _cancel(self, order: Order) -> None:
        order.status = "canceled"
        order.updated_at = self._clock.now()
        self._open.pop(order.client_order_id, None)

    def _mark(self, symbol: str, price: float) -> None:
        self._marks[symbol] = price
        position = self._positions.get(symbol)
        if position is not None:
            position.mark_price = price

    def _check(self, request: OrderRequest) -> str | None:
        """Return why `request` must be rejected, or None (duplicates are checked by the caller)."""
        rules = self._rules.get(request.symbol)
        if rules is None:
            return f"unknown symbol {request.symbol}"
        mark = self._marks.get(request.symbol)
        if mark is None:
            return f"no mark price yet for {request.symbol}"
        conditional = request.type in _CONDITIONAL
        if conditional and not request.reduce_only:
            return "stop and take-profit orders must be reduce_only on this venue"
        if conditional and (request.trigger_price is None or request.trigger_price <= 0):
            return "stop and take-profit orders need a positive trigger price"
        quantity = pm.round_down_to_step(request.quantity, rules.lot_size)
        if quantity <= 0:
            return f"quantity {request.quantity} is zero after rounding to lot size {rules.lot_size}"
        position = self._positions.get(request.symbol)
        reduces = position is not None and pm.closing_side(position.side) == request.side
        if request.reduce_only and not reduces:
            return "reduce-only order would not reduce the position"
        if conditional and request.trigger_price is not None:
            trigger = pm.round_to_tick(request.trigger_price, rules.tick_size)
            direction = pm.trigger_direction(request.side, request.type)
            if (direction == "down" and trigger >= mark) or (direction == "up" and trigger <= mark):
                return f"trigger {trigger} is on the wrong side of the mark price {mark}"
        minimum = max(rules.min_notional, self._fees.min_notional)
        if not request.reduce_only and quantity * mark < minimum:
            return f"notional {quantity * mark:.2f} below the minimum {minimum:g}"
        if reduces and not request.reduce_only and position is not None and quantity > position.size:
            return "order would flip the position; close it first"
        return None

    def _new_order(
        self,
        request: OrderRequest,
        quantity: float,
        reject_reason: str | None = None,
        *,
        store: bool = True,
    ) -> Order:
        """Create an order: rejected when `reject_reason` is given, else open (fills mark it filled)."""
        self._seq += 1
        now = self._clock.now()
        trigger = request.trigger_price
        if trigger is not None and request.symbol in self._rules:
            trigger = pm.round_to_tick(trigger, self._rules[request.symbol].tick_size)
        order = Order(
            client_order_id=request.client_order_id,
            venue_order_id=str(self._seq),
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            quantity=quantity,
            status="open" if reject_reason is None else "rejected",
            created_at=now,
            updated_at=now,
            trigger_price=trigger if request.type in _CONDITIONAL else None,
            reduce_only=request.reduce_only,
            reason=request.reason,
            reject_reason=reject_reason,
        )
        if store:
            self._orders[order.client_order_id] = order
            if reject_reason is None:
                self._open[order.client_order_id] = order
        return order

    def _record_fill(
        self, order: Order, quantity: float, price: float, fee: float, pnl: float, reason: FillReason
    ) -> Fill:
        order.status = "filled"
        self._open.pop(order.client_order_id, None)
        order.filled_quantity = quantity
        order.avg_fill_price = price
        order.updated_at = self._clock.now()
        fill = Fill(
            fill_id=f"{order.venue_order_id}-1",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=fee,
            realized_pnl=pnl,
            liquidity="taker",
            reason=reason,
            timestamp=order.updated_at,
        )
        self._fills.append(fill)
        return fill

    def _increase(
        self, symbol: str, side: OrderSide, qty: float, price: float, fee: float, lev: float, order: Order
    ) -> Fill:
        """Open or add to a position on `side` (the caller checked the balance)."""
        margin = qty * price / lev
        self._fees_paid += fee
        position = self._positions.get(symbol)
        reason: FillReason = "entry" if position is None else "increase"
        if position is None:
            position = Position(
                symbol=symbol,
                side=pm.position_side(side),
                size=qty,
                entry_price=price,
                leverage=lev,
                margin=margin,
                liquidation_price=None,
                opened_at=self._clock.now(),
                mark_price=self._marks[symbol],
            )
            self._positions[symbol] = position
        else:
            size = pm.snap(position.size + qty, self._rules[symbol].lot_size)
            position.entry_price = (position.entry_price * position.size + price * qty) / (position.size + qty)
            position.size = size
            position.margin += margin
            position.leverage = position.size * position.entry_price / position.margin
        position.liquidation_price = pm.liquidation_price(
            position.side, position.size, position.entry_price, position.margin, self._mmr
        )
        return self._record_fill(order, qty, price, fee, 0.0, reason)

    def _reduce(self, position: Position, qty: float, price: float, order: Order, reason: FillReason | None) -> Fill:
        """Close `qty` of `position` at `price`; `reason` None means a market order (decrease / close)."""
        full = qty >= position.size
        released = position.margin if full else position.margin * qty / position.size
        pnl = pm.realized_pnl(position.side, position.entry_price, price, qty)
        fee = qty * price * self._fees.taker_bps / 1e4
        if reason == "liquidation":
            pnl = max(pnl, -released)
            fee = min(fee, max(0.0, released + pnl))
        self._realized += pnl
        self._fees_paid += fee
        position.realized_pnl += pnl
        position.size = 0.0 if full else pm.snap(position.size - qty, self._rules[position.symbol].lot_size)
        position.margin = 0.0 if position.size <= 0 else position.margin - released
        position.liquidation_price = pm.liquidation_price(
            position.side, position.size, position.entry_price, position.margin, self._mmr
        )
        if reason is None:
            reason = "close" if position.size <= 0 else "decrease"
        fill = self._record_fill(order, qty, price, fee, pnl, reason)
        if position.size <= 0:
            del self._positions[position.symbol]
            for resting in self._open_orders(position.symbol):
                if resting.reduce_only:
                    self._cancel(resting)
        return fill

    def _walk(self, symbol: str, path: tuple[float, ...]) -> list[Fill]:
        """Fire every trigger and liquidation `path` reaches, in path order (see the module docstring)."""
        if symbol not in self._rules:
            raise UnknownSymbolError(symbol)
        position = self._positions.get(symbol)
        orders = self._open_orders(symbol)
        if position is None:
            for order in orders:  # orphans (e.g. restored without a position) can never reduce anything
                if order.reduce_only:
                    self._cancel(order)
            return []
        events: list[tuple[float, int, int, Order | None]] = []
        lp = position.liquidation_price
        if lp is not None:
            when = pm.first_touch(path, lp, pm.liquidation_direction(position.side))
            if when is not None:
                events.append((when, 0, 0, None))
        for rank, order in enumerate(orders):
            if order.trigger_price is None:
                continue
            when = pm.first_touch(path, order.trigger_price, pm.trigger_direction(order.side, order.type))
            if when is not None:
                events.append((when, 1 if order.type == "stop_market" else 2, rank, order))
        if any(e[1] == 1 for e in events):
            events = [(t + _AFTER_PATH if k == 2 and t > 0 else t, k, r, o) for t, k, r, o in events]
        fills: list[Fill] = []
        for when, _, _, hit in sorted(events, key=lambda e: e[:3]):
            position = self._positions.get(symbol)
            if position is None:
                break
            at_open = when == 0.0
            if hit is None:
                price = path[0] if at_open else (lp or path[0])
                fills.append(self._liquidate(position, price))
                continue
            if hit.status != "open":
                continue
            if hit.side != pm.closing_side(position.side):
                self._cancel(hit)
                continue
            base = path[0] if at_open else (hit.trigger_price or path[0])
            price = pm.with_slippage(base, hit.side, self._fees.slippage_bps)
            reason: FillReason = "stop_loss" if hit.type == "stop_market" else "take_profit"
            fills.append(self._reduce(position, min(hit.quantity, position.size), price, hit, reason))
        return fills

    def _liquidate(self, position: Position, price: float) -> Fill:
        request = OrderRequest(
            client_order_id=f"paper-liquidation-{self._seq + 1}",
            symbol=position.symbol,
            side=pm.closing_side(position.side),
            type="market",
            quantity=position.size,
            reduce_only=True,
            reason="liquidation",
        )
        order = self._new_order(request, position.size)
        return self._reduce(position, position.size, price, order, "liquidation")
