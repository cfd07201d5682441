"""Choose the market data source and the clock that goes with it.

* `simulated`: the seeded simulator on an accelerated clock (offline default).
* `binanceusdm` / `hyperliquid`: the venue's public data through ccxt, on the wall clock.
* `replay`: CSV files (`trading-agent data import` format) on an accelerated clock that starts once enough
  history exists for the trend timeframe's indicators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app.core.clock import AcceleratedClock, Clock, WallClock
from app.core.config import Settings
from app.core.timeframes import floor_time, timeframe_delta
from app.services.market_data.base import MarketDataSource
from app.services.market_data.replay import ReplaySource
from app.services.market_data.simulator import MarketSimulator

WARMUP_TREND_CANDLES = 60


@dataclass(frozen=True)
class MarketChoice:
    market: MarketDataSource
    clock: Clock
    what: str
    why: str


def build_market(settings: Settings, *, resume_at: datetime | None, now: datetime) -> MarketChoice:
    """The market source and its clock; `resume_at` is the candle after the last stored decision."""
    source = settings.market_source
    if source in ("binanceusdm", "hyperliquid"):
        # ccxt is imported only here: its 190k objects and 0.8 s import are no use to the simulator or a replay
        from app.services.market_data.ccxt_source import CcxtMarketData

        wall = WallClock()
        market = CcxtMarketData(source, settings.assets, clock=wall)
        return MarketChoice(market, wall, f"{source} public data via ccxt", f"MARKET_SOURCE={source}")
    if source == "replay":
        assert settings.replay_dir is not None
        replay = ReplaySource(Path(settings.replay_dir), assets=settings.assets)
        earliest = (
            floor_time(replay.first_time, settings.interval)
            + timeframe_delta(settings.long_interval) * WARMUP_TREND_CANDLES
        )
        start = max(earliest, resume_at) if resume_at else earliest
        clock = AcceleratedClock(start, settings.sim_speed)
        return MarketChoice(
            replay, clock, f"replay of {settings.replay_dir} from {start:%Y-%m-%d %H:%M}", "MARKET_SOURCE=replay"
        )
    start = max(floor_time(now, settings.interval), resume_at) if resume_at else floor_time(now, settings.interval)
    simulator = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    return MarketChoice(
        simulator,
        AcceleratedClock(start, settings.sim_speed),
        f"seeded simulator (seed {settings.sim_seed})",
        "MARKET_SOURCE=simulated",
    )
