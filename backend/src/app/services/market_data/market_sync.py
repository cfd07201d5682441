"""Keep the candle store current: before a cycle, every configured asset and timeframe is synced from the
live source into the database (once per candle, whatever the number of accounts), and the context is then
built from the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from app.core.timeframes import floor_time
from app.services.market_data.candle_store import CandleSync, SyncReport

log = logging.getLogger(__name__)


class MarketSync:
    def __init__(self, syncer: CandleSync, *, assets: list[str], timeframes: list[str], lookback: int) -> None:
        self.syncer = syncer
        self.assets = assets
        self.timeframes = list(dict.fromkeys(timeframes))
        self.lookback = lookback
        self._lock = asyncio.Lock()
        self._synced: dict[tuple[str, str], datetime] = {}  # newest closed candle already synced
        self.last_reports: list[SyncReport] = []

    async def sync(self, until: datetime, timeframes: Sequence[str] = ()) -> list[SyncReport]:
        """Sync every asset in the configured timeframes and `timeframes` (a strategy's own) up to `until`;
        a series whose newest closed candle is already stored is skipped, so a longer timeframe costs nothing
        between its candles."""
        async with self._lock:
            reports = []
            for symbol in self.assets:
                for timeframe in dict.fromkeys([*self.timeframes, *timeframes]):
                    newest = floor_time(until, timeframe)
                    if self._synced.get((symbol, timeframe)) == newest:
                        continue
                    report = await self.syncer.sync(symbol, timeframe, until=until, lookback=self.lookback)
                    if report.errors:
                        log.warning("market sync %s %s: %s", symbol, timeframe, "; ".join(report.errors))
                    else:
                        self._synced[(symbol, timeframe)] = newest
                    reports.append(report)
            self.last_reports = reports
            return reports
