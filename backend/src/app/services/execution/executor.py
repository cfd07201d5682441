"""Validated decision -> venue orders, with the protective-stop guarantee.

Every new position gets its stop-loss right after the entry fills. A stop whose outcome the venue leaves unknown
(timeout, 5xx: the adapter has already looked it up by client id) is tried again a bounded number of times, each
try under its own client id; if no stop can be placed, the position is closed at once. Stops are moved by placing
the new one before cancelling the old, so a position is never without one; when an increase's resized stop is
refused, the old level is resized to the whole position instead, or failing that the increase is undone. Order
creation is never retried otherwise: a refusal is reported with the venue's reason, and an order whose outcome is
unknown is never sent again (the reconciler finds it by its client id). Client ids come from `client_ids`:
(account, decision, asset, leg).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from app.schemas.trading_decision import AssetDecision, TradingStrategy
from app.schemas.validation import AssetVerdict
from app.services.alerts.events import AlertEvent, order_rejected, stop_failed
from app.services.exchange.base import (
    Exchange,
    ExchangeError,
    ExchangeUnavailableError,
    FillReason,
    Order,
    OrderRequest,
    OrderType,
    Position,
)
from app.services.execution import client_ids
from app.services.execution.reconciler import PositionIntent
from app.services.market_data.base import MarketRules

log = logging.getLogger(__name__)

MAX_STOP_WAIT_S = 30.0  # how long a protective stop may wait out a venue's rate limit (nothing is sent meanwhile)
STOP_ATTEMPTS = 3  # tries to place a protective stop whose outcome the venue left unknown, before closing instead


@dataclass
class ExecutionReport:
    orders: list[Order] = field(default_factory=list)
    intents: dict[str, PositionIntent] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    executed_assets: list[str] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)  # for a trader: refusals, positions closed unprotected


def entry_leverage(
    strategy: TradingStrategy, account_max: float, rules: MarketRules | None, venue_max: float | None = None
) -> float:
    """The leverage a new position uses: the lowest of strategy, account and venue maximum (the market's
    rules and the venue profile's per-asset cap)."""
    caps = [strategy.risk_parameters.max_leverage, account_max]
    if rules is not None:
        caps.append(rules.max_leverage)
    if venue_max is not None:
        caps.append(venue_max)
    return max(1.0, min(caps))


def crossed(position: Position, level: float) -> bool:
    """True when the market is already at or beyond `level` (a stop there would fire at once)."""
    mark = position.mark_price or position.entry_price
    return mark <= level if position.side == "long" else mark >= level


class OrderRun:
    """The orders of one origin (a decision's execution, a watchdog pass, a halt) on one account: each gets the client
    id of its (asset, leg), numbered when a leg repeats."""

    def __init__(
        self, exchange: Exchange, account_id: int, origin: str, report: ExecutionReport, decision_id: int | None = None
    ) -> None:
        self.exchange = exchange
        self.account_id = account_id
        self.origin = origin
        self.decision_id = decision_id
        self.report = report
        self._legs: Counter[tuple[str, str]] = Counter()

    async def place(
        self,
        asset: str,
        side: str,
        type_: OrderType,
        quantity: float,
        reason: FillReason,
        *,
        trigger: float | None = None,
        reduce_only: bool = False,
    ) -> Order:
        leg = client_ids.leg_for(reason)
        self._legs[(asset, leg)] += 1
        request = OrderRequest(
            client_order_id=client_ids.client_order_id(
                self.account_id, self.origin, asset, leg, self._legs[(asset, leg)]
            ),
            symbol=asset,
            side="buy" if side == "buy" else "sell",
            type=type_,
            quantity=quantity,
            trigger_price=trigger,
            reduce_only=reduce_only,
            reason=reason,
        )
        order = await self.exchange.place_order(request)
        self.report.orders.append(order)
        if order.status == "rejected":
            self.report.errors.append(f"{asset}: {reason} order rejected by the venue: {order.reject_reason}")
            self.report.alerts.append(
                order_rejected(
                    self.account_id,
                    asset,
                    f"{side} {type_} {quantity:g} {asset} ({reason}, {self.origin}) refused: {order.reject_reason}",
                )
            )
        return order

    async def protect(self, position: Position, kind: FillReason, price: float) -> Order:
        """Place a reduce-only stop or target for the whole position."""
        close_side = "sell" if position.side == "long" else "buy"
        type_: OrderType = "stop_market" if kind == "stop_loss" else "take_profit_market"
        return await self.place(
            position.symbol, close_side, type_, position.size, kind, trigger=price, reduce_only=True
        )

    async def protect_surely(self, position: Position, kind: FillReason, price: float) -> Order | None:
        """`protect`, tried again (under a new client id) while the venue leaves the outcome unknown, at most
        `STOP_ATTEMPTS` times; None when every try's outcome stayed unknown."""
        attempt, waited = 1, 0.0
        while attempt <= STOP_ATTEMPTS:
            try:
                return await self.protect(position, kind, price)
            except ExchangeUnavailableError as exc:
                wait = getattr(exc, "retry_after_s", None)  # rate limited: nothing was sent; wait, if briefly
                wait = None if wait is None else max(0.5, float(wait))  # a 0 s wait still counts against the budget
                if wait is not None and waited + wait <= MAX_STOP_WAIT_S:
                    log.warning(
                        "%s %s: rate limited, waiting %.1f s to place the %s", self.origin, position.symbol, wait, kind
                    )
                    await asyncio.sleep(wait)
                    waited += wait
                    continue
                log.warning(
                    "%s %s: %s order try %d of %d: %s", self.origin, position.symbol, kind, attempt, STOP_ATTEMPTS, exc
                )
                self.report.errors.append(f"{position.symbol}: {kind} order try {attempt} failed: {exc}")
                attempt += 1
        return None

    async def close(self, position: Position, reason: FillReason = "close") -> Order:
        """A reduce-only market order for the whole position; once it is gone, its stops and targets left at the
        venue are cancelled (a venue keeps reduce-only orders after a close: they would act on the next position)."""
        close_side = "sell" if position.side == "long" else "buy"
        order = await self.place(position.symbol, close_side, "market", position.size, reason, reduce_only=True)
        if order.status == "rejected" or any(
            p.symbol == position.symbol for p in await self.exchange.fetch_positions()
        ):
            return order
        for left in await self.exchange.fetch_open_orders(position.symbol):
            if left.reduce_only:
                self.report.orders.append(await self.exchange.cancel_order(left.symbol, left.client_order_id))
        return order

    async def replace(self, position: Position, kind: FillReason, price: float, existing: list[Order]) -> Order:
        """New protective order first, then cancel the old ones of that kind; return the new order."""
        new = await self.protect(position, kind, price)
        if new.status == "rejected":
            return new
        for old in existing:
            if old.reason == kind and old.client_order_id != new.client_order_id:
                self.report.orders.append(await self.exchange.cancel_order(old.symbol, old.client_order_id))
        return new


class Executor:
    """`slippage_allowance_bps`: how far worse than the decision's price an entry may fill; entries are
    trimmed so margin plus taker fee still fit the available balance at that price."""

    def __init__(
        self,
        rules: dict[str, MarketRules],
        *,
        taker_fee_bps: float = 5.0,
        slippage_allowance_bps: float = 10.0,
        venue_max_leverage: dict[str, float] | None = None,
    ) -> None:
        self.rules = rules
        self.venue_max_leverage = dict(venue_max_leverage or {})
        self.taker_fee_bps = taker_fee_bps
        self.slippage_allowance_bps = slippage_allowance_bps

    async def execute(
        self,
        exchange: Exchange,
        verdicts: list[AssetVerdict],
        *,
        account_id: int,
        decision_id: int,
        strategy: TradingStrategy,
        account_max_leverage: float,
        prices: dict[str, float],
        allow_new_exposure: bool = True,
        run: OrderRun | None = None,
    ) -> ExecutionReport:
        """Send the orders for every verdict that is not a rejection and not a hold. `run`: the decision's order run
        when the caller places more orders under the same decision (the watchdog), so their client ids go on."""
        run = run or OrderRun(exchange, account_id, f"d{decision_id}", ExecutionReport(), decision_id)
        report = run.report
        positions = {p.symbol: p for p in await exchange.fetch_positions()}
        for verdict in verdicts:
            item = verdict.final
            if verdict.status == "rejected" or item.action == "hold":
                continue
            position = positions.get(item.asset)
            adds_exposure = item.action in ("buy", "sell") or (
                item.action == "adjust_position"
                and item.position_adjustment is not None
                and item.position_adjustment.adjustment_type == "increase"
            )
            if adds_exposure and not allow_new_exposure:
                report.errors.append(f"{item.asset}: {item.action} skipped: the account may only reduce exposure")
                continue
            price = prices.get(item.asset)
            if (price is None or price <= 0) and item.action != "close_position":
                report.errors.append(f"{item.asset}: no price to execute {item.action}")
                continue
            before = len(report.errors)
            try:
                await self._one(run, exchange, item, position, strategy, account_max_leverage, price or 0.0)
            except ExchangeError as exc:  # one asset's refusal must not stop the others
                report.errors.append(f"{item.asset}: {item.action} refused by the venue: {exc}")
                report.alerts.append(
                    order_rejected(account_id, item.asset, f"{item.action} refused by the venue: {exc}")
                )
            except ExchangeUnavailableError as exc:  # outcome unknown: never resent; the reconciler and watchdog look
                report.errors.append(f"{item.asset}: {item.action} interrupted, the venue did not answer: {exc}")
            if len(report.errors) == before:
                report.executed_assets.append(item.asset)
        return report

    async def _one(
        self,
        run: OrderRun,
        exchange: Exchange,
        item: AssetDecision,
        position: Position | None,
        strategy: TradingStrategy,
        account_max_leverage: float,
        price: float,
    ) -> None:
        report = run.report
        if item.action in ("buy", "sell"):
            await self._open(run, exchange, item, strategy, account_max_leverage, price)
        elif position is None:
            report.errors.append(f"{item.asset}: {item.action} skipped: no open position on the venue")
        elif item.action == "close_position":
            await run.close(position)
        elif item.action == "adjust_orders":
            await self._adjust_orders(run, exchange, item, position)
        elif item.action == "adjust_position":
            await self._adjust_position(run, exchange, item, position, price)

    async def _open(
        self,
        run: OrderRun,
        exchange: Exchange,
        item: AssetDecision,
        strategy: TradingStrategy,
        account_max_leverage: float,
        price: float,
    ) -> None:
        leverage = entry_leverage(
            strategy, account_max_leverage, self.rules.get(item.asset), self.venue_max_leverage.get(item.asset)
        )
        # sized at the leverage the venue set: it may be lower (a venue's bracket, whole numbers only)
        leverage = await exchange.set_leverage(item.asset, leverage)
        quantity = item.allocation_usd * leverage / price
        worst_price = price * (1 + self.slippage_allowance_bps / 10_000)
        available = (await exchange.fetch_balance()).available
        affordable = available / (worst_price * (1 / leverage + self.taker_fee_bps / 10_000))
        quantity = min(quantity, affordable)
        entry = await run.place(item.asset, item.action, "market", quantity, "entry")
        if entry.status != "filled" and entry.filled_quantity <= 0:
            return  # nothing filled (a partly filled entry is protected like a full one: the stop covers the position)
        position = next((p for p in await exchange.fetch_positions() if p.symbol == item.asset), None)
        if position is None:
            run.report.errors.append(f"{item.asset}: entry filled but the venue shows no position")
            return
        assert item.sl_price is not None  # the validator rejects entries without a stop
        if crossed(position, item.sl_price):  # the price moved past the stop while the entry filled
            stop, why = (
                None,
                (
                    f"the market ({position.mark_price or position.entry_price:g}) is already past the stop "
                    f"{item.sl_price:g}; the entry filled at {entry.avg_fill_price or position.entry_price:g}"
                ),
            )
        else:
            stop = await run.protect_surely(position, "stop_loss", item.sl_price)
            why = (stop.reject_reason or "refused") if stop is not None else "the venue did not answer"
        if stop is None or stop.status == "rejected":
            await run.close(position)
            log.error("%s: the stop could not be placed (%s), so the position was closed", item.asset, why)
            run.report.errors.append(f"{item.asset}: the stop could not be placed ({why}), so the position was closed")
            run.report.alerts.append(
                stop_failed(
                    run.account_id, item.asset, f"the stop could not be placed ({why}), so the position was closed"
                )
            )
            return
        if item.tp_price is not None:
            await run.protect(position, "take_profit", item.tp_price)
        run.report.intents[item.asset] = PositionIntent(run.decision_id, item.rationale, item.exit_plan)

    async def _adjust_orders(self, run: OrderRun, exchange: Exchange, item: AssetDecision, position: Position) -> None:
        adj = item.order_adjustment
        if adj is None:
            return
        existing = await exchange.fetch_open_orders(item.asset)
        if adj.new_sl_price is not None:
            await run.replace(position, "stop_loss", adj.new_sl_price, existing)
        if adj.new_tp_price is not None:
            await run.replace(position, "take_profit", adj.new_tp_price, existing)
        elif adj.cancel_tp:
            for old in existing:
                if old.reason == "take_profit":
                    run.report.orders.append(await exchange.cancel_order(old.symbol, old.client_order_id))

    async def _adjust_position(
        self, run: OrderRun, exchange: Exchange, item: AssetDecision, position: Position, price: float
    ) -> None:
        adj = item.position_adjustment
        if adj is None:
            return
        same_side = "buy" if position.side == "long" else "sell"
        close_side = "sell" if position.side == "long" else "buy"
        if adj.adjustment_type == "increase":
            quantity = adj.adjustment_amount_usd * position.leverage / price
            order = await run.place(item.asset, same_side, "market", quantity, "increase")
        else:
            if adj.adjustment_percentage is not None:
                quantity = position.size * adj.adjustment_percentage / 100.0
            else:
                quantity = adj.adjustment_amount_usd * position.leverage / price
            order = await run.place(
                item.asset, close_side, "market", min(quantity, position.size), "decrease", reduce_only=True
            )
        if order.status != "filled":
            return
        current = next((p for p in await exchange.fetch_positions() if p.symbol == item.asset), None)
        if current is None:
            return
        existing = await exchange.fetch_open_orders(item.asset)
        stops = [o for o in existing if o.reason == "stop_loss"]
        targets = [o for o in existing if o.reason == "take_profit"]
        new_sl = adj.new_sl_price or (stops[0].trigger_price if stops else None)
        new_tp = adj.new_tp_price or (targets[0].trigger_price if targets else None)
        if new_sl is not None and (adj.adjustment_type == "increase" or adj.new_sl_price is not None):
            stop = await run.replace(current, "stop_loss", new_sl, existing)
            if (
                stop.status == "rejected"
                and adj.adjustment_type == "increase"
                and not await self._protect_increase(run, current, stops, existing, order, close_side)
            ):
                return  # the increase was undone: the old orders fit the old size
        if new_tp is not None and (adj.adjustment_type == "increase" or adj.new_tp_price is not None):
            await run.replace(current, "take_profit", new_tp, existing)

    async def _protect_increase(
        self,
        run: OrderRun,
        position: Position,
        stops: list[Order],
        existing: list[Order],
        increase: Order,
        close_side: str,
    ) -> bool:
        """The resized stop was refused: the old stops cover only the old size. Resize the stop at its old level
        (True); failing that, undo the increase (False), so no part of the position is left without a stop."""
        old_level = stops[0].trigger_price if stops else None
        if (
            old_level is not None
            and (await run.replace(position, "stop_loss", old_level, existing)).status != "rejected"
        ):
            run.report.errors.append(
                f"{position.symbol}: the new stop was refused; the old one now covers the position"
            )
            return True
        await run.place(position.symbol, close_side, "market", increase.filled_quantity, "decrease", reduce_only=True)
        run.report.errors.append(f"{position.symbol}: no stop could cover the increase, so it was undone")
        return False
