"""The protective-stop watchdog: every open position has a live stop at the venue, checked every cycle and at
start-up, for paper and live accounts alike.

A position is covered by an open reduce-only `stop_market` order on its closing side for its whole size (a quantity
of 0 is a venue's close-position stop: it covers any size). A position that is not covered gets a stop for its whole
size at the level we know for it (the decision's or the one last seen at the venue), else at the account strategy's
default stop distance from its entry; a stop placed, the smaller ones left are cancelled (new before old). If the
level is already crossed, or no stop can be placed, the position is closed at market. Reduce-only orders left open
without a position (a target after its stop fired: venues keep them) are cancelled, so they cannot act on the next
position of that asset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from app.services.alerts.events import stop_failed
from app.services.exchange.base import Exchange, Order, Position
from app.services.execution.executor import OrderRun, crossed

log = logging.getLogger(__name__)

_SIZE_TOLERANCE = 1e-9


@dataclass
class WatchdogReport:
    checked: int = 0
    placed: list[str] = field(default_factory=list)  # assets that got a new stop
    closed: list[str] = field(default_factory=list)  # assets closed because no stop could protect them
    cancelled: list[str] = field(default_factory=list)  # reduce-only orders left without a position, cancelled
    problems: list[str] = field(default_factory=list)


def covers(order: Order, position: Position) -> bool:
    """True when `order` is a live stop that closes the whole of `position` when it fires."""
    closing_side = "sell" if position.side == "long" else "buy"
    if order.type != "stop_market" or order.side != closing_side or order.status != "open" or not order.reduce_only:
        return False
    return order.quantity <= 0 or order.quantity >= position.size * (1 - _SIZE_TOLERANCE)


def default_level(position: Position, stop_loss_percentage: float) -> float:
    """The stop at the strategy's default distance from the entry."""
    direction = 1.0 if position.side == "long" else -1.0
    return position.entry_price * (1 - direction * stop_loss_percentage / 100.0)


class StopWatchdog:
    async def check(
        self,
        exchange: Exchange,
        run: OrderRun,
        *,
        levels: dict[str, float],
        stop_loss_percentage: float,
    ) -> WatchdogReport:
        """Make sure every open position on `exchange` has a protective stop; orders go through `run` (its origin
        names them: the decision of this cycle, or the start-up pass)."""
        report = WatchdogReport()
        positions = await exchange.fetch_positions()
        open_orders = await exchange.fetch_open_orders()
        held = {p.symbol for p in positions}
        for order in open_orders:  # a stop or target whose position is gone (it fired, or was closed): it would act
            if order.reduce_only and order.symbol not in held:  # on the next position of that asset
                run.report.orders.append(await exchange.cancel_order(order.symbol, order.client_order_id))
                report.cancelled.append(order.client_order_id)
        for position in positions:
            report.checked += 1
            mine = [o for o in open_orders if o.symbol == position.symbol]
            if any(covers(o, position) for o in mine):
                continue
            await self._protect(run, position, mine, levels.get(position.symbol), stop_loss_percentage, report)
        return report

    async def _protect(
        self,
        run: OrderRun,
        position: Position,
        existing: list[Order],
        known: float | None,
        stop_loss_percentage: float,
        report: WatchdogReport,
    ) -> None:
        symbol = position.symbol
        level = known if known is not None and known > 0 else default_level(position, stop_loss_percentage)
        source = "its known level" if known is not None else f"the strategy's default {stop_loss_percentage:g}%"
        log.warning("%s: %s position of %s has no protective stop at the venue", symbol, position.side, position.size)
        if crossed(position, level):
            why = f"the market ({position.mark_price:g}) is already past its stop level {level:g}"
        else:
            stop = await run.protect_surely(position, "stop_loss", level)
            if stop is not None and stop.status != "rejected":
                for old in existing:
                    if old.type == "stop_market" and old.reduce_only and old.client_order_id != stop.client_order_id:
                        run.report.orders.append(await run.exchange.cancel_order(old.symbol, old.client_order_id))
                report.placed.append(symbol)
                report.problems.append(f"{symbol}: the position had no stop; one was placed at {level:g} ({source})")
                return
            why = (stop.reject_reason or "refused") if stop is not None else "the venue did not answer"
        closing = await run.close(position)
        report.closed.append(symbol)
        problem = f"{symbol}: the position had no stop and none could be placed ({why}): closed at market"
        if closing.status == "rejected":
            problem += f", but the close was refused: {closing.reject_reason}"
        log.error(problem)
        report.problems.append(problem)
        run.report.alerts.append(stop_failed(run.account_id, symbol, problem))
