"""`PaperVenue`: an isolated-margin, one-way-mode USD-M perpetuals simulator behind the `Exchange` port.

Prices come in through `on_candle` (or `set_mark_price`). Each candle is walked along an assumed path:
O -> L -> H -> C when the candle is bullish (close >= open: it dipped, then rallied to the close) and
O -> H -> L -> C when it is bearish (the usual convention of backtesters).
Resting orders (stop, take-profit, limit) and liquidations fire where the path first reaches them:

- Gap: an order already reached at the open fills at the open, not at its trigger or limit price.
- Stop first: when a stop and a target (take-profit, or a limit that closes) of a symbol are both touched inside
  one candle, every stop goes before every target (pessimistic), whatever the path says. A target reached at
  the open is not a guess and still fills first.
- Liquidation competes with stops along the path: a long's stop above its liquidation price is reached first.
  When both are reached at the open (a gap), the liquidation wins. A limit that opens or grows a position
  mid-candle gets its liquidation checked on the rest of the path.
- `set_mark_price` is a one-point path: anything it reaches fills like a gap.

Orders: market, limit, stop_market and take_profit_market. Stops and take-profits must be reduce-only.
Limits (`price`, rounded to the tick) rest until the path reaches them (a buy at or below its price), then
fill completely (no queue, no partial fills) as maker at the limit price, or at the open if it opened
better, with no slippage. A limit that is marketable when placed (buy at or above the mark) fills at once
as taker, like a market order, at the slipped mark but never worse than its price. A resting limit that is
not reduce-only reserves its margin and maker fee at its price and the leverage of the moment
(`margin_used` includes it, `available` excludes it) so that it can always fill; the reservation is
released at fill or cancel. A reduce-only limit is a target for the stop-first rule and fills
min(its quantity, the position). A limit that is not reduce-only fills as an entry / increase, or as a
decrease when the position has turned against it meanwhile; it is canceled at fill time if it would flip the
position or (a sell that opened higher needs more margin than reserved) if the margin is not there.

Slippage: a taker fill (market, marketable limit, stop, take-profit) is worsened by
`slippage_bps + impact_bps_per_pct_volume * (notional / quote volume of the last completed candle * 100)`,
capped at `max_slippage_bps` (`slippage_bps` alone until a candle has been seen; during a candle the previous
one counts, so there is no look-ahead), and pays `taker_bps`. A closing taker fill is never worse than the
position's liquidation price (the venue would have liquidated it there), so its loss never exceeds the
isolated margin. A liquidation closes at the liquidation price (or at the open on a gap) with no slippage;
its loss is capped at the isolated margin (the insurance fund takes the rest) and its taker fee is paid out
of the margin left. Liquidation price: `fees.liquidation_formula`, Binance (MMR `maintenance_margin_rate`)
or Hyperliquid (l = 1 / (2 * max leverage of the asset)); the margin left at it exceeds the taker fee, so
`available` cannot go negative through trading. Fill reasons: entry / increase / decrease / close for
market and limit orders (a reduce-only limit placed with reason stop_loss / take_profit keeps it),
stop_loss, take_profit and liquidation (a venue-made market order "paper-liquidation-<n>") otherwise.

Positions: one per symbol (one-way mode). Orders that would flip a position are rejected ("order would flip
the position; close it first"). A position that becomes flat cancels its symbol's reduce-only orders; a
partially reduced one keeps them, and at trigger they fill min(order quantity, position size).

Funding: `apply_funding(symbol, rate, funding_time)` settles size x mark x rate (positive rate: longs pay
shorts) against the wallet balance (as a cross wallet would): the isolated margin and the liquidation price
do not change, and `available` can go below zero only through funding paid. Settlements are taken in time
order per symbol: one at or before the last applied for that symbol is a no-op (so a repeat is harmless).

Money: `wallet_balance = initial + realized_pnl - fees_paid - funding_paid + funding_received`,
`available = wallet_balance - margin_used`, so `equity = initial + realized + unrealized - fees - funding
paid + funding received` holds. Restart: `restore(**old_venue.snapshot())` brings back money, funding,
positions, resting orders and their reservations, leverage, marks, volumes and the order counter (fill and
funding history are not kept).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal, TypedDict

from app.core.clock import Clock
from app.services.exchange import paper_math as pm
from app.services.exchange import paper_orders as po
from app.services.exchange.base import (
    Balance,
    ExchangeError,
    FeeProfile,
    Fill,
    FillReason,
    FundingPayment,
    Order,
    OrderRequest,
    Position,
)
from app.services.market_data.base import Candle, MarketRules, UnknownSymbolError

_CONDITIONAL = po.CONDITIONAL
Liquidity = Literal["maker", "taker"]


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
    funding_paid: float
    funding_received: float
    funding_settled: dict[str, datetime]  # last funding settlement applied, per symbol
    order_leverage: dict[str, float]  # leverage of each resting limit that reserves margin
    marks: dict[str, float]
    quote_volumes: dict[str, float]


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
        self._realized = self._fees_paid = self._funding_paid = self._funding_received = 0.0
        self._leverage = {s: min(default_leverage, self._max_leverage(s)) for s in self._rules}
        self._marks: dict[str, float] = {}
        self._volumes: dict[str, float] = {}  # quote volume of the last candle, per symbol
        self._positions: dict[str, Position] = {}
        self._orders: dict[str, Order] = {}  # every order, by client order id
        self._open: dict[str, Order] = {}  # the resting ones (insertion order = age)
        self._order_leverage: dict[str, float] = {}  # resting limits that reserve margin -> their leverage
        self._fills: list[Fill] = []
        self._funding: list[FundingPayment] = []
        self._funding_settled: dict[str, datetime] = {}
        self._seq = 0
        self._revision = 0

    def refresh(self) -> None:
        """Nothing to forget: every read is the venue's state now."""

    @property
    def revision(self) -> int:
        """Changes whenever an order, a fill, a position or a funding payment changes (not with the mark):
        the reconciler skips a venue whose revision it has already mirrored."""
        return self._revision

    @property
    def fees(self) -> FeeProfile:
        """The venue profile this simulator runs with (fees, slippage, liquidation formula)."""
        return self._fees

    # ---- market data in -------------------------------------------------------------------------------

    def on_candle(self, symbol: str, candle: Candle) -> list[Fill]:
        """Walk `candle` along its path, fire resting orders / liquidation, then mark at the close."""
        if not candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high:
            raise ValueError(f"inconsistent candle: {candle}")
        fills = self._walk(symbol, pm.candle_path(candle))
        self._mark(symbol, candle.close)
        self._volumes[symbol] = candle.volume * candle.close
        return fills

    def set_mark_price(self, symbol: str, price: float) -> list[Fill]:
        """Move the mark price to `price`; anything it reaches fills as on a gap."""
        if price <= 0:
            raise ValueError("price must be positive")
        fills = self._walk(symbol, (price,))
        self._mark(symbol, price)
        return fills

    def apply_funding(
        self, symbol: str, rate: float, funding_time: datetime, mark_price: float | None = None
    ) -> FundingPayment | None:
        """Settle one funding interval of `symbol` at `mark_price` (default: the current mark).

        Return the payment, or None when there is no position or the settlement is not after the last one
        applied for `symbol` (idempotent).
        """
        if symbol not in self._rules:
            raise UnknownSymbolError(symbol)
        last = self._funding_settled.get(symbol)
        if last is not None and funding_time <= last:
            return None
        self._funding_settled[symbol] = funding_time
        position = self._positions.get(symbol)
        if position is None:
            return None
        mark = mark_price if mark_price is not None else self._marks.get(symbol, position.mark_price)
        if mark <= 0:
            raise ValueError("funding needs a positive mark price")
        amount = pm.funding_amount(position.side, position.size, mark, rate)
        if amount < 0:
            self._funding_paid -= amount
        else:
            self._funding_received += amount
        payment = FundingPayment(symbol, funding_time, rate, position.side, position.size, mark, amount)
        self._funding.append(payment)
        self._revision += 1
        return payment

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
        """Fill a market or marketable limit order now, or rest the order; rejections come back as orders."""
        if request.client_order_id in self._orders:
            return self._new_order(request, request.quantity, "duplicate client order id", store=False)
        symbol = request.symbol
        reason = po.check(
            request, self._rules.get(symbol), self._marks.get(symbol), self._positions.get(symbol), self._fees
        )
        if reason is not None:
            return self._new_order(request, request.quantity, reason)
        quantity = pm.round_down_to_step(request.quantity, self._rules[request.symbol].lot_size)
        if request.type in _CONDITIONAL:
            return replace(self._new_order(request, quantity))
        mark = self._marks[request.symbol]
        limit = po.limit_price(request, self._rules[request.symbol])
        if limit is not None and not po.marketable(request.side, limit, mark):
            return self._rest_limit(request, quantity, limit)
        return self._take(request, quantity, mark, limit)

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
        """Return wallet, unrealized PnL, margin (positions and resting orders) and available balance."""
        wallet = self._wallet()
        margin_used = self._margin_used()
        return Balance(
            wallet_balance=wallet,
            unrealized_pnl=sum(p.unrealized_pnl for p in self._positions.values()),
            margin_used=margin_used,
            available=wallet - margin_used,
            realized_pnl=self._realized,
            fees_paid=self._fees_paid,
            funding_paid=self._funding_paid,
            funding_received=self._funding_received,
        )

    async def fetch_fills(self, since: datetime | None = None) -> list[Fill]:
        """Return fills with timestamp >= `since` (all when None), in the order they happened."""
        return [f for f in self._fills if since is None or f.timestamp >= since]

    async def fetch_funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        """Return funding payments with funding_time >= `since` (all when None), in the order applied."""
        return [p for p in self._funding if since is None or p.funding_time >= since]

    def order_margin(self) -> float:
        """Return the margin and maker fees reserved by resting limit orders (part of `margin_used`)."""
        maker, orders = self._fees.maker_bps, [(self._open[c], lev) for c, lev in self._order_leverage.items()]
        return sum(pm.order_reserve(o.quantity, o.price or 0.0, lev, maker) for o, lev in orders)

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
            funding_paid=self._funding_paid,
            funding_received=self._funding_received,
            funding_settled=dict(self._funding_settled),
            order_leverage=dict(self._order_leverage),
            marks=dict(self._marks),
            quote_volumes=dict(self._volumes),
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
        funding_paid: float = 0.0,
        funding_received: float = 0.0,
        funding_settled: dict[str, datetime] | None = None,
        order_leverage: dict[str, float] | None = None,
        marks: dict[str, float] | None = None,
        quote_volumes: dict[str, float] | None = None,
    ) -> None:
        """Replace the whole state with a saved one; fill and funding history start empty.

        `wallet_balance` must equal `initial_balance + realized_pnl - fees_paid - funding_paid +
        funding_received`. A resting limit that is not reduce-only reserves margin at `order_leverage[its
        client order id]` (default: the symbol's leverage).
        """
        expected = initial_balance + realized_pnl - fees_paid - funding_paid + funding_received
        if abs(wallet_balance - expected) > 1e-6 * max(1.0, abs(wallet_balance)):
            raise ValueError("wallet_balance != initial + realized_pnl - fees_paid - funding_paid + funding_received")
        if funding_paid < 0 or funding_received < 0:
            raise ValueError("funding totals must not be negative")
        for symbol in [*(p.symbol for p in positions), *(o.symbol for o in open_orders)]:
            if symbol not in self._rules:
                raise UnknownSymbolError(symbol)
        if not all(po.restorable(o) for o in open_orders):
            raise ValueError("only open stop / take-profit / limit (with a price) orders can be restored")
        self._initial, self._realized, self._fees_paid = initial_balance, realized_pnl, fees_paid
        self._funding_paid, self._funding_received = funding_paid, funding_received
        self._funding_settled = dict(funding_settled or {})
        self._positions, self._orders, self._open, self._fills, self._funding = {}, {}, {}, [], []
        self._marks = {s: p for s, p in (marks or {}).items() if s in self._rules and p > 0}
        self._volumes = {s: v for s, v in (quote_volumes or {}).items() if s in self._rules}
        for symbol, value in (leverage or {}).items():
            if symbol in self._rules:
                self._leverage[symbol] = min(max(1.0, value), self._max_leverage(symbol))
        for position in positions:
            restored = replace(position)
            restored.liquidation_price = self._liquidation_price(restored)
            self._positions[restored.symbol] = restored
            if restored.mark_price > 0:
                self._marks.setdefault(restored.symbol, restored.mark_price)
        self._order_leverage = {}
        for order in open_orders:
            self._orders[order.client_order_id] = self._open[order.client_order_id] = replace(order)
            if order.type == "limit" and not order.reduce_only:
                saved = (order_leverage or {}).get(order.client_order_id, self._leverage[order.symbol])
                self._order_leverage[order.client_order_id] = min(max(1.0, saved), self._max_leverage(order.symbol))
        numeric = [int(o.venue_order_id) for o in open_orders if o.venue_order_id.isdigit()]
        self._seq = max([(next_order_seq or 1) - 1, *numeric])
        self._revision += 1

    # ---- internals: state -----------------------------------------------------------------------------

    def _max_leverage(self, symbol: str) -> float:
        return min(self._rules[symbol].max_leverage, self._fees.max_leverage.get(symbol, float("inf")))

    def _liquidation_price(self, position: Position) -> float | None:
        return pm.position_liquidation_price(self._fees, position, self._max_leverage(position.symbol))

    def _wallet(self) -> float:
        return self._initial + self._realized - self._fees_paid - self._funding_paid + self._funding_received

    def _margin_used(self) -> float:
        return sum(p.margin for p in self._positions.values()) + self.order_margin()

    def _available(self) -> float:
        return self._wallet() - self._margin_used()

    def _slippage(self, symbol: str, notional: float) -> float:
        return pm.taker_slippage_bps(self._fees, notional, self._volumes.get(symbol))

    def _open_orders(self, symbol: str | None) -> list[Order]:
        return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def _cancel(self, order: Order) -> None:
        self._revision += 1
        order.status = "canceled"
        order.updated_at = self._clock.now()
        self._open.pop(order.client_order_id, None)
        self._order_leverage.pop(order.client_order_id, None)

    def _mark(self, symbol: str, price: float) -> None:
        self._marks[symbol] = price
        position = self._positions.get(symbol)
        if position is not None:
            position.mark_price = price

    # ---- internals: orders ----------------------------------------------------------------------------

    def _take(self, request: OrderRequest, quantity: float, mark: float, limit: float | None) -> Order:
        """Fill a market (or marketable limit) order now as taker at the slipped mark, capped at `limit`."""
        position = self._positions.get(request.symbol)
        closing = position is not None and pm.closing_side(position.side) == request.side
        if position is not None and closing:
            quantity = min(quantity, position.size)
        slippage = self._slippage(request.symbol, quantity * mark)
        price = pm.not_beyond(pm.with_slippage(mark, request.side, slippage), request.side, limit)
        if position is not None and closing:
            price = pm.not_beyond(price, request.side, position.liquidation_price)
            order = self._new_order(request, quantity)
            self._reduce(position, quantity, price, order, None, "taker")
            return replace(order)
        leverage = self._leverage[request.symbol]
        fee = quantity * price * self._fees.taker_bps / 1e4
        if quantity * price / leverage + fee > self._available() + 1e-9:
            return self._new_order(request, quantity, "insufficient available balance for margin and fee")
        order = self._new_order(request, quantity)
        self._increase(order, quantity, price, fee, leverage, "taker")
        return replace(order)

    def _rest_limit(self, request: OrderRequest, quantity: float, limit: float) -> Order:
        """Rest a limit order; one that may open or grow a position reserves its margin and maker fee."""
        leverage = self._leverage[request.symbol]
        reserve = 0.0 if request.reduce_only else pm.order_reserve(quantity, limit, leverage, self._fees.maker_bps)
        if reserve > self._available() + 1e-9:
            return self._new_order(request, quantity, "insufficient available balance for margin and fee")
        order = self._new_order(request, quantity)
        if not request.reduce_only:
            self._order_leverage[order.client_order_id] = leverage
        return replace(order)

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
        self._revision += 1
        rules = self._rules.get(request.symbol)
        order = po.build_order(request, quantity, str(self._seq), self._clock.now(), rules, reject_reason)
        if store:
            self._orders[order.client_order_id] = order
            if reject_reason is None:
                self._open[order.client_order_id] = order
        return order

    # ---- internals: fills -----------------------------------------------------------------------------

    def _record_fill(
        self,
        order: Order,
        quantity: float,
        price: float,
        fee: float,
        pnl: float,
        reason: FillReason,
        liquidity: Liquidity,
    ) -> Fill:
        self._revision += 1
        order.status = "filled"
        self._open.pop(order.client_order_id, None)
        self._order_leverage.pop(order.client_order_id, None)
        order.filled_quantity = quantity
        order.avg_fill_price = price
        order.updated_at = self._clock.now()
        cid, symbol, side, at = order.client_order_id, order.symbol, order.side, order.updated_at
        fill = Fill(f"{order.venue_order_id}-1", cid, symbol, side, quantity, price, fee, pnl, liquidity, reason, at)
        self._fills.append(fill)
        return fill

    def _increase(self, order: Order, qty: float, price: float, fee: float, lev: float, liquidity: Liquidity) -> Fill:
        """Open or add to a position on the side of `order` (the caller checked the balance)."""
        symbol, margin = order.symbol, qty * price / lev
        self._fees_paid += fee
        position = self._positions.get(symbol)
        reason: FillReason = "entry" if position is None else "increase"
        if position is None:
            position = Position(
                symbol=symbol,
                side=pm.position_side(order.side),
                size=qty,
                entry_price=price,
                leverage=lev,
                margin=margin,
                liquidation_price=None,
                opened_at=self._clock.now(),
                mark_price=self._marks.get(symbol, price),
            )
            self._positions[symbol] = position
        else:
            size = pm.snap(position.size + qty, self._rules[symbol].lot_size)
            position.entry_price = (position.entry_price * position.size + price * qty) / (position.size + qty)
            position.size = size
            position.margin += margin
            position.leverage = position.size * position.entry_price / position.margin
        position.liquidation_price = self._liquidation_price(position)
        return self._record_fill(order, qty, price, fee, 0.0, reason, liquidity)

    def _reduce(
        self,
        position: Position,
        qty: float,
        price: float,
        order: Order,
        reason: FillReason | None,
        liquidity: Liquidity,
    ) -> Fill:
        """Close `qty` of `position` at `price`; `reason` None means a market or limit order (decrease / close)."""
        full = qty >= position.size
        released = position.margin if full else position.margin * qty / position.size
        pnl = pm.realized_pnl(position.side, position.entry_price, price, qty)
        fee = qty * price * (self._fees.maker_bps if liquidity == "maker" else self._fees.taker_bps) / 1e4
        if reason == "liquidation":
            pnl = max(pnl, -released)
            fee = min(fee, max(0.0, released + pnl))
        self._realized += pnl
        self._fees_paid += fee
        position.realized_pnl += pnl
        position.size = 0.0 if full else pm.snap(position.size - qty, self._rules[position.symbol].lot_size)
        position.margin = 0.0 if position.size <= 0 else position.margin - released
        position.liquidation_price = self._liquidation_price(position)
        if reason is None:
            reason = "close" if position.size <= 0 else "decrease"
        fill = self._record_fill(order, qty, price, fee, pnl, reason, liquidity)
        if position.size <= 0:
            del self._positions[position.symbol]
            for resting in self._open_orders(position.symbol):
                if resting.reduce_only:
                    self._cancel(resting)
        return fill

    def _walk(self, symbol: str, path: tuple[float, ...]) -> list[Fill]:
        """Fire every resting order and liquidation `path` reaches, in path order (see the module docstring)."""
        if symbol not in self._rules:
            raise UnknownSymbolError(symbol)
        position = self._positions.get(symbol)
        if position is None:
            for order in self._open_orders(symbol):  # orphans (e.g. restored without a position) reduce nothing
                if order.reduce_only:
                    self._cancel(order)
        orders = self._open_orders(symbol)
        if not orders and position is None:
            return []
        events = po.schedule(orders, path, pm.closing_side(position.side) if position is not None else None)
        if position is not None and (liq := po.liquidation_event(position.side, position.liquidation_price, path, 0.0)):
            po.insert(events, liq)
        fills: list[Fill] = []
        while events:
            event = events.pop(0)
            position = self._positions.get(symbol)
            base = path[0] if event.at == 0.0 else event.level
            hit = event.order
            if hit is None:
                if position is not None:  # a reduction keeps the liquidation price; growth reschedules it
                    fills.append(self._liquidate(position, base))
                continue
            if hit.status != "open":
                continue
            if hit.type in _CONDITIONAL:
                fill = self._fire_conditional(hit, position, base)
            else:
                fill = self._fill_limit(hit, position, base)
            if fill is None:
                continue
            fills.append(fill)
            if fill.reason in ("entry", "increase"):  # the position changed: where does it liquidate now?
                events = [e for e in events if e.order is not None]
                grown = self._positions[symbol]
                liq = po.liquidation_event(grown.side, grown.liquidation_price, path, event.at)
                if liq is not None:
                    po.insert(events, liq)
        return fills

    def _fire_conditional(self, order: Order, position: Position | None, base: float) -> Fill | None:
        if position is None or order.side != pm.closing_side(position.side):
            self._cancel(order)
            return None
        quantity = min(order.quantity, position.size)
        price = pm.with_slippage(base, order.side, self._slippage(order.symbol, quantity * base))
        price = pm.not_beyond(price, order.side, position.liquidation_price)
        reason: FillReason = "stop_loss" if order.type == "stop_market" else "take_profit"
        return self._reduce(position, quantity, price, order, reason, "taker")

    def _fill_limit(self, order: Order, position: Position | None, price: float) -> Fill | None:
        """Fill a resting limit as maker at `price` (its limit, or the open when that was better)."""
        exit_reason: FillReason | None = order.reason if order.reason in ("stop_loss", "take_profit") else None
        if position is not None and order.side == pm.closing_side(position.side):
            if order.reduce_only or order.quantity <= position.size:
                self._order_leverage.pop(order.client_order_id, None)
                return self._reduce(position, min(order.quantity, position.size), price, order, exit_reason, "maker")
            order.reject_reason = "limit would flip the position at fill; canceled"
            self._cancel(order)
            return None
        if order.reduce_only:
            self._cancel(order)
            return None
        leverage = self._order_leverage.pop(order.client_order_id, self._leverage[order.symbol])
        fee = order.quantity * price * self._fees.maker_bps / 1e4
        if order.quantity * price / leverage + fee > self._available() + 1e-9:
            order.reject_reason = "insufficient available balance for margin and fee at fill; canceled"
            self._cancel(order)
            return None
        return self._increase(order, order.quantity, price, fee, leverage, "maker")

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
        return self._reduce(position, position.size, price, order, "liquidation", "taker")
