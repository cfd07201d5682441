"""Trading context assembly: market data on both timeframes, indicators, account state, trades, risk.

Missing or stale parts degrade into `TradingContext.errors`; an asset without usable price data is left out
of the market data (with its reason in `errors`) instead of failing the whole context.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.timeframes import from_ms, timeframe_seconds
from app.db.models import Account
from app.db.repositories.trading import AccountHistory
from app.schemas.trading_decision import (
    AccountContext,
    AssetMarketData,
    MarketContext,
    PricePoint,
    TechnicalIndicators,
    TradingContext,
    TradingStrategy,
)
from app.services.account.account_service import AccountService
from app.services.account.metrics import risk_metrics
from app.services.exchange.registry import VenueRegistry
from app.services.llm.llm_exceptions import AccountNotFoundError, ContextBuildingError, InsufficientDataError
from app.services.llm.strategy_manager import StrategyManager
from app.services.market_data.base import CandleSeries, MarketDataSource
from app.services.market_data.market_sync import MarketSync
from app.services.technical_analysis.incremental import IndicatorCache

CANDLES_FOR_INDICATORS = 120  # EMA50 needs 50; MACD 34; the rest is the reported series
STALE_AFTER_CANDLES = 2
MARKET_CACHE_SIZE = 8


def _log_returns(series: CandleSeries) -> np.ndarray:
    closes = series.close
    if closes.size < 2:
        return np.empty(0)
    return np.diff(np.log(closes))


class ContextBuilder:
    def __init__(
        self,
        *,
        market: MarketDataSource,
        sessions: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        venues: VenueRegistry,
        strategies: StrategyManager,
        clock: Clock,
        interval: str,
        long_interval: str,
        price_history_candles: int,
        indicator_series_length: int,
        market_sync: MarketSync | None = None,
    ) -> None:
        self.market_sync = market_sync
        self.market = market
        self.sessions = sessions
        self.accounts = accounts
        self.venues = venues
        self.strategies = strategies
        self.clock = clock
        self.interval = interval
        self.long_interval = long_interval
        self.price_history_candles = price_history_candles
        self.indicator_series_length = indicator_series_length
        self._market_cache: dict[tuple[object, ...], tuple[MarketContext, list[str], dict[str, np.ndarray]]] = {}
        self._market_lock = asyncio.Lock()
        self.indicators = IndicatorCache()  # the trend timeframe changes once per its candle, not every cycle
        # The price points of the last history built, by (asset, timeframe) and candle: reused by the next cycle.
        self._points: dict[tuple[str, str], dict[tuple[int, float, float, float, float, float], PricePoint]] = {}

    async def build_trading_context(
        self,
        symbols: list[str],
        account_id: int,
        strategy: TradingStrategy | None = None,
        *,
        account: Account | None = None,
    ) -> TradingContext:
        """The full context for one account's decision over `symbols` (the account's strategy unless
        `strategy` is given; `account`, its row when the caller has just read it)."""
        return (await self.build_with_history(symbols, account_id, strategy, account=account))[0]

    async def build_with_history(
        self,
        symbols: list[str],
        account_id: int,
        strategy: TradingStrategy | None = None,
        *,
        account: Account | None = None,
    ) -> tuple[TradingContext, AccountHistory]:
        """`build_trading_context`, and the account's stored past it was built from (the decision's risk rules
        need the day's starting equity and the last entries, read in the same go)."""
        now = self.clock.now()
        exchange = await self.venues.exchange_for(account_id)
        if strategy is None:
            strategy = await self.strategies.get_account_strategy(account_id)
        timeframes, note = self.timeframes_for(strategy)
        market, errors, returns = await self._market(symbols, timeframes)
        if note:
            errors = [note, *errors]
        async with self.sessions() as session:
            if account is None or account.id != account_id:
                account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            state = await self.accounts.account_state(session, account, exchange, strategy, symbols, now=now)
        notionals = {p.symbol: p.size * p.current_price for p in state.context.open_positions}
        risk = risk_metrics(state.curve, notionals, returns)
        context = TradingContext(
            symbols=symbols,
            account_id=account_id,
            market_data=market,
            account_state=state.context,
            recent_trades=state.trades,
            risk_metrics=risk,
            timestamp=now,
            errors=errors,
        )
        return context, state.history

    def timeframes_for(self, strategy: TradingStrategy) -> tuple[list[str], str | None]:
        """The strategy's (decision, trend) timeframes, and a note when they cannot be used as they are: the
        decision timeframe is never finer than the agent's cycle (INTERVAL), and the trend timeframe is longer
        than the decision timeframe (else LONG_INTERVAL, or none finer than the decision one)."""
        preferred = list(strategy.timeframe_preference)
        try:
            seconds = [timeframe_seconds(t) for t in preferred]
        except ValueError as exc:
            return [self.interval, self.long_interval], f"strategy timeframes {preferred} unusable ({exc})"
        cycle = timeframe_seconds(self.interval)
        decision = preferred[0] if preferred and seconds[0] >= cycle else self.interval
        if len(preferred) > 1 and seconds[1] > timeframe_seconds(decision):
            trend = preferred[1]
        elif timeframe_seconds(self.long_interval) > timeframe_seconds(decision):
            trend = self.long_interval
        else:
            trend = decision
        chosen = [decision, trend]
        if preferred[:1] == [decision] and (len(preferred) < 2 or preferred[1] == trend):
            return chosen, None
        return chosen, (
            f"strategy timeframes {preferred} adapted to {chosen}: the agent decides every {self.interval} "
            "(INTERVAL); the decision timeframe is not finer and the trend timeframe is longer"
        )

    async def get_market_context(self, symbols: list[str], timeframes: list[str]) -> MarketContext:
        """Market data for `symbols`; `timeframes` is (decision timeframe, trend timeframe)."""
        market, _errors, _returns = await self._market(symbols, timeframes)
        return market

    async def get_account_context(self, account_id: int) -> AccountContext:
        exchange = await self.venues.exchange_for(account_id)
        strategy = await self.strategies.get_account_strategy(account_id)
        async with self.sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFoundError(account_id)
            return await self.accounts.account_context(session, account, exchange, strategy, self.clock.now())

    # ------------------------------------------------------------------------------------------ market
    async def _market(
        self, symbols: Sequence[str], timeframes: Sequence[str]
    ) -> tuple[MarketContext, list[str], dict[str, np.ndarray]]:
        """Market data is the same for every account in a cycle: built once per candle and reused."""
        interval, long_interval = [*timeframes, self.long_interval][:2]
        key = (tuple(symbols), interval, long_interval, self.clock.now())
        cached = self._market_cache.get(key)
        if cached is not None:
            return cached
        async with self._market_lock:
            cached = self._market_cache.get(key)
            if cached is None:
                if self.market_sync is not None:  # the store is current before it is read
                    await self.market_sync.sync(self.clock.now(), (interval, long_interval))
                cached = await self._build_market(symbols, interval, long_interval)
                if len(self._market_cache) >= MARKET_CACHE_SIZE:
                    self._market_cache.pop(next(iter(self._market_cache)))
                self._market_cache[key] = cached
        return cached

    async def _build_market(
        self, symbols: Sequence[str], interval: str, long_interval: str
    ) -> tuple[MarketContext, list[str], dict[str, np.ndarray]]:
        results = await asyncio.gather(
            *(self._asset(s, interval, long_interval) for s in symbols), return_exceptions=True
        )
        assets: dict[str, AssetMarketData] = {}
        errors: list[str] = []
        returns: dict[str, np.ndarray] = {}
        for symbol, result in zip(symbols, results, strict=True):
            if isinstance(result, InsufficientDataError):
                errors.append(str(result))
            elif isinstance(result, BaseException):
                errors.append(f"{symbol}: market data unavailable: {type(result).__name__}: {result}")
            else:
                data, asset_errors, asset_returns = result
                assets[symbol] = data
                errors.extend(asset_errors)
                returns[symbol] = asset_returns
        if not assets and symbols:
            raise ContextBuildingError("no usable market data for any asset: " + "; ".join(errors))
        return (
            MarketContext(
                assets=assets,
                market_sentiment=_sentiment(assets),
                timestamp=self.clock.now(),
                timeframes=[interval, long_interval],
            ),
            errors,
            returns,
        )

    async def _asset(
        self, symbol: str, interval: str, long_interval: str
    ) -> tuple[AssetMarketData, list[str], np.ndarray]:
        now = self.clock.now()
        errors: list[str] = []
        base = await self.market.fetch_candles(symbol, interval, limit=CANDLES_FOR_INDICATORS, until=now)
        if len(base) == 0:
            raise InsufficientDataError(f"{symbol}: no closed {interval} candles", symbol=symbol)
        last_close_time = from_ms(int(base.open_time_ms[-1])).timestamp() + timeframe_seconds(interval)
        age = now.timestamp() - last_close_time
        if age > STALE_AFTER_CANDLES * timeframe_seconds(interval):
            raise InsufficientDataError(
                f"{symbol}: stale data: the newest {interval} candle closed {age:.0f} s ago", symbol=symbol
            )
        long = await self.market.fetch_candles(symbol, long_interval, limit=CANDLES_FOR_INDICATORS, until=now)
        ticker = await self.market.fetch_ticker_24h(symbol, now)
        funding = await self.market.fetch_funding_rate(symbol, now)
        open_interest = await self.market.fetch_open_interest(symbol, now)
        if funding is None:
            errors.append(f"{symbol}: no funding rate")
        interval_ind = self.indicators.compute(base, self.indicator_series_length)
        long_ind = self.indicators.compute(long, self.indicator_series_length)
        if interval_ind.ema_50 is None:
            errors.append(f"{symbol}: only {len(base)} {interval} candles; some indicators are missing")
        if long_ind.ema_50 is None:
            errors.append(f"{symbol}: only {len(long)} {long_interval} candles; some indicators are missing")
        returns = _log_returns(base)
        per_day = 86400 / timeframe_seconds(interval)
        volatility = float(returns.std(ddof=1) * math.sqrt(per_day) * 100) if returns.size > 2 else 0.0
        data = AssetMarketData(
            symbol=symbol,
            current_price=float(base.close[-1]),
            price_change_24h=ticker.price_change_pct,
            volume_24h=ticker.quote_volume,
            funding_rate=funding.rate if funding else None,
            open_interest=open_interest,
            price_history=self._price_history(base),
            volatility=volatility,
            technical_indicators=TechnicalIndicators(interval=interval_ind, long_interval=long_ind),
        )
        return data, errors, returns

    def _price_history(self, base: CandleSeries) -> list[PricePoint]:
        """The last `price_history_candles` candles as points. A closed candle is the same point from one cycle
        to the next: a point whose candle has the same open time and values as one of the previous history of
        this asset and timeframe is reused, not built again (the history shifts by one candle a cycle)."""
        start = max(0, len(base) - self.price_history_candles)
        columns = (base.open_time_ms, base.open, base.high, base.low, base.close, base.volume)
        rows: list[tuple[int, float, float, float, float, float]] = list(
            zip(*(column[start:].tolist() for column in columns), strict=True)
        )
        previous = self._points.get((base.symbol, base.timeframe), {})
        points: dict[tuple[int, float, float, float, float, float], PricePoint] = {}
        history: list[PricePoint] = []
        for row in rows:
            point = previous.get(row)
            if point is None or 0.0 in row[1:]:  # 0.0 == -0.0, which would print differently
                ms, open_, high, low, close, volume = row
                point = PricePoint(timestamp=from_ms(ms), open=open_, high=high, low=low, close=close, volume=volume)
            points[row] = point
            history.append(point)
        self._points[(base.symbol, base.timeframe)] = points
        return history


def _sentiment(assets: dict[str, AssetMarketData]) -> str | None:
    """bullish/bearish/neutral from the trend timeframe's EMA20 vs EMA50 across assets."""
    votes = 0
    counted = 0
    for data in assets.values():
        ind = data.technical_indicators.long_interval
        if ind.ema_20 and ind.ema_50:
            counted += 1
            votes += 1 if ind.ema_20[-1] > ind.ema_50[-1] else -1
    if counted == 0:
        return None
    if votes > counted / 3:
        return "bullish"
    if votes < -counted / 3:
        return "bearish"
    return "neutral"
