"""The `MarketDataSource` port: closed candles, funding, open interest, 24h ticker and market rules.

Adapters: the seeded simulator (offline default); later ccxt (binanceusdm, hyperliquid) and file replay.
Assets are named by their base asset (`BTC`); each adapter maps that to its venue's market symbol.
All times are timezone-aware UTC; candle times are open times in epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.core.errors import TradingAgentError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class UnknownSymbolError(TradingAgentError):
    """The asset is not listed by this market data source or venue."""


@dataclass(frozen=True, slots=True)
class Candle:
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class CandleSeries:
    """Closed candles of one asset and timeframe as columns, oldest first."""

    symbol: str
    timeframe: str
    open_time_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.open_time_ms.shape[0])

    def candle(self, index: int) -> Candle:
        return Candle(
            int(self.open_time_ms[index]),
            float(self.open[index]),
            float(self.high[index]),
            float(self.low[index]),
            float(self.close[index]),
            float(self.volume[index]),
        )

    def candles(self) -> list[Candle]:
        return [self.candle(i) for i in range(len(self))]


@dataclass(frozen=True, slots=True)
class FundingRate:
    funding_time_ms: int
    rate: float  # fraction per funding interval; positive: longs pay shorts


@dataclass(frozen=True, slots=True)
class Ticker24h:
    symbol: str
    last_price: float
    price_change_pct: float  # percent change over the last 24 h
    base_volume: float  # 24 h volume in base units
    quote_volume: float  # 24 h volume in USD


@dataclass(frozen=True, slots=True)
class MarketRules:
    """What the venue accepts for one market."""

    symbol: str  # our asset name, e.g. BTC
    market_symbol: str  # the venue's symbol, e.g. BTC/USDT:USDT
    tick_size: float
    lot_size: float
    min_notional: float
    max_leverage: float


class MarketDataSource(Protocol):
    """Read-only market data. `until` bounds every query: only candles closed by then are returned."""

    name: str
    is_simulated: bool

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries: ...

    async def fetch_funding_rate(self, symbol: str, at: datetime) -> FundingRate | None: ...

    async def fetch_open_interest(self, symbol: str, at: datetime) -> float | None: ...

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h: ...

    async def market_rules(self, symbol: str) -> MarketRules: ...

    async def close(self) -> None: ...
