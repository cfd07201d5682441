"""Mirror the venue's orders, fills and positions into the database. The venue is the source of truth:
after every execution and every market update the local tables are brought in line with it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models
from app.db.inserts import insert_rows
from app.db.repositories.trading import TradingRepository
from app.services.alerts.events import NO_ALERTS, AlertSink, reconciliation
from app.services.exchange.base import Balance, Exchange, Fill, Order, Position
from app.services.execution.client_ids import account_of, decision_of

log = logging.getLogger(__name__)

ADOPTED = "adopted: found on the venue, not opened by the agent (by hand or another program)"


@dataclass(frozen=True)
class PositionIntent:
    """Why a position was opened, kept with it for the model's next look."""

    decision_id: int | None
    rationale: str
    exit_plan: str


@dataclass(frozen=True)
class SyncReport:
    new_fills: int
    opened: list[str]
    closed: list[str]


def _apply_order(row: models.Order, order: Order) -> None:
    row.venue_order_id = order.venue_order_id
    row.status = order.status
    row.filled_quantity = order.filled_quantity
    row.avg_fill_price = order.avg_fill_price
    row.reject_reason = order.reject_reason
    row.trigger_price = order.trigger_price
    row.price = order.price
    row.quantity = order.quantity
    row.updated_at = order.updated_at


async def _own_decision(session: AsyncSession, account_id: int, client_order_id: str) -> int | None:
    """The stored decision of this account an order id of ours names, if there is one."""
    decision_id = decision_of(client_order_id)
    if decision_id is None:
        return None
    row = await session.get(models.Decision, decision_id)
    return decision_id if row is not None and row.account_id == account_id else None


def _reopened(position: Position, fills: Sequence[models.Fill]) -> bool:
    """True when the venue's position, on the side of a row that began before it, is a new one: the row's fills
    (`fills`, from its start) have an exit before the position's start and a fill at that start. Both are needed: a
    venue that cannot tell when its position began gives the time of the read, when nothing filled, or the first
    fill its history still holds (an increase of a position older than the history)."""
    start = position.opened_at
    return any(f.filled_at == start for f in fills) and any(
        f.filled_at < start and f.reason not in ("entry", "increase") for f in fills
    )


