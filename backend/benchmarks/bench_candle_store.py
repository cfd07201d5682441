"""The candle store on a fresh SQLite file: upsert throughput (new rows, then an idempotent re-import) of the
shared Binance 5m files (simulated candles when ../shared/data is absent) and of 100k generated candles, and
the time to load what a decision cycle reads (120 candles x 3 assets x 2 timeframes).

Run: cd backend && .venv/bin/python benchmarks/bench_candle_store.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.db.migrate import ensure_migrated
from app.db.session import create_engine, create_session_factory
from app.services.market_data.base import CandleSeries
from app.services.market_data.candle_store import CandleStore
from app.services.market_data.replay import ReplaySource
from app.services.market_data.simulator import MarketSimulator

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "market" / "binance_usdm_typhonun_mit"
ASSETS = ["BTC", "ETH", "SOL"]
TIMEFRAMES = ["5m", "1h"]
LOADS = 50
NOW = datetime.now(UTC)


def _data() -> tuple[str, dict[tuple[str, str], CandleSeries]]:
    if SHARED.is_dir():
        replay = ReplaySource(SHARED, assets=ASSETS)
        return f"shared Binance files ({SHARED.name})", {
            (a, tf): replay.series(a, tf) for a in ASSETS for tf in TIMEFRAMES
        }
    sim = MarketSimulator(ASSETS)
    until = datetime(2025, 3, 1, tzinfo=UTC)
    data = {
        (a, tf): sim.candles(a, tf, limit=10_000 if tf == "5m" else 800, until=until)
        for a in ASSETS
        for tf in TIMEFRAMES
    }
    return "simulated candles (../shared/data absent)", data


async def _upsert_all(store: CandleStore, source: str, data: dict[tuple[str, str], CandleSeries]) -> tuple[int, float]:
    start = time.perf_counter()
    new = 0
    for (asset, timeframe), series in data.items():
        new += await store.upsert_candles(source, asset, timeframe, series, now=NOW)
    return new, time.perf_counter() - start


async def main() -> None:
    label, data = _data()
    rows = sum(len(s) for s in data.values())
    big = MarketSimulator(["BTC"]).candles("BTC", "5m", limit=100_000, until=datetime(2026, 1, 1, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        try:
            await ensure_migrated(engine)
            store = CandleStore(create_session_factory(engine))
            print(f"candle store, SQLite, {label}: {rows} candles ({', '.join(TIMEFRAMES)} x {len(ASSETS)} assets)")
            for what in ("insert", "re-upsert (idempotent)"):
                new, seconds = await _upsert_all(store, "bench", data)
                print(f"  {what:24s} {rows / seconds:9,.0f} rows/s  ({seconds:.2f} s, {new} new rows)")
            for what in ("insert", "re-upsert (idempotent)"):
                new, seconds = await _upsert_all(store, "big", {("BTC", "5m"): big})
                print(f"  100k generated, {what:8s} {len(big) / seconds:9,.0f} rows/s  ({seconds:.2f} s, {new} new)")
            until = max(datetime.fromtimestamp(int(s.open_time_ms[-1]) / 1000, UTC) for s in data.values())
            rounds: list[float] = []
            cpu: list[float] = []
            for _ in range(LOADS + 1):
                start, start_cpu = time.perf_counter(), time.process_time()
                for asset in ASSETS:
                    for timeframe in TIMEFRAMES:
                        series = await store.load_candles("bench", asset, timeframe, limit=120, until=until)
                        assert len(series) == 120
                rounds.append((time.perf_counter() - start) * 1000)
                cpu.append((time.process_time() - start_cpu) * 1000)
            rounds, cpu = sorted(rounds[1:]), cpu[1:]  # the first round warms the connection pool
            median, p90 = statistics.median(rounds), rounds[int(0.9 * LOADS)]
            per_series = median / (len(ASSETS) * len(TIMEFRAMES))
            print(
                f"  load 120 candles x {len(ASSETS)} assets x {len(TIMEFRAMES)} timeframes: median {median:.1f} ms"
                f" ({per_series:.2f} ms per series), p90 {p90:.1f} ms, cpu median {statistics.median(cpu):.1f} ms"
            )
        finally:
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
