"""Choose the market data source and the clock that goes with it.

* `simulated`: the seeded simulator on an accelerated clock (offline default).
* `binanceusdm` / `hyperliquid`: the venue's public data through ccxt, on the wall clock.
* `replay`: CSV files (`trading-agent data import` format) on an accelerated clock that starts once enough
  history exists for the trend timeframe's indicators (or at the candle after the last stored decision), and
  whose data ends with its last `INTERVAL` candle (`data_end`: the loop stops deciding there). A database whose
  decisions run past the data (a replay already played to its end, or another period's) is not rewound: the
  part says there is nothing left to replay and what to do.
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
    data_end: datetime | None = None  # the last cycle time with a new candle (a replay's end); None: no end


def build_market(settings: Settings, *, resume_at: datetime | None, now: datetime) -> MarketChoice:
    """The market source and its clock; `resume_at` is the candle after the last stored decision."""
    source = settings.market_source
    if source in ("binanceusdm", "hyperliquid"):
        # ccxt is imported only here: its 190k objects and 0.8 s import are no use to the simulator or a replay
        from app.services.market_data.ccxt_source import CcxtMarketData, local_api_urls

        wall = WallClock()
        overrides = local_api_urls(source, settings.venue_api_url) if settings.venue_api_url else None
        market = CcxtMarketData(source, settings.assets, clock=wall, api_overrides=overrides)
        where = f" at VENUE_API_URL {settings.venue_api_url}" if settings.venue_api_url else ""
        return MarketChoice(market, wall, f"{source} public data via ccxt{where}", f"MARKET_SOURCE={source}")
    if source == "replay":
        assert settings.replay_dir is not None
        replay = ReplaySource(Path(settings.replay_dir), assets=settings.assets)
        earliest = (
            floor_time(replay.first_time, settings.interval)
            + timeframe_delta(settings.long_interval) * WARMUP_TREND_CANDLES
        )
        start = max(earliest, resume_at) if resume_at else earliest
        end = replay.data_end(settings.interval)
        clock = AcceleratedClock(start, settings.sim_speed)
        what = f"replay of {settings.replay_dir} from {start:%Y-%m-%d %H:%M}"
        if end is None or start > end:
            what = f"replay of {settings.replay_dir}: NOTHING LEFT TO REPLAY: {_why_nothing(end, earliest, resume_at)}"
        # without a single INTERVAL candle there is nothing to decide on from the start
        return MarketChoice(
            replay, clock, what, "MARKET_SOURCE=replay", data_end=end or start - timeframe_delta(settings.interval)
        )
    start = max(floor_time(now, settings.interval), resume_at) if resume_at else floor_time(now, settings.interval)
    simulator = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    return MarketChoice(
        simulator,
        AcceleratedClock(start, settings.sim_speed),
        f"seeded simulator (seed {settings.sim_seed})",
        "MARKET_SOURCE=simulated",
    )


def _why_nothing(end: datetime | None, earliest: datetime, resume_at: datetime | None) -> str:
    if end is None:
        return "no INTERVAL candles for any asset"
    if earliest > end:
        return (
            f"the data ends at {end:%Y-%m-%d %H:%M}, before the warm-up of {WARMUP_TREND_CANDLES} LONG_INTERVAL "
            f"candles is over ({earliest:%Y-%m-%d %H:%M}); give REPLAY_DIR a longer history"
        )
    return (
        f"the database's decisions continue at {resume_at:%Y-%m-%d %H:%M}, past the data's end at "
        f"{end:%Y-%m-%d %H:%M}; "
        "to replay it again use a new database (DATABASE_URL), to go on give REPLAY_DIR data that runs past it"
    )


def data_end_of(market: MarketDataSource, interval: str) -> datetime | None:
    """Where an injected market's data ends (a replay's last candle), None for a market without an end."""
    return market.data_end(interval) if isinstance(market, ReplaySource) else None
