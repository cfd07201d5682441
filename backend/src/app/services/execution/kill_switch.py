"""The kill switch's orders: cancel every entry order (anything not reduce-only), close every position with a
reduce-only market order, then cancel the protective orders left without a position. Each order and each position is
handled on its own: one failure (an entry that filled while being cancelled, a close the venue leaves unknown) does
not stop the others. A position whose close is refused keeps its stop, and is named in `remaining`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from app.core.errors import TemporaryError
from app.services.exchange.base import Exchange, ExchangeError
from app.services.execution.executor import ExecutionReport, OrderRun

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class FlattenReport(ExecutionReport):
    remaining: list[str] = field(default_factory=list)  # positions still open at the venue afterwards


async def flatten(exchange: Exchange, account_id: int, origin: str) -> FlattenReport:
    """Flatten the account on `exchange`; `origin` names the orders (`h{halt time ms}`). Reads that fail raise (the
    caller says the halt could not be carried out); orders that fail are reported and the others go on."""
    report = FlattenReport()
    run = OrderRun(exchange, account_id, origin, report)
    for order in await exchange.fetch_open_orders():
        if not order.reduce_only:
            await _attempt(
                report,
                f"cancel {order.client_order_id}",
                _cancel(exchange, report, order.symbol, order.client_order_id),
            )
    for position in await exchange.fetch_positions():
        closing = await _attempt(report, f"close {position.symbol}", run.close(position))
        if closing is not None and closing.status == "rejected":
            report.errors.append(f"{position.symbol}: the close was refused: {closing.reject_reason} (its stop stays)")
    still_open = {p.symbol for p in await exchange.fetch_positions()}
    for order in await exchange.fetch_open_orders():
        if order.reduce_only and order.symbol not in still_open:
            await _attempt(
                report,
                f"cancel {order.client_order_id}",
                _cancel(exchange, report, order.symbol, order.client_order_id),
            )
    report.remaining = sorted(still_open)
    for problem in report.errors:
        log.error("halt of account %s: %s", account_id, problem)
    return report


async def _cancel(exchange: Exchange, report: ExecutionReport, symbol: str, client_order_id: str) -> None:
    report.orders.append(await exchange.cancel_order(symbol, client_order_id))


async def _attempt(report: ExecutionReport, what: str, step: Awaitable[T]) -> T | None:
    try:
        return await step
    except (ExchangeError, TemporaryError) as exc:
        report.errors.append(f"{what} failed: {exc}")
        return None
