"""One venue per account. Paper venues are rebuilt from the database at start-up (the ledger of fills,
the open positions and the open orders) and fed the market's closed candles as the clock moves."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.timeframes import from_ms, timeframe_delta, to_ms
from app.db.models import Account
from app.db.repositories.trading import TradingRepository
from app.services.exchange.base import FEE_PROFILES, Exchange, Fill, Order, Position
from app.services.exchange.paper import PaperVenue
from app.services.llm.llm_exceptions import AccountNotFoundError
from app.services.market_data.base import Candle, CandleSeries, MarketDataSource, MarketRules

MAX_REPLAY_CANDLES = 500


class VenueRegistry:
    """Hands out each account's `Exchange` and keeps paper venues in step with the market."""

    def __init__(
        self,
        *,
        market: MarketDataSource,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        assets: list[str],
        interval: str,
        venue: str = "binanceusdm",
    ) -> None:
        self.profile = FEE_PROFILES[venue]
        self.market = market
        self.sessions = sessions
        self.clock = clock
        self.assets = assets
        self.interval = interval
        self._venues: dict[int, PaperVenue] = {}
        self._processed: dict[tuple[int, str], int] = {}  # (account, symbol) -> last processed open ms
        self._rules: dict[str, MarketRules] = {}
        self._recent: dict[tuple[str, int, datetime], CandleSeries] = {}
        self._lock = asyncio.Lock()

    @property
    def maintenance_margin_rate(self) -> float:
        """The venue profile's maintenance margin rate (the default venue's, for the validator's rules)."""
        return self.profile.maintenance_margin_rate

    @property
    def known_rules(self) -> dict[str, MarketRules]:
        """The rules asked so far, a table `rules()` fills in place: whoever reads rules later (the executor) shares
        it from start-up on, without asking the market before it answers."""
        return self._rules

    async def rules(self) -> dict[str, MarketRules]:
        """Every asset's market rules, asked once (an asset the market failed to answer for is asked again)."""
        for asset in self.assets:
            if asset not in self._rules:
                self._rules[asset] = await self.market.market_rules(asset)
        return self._rules

    async def exchange_for(self, account_id: int) -> Exchange:
        return await self._venue(account_id)

    async def _venue(self, account_id: int) -> PaperVenue:
        async with self._lock:
            venue = self._venues.get(account_id)
            if venue is None:
                venue = await self._restore(account_id)
                self._venues[account_id] = venue
            return venue

    async def _restore(self, account_id: int) -> PaperVenue:
        async with self.sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            repo = TradingRepository(session)
            realized, fees = await repo.ledger_totals(account_id)
            funding_paid, funding_received = await repo.funding_totals(account_id)
            funding_settled = await repo.last_funding_times(account_id)
            position_rows = await repo.open_positions(account_id)
            order_rows = await repo.open_orders(account_id)
            curve = await repo.equity_curve(account_id, limit=1)
            highest_number = await repo.highest_venue_number(account_id)
        profile = FEE_PROFILES[account.venue]
        venue = PaperVenue(
            initial_balance=account.initial_balance, rules=await self.rules(), fees=profile, clock=self.clock
        )
        positions = [
            Position(
                symbol=r.symbol,
                side="long" if r.side == "long" else "short",
                size=r.size,
                entry_price=r.entry_price,
                leverage=r.leverage,
                margin=r.margin,
                liquidation_price=r.liquidation_price,
                opened_at=r.opened_at,
                mark_price=r.entry_price,
            )
            for r in position_rows
        ]
        orders = [
            Order(
                client_order_id=r.client_order_id,
                venue_order_id=r.venue_order_id or r.client_order_id,
                symbol=r.symbol,
                side="buy" if r.side == "buy" else "sell",
                type=r.type,  # type: ignore[arg-type]
                quantity=r.quantity,
                status="open",
                created_at=r.created_at,
                updated_at=r.updated_at,
                trigger_price=r.trigger_price,
                price=r.price,
                reduce_only=r.reduce_only,
                reason=r.kind,  # type: ignore[arg-type]
            )
            for r in order_rows
        ]
        venue.restore(
            initial_balance=account.initial_balance,
            wallet_balance=account.initial_balance + realized - fees - funding_paid + funding_received,
            realized_pnl=realized,
            fees_paid=fees,
            positions=positions,
            open_orders=orders,
            funding_paid=funding_paid,
            funding_received=funding_received,
            funding_settled=funding_settled,
            leverage={p.symbol: p.leverage for p in positions},
            next_order_seq=highest_number + 1,  # ids are never reused, whatever was filled or cancelled
        )
        if curve:
            # Candles closed after the last snapshot were not seen by the venue: replay them.
            last_seen = to_ms(curve[-1].taken_at - timeframe_delta(self.interval))
            for symbol in {*self.assets, *(p.symbol for p in positions)}:
                self._processed[(account_id, symbol)] = last_seen
        return venue

    async def advance(self, account_id: int, until: datetime) -> list[Fill]:
        """Feed the account's venue every closed candle it has not seen yet, up to `until`."""
        venue = await self._venue(account_id)
        symbols = {*self.assets, *(p.symbol for p in await venue.fetch_positions())}
        fills: list[Fill] = []
        step_ms = int(timeframe_delta(self.interval).total_seconds() * 1000)
        for symbol in sorted(symbols):
            key = (account_id, symbol)
            seen = self._processed.get(key)
            # only the candles the venue has not seen (plus the last seen one): usually one or two
            limit = MAX_REPLAY_CANDLES if seen is None else (to_ms(until) - seen) // step_ms + 1
            series = await self._candles(symbol, max(1, min(MAX_REPLAY_CANDLES, limit)), until)
            if len(series) == 0:
                continue
            if seen is None:
                venue.set_mark_price(symbol, float(series.close[-1]))
            else:
                for i in range(len(series)):
                    if int(series.open_time_ms[i]) > seen:
                        candle = series.candle(i)
                        fills.extend(venue.on_candle(symbol, candle))
                        await self._settle_funding(venue, symbol, candle)
            self._processed[key] = int(series.open_time_ms[-1])
        return fills

    async def _candles(self, symbol: str, limit: int, until: datetime) -> CandleSeries:
        """The market's last `limit` closed candles by `until`: every account in step asks the same, so the
        answer is kept for the others (only for the newest `until`)."""
        key = (symbol, limit, until)
        cached = self._recent.get(key)
        if cached is None:
            if any(k[2] != until for k in self._recent):
                self._recent.clear()
            cached = self._recent[key] = await self.market.fetch_candles(
                symbol, self.interval, limit=limit, until=until
            )
        return cached

    async def _settle_funding(self, venue: PaperVenue, symbol: str, candle: Candle) -> None:
        """Apply the funding settlement that fell inside this candle, at its close (the venue ignores a
        settlement it has already applied and positions that do not exist)."""
        if not any(p.symbol == symbol for p in await venue.fetch_positions()):
            return
        close = from_ms(candle.open_time_ms) + timeframe_delta(self.interval)
        rate = await self.market.fetch_funding_rate(symbol, close)
        if rate is None:
            return
        settled_at = from_ms(rate.funding_time_ms)
        if from_ms(candle.open_time_ms) < settled_at <= close:
            venue.apply_funding(symbol, rate.rate, settled_at, candle.close)