class Reconciler:
    def __init__(self, alerts: AlertSink = NO_ALERTS) -> None:
        """`alerts` hears of every position found on the venue that the agent did not open."""
        self.alerts = alerts
        # account -> the venue revision whose mirror has been committed: an unchanged venue needs no reads
        self._mirrored: dict[int, int] = {}

    def forget(self, account_id: int) -> None:
        """The account's venue is rebuilt: its mirror is checked again in full at the next sync."""
        self._mirrored.pop(account_id, None)

    def is_current(self, account_id: int, exchange: Exchange) -> bool:
        """True when the venue has not changed since its mirror was last committed."""
        revision = exchange.revision
        return revision is not None and self._mirrored.get(account_id) == revision

    async def sync(
        self,
        session: AsyncSession,
        account_id: int,
        exchange: Exchange,
        *,
        placed: Sequence[Order] = (),
        decision_id: int | None = None,
        intents: dict[str, PositionIntent] | None = None,
    ) -> SyncReport:
        """Record `placed` orders, refresh open ones, add new fills, open/update/close position rows.

        A venue whose revision is the one already mirrored (and committed) has nothing new: no reads."""
        if not placed and not intents and self.is_current(account_id, exchange):
            return SyncReport(new_fills=0, opened=[], closed=[])
        revision = exchange.revision
        self._mirrored.pop(account_id, None)
        if revision is not None:
            # Only a committed mirror counts: after a rollback the next sync reads everything again.
            def _committed(_session: object) -> None:
                self._mirrored[account_id] = revision

            event.listen(session.sync_session, "after_commit", _committed, once=True)
        repo = TradingRepository(session)
        known_orders = await repo.orders_by_client_ids([o.client_order_id for o in placed])
        for order in placed:
            self._record_order(repo, account_id, order, decision_id, known_orders)
        await session.flush()

        venue_open = await exchange.fetch_open_orders()
        still_open = {o.client_order_id: o for o in venue_open}
        for row in await repo.open_orders(account_id):  # those no longer open are looked up one by one
            venue_order = still_open.get(row.client_order_id) or await exchange.fetch_order(
                row.symbol, row.client_order_id
            )
            if venue_order is None:
                row.status = "canceled"
                row.reject_reason = "not found on the venue during reconciliation"
            else:
                _apply_order(row, venue_order)
        # Open orders the database does not know: placed by a process killed before it recorded them, or whose
        # answer was lost (found later by client id), or placed by hand. Recorded, so the database equals the venue.
        unknown = [o for o in venue_open if o.client_order_id not in known_orders]
        known_orders.update(await repo.orders_by_client_ids([o.client_order_id for o in unknown]))
        for order in unknown:
            if order.client_order_id not in known_orders:
                log.warning("account %s: open order %s found on the venue, recorded", account_id, order.client_order_id)
                decision = await _own_decision(session, account_id, order.client_order_id)
                self._record_order(repo, account_id, order, decision, known_orders)
        await session.flush()

        since = await repo.last_fill_time(account_id)
        known = await repo.known_fill_ids(account_id, since)
        new_fills = [f for f in await exchange.fetch_fills(since) if f.fill_id not in known]
        missing = [f.client_order_id for f in new_fills if f.client_order_id not in known_orders]
        known_orders.update(await repo.orders_by_client_ids(missing))
        for fill in new_fills:  # a fill of an order of ours the database never recorded: the order is read and kept
            cid = fill.client_order_id
            if cid not in known_orders and account_of(cid) == account_id:
                filled = await exchange.fetch_order(fill.symbol, cid)
                if filled is not None:
                    log.warning("account %s: order %s found filled on the venue, recorded", account_id, cid)
                    decision = await _own_decision(session, account_id, cid)
                    self._record_order(repo, account_id, filled, decision, known_orders)
        await session.flush()
        for fill in new_fills:
            order_row = known_orders.get(fill.client_order_id)
            repo.add(
                models.Fill(
                    account_id=account_id,
                    order_id=order_row.id if order_row else None,
                    client_order_id=fill.client_order_id,
                    venue_fill_id=fill.fill_id,
                    symbol=fill.symbol,
                    side=fill.side,
                    reason=fill.reason,
                    quantity=fill.quantity,
                    price=fill.price,
                    fee=fill.fee,
                    realized_pnl=fill.realized_pnl,
                    liquidity=fill.liquidity,
                    filled_at=fill.timestamp,
                )
            )
        known_funding = await repo.known_funding(account_id)
        for payment in await exchange.fetch_funding_payments():
            if (payment.symbol, payment.funding_time) in known_funding:
                continue
            repo.add(
                models.FundingPayment(
                    account_id=account_id,
                    symbol=payment.symbol,
                    funding_time=payment.funding_time,
                    rate=payment.rate,
                    position_side=payment.position_side,
                    position_size=payment.position_size,
                    mark_price=payment.mark_price,
                    amount=payment.amount,
                )
            )
        await session.flush()
        opened, closed = await self._sync_positions(session, repo, account_id, exchange, intents or {}, venue_open)
        closed += await self._round_trips(
            session, repo, account_id, new_fills, exclude={*opened, *closed}, intents=intents or {}
        )
        await session.flush()
        return SyncReport(new_fills=len(new_fills), opened=opened, closed=closed)

    async def _sync_positions(
        self,
        session: AsyncSession,
        repo: TradingRepository,
        account_id: int,
        exchange: Exchange,
        intents: dict[str, PositionIntent],
        venue_open: list[Order],
    ) -> tuple[list[str], list[str]]:
        venue = {p.symbol: p for p in await exchange.fetch_positions()}
        rows = {r.symbol: r for r in await repo.open_positions(account_id)}
        protective: dict[str, dict[str, float | None]] = {}
        for order in venue_open:
            if order.reason in ("stop_loss", "take_profit"):
                protective.setdefault(order.symbol, {})[order.reason] = order.trigger_price
        opened: list[str] = []
        closed: list[str] = []

        for symbol, stale in rows.items():
            position = venue.get(symbol)
            if position is not None and position.side == stale.side and position.opened_at <= stale.opened_at:
                continue
            own = await repo.position_fills(account_id, symbol, stale.opened_at)
            if position is not None and position.side == stale.side:
                if not _reopened(position, own):
                    continue
                # closed at the venue (a stop fired) and opened again on the same side since the last sync: the row
                # is closed with the fills before the new position, which gets a row of its own below
                own = [f for f in own if f.filled_at < position.opened_at]
            exits = [f for f in own if f.reason not in ("entry", "increase")]
            stale.status = "closed"
            stale.realized_pnl = sum(f.realized_pnl for f in own)
            stale.fees = sum(f.fee for f in own)
            last = exits[-1] if exits else (own[-1] if own else None)
            stale.closed_at = last.filled_at if last else stale.opened_at
            stale.exit_reason = last.reason if last else "unknown"
            if exits:
                quantity = sum(f.quantity for f in exits)
                stale.exit_price = sum(f.price * f.quantity for f in exits) / quantity if quantity else None
            closed.append(symbol)
        await session.flush()

        for symbol, position in venue.items():
            row = rows.get(symbol)
            if row is None or row.status == "closed":
                intent = intents.get(symbol)
                row = models.Position(
                    account_id=account_id,
                    decision_id=intent.decision_id if intent else None,
                    symbol=symbol,
                    side=position.side,
                    status="open",
                    opened_at=position.opened_at,
                    entry_rationale=intent.rationale if intent else None,
                    exit_plan=intent.exit_plan if intent else None,
                    realized_pnl=0.0,
                    fees=0.0,
                )
                repo.add(row)
                opened.append(symbol)
            row.size = position.size
            row.entry_price = position.entry_price
            row.leverage = position.leverage
            row.margin = position.margin
            row.liquidation_price = position.liquidation_price
            own = await repo.position_fills(account_id, symbol, position.opened_at)
            if symbol in opened and row.entry_rationale is None and not any(account_of(f.client_order_id) for f in own):
                # no order of ours made it: opened by hand (or by another program) on the venue; adopted, and the
                # stop watchdog gives it a stop if it has none
                row.entry_rationale = ADOPTED
                log.warning(
                    "account %s: %s position found on the venue, not opened by the agent: adopted", account_id, symbol
                )
                self.alerts.emit(
                    reconciliation(
                        account_id,
                        f"a {position.side} {symbol} position of {position.size:g} was found on the venue, not opened "
                        "by the agent (by hand or another program): adopted, and given a stop if it has none",
                        symbol,
                    )
                )
            row.realized_pnl = sum(f.realized_pnl for f in own)
            row.fees = sum(f.fee for f in own)
            row.stop_loss = protective.get(symbol, {}).get("stop_loss")
            row.take_profit = protective.get(symbol, {}).get("take_profit")
        return opened, closed

    @staticmethod
    async def _round_trips(
        session: AsyncSession,
        repo: TradingRepository,
        account_id: int,
        fills: Sequence[Fill],
        *,
        exclude: set[str],
        intents: dict[str, PositionIntent],
    ) -> list[str]:
        """Positions that opened and closed between two reads of the venue (an entry whose stop was refused and was
        closed at once; a stop that fired within the cycle): recorded as closed positions from their fills, so the
        model's trade history shows them. Leverage and margin are not known for them (0)."""
        recorded: list[str] = []
        by_symbol: dict[str, list[Fill]] = {}
        for fill in sorted(fills, key=lambda f: f.timestamp):
            by_symbol.setdefault(fill.symbol, []).append(fill)
        for symbol, own in by_symbol.items():
            if symbol in exclude:
                continue
            size, trip = 0.0, list[Fill]()
            for fill in own:
                if not trip and fill.reason not in ("entry", "increase"):
                    continue  # the close of a position the database already knows
                trip.append(fill)
                size += fill.quantity if fill.side == "buy" else -fill.quantity
                if abs(size) > 1e-12 * max(1.0, fill.quantity):
                    continue
                entries = [f for f in trip if f.reason in ("entry", "increase")]
                exits = [f for f in trip if f.reason not in ("entry", "increase")]
                if not exits:
                    break
                entry_qty, exit_qty = sum(f.quantity for f in entries), sum(f.quantity for f in exits)
                intent = intents.get(symbol)
                decision = (
                    intent.decision_id
                    if intent
                    else await _own_decision(session, account_id, entries[0].client_order_id)
                )
                repo.add(
                    models.Position(
                        account_id=account_id,
                        decision_id=decision,
                        symbol=symbol,
                        side="long" if entries[0].side == "buy" else "short",
                        status="closed",
                        size=entry_qty,
                        entry_price=sum(f.price * f.quantity for f in entries) / entry_qty,
                        leverage=0.0,
                        margin=0.0,
                        entry_rationale=intent.rationale if intent else None,
                        exit_plan=intent.exit_plan if intent else None,
                        realized_pnl=sum(f.realized_pnl for f in trip),
                        fees=sum(f.fee for f in trip),
                        exit_price=sum(f.price * f.quantity for f in exits) / exit_qty,
                        exit_reason=exits[-1].reason,
                        opened_at=entries[0].timestamp,
                        closed_at=exits[-1].timestamp,
                    )
                )
                recorded.append(symbol)
                size, trip = 0.0, []
        return recorded

    @staticmethod
    def _record_order(
        repo: TradingRepository,
        account_id: int,
        order: Order,
        decision_id: int | None,
        known_orders: dict[str, models.Order],
    ) -> None:
        """Add (or bring up to date) the database row of a venue order."""
        row = known_orders.get(order.client_order_id)
        if row is None:
            row = models.Order(
                account_id=account_id,
                decision_id=decision_id,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                type=order.type,
                kind=order.reason,
                reduce_only=order.reduce_only,
                created_at=order.created_at,
                status=order.status,
                quantity=order.quantity,
            )
            repo.add(row)
            known_orders[order.client_order_id] = row
        _apply_order(row, order)

    async def snapshot_equity(
        self, session: AsyncSession, account_id: int, balance: Balance, at: datetime
    ) -> models.EquitySnapshot:
        row = models.EquitySnapshot(
            account_id=account_id,
            taken_at=at,
            wallet_balance=balance.wallet_balance,
            unrealized_pnl=balance.unrealized_pnl,
            equity=balance.equity,
            margin_used=balance.margin_used,
            realized_pnl=balance.realized_pnl,
            fees_paid=balance.fees_paid,
            funding_net=balance.funding_received - balance.funding_paid,
        )
        await insert_rows(session, [row])
        return row
