"""Orders, fills, positions and equity snapshots of an account: the local mirror of the venue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import EquitySnapshot, Fill, FundingPayment, Order, Position


class TradingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------------------------------- orders
    async def orders_by_client_ids(self, client_order_ids: list[str]) -> dict[str, Order]:
        """The stored orders among `client_order_ids`, by client order id (one read for all of them)."""
        if not client_order_ids:
            return {}
        query = select(Order).where(Order.client_order_id.in_(client_order_ids))
        return {row.client_order_id: row for row in (await self.session.scalars(query)).all()}

    async def open_orders(self, account_id: int) -> list[Order]:
        query = select(Order).where(Order.account_id == account_id, Order.status == "open").order_by(Order.id)
        return list((await self.session.scalars(query)).all())

    async def orders_for_decision(self, decision_id: int) -> list[Order]:
        query = select(Order).where(Order.decision_id == decision_id).order_by(Order.id)
        return list((await self.session.scalars(query)).all())

    async def orders(self, account_id: int, *, limit: int = 500) -> list[Order]:
        query = select(Order).where(Order.account_id == account_id).order_by(Order.id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    def add(self, row: Order | Fill | Position | EquitySnapshot | FundingPayment) -> None:
        self.session.add(row)

    # -------------------------------------------------------------------------------------------- fills
    async def fills(self, account_id: int) -> list[Fill]:
        query = select(Fill).where(Fill.account_id == account_id).order_by(Fill.id)
        return list((await self.session.scalars(query)).all())

    async def position_fills(self, account_id: int, symbol: str, since: datetime) -> list[Fill]:
        """Fills of one asset from `since` on (a position's own fills), oldest first."""
        query = select(Fill).where(Fill.account_id == account_id, Fill.symbol == symbol, Fill.filled_at >= since)
        return list((await self.session.scalars(query.order_by(Fill.id))).all())

    async def known_fill_ids(self, account_id: int, since: datetime | None) -> set[str]:
        query = select(Fill.venue_fill_id).where(Fill.account_id == account_id)
        if since is not None:
            query = query.where(Fill.filled_at >= since)
        return set((await self.session.scalars(query)).all())

    async def last_fill_time(self, account_id: int) -> datetime | None:
        return await self.session.scalar(select(func.max(Fill.filled_at)).where(Fill.account_id == account_id))

    async def ledger_totals(self, account_id: int) -> tuple[float, float]:
        """(realized PnL, fees) summed over every fill of the account."""
        query = select(func.coalesce(func.sum(Fill.realized_pnl), 0.0), func.coalesce(func.sum(Fill.fee), 0.0))
        realized, fees = (await self.session.execute(query.where(Fill.account_id == account_id))).one()
        return float(realized), float(fees)

    # ------------------------------------------------------------------------------------------ funding
    async def funding_totals(self, account_id: int) -> tuple[float, float]:
        """(funding paid, funding received), both positive."""
        query = select(
            func.coalesce(func.sum(case((FundingPayment.amount < 0, -FundingPayment.amount), else_=0.0)), 0.0),
            func.coalesce(func.sum(case((FundingPayment.amount > 0, FundingPayment.amount), else_=0.0)), 0.0),
        ).where(FundingPayment.account_id == account_id)
        paid, received = (await self.session.execute(query)).one()
        return float(paid), float(received)

    async def last_funding_times(self, account_id: int) -> dict[str, datetime]:
        query = (
            select(FundingPayment.symbol, func.max(FundingPayment.funding_time))
            .where(FundingPayment.account_id == account_id)
            .group_by(FundingPayment.symbol)
        )
        return {symbol: at for symbol, at in (await self.session.execute(query)).all() if at is not None}

    async def known_funding(self, account_id: int) -> set[tuple[str, datetime]]:
        query = select(FundingPayment.symbol, FundingPayment.funding_time).where(
            FundingPayment.account_id == account_id
        )
        return {(s, t) for s, t in (await self.session.execute(query)).all()}

    # ---------------------------------------------------------------------------------------- positions
    async def open_positions(self, account_id: int) -> list[Position]:
        query = select(Position).where(Position.account_id == account_id, Position.status == "open")
        return list((await self.session.scalars(query.order_by(Position.id))).all())

    async def closed_positions(self, account_id: int, *, limit: int = 500) -> list[Position]:
        query = (
            select(Position)
            .where(Position.account_id == account_id, Position.status == "closed")
            .order_by(Position.closed_at.desc(), Position.id.desc())
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())

    async def last_entry_times(self, account_id: int) -> dict[str, datetime]:
        """When each asset last got new exposure (a filled entry or increase), for cooldowns."""
        query = (
            select(Order.symbol, func.max(Order.updated_at))
            .where(
                Order.account_id == account_id,
                Order.kind.in_(("entry", "increase")),
                Order.status == "filled",
            )
            .group_by(Order.symbol)
        )
        return {symbol: at for symbol, at in (await self.session.execute(query)).all() if at is not None}

    # ------------------------------------------------------------------------------------------- equity
    async def first_equity_since(self, account_id: int, since: datetime) -> float | None:
        """Equity at the first snapshot at or after `since` (the start of the day's book)."""
        query = (
            select(EquitySnapshot.equity)
            .where(EquitySnapshot.account_id == account_id, EquitySnapshot.taken_at >= since)
            .order_by(EquitySnapshot.taken_at, EquitySnapshot.id)
            .limit(1)
        )
        value = await self.session.scalar(query)
        return float(value) if value is not None else None

    async def day_start_equity(self, account_id: int, day_start: datetime) -> float | None:
        """Equity when the day began: the last snapshot at or before `day_start` (the previous day's close),
        else the day's first snapshot; None when there is none."""
        query = (
            select(EquitySnapshot.equity)
            .where(EquitySnapshot.account_id == account_id, EquitySnapshot.taken_at <= day_start)
            .order_by(EquitySnapshot.taken_at.desc(), EquitySnapshot.id.desc())
            .limit(1)
        )
        value = await self.session.scalar(query)
        if value is not None:
            return float(value)
        return await self.first_equity_since(account_id, day_start)

    async def equity_values(self, account_id: int, *, limit: int = 2000) -> list[float]:
        """The equity of the most recent `limit` snapshots, oldest first (no row objects: it is read often)."""
        query = (
            select(EquitySnapshot.equity)
            .where(EquitySnapshot.account_id == account_id)
            .order_by(EquitySnapshot.id.desc())
            .limit(limit)
        )
        return [float(v) for v in reversed((await self.session.scalars(query)).all())]

    async def equity_curve(self, account_id: int, *, limit: int = 2000) -> list[EquitySnapshot]:
        """Oldest first, the most recent `limit` snapshots."""
        query = (
            select(EquitySnapshot)
            .where(EquitySnapshot.account_id == account_id)
            .order_by(EquitySnapshot.id.desc())
            .limit(limit)
        )
        return list(reversed((await self.session.scalars(query)).all()))
