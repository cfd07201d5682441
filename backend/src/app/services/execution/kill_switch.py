"""The kill switch's orders: cancel every entry order (anything not reduce-only), close every position with a
reduce-only market order, then cancel the protective orders left without a position. A position whose close is
refused keeps its stop."""

from __future__ import annotations

import logging

from app.services.exchange.base import Exchange
from app.services.execution.executor import ExecutionReport, OrderRun

log = logging.getLogger(__name__)


async def flatten(exchange: Exchange, account_id: int, origin: str) -> ExecutionReport:
    """Flatten the account on `exchange`; `origin` names the orders (`h{halt time ms}`)."""
    report = ExecutionReport()
    run = OrderRun(exchange, account_id, origin, report)
    for order in await exchange.fetch_open_orders():
        if not order.reduce_only:
            report.orders.append(await exchange.cancel_order(order.symbol, order.client_order_id))
    for position in await exchange.fetch_positions():
        closing = await run.close(position)
        if closing.status == "rejected":
            log.error("halt: %s could not be closed: %s (its stop stays)", position.symbol, closing.reject_reason)
    still_open = {p.symbol for p in await exchange.fetch_positions()}
    for order in await exchange.fetch_open_orders():
        if order.reduce_only and order.symbol not in still_open:
            report.orders.append(await exchange.cancel_order(order.symbol, order.client_order_id))
    return report
