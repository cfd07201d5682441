"""The backtester on known answers: a model that always holds ends where it began, one that buys and holds earns
what the market gave minus fees and funding, no decision sees a candle after its time, and a run repeated gives the
same trades (a fingerprint this test holds) on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.backtest.history import BacktestError
from app.backtest.results import BacktestConfig, BacktestResult, TradeFill
from app.backtest.runner import Backtester
from app.core.clock import ManualClock
from app.core.config import Settings
from app.core.timeframes import timeframe_seconds
from app.db.migrate import ensure_migrated
from app.db.models import BacktestRecord, BacktestRun
from app.db.session import create_engine, create_session_factory
from app.schemas.trading_decision import AssetDecision, TradingDecision, TradingStrategy
from app.services.exchange.base import FEE_PROFILES
from app.services.llm.providers.base import ModelRequest, ModelResponse
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.strategy_manager import StrategyManager, builtin_strategies
from app.services.market_data.base import CandleSeries
from app.services.market_data.candle_store import CandleStore
from app.services.market_data.replay import ReplaySource
from tests.conftest import IsolatedSettings, _create_pg_database, _drop_pg_database, _postgres_admin_url
from tests.fakes.scripted_model import answer

pytestmark = pytest.mark.db

START = datetime(2025, 3, 3, tzinfo=UTC)
# The trades of BASE_CONFIG with the baseline model, at 9 significant digits (`_portable_fingerprint`). A change to the
# engine, the baseline, the simulator or the paper venue that changes what this run trades changes it: check the new
# trades are right, then update it here.
GOLDEN_TRADES = "773a845f52dae1ed934c6c0b41f50b222aab753c318378c5e79a7e029a2d70cc"
BASE_CONFIG = BacktestConfig(
    assets=("BTC", "ETH"),
    interval="1h",
    long_interval="4h",
    start=START,
    end=START + timedelta(days=4),
    data="simulated",
    seed=11,
    strategy="aggressive",
)


@contextlib.asynccontextmanager
async def _postgres_workspace(admin_url: str) -> AsyncIterator[str]:
    url = await _create_pg_database(admin_url)
    try:
        yield url
    finally:
        await _drop_pg_database(admin_url, url)


@pytest.fixture
async def main(database_url: str, tmp_path) -> AsyncIterator[tuple[Settings, async_sessionmaker[AsyncSession]]]:
    settings = IsolatedSettings(database_url=database_url, secret_key_file=str(tmp_path / "secret.key"))
    engine = create_engine(database_url)
    await ensure_migrated(engine)
    try:
        yield settings, create_session_factory(engine)
    finally:
        await engine.dispose()


def _backtester(main, database_url: str, provider=None) -> Backtester:
    """On PostgreSQL the engine's workspace is a fresh PostgreSQL database too."""
    settings, sessions = main
    factory = None
    if database_url.startswith("postgresql"):
        admin = _postgres_admin_url()
        assert admin
        factory = lambda: _postgres_workspace(admin)  # noqa: E731
    return Backtester(settings, sessions, provider=provider, catalog=ModelCatalog(table={}), workspace_factory=factory)


class Holder:
    """Always holds every asset."""

    name = "test/holder"
    is_simulated = False

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        return answer(request, _decision([_hold(a) for a in request.symbols]), served_by=self.name)


class BuyAndHold:
    """Buys every asset with `allocation` USD at the first cycle (a stop far below), then holds."""

    name = "test/buy-and-hold"
    is_simulated = False

    def __init__(self, allocation: float) -> None:
        self.allocation = allocation

    async def complete(self, request: ModelRequest) -> ModelResponse:
        held = {p.symbol for p in request.context.account_state.open_positions}
        rows = []
        for asset in request.symbols:
            price = request.context.market_data.assets[asset].current_price
            if asset in held or request.context.account_state.open_positions:
                rows.append(_hold(asset))
                continue
            rows.append(
                AssetDecision(
                    asset=asset,
                    action="buy",
                    allocation_usd=self.allocation,
                    sl_price=price * 0.55,
                    exit_plan="hold to the end",
                    rationale="buy and hold",
                    confidence=60.0,
                    risk_level="low",
                )
            )
        return answer(request, _decision(rows), served_by=self.name)


def _hold(asset: str) -> AssetDecision:
    return AssetDecision(
        asset=asset,
        action="hold",
        allocation_usd=0.0,
        exit_plan="none",
        rationale="wait",
        confidence=50.0,
        risk_level="low",
    )


