"""Account truth for the decision: money and positions from the venue, history from the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Account
from app.db.repositories.trading import AccountHistory, EquityTails, StoredRow, TradingRepository
from app.schemas.trading_decision import (
    AccountContext,
    PositionSummary,
    TradeHistory,
    TradingStrategy,
)
from app.services.account.metrics import performance_metrics
from app.services.exchange.base import Exchange


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as a decision sees it: its context, its recent trades by asset, its equity curve (oldest
    first, ending with the equity now) and the stored past they came from (the risk rules read it too)."""

    context: AccountContext
    trades: dict[str, list[TradeHistory]]
    curve: list[float]
    history: AccountHistory


class AccountService:
    """Builds `AccountContext` and the recent trades of an account."""

    def __init__(self, *, periods_per_year: float) -> None:
        self.periods_per_year = periods_per_year
        self.equity_tails = EquityTails()  # each decision reads only the snapshots added since the last one

    async def account_context(
        self, session: AsyncSession, account: Account, exchange: Exchange, strategy: TradingStrategy, now: datetime
    ) -> AccountContext:
        return (await self.account_state(session, account, exchange, strategy, (), now=now)).context

    async def account_state(
        self,
        session: AsyncSession,
        account: Account,
        exchange: Exchange,
        strategy: TradingStrategy,
        symbols: Sequence[str],
        *,
        now: datetime,
        per_symbol: int = 5,
    ) -> AccountState:
        """The account at `now`: money and positions from the venue, its past from the database (one
        `account_history` read), recent closed trades grouped by asset (newest first, at most `per_symbol` each)."""
        balance = await exchange.fetch_balance()
        venue_positions = await exchange.fetch_positions()
        history = await TradingRepository(session).account_history(account.id, now, self.equity_tails)
        summaries: list[PositionSummary] = []
        for pos in venue_positions:
            row = history.plans.get(pos.symbol)
            summaries.append(
                PositionSummary(
                    symbol=pos.symbol,
                    side=pos.side,
                    size=pos.size,
                    entry_price=pos.entry_price,
                    current_price=pos.mark_price,
                    unrealized_pnl=pos.unrealized_pnl,
                    percentage_pnl=pos.unrealized_pnl / pos.margin * 100 if pos.margin else 0.0,
                    leverage=pos.leverage,
                    margin_usd=pos.margin,
                    liquidation_price=pos.liquidation_price,
                    stop_loss=row.stop_loss if row else None,
                    take_profit=row.take_profit if row else None,
                    exit_plan=row.exit_plan if row else None,
                    entry_rationale=row.entry_rationale if row else None,
                    opened_at=pos.opened_at,
                )
            )
        curve = [*(equity for _at, equity in history.equity), balance.equity]
        performance = performance_metrics(
            [p.realized_pnl - p.fees for p in history.closed],
            curve,
            balance.equity - account.initial_balance,
            self.periods_per_year,
        )
        gross = sum(p.notional for p in venue_positions)
        context = AccountContext(
            account_id=account.id,
            balance_usd=balance.equity,
            available_balance=balance.available,
            total_pnl=balance.equity - account.initial_balance,
            open_positions=summaries,
            recent_performance=performance,
            risk_exposure=gross / balance.equity if balance.equity > 0 else 0.0,
            max_position_size=account.max_position_size,
            active_strategy=strategy,
            maker_fee_bps=account.maker_fee_bps,
            taker_fee_bps=account.taker_fee_bps,
        )
        return AccountState(context, _group_trades(history.closed, symbols, per_symbol), curve, history)


def _group_trades(
    closed: Sequence[StoredRow], symbols: Sequence[str], per_symbol: int
) -> dict[str, list[TradeHistory]]:
    """Closed trades (newest first) grouped by asset, at most `per_symbol` each."""
    grouped: dict[str, list[TradeHistory]] = defaultdict(list)
    for row in closed:
        if row.symbol not in symbols or len(grouped[row.symbol]) >= per_symbol or row.closed_at is None:
            continue
        grouped[row.symbol].append(
            TradeHistory(
                symbol=row.symbol,
                side=row.side,
                size=row.size,
                entry_price=row.entry_price,
                exit_price=row.exit_price or row.entry_price,
                realized_pnl=row.realized_pnl,
                fees=row.fees,
                exit_reason=row.exit_reason or "unknown",
                opened_at=row.opened_at,
                closed_at=row.closed_at,
            )
        )
    return {s: grouped.get(s, []) for s in symbols}
