"""One venue per account. Paper venues are rebuilt from the database at start-up (the ledger of fills,
the open positions and the open orders) and fed the market's closed candles as the clock moves. Live accounts get a
`LiveExchange` on their venue and network, built from their stored credentials, once every opt-in holds:

- the process trades live accounts (`TRADING_MODE=live`);
- a mainnet account also needs `LIVE_MAINNET_CONFIRM` (real money);
- the market data is the venue's, not the simulator or a replay (decisions on other prices would set wrong stops);
- the account has credentials, and the venue accepts them (`LiveExchange.start`).

An account that fails one is refused with the reason (`refusals`, shown by `/health` and the account), and asked
again on its next cycle."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock, WallClock
from app.core.errors import TemporaryError
from app.core.security import SecretBox
from app.core.timeframes import from_ms, timeframe_delta, to_ms
from app.db import models
from app.db.models import Account
from app.db.repositories.trading import TradingRepository
from app.services.exchange.base import FEE_PROFILES, Exchange, ExchangeError, Fill, Order, Position
from app.services.exchange.paper import PaperVenue
from app.services.llm.llm_exceptions import AccountNotFoundError
from app.services.market_data.base import Candle, CandleSeries, MarketDataSource, MarketRules

if TYPE_CHECKING:  # ccxt is imported only when a live account trades: the offline agent never loads it
    from app.services.exchange.live import LiveExchange

MAX_REPLAY_CANDLES = 500
_KEPT_UNTILS = 2  # moments whose candles are kept for the other accounts (see `_candles`)

log = logging.getLogger(__name__)


class LiveAccountRefusedError(TemporaryError):
    """A live account this process does not trade now; the message says why and what would change it. `temporary`:
    the venue could not be reached or read (it may pass by itself); otherwise a setting, the credentials or the
    venue's refusal must change first."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class LivePolicy:
    """What lets live accounts trade in this process (from the settings)."""

    enabled: bool = False  # TRADING_MODE=live
    mainnet_confirmed: bool = False  # LIVE_MAINNET_CONFIRM
    market_venue: str | None = None  # the venue whose market data the agent decides on (MARKET_SOURCE), if any
    api_url: str | None = None  # VENUE_API_URL: a fake venue or a proxy
    timeout_ms: int = 10_000


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
        live: LivePolicy | None = None,
        secrets: SecretBox | None = None,
        wall_clock: Clock | None = None,
    ) -> None:
        self.profile = FEE_PROFILES[venue]
        self.live = live or LivePolicy()
        self.secrets = secrets
        self.wall_clock = wall_clock or WallClock()
        self._live: dict[int, LiveExchange] = {}
        self._live_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._modes: dict[int, str] = {}
        self.refusals: dict[int, str] = {}  # live account -> why it is not traded now
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
        """The account's venue: its paper venue, or its live adapter (`LiveAccountRefusedError` when it may not trade
        now, with the reason)."""
        if await self._mode(account_id) == "live":
            return await self._live_exchange(account_id)
        return await self._venue(account_id)

    def is_live(self, account_id: int) -> bool:
        return self._modes.get(account_id) == "live"

    def refusal(self, account: Account) -> str | None:
        """Why a live account is not traded now (a missing opt-in or credentials, a venue that refused it or could
        not be reconciled); None for a live account that trades and for every paper account."""
        if account.mode != "live":
            return None
        return self.live_gate(account) or self.refusals.get(account.id)

    def refuse(self, account_id: int, reason: str) -> None:
        """Record why a live account is not traded (a failed start, a reconciliation that could not be done)."""
        if self.refusals.get(account_id) != reason:
            log.warning("live account %s is not traded: %s", account_id, reason)
        self.refusals[account_id] = reason

    def accept(self, account_id: int) -> None:
        if self.refusals.pop(account_id, None) is not None:
            log.info("live account %s reconciled with its venue: trading again", account_id)

    async def forget(self, account_id: int) -> None:
        """Close the account's live adapter (its credentials changed): the next use builds it again."""
        async with self._live_locks[account_id]:
            adapter = self._live.pop(account_id, None)
            self.refusals.pop(account_id, None)
        if adapter is not None:
            await adapter.close()

    def forget_paper(self, account_id: int) -> None:
        """Drop the account's paper venue: its next use restores it from the database (another process sharing the
        database may have traded the account since this one built it)."""
        self._venues.pop(account_id, None)
        for key in [k for k in self._processed if k[0] == account_id]:
            del self._processed[key]

    async def close(self) -> None:
        """Close the live adapters' connections."""
        adapters, self._live = list(self._live.values()), {}
        for adapter in adapters:
            try:
                await adapter.close()
            except Exception:  # closing must go on for the others
                log.exception("closing the live adapter %r failed", adapter)

    async def _mode(self, account_id: int) -> str:
        mode = self._modes.get(account_id)
        if mode is None:
            async with self.sessions() as session:
                account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            mode = self._modes[account_id] = account.mode
        return mode

    async def _live_exchange(self, account_id: int) -> LiveExchange:
        # a lock per live account: starting one (network reads, up to its timeouts) never holds up the others
        async with self._live_locks[account_id]:
            adapter = self._live.get(account_id)
            if adapter is not None:
                return adapter
            async with self.sessions() as session:
                account = await session.get(Account, account_id)
                if account is None:
                    raise AccountNotFoundError(account_id)
                ids = (
                    await session.scalars(
                        select(models.Order.client_order_id).where(models.Order.account_id == account_id)
                    )
                ).all()
            reason = self.live_gate(account)
            if reason is not None:
                self.refuse(account_id, reason)
                raise LiveAccountRefusedError(f"live account {account_id}: {reason}", temporary=False)
            from app.services.exchange.live import LiveExchange, VenueCredentials

            assert self.secrets is not None and account.credentials_encrypted is not None
            stored = json.loads(self.secrets.decrypt(account.credentials_encrypted))
            network: Literal["testnet", "mainnet"] = "mainnet" if account.network == "mainnet" else "testnet"
            venue: Literal["binanceusdm", "hyperliquid"] = (
                "hyperliquid" if account.venue == "hyperliquid" else "binanceusdm"
            )
            adapter = LiveExchange(
                venue,
                VenueCredentials(api_key=stored["api_key"], api_secret=stored["api_secret"]),
                network=network,
                assets=self.assets,
                api_url=self.live.api_url,
                timeout_ms=self.live.timeout_ms,
                wall_clock=self.wall_clock,
            )
            adapter.register_client_ids(ids)
            try:
                await adapter.start()
            except (ExchangeError, TemporaryError) as exc:
                await adapter.close()
                reason = f"{venue} {network} could not be reached or refused the account: {exc}"
                self.refuse(account_id, reason)
                raise LiveAccountRefusedError(f"live account {account_id}: {reason}", temporary=False) from None
            self._live[account_id] = adapter
            log.warning(
                "live account %s trades on %s %s%s",
                account_id,
                venue,
                network,
                " WITH REAL MONEY" if network == "mainnet" else " (the venue's test network)",
            )
            return adapter

    def live_gate(self, account: Account) -> str | None:
        """Why this live account may not trade in this process, or None."""
        if not self.live.enabled:
            return "TRADING_MODE is paper: this process trades no live account (set TRADING_MODE=live)"
        if account.network == "mainnet" and not self.live.mainnet_confirmed:
            return "a mainnet account trades real money: set LIVE_MAINNET_CONFIRM=real-money to allow it"
        if self.live.market_venue != account.venue:
            return (
                f"a live {account.venue} account needs that venue's market data (MARKET_SOURCE={account.venue}, now "
                f"{self.live.market_venue or 'simulated or replayed'}): decisions on other prices would set its stops "
                "at the wrong levels"
            )
        if account.credentials_encrypted is None or self.secrets is None:
            return f"no exchange credentials stored (PUT /api/v1/accounts/{account.id}/credentials)"
        return None

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
            leverage = await repo.last_leverage(account_id)
        # The venue saw the candle that closed at its last snapshot: its marks and volumes are that candle's (the
        # candles after it are replayed by `advance`).
        seen = curve[-1].taken_at if curve else None
        symbols = sorted({*self.assets, *(r.symbol for r in position_rows)})
        last = {s: await self._candles(s, 1, seen) for s in symbols} if seen is not None else {}
        marks = {s: float(c.close[-1]) for s, c in last.items() if len(c)}
        volumes = {s: float(c.volume[-1] * c.close[-1]) for s, c in last.items() if len(c)}
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
                mark_price=marks.get(r.symbol, r.entry_price),
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
            leverage=leverage,
            next_order_seq=highest_number + 1,  # ids are never reused, whatever was filled or cancelled
            marks=marks,
            quote_volumes=volumes,
        )
        if curve:
            # Candles closed after the last snapshot were not seen by the venue: replay them.
            last_seen = to_ms(curve[-1].taken_at - timeframe_delta(self.interval))
            for symbol in {*self.assets, *(p.symbol for p in positions)}:
                self._processed[(account_id, symbol)] = last_seen
        return venue

    async def advance(self, account_id: int, until: datetime) -> list[Fill]:
        """Feed the account's paper venue every closed candle it has not seen yet, up to `until` (a live venue moves
        by itself: nothing to do)."""
        if await self._mode(account_id) == "live":
            return []
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
        answer is kept for the others (for the two newest `until`s: a cycle's and, for venues restored in it, the one
        before)."""
        key = (symbol, limit, until)
        cached = self._recent.get(key)
        if cached is None:
            kept = sorted({k[2] for k in self._recent} | {until})[-_KEPT_UNTILS:]
            if until not in kept:  # an old moment: asked, not kept
                return await self.market.fetch_candles(symbol, self.interval, limit=limit, until=until)
            self._recent = {k: v for k, v in self._recent.items() if k[2] in kept}
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