def _decision(rows: list[AssetDecision]) -> TradingDecision:
    return TradingDecision(
        decisions=rows,
        portfolio_rationale="test",
        total_allocation_usd=sum(r.allocation_usd for r in rows),
        portfolio_risk_level="low",
    )


async def _hodl_strategy(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A custom strategy of the main database whose stops may sit 45 % away (buy and hold needs a far stop)."""
    base = next(s for s in builtin_strategies() if s.strategy_id == "aggressive")
    hodl = TradingStrategy.model_validate(
        {
            **base.model_dump(),
            "strategy_id": "hodl",
            "strategy_name": "Buy and hold",
            "strategy_type": "custom",
            "timeframe_preference": ["1h", "4h"],
            "risk_parameters": {**base.risk_parameters.model_dump(), "stop_loss_percentage": 50.0, "max_leverage": 1.0},
        }
    )
    manager = StrategyManager(sessions, ManualClock(START), interval="1h", long_interval="4h")
    return await manager.create_custom_strategy(hodl)


async def test_a_model_that_always_holds_ends_at_the_initial_balance(main, database_url: str) -> None:
    model = Holder()
    stored = await _backtester(main, database_url, provider=model).run(
        replace(BASE_CONFIG, model="test/holder"), with_baseline=False
    )
    result = stored.result
    assert result.cycles == len(result.equity) == 4 * 24 + 1
    assert model.calls == result.cycles
    assert result.fills == [] and result.orders == []
    assert {p.equity for p in result.equity} == {BASE_CONFIG.initial_balance}
    assert stored.summary["strategy"]["total_return"] == 0.0


async def test_buying_and_holding_earns_the_market_move_less_fees_and_funding(main, database_url: str) -> None:
    _, sessions = main
    strategy = await _hodl_strategy(sessions)
    config = replace(BASE_CONFIG, model="test/buy-and-hold", strategy=strategy, end=START + timedelta(days=6))
    result = (
        await _backtester(main, database_url, provider=BuyAndHold(allocation=1500.0)).run(config, with_baseline=False)
    ).result
    entries = [f for f in result.fills if f.reason == "entry"]
    assert {f.asset for f in entries} == {"BTC", "ETH"}, "both assets were bought"
    assert len(result.fills) == 2, "nothing was sold: no stop was hit, no exit"
    last = result.equity[-1]
    fee_rate = FEE_PROFILES[config.venue].taker_bps / 1e4
    move = sum(f.quantity * (last.prices[f.asset] - f.price) for f in entries)
    fees = sum(f.fee for f in entries)
    funding = sum(e.amount for e in result.funding)
    # The equity is the wallet plus the positions marked to the last close: exactly the move, less fees, plus funding.
    assert last.equity == pytest.approx(config.initial_balance + move - fees + funding, abs=1e-6)
    for fill in entries:
        assert fill.fee == pytest.approx(fill.quantity * fill.price * fee_rate, rel=1e-9)
    # Against buy-and-hold of the same notional from the first cycle's close: within fees, funding and slippage.
    first = result.equity[0]
    hold_gain = sum(
        f.quantity * first.prices[f.asset] * (last.prices[f.asset] / first.prices[f.asset] - 1) for f in entries
    )
    slippage = sum(f.quantity * abs(f.price - first.prices[f.asset]) for f in entries)
    assert abs((last.equity - config.initial_balance) - hold_gain) <= fees + abs(funding) + slippage + 1e-6


def _changed_after(source: ReplaySource, cut_ms: int, seed: int = 3) -> ReplaySource:
    """The same history with every candle that closes after `cut_ms` replaced by other prices."""
    rng = np.random.default_rng(seed)
    series: dict[str, dict[str, CandleSeries]] = {}
    for asset, by_tf in source.files.items():
        for timeframe, candles in by_tf.items():
            tf_ms = timeframe_seconds(timeframe) * 1000
            later = candles.open_time_ms + tf_ms > cut_ms
            factor = np.where(later, rng.uniform(0.7, 1.3, len(candles)), 1.0)
            close_factor = np.where(later, rng.uniform(0.8, 1.2, len(candles)), 1.0)
            open_, close = candles.open * factor, candles.close * factor * close_factor
            high = np.maximum(np.maximum(open_, close), candles.high * factor)
            low = np.minimum(np.minimum(open_, close), candles.low * factor)
            series.setdefault(asset, {})[timeframe] = CandleSeries(
                asset, timeframe, candles.open_time_ms, open_, high, low, close, candles.volume * factor
            )
    funding = {a: (t, np.where(t > cut_ms, -r * 3, r)) for a, (t, r) in source.funding.items()}
    return ReplaySource.from_series(series, funding, name=source.name)


def _until(result: BacktestResult, cut: datetime) -> tuple[list, list, list]:
    decisions = [
        (d.cycle_time, d.asset, d.action, d.allocation_usd, d.status) for d in result.decisions if d.cycle_time <= cut
    ]
    # an order as it was placed (what became of it later, filled or cancelled, may rightly depend on the future)
    orders = [replace(o, status="", reject_reason=None) for o in result.orders if o.at <= cut]
    fills = [f for f in result.fills if f.at <= cut]
    return decisions, orders, fills


async def test_no_decision_order_or_fill_sees_a_candle_after_its_time(main, database_url: str) -> None:
    backtester = _backtester(main, database_url)
    config = replace(BASE_CONFIG, end=START + timedelta(days=6), strategy="aggressive")
    original = await backtester.load_history(config)
    cut = START + timedelta(days=3, hours=5)
    changed = _changed_after(original, int(cut.timestamp() * 1000))
    assert not np.array_equal(original.series("BTC", "1h").close, changed.series("BTC", "1h").close)
    first = (await backtester.run(config, source=original, with_baseline=False)).result
    second = (await backtester.run(config, source=changed, with_baseline=False)).result
    before, after = _until(first, cut), _until(second, cut)
    assert before[2], "the run traded before the cut: the comparison means something"
    assert before == after
    assert first.trade_fingerprint != second.trade_fingerprint, "the changed future changed what followed"


async def test_a_run_repeated_gives_the_same_trades_and_is_stored(main, database_url: str) -> None:
    _, sessions = main
    backtester = _backtester(main, database_url)
    one = await backtester.run(BASE_CONFIG, with_baseline=False)
    two = await backtester.run(BASE_CONFIG, with_baseline=False)
    assert one.result.fills, "the baseline traded: the fingerprint covers real trades"
    assert one.result.trade_fingerprint == two.result.trade_fingerprint
    assert one.result.data_fingerprint == two.result.data_fingerprint
    async with sessions() as session:
        run = await session.get(BacktestRun, one.run_id)
        fills = await session.scalar(
            select(func.count()).where(BacktestRecord.run_id == one.run_id, BacktestRecord.kind == "fill")
        )
    assert run is not None and run.status == "done"
    assert run.trade_fingerprint == one.result.trade_fingerprint
    assert run.cycles_done == run.cycles_total == one.result.cycles
    assert fills == len(one.result.fills)
    assert len(run.equity or []) == one.result.cycles


def _portable_fingerprint(fills: list[TradeFill]) -> str:
    """The trades at 9 significant digits: numpy's float functions may differ in the last bits from one CPU to another
    (its SIMD paths: AVX-512 or not), so the exact fingerprint of a run is the same on one machine only."""
    rows = [
        [
            f.at.isoformat(),
            f.asset,
            f.side,
            f.reason,
            *(f"{v:.9g}" for v in (f.quantity, f.price, f.fee, f.realized_pnl)),
        ]
        for f in fills
    ]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


async def test_golden_fingerprint(main, database_url: str) -> None:
    """The same trades on SQLite and PostgreSQL, and the same as when this test was written."""
    stored = await _backtester(main, database_url).run(BASE_CONFIG, with_baseline=False)
    assert _portable_fingerprint(stored.result.fills) == GOLDEN_TRADES


async def test_a_period_outside_the_data_is_refused_with_the_reason(main, database_url: str, tmp_path) -> None:
    backtester = _backtester(main, database_url)
    with pytest.raises(BacktestError, match="before --from"):
        await backtester.run(replace(BASE_CONFIG, end=START - timedelta(days=1)))
    with pytest.raises(BacktestError, match="too early"):
        await backtester.run(replace(BASE_CONFIG, data="folder", data_dir=str(_tiny_folder(tmp_path))))


def _tiny_folder(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    rows = ["timestamp_ms,open,high,low,close,volume"]
    t0 = int(START.timestamp() * 1000)
    rows += [f"{t0 + i * 3_600_000},100,101,99,100,5" for i in range(48)]
    for asset in ("BTC", "ETH"):
        (folder / f"{asset}_USDT-1h.csv").write_text("\n".join(rows) + "\n")
    return folder


class RoundTrip:
    """Buys BTC at the first cycle, closes it at the fourth, holds otherwise."""

    name = "test/round-trip"
    is_simulated = False

    def __init__(self) -> None:
        self.cycle = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.cycle += 1
        price = request.context.market_data.assets["BTC"].current_price
        if self.cycle == 1:
            row = AssetDecision(
                asset="BTC",
                action="buy",
                allocation_usd=2000.0,
                sl_price=round(price * 0.976, 1),
                exit_plan="close after three candles",
                rationale="round trip",
                confidence=60.0,
                risk_level="low",
            )
        elif self.cycle == 4:
            row = _hold("BTC").model_copy(update={"action": "close_position", "rationale": "time is up"})
        else:
            row = _hold("BTC")
        return answer(request, _decision([row]), served_by=self.name)


def _closes(path) -> dict[datetime, float]:
    """Each candle's close by its close time, read straight from the CSV."""
    rows = path.read_text().splitlines()[1:]
    return {datetime.fromtimestamp(int(r.split(",")[0]) / 1000 + 3600, tz=UTC): float(r.split(",")[4]) for r in rows}


@pytest.mark.shared_data
async def test_a_round_trip_on_real_candles_computed_by_hand(main, database_url: str, shared_data) -> None:
    folder = shared_data / "market" / "binance_usdm_typhonun_mit"
    start = datetime(2025, 3, 20, 1, tzinfo=UTC)  # between funding settlements (00:00, 08:00)
    config = BacktestConfig(
        assets=("BTC",),
        interval="1h",
        long_interval="4h",
        start=start,
        end=start + timedelta(hours=5),
        data="folder",
        data_dir=str(folder),
        strategy="aggressive",
        model="test/round-trip",
    )
    result = (await _backtester(main, database_url, provider=RoundTrip()).run(config, with_baseline=False)).result
    closes = _closes(folder / "BTC_USDT-1h.csv")
    entry, exit_ = result.fills
    assert (entry.reason, entry.side, entry.at) == ("entry", "buy", start)
    assert (exit_.reason, exit_.side, exit_.at) == ("close", "sell", start + timedelta(hours=3))
    profile = FEE_PROFILES["binanceusdm"]
    # Market orders fill at the last close, slipped against the taker by at most the venue's cap.
    for fill in (entry, exit_):
        close = closes[fill.at]
        slip = (fill.price / close - 1) * (1 if fill.side == "buy" else -1) * 1e4
        assert profile.slippage_bps - 1e-9 <= slip <= profile.max_slippage_bps
    assert entry.quantity == exit_.quantity
    assert entry.quantity / 0.001 == pytest.approx(round(entry.quantity / 0.001), abs=1e-6)  # whole BTC lots
    assert exit_.realized_pnl == pytest.approx(entry.quantity * (exit_.price - entry.price), abs=1e-9)
    fees = [f.quantity * f.price * profile.taker_bps / 1e4 for f in (entry, exit_)]
    assert [entry.fee, exit_.fee] == pytest.approx(fees, rel=1e-12)
    assert result.funding == [], "no settlement fell inside the round trip"
    final = config.initial_balance + exit_.realized_pnl - sum(fees)
    assert result.equity[-1].equity == pytest.approx(final, abs=1e-9)
    assert result.equity[-1].wallet == pytest.approx(final, abs=1e-9)


async def test_stored_candles_give_the_same_run_as_the_same_candles_in_memory(main, database_url: str) -> None:
    """`--stored SOURCE` (the candle store) and the same history as files are one market: same data, same trades."""
    _, sessions = main
    backtester = _backtester(main, database_url)
    config = replace(BASE_CONFIG, end=START + timedelta(days=2))
    simulated = await backtester.load_history(config)
    store = CandleStore(sessions)
    for asset in config.assets:
        for timeframe in (config.interval, config.long_interval):
            await store.upsert_candles(
                "binanceusdm", asset, timeframe, simulated.series(asset, timeframe), now=config.end
            )
        await store.upsert_funding("binanceusdm", asset, simulated.funding_history(asset))
    stored_config = replace(config, data="stored", data_source="binanceusdm")
    from_store = await backtester.run(stored_config, with_baseline=False)
    in_memory = await backtester.run(config, with_baseline=False)
    assert from_store.result.fills, "the run traded"
    assert from_store.result.trade_fingerprint == in_memory.result.trade_fingerprint
    with pytest.raises(BacktestError, match="no BTC candles from 'hyperliquid'"):
        await backtester.run(replace(stored_config, data_source="hyperliquid"))
