"""The backtester: the one engine (context, prompt, model, validator, executor, paper venue, persistence) over frozen
history on a manual clock, as fast as the machine allows.

A run works in a scratch database of its own (the workspace: by default a SQLite file in a temporary folder) so that
nothing of it mixes with the agent's accounts, decisions or resume point; the agent is wired there by `build_agent`
exactly as `run` wires it, with the history as its market (`frozen_history`: read directly, no candle copy, no
outcome tracker). Each cycle sets the clock to the candle's close and runs `TradingLoop.run_cycle`, the loop's own
cycle. What the run produced (decisions, orders, fills, funding, the equity after every cycle) is then read back
from the workspace and stored in the main database as a run (`backtest_runs`, `backtest_records`), with the data's
fingerprint, the code's version and the sha256 fingerprint of its trades.

Model answers go through `CachedModel`: a rerun asks no model and gives the same trades. Before it starts, a run
with a remote model estimates its cost from the first prompt's size and the catalog's prices and refuses to start
past `max_cost_usd`; it also stops when what it spent reaches the cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.backtest import history as hist
from app.backtest.answer_cache import CACHED, AnswerCache, CachedModel
from app.backtest.history import BacktestError
from app.backtest.results import (
    BacktestConfig,
    BacktestResult,
    DecisionRecord,
    EquityPoint,
    FundingEvent,
    OrderRecord,
    TradeFill,
)
from app.bootstrap import Agent, build_agent
from app.core.clock import Clock, ManualClock, WallClock
from app.core.config import ExplicitSettings, Settings
from app.core.security import SecretBox
from app.core.timeframes import floor_time, timeframe_delta
from app.db.models import Account, BacktestRecord, BacktestRun, Decision
from app.db.models import Fill as FillRow
from app.db.models import FundingPayment as FundingRow
from app.db.models import Order as OrderRow
from app.schemas.trading_decision import TradingStrategy
from app.services.llm.llm_service import is_baseline
from app.services.llm.llm_settings import LLMSettingsStore
from app.services.llm.providers.base import DecisionModel
from app.services.llm.providers.baseline import BaselineModel
from app.services.llm.providers.factory import choose_provider
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.strategy_manager import StrategyManager, StrategyNotFoundError
from app.services.market_data.replay import ReplaySource

log = logging.getLogger(__name__)

EXPECTED_COMPLETION_TOKENS = 700  # a decision for a few assets with rationales; the estimate's answer size
_PROGRESS_EVERY_S = 1.0  # wall seconds between stored progress updates


@dataclass(frozen=True)
class Progress:
    phase: str  # strategy | masked | baseline
    cycles_done: int
    cycles_total: int
    elapsed_s: float
    spent_usd: float

    @property
    def eta_s(self) -> float | None:
        if not self.cycles_done:
            return None
        return self.elapsed_s / self.cycles_done * (self.cycles_total - self.cycles_done)


ProgressCallback = Callable[[Progress], None]


@dataclass
class StoredBacktest:
    run_id: int
    result: BacktestResult
    summary: dict[str, Any]
    baseline: BacktestResult | None = None
    masked: BacktestResult | None = None


def code_version() -> str:
    """The git commit of this code (with `+dirty` when it has uncommitted changes), or the package's version."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return f"{commit}+dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"ai-trading-agent {version('ai-trading-agent')}"


def trade_fingerprint(fills: list[TradeFill]) -> str:
    """sha256 of the trade list (time, asset, side, quantity, price, fee, realized PnL, reason), floats exactly."""
    rows = [
        [
            f.at.isoformat(),
            f.asset,
            f.side,
            repr(f.quantity),
            repr(f.price),
            repr(f.fee),
            repr(f.realized_pnl),
            f.reason,
        ]
        for f in fills
    ]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def config_json(config: BacktestConfig) -> dict[str, Any]:
    """The settings as stored with the run (JSON)."""
    values = {k: getattr(config, k) for k in config.__dataclass_fields__}
    values["assets"] = list(config.assets)
    values["start"], values["end"] = config.start.isoformat(), config.end.isoformat()
    values["date_shift"] = config.date_shift.total_seconds()
    return values


def cycle_times(config: BacktestConfig) -> list[datetime]:
    step = timeframe_delta(config.interval)
    times, moment = [], config.start
    while moment <= config.end:
        times.append(moment)
        moment += step
    return times


class Backtester:
    """Runs backtests and stores them in the main database (`sessions`)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        wall_clock: Clock | None = None,
        provider: DecisionModel | None = None,
        catalog: ModelCatalog | None = None,
        workspace_dir: str | None = None,
        workspace_factory: Callable[[], contextlib.AbstractAsyncContextManager[str]] | None = None,
    ) -> None:
        """`provider`: the remote model to ask on a cache miss (None: built from the settings, OPENROUTER_API_KEY or
        the key stored through the API; without one, only cached answers); `catalog`: prices and knowledge cutoffs
        (None: OpenRouter's public list, asked once); `workspace_factory`: gives each run an empty database of its own
        (None: a SQLite file in a temporary folder under `workspace_dir`)."""
        self.settings = settings
        self.sessions = sessions
        self.wall_clock = wall_clock or WallClock()
        self.provider = provider
        self.catalog = catalog
        self.workspace_dir = workspace_dir
        self.workspace_factory = workspace_factory
        self.cache = AnswerCache(sessions, self.wall_clock)
        self._remote: DecisionModel | None = None

    # ----------------------------------------------------------------------------------------- history
    async def load_history(self, config: BacktestConfig) -> ReplaySource:
        """The frozen history the config names (before masking)."""
        assets = list(config.assets)
        if config.data == "folder":
            if not config.data_dir:
                raise BacktestError("--data needs a folder of CSV files")
            return hist.from_folder(config.data_dir, assets)
        begin = config.start - hist.warmup(config.interval, config.long_interval)
        if config.data == "simulated":
            return hist.from_simulator(assets, config.interval, config.seed, begin, config.end)
        return await hist.from_store(
            self.sessions,
            config.data_source or self.settings.market_source,
            assets,
            [config.interval, config.long_interval],
            begin,
            config.end,
        )

    # --------------------------------------------------------------------------------------------- run
    async def run(
        self,
        config: BacktestConfig,
        *,
        progress: ProgressCallback | None = None,
        parent_id: int | None = None,
        run_id: int | None = None,
        with_baseline: bool = True,
        source: ReplaySource | None = None,
    ) -> StoredBacktest:
        """Run `config` (and, when asked, the rule baseline and the date-masked run on the same data), store it and
        return it. `run_id`: a run already created (queued by the API); `source`: history already loaded."""
        config = replace(
            config, start=floor_time(config.start, config.interval), end=floor_time(config.end, config.interval)
        )
        source = source or await self.load_history(config)
        first, last = hist.cycle_span(source, list(config.assets), config.interval, config.long_interval)
        hist.check_period(config.start, config.end, first, last, config.interval)
        begin = config.start - hist.warmup(config.interval, config.long_interval)
        fingerprint = hist.data_fingerprint(source, list(config.assets), begin, config.end)
        total = len(cycle_times(config))
        run_id = await self._start_run(config, parent_id, run_id, fingerprint, total)
        try:
            # the masked run asks the model too: the estimate and the cap cover both
            result = await self._simulate(
                config, source, fingerprint, progress, run_id, "strategy", estimate_runs=1 + config.mask_dates
            )
            masked = baseline = None
            if config.mask_dates:
                from app.backtest.masking import mask_history

                masked_history = mask_history(source, start=config.start, mask_assets=config.mask_assets)
                masked_config = replace(
                    config,
                    assets=tuple(masked_history.names[a] for a in config.assets),
                    start=config.start + masked_history.shift,
                    end=config.end + masked_history.shift,
                    date_shift=masked_history.shift,
                    label="dates masked",
                )
                masked = await self._companion(
                    run_id, masked_config, masked_history.source, progress, "masked", result.model_cost_usd
                )
            if with_baseline and not is_baseline(config.model):
                baseline_config = replace(config, model="baseline", mask_dates=False, label="rule baseline")
                baseline = await self._companion(run_id, baseline_config, source, progress, "baseline")
            summary = self._summary(result, baseline, masked)
            await self._finish(run_id, result, summary)
            return StoredBacktest(run_id, result, summary, baseline, masked)
        except BaseException as exc:
            await self._fail(run_id, exc)
            raise

    async def _companion(
        self,
        parent: int,
        config: BacktestConfig,
        source: ReplaySource,
        progress: ProgressCallback | None,
        phase: str,
        spent_before: float = 0.0,
    ) -> BacktestResult:
        """A run beside the main one (the baseline, or the masked dates), stored as its child."""
        begin = config.start - hist.warmup(config.interval, config.long_interval)
        fingerprint = hist.data_fingerprint(source, list(config.assets), begin, config.end)
        child = await self._start_run(config, parent, None, fingerprint, len(cycle_times(config)))
        try:
            result = await self._simulate(
                config, source, fingerprint, progress, child, phase, spent_before=spent_before
            )
            await self._finish(child, result, self._summary(result, None, None))
            return result
        except BaseException as exc:
            await self._fail(child, exc)
            raise

    def _summary(
        self, result: BacktestResult, baseline: BacktestResult | None, masked: BacktestResult | None
    ) -> dict[str, Any]:
        from app.backtest.performance import build_summary

        return build_summary(result, baseline=baseline, masked=masked)

    async def _simulate(
        self,
        config: BacktestConfig,
        source: ReplaySource,
        fingerprint: str,
        progress: ProgressCallback | None,
        run_id: int,
        phase: str,
        *,
        estimate_runs: int = 0,
        spent_before: float = 0.0,
    ) -> BacktestResult:
        """The engine over every cycle of `config` in a fresh workspace database. `estimate_runs`: check the cost of
        that many runs of this length before the first cycle (on this workspace's first prompt); `spent_before`: what
        the runs before this one spent, counted against `max_cost_usd`."""
        async with self._workspace() as (database_url, folder):
            model = await self._model_for(config)
            settings = self._workspace_settings(config, database_url, folder)
            clock = ManualClock(config.start)
            agent = await build_agent(
                settings, clock=clock, market=source, provider=model, wall_clock=self.wall_clock, frozen_history=True
            )
            try:
                account_id = await self._prepare_account(agent, config)
                if estimate_runs:
                    cycles = len(cycle_times(config)) * estimate_runs
                    estimate = await self._check_cost(config, agent, account_id, cycles)
                    await self._set(run_id, estimated_cost_usd=estimate)
                equity, stopped = await self._cycles(
                    agent, clock, config, account_id, model, progress, run_id, phase, spent_before
                )
                return await self._collect(agent, config, source, account_id, equity, fingerprint, model, stopped)
            finally:
                await agent.close()

    async def _cycles(
        self,
        agent: Agent,
        clock: ManualClock,
        config: BacktestConfig,
        account_id: int,
        model: DecisionModel,
        progress: ProgressCallback | None,
        run_id: int,
        phase: str,
        spent_before: float = 0.0,
    ) -> tuple[list[EquityPoint], str | None]:
        times = cycle_times(config)
        equity: list[EquityPoint] = []
        started = last_store = time.monotonic()
        stopped: str | None = None
        for done, moment in enumerate(times, start=1):
            clock.set(moment)
            await agent.loop.run_cycle()
            equity.append(await self._equity(agent, account_id, moment, config))
            spent = spent_before + (model.spent_usd if isinstance(model, CachedModel) else 0.0)
            now = time.monotonic()
            if progress is not None:
                progress(Progress(phase, done, len(times), now - started, spent))
            if now - last_store >= _PROGRESS_EVERY_S or done == len(times):
                last_store = now
                await self._set(run_id, cycles_done=done, spent_usd=spent)
            if config.max_cost_usd is not None and spent >= config.max_cost_usd and done < len(times):
                stopped = (
                    f"stopped after {done} of {len(times)} cycles: the model cost ${spent:.4f} reached --max-cost "
                    f"${config.max_cost_usd:.4f}"
                )
                break
        return equity, stopped

    async def _equity(self, agent: Agent, account_id: int, at: datetime, config: BacktestConfig) -> EquityPoint:
        venue = await agent.venues.exchange_for(account_id)
        balance = await venue.fetch_balance()
        positions = await venue.fetch_positions()
        prices = {}
        for asset in config.assets:
            candles = await agent.market.fetch_candles(asset, config.interval, limit=1, until=at)
            if len(candles):
                prices[asset] = float(candles.close[-1])
        return EquityPoint(
            at=at,
            equity=balance.wallet_balance + balance.unrealized_pnl,
            wallet=balance.wallet_balance,
            gross_exposure=sum(abs(p.size * (p.mark_price or p.entry_price)) for p in positions),
            prices=prices,
        )

    # ------------------------------------------------------------------------------------------ wiring
    @contextlib.asynccontextmanager
    async def _workspace(self) -> AsyncIterator[tuple[str, Path]]:
        """(an empty database for one run, a scratch folder): the factory's database, or a SQLite file."""
        with tempfile.TemporaryDirectory(prefix="backtest-", dir=self.workspace_dir) as folder:
            if self.workspace_factory is None:
                yield f"sqlite:///{Path(folder) / 'workspace.db'}", Path(folder)
                return
            async with self.workspace_factory() as database_url:
                yield database_url, Path(folder)

    def _workspace_settings(self, config: BacktestConfig, database_url: str, folder: Path) -> Settings:
        return ExplicitSettings(
            database_url=database_url,
            assets=list(config.assets),
            interval=config.interval,
            long_interval=config.long_interval,
            initial_balance=config.initial_balance,
            venue=config.venue,
            llm_model=config.model if not is_baseline(config.model) else self.settings.llm_model,
            llm_fallback_models=[],
            llm_temperature=config.temperature if config.temperature is not None else self.settings.llm_temperature,
            llm_max_tokens=self.settings.llm_max_tokens,
            llm_requests_per_minute=1e9,  # the cached model keeps the real rate limit for the calls it makes
            llm_max_concurrency=self.settings.llm_max_concurrency,
            llm_daily_budget_usd=None,  # --max-cost is the run's budget
            price_history_candles=self.settings.price_history_candles,
            indicator_series_length=self.settings.indicator_series_length,
            secret_key=self.settings.secret_key,
            secret_key_file=str(folder / "secret.key"),
            admin_api_key="backtest-workspace-has-no-api",
        )

    async def _model_for(self, config: BacktestConfig) -> DecisionModel:
        if is_baseline(config.model):
            return BaselineModel()
        return CachedModel(
            await self._remote_model(),
            self.cache,
            requests_per_minute=self.settings.llm_requests_per_minute,
            temperature=config.temperature if config.temperature is not None else self.settings.llm_temperature,
            max_tokens=self.settings.llm_max_tokens,
        )

    async def _remote_model(self) -> DecisionModel | None:
        """The model behind the cache: the injected one, or OpenRouter with the configured key (None without)."""
        if self.provider is not None:
            return self.provider
        if self._remote is None:
            box = SecretBox.from_settings(
                self.settings.secret_key.get_secret_value() if self.settings.secret_key else None,
                Path(self.settings.secret_key_file),
            )
            choice = await choose_provider(self.settings, LLMSettingsStore(self.sessions, box))
            self._remote = None if choice.provider.is_simulated else choice.provider
        return self._remote

    async def _catalog(self) -> ModelCatalog:
        """Prices and knowledge cutoffs: the injected catalog, the remote model's, or OpenRouter's public list."""
        if self.catalog is None:
            remote = getattr(await self._remote_model(), "catalog", None)
            self.catalog = (
                remote if isinstance(remote, ModelCatalog) else ModelCatalog(base_url=self.settings.openrouter_base_url)
            )
        return self.catalog

    async def _prepare_account(self, agent: Agent, config: BacktestConfig) -> int:
        async with agent.sessions() as session:
            account_id = (await session.execute(select(Account.id).order_by(Account.id).limit(1))).scalar_one()
        if not await self._has_strategy(agent, config.strategy):  # a custom strategy of the main database
            await agent.strategies.create_custom_strategy(await self._main_strategy(config.strategy, agent))
        await agent.strategies.check_assignable(config.strategy)
        if config.strategy != await agent.strategies.account_strategy_id(account_id):
            await agent.strategies.update_account_strategy(account_id, config.strategy, reason="backtest")
        async with agent.sessions.begin() as session:
            await session.execute(update(Account).where(Account.id == account_id).values(model=config.model))
        return account_id

    @staticmethod
    async def _has_strategy(agent: Agent, strategy_id: str) -> bool:
        try:
            await agent.strategies.get_strategy(strategy_id)
        except StrategyNotFoundError:
            return False
        return True

    async def _main_strategy(self, strategy_id: str, agent: Agent) -> TradingStrategy:
        """A custom strategy as the main database keeps it (StrategyNotFoundError when it has none by that id)."""
        main = StrategyManager(
            self.sessions,
            agent.clock,
            interval=agent.settings.interval,
            long_interval=agent.settings.long_interval,
            wall_clock=self.wall_clock,
        )
        return await main.get_strategy(strategy_id)

    # -------------------------------------------------------------------------------------------- cost
    async def _check_cost(self, config: BacktestConfig, agent: Agent, account_id: int, cycles: int) -> float | None:
        """The model cost of the run at most (every prompt asked; cached answers cost nothing), from the first
        cycle's prompt size and the catalog's prices; refuses past `max_cost_usd`. None for the baseline."""
        if is_baseline(config.model):
            return 0.0
        catalog = await self._catalog()
        try:
            await catalog.ensure_fresh()
        except Exception as exc:  # offline: no prices
            log.warning("model prices unavailable: %s", exc)
        # the first cycle's prompt, built on the workspace the run is about to use, at about 4 characters a token
        context = await agent.engine.context_builder.build_trading_context(list(config.assets), account_id)
        request = agent.llm.request_for(list(config.assets), context, prompt_version=config.prompt_version)
        prompt_tokens = (len(request.system_prompt) + len(request.user_prompt)) // 4 + 1
        per_call = catalog.estimate_cost(config.model, prompt_tokens, EXPECTED_COMPLETION_TOKENS)
        if per_call is None:
            if config.max_cost_usd is not None:
                raise BacktestError(
                    f"the catalog has no price for {config.model}: the cost cannot be estimated against --max-cost; "
                    "check the model's name (trading-agent llm models) or leave out --max-cost"
                )
            return None
        estimate = per_call * cycles
        if config.max_cost_usd is not None and estimate > config.max_cost_usd:
            raise BacktestError(
                f"estimated model cost ${estimate:.2f} ({cycles} cycles x ~{prompt_tokens} prompt tokens + "
                f"~{EXPECTED_COMPLETION_TOKENS} answer tokens at {config.model}'s prices) is above --max-cost "
                f"${config.max_cost_usd:.2f}; answers already cached cost nothing, so a rerun may cost less: raise "
                "--max-cost, shorten the period or use a cheaper model"
            )
        return estimate

    # ----------------------------------------------------------------------------------------- results
    async def _collect(
        self,
        agent: Agent,
        config: BacktestConfig,
        source: ReplaySource,
        account_id: int,
        equity: list[EquityPoint],
        fingerprint: str,
        model: DecisionModel,
        stopped: str | None,
    ) -> BacktestResult:
        async with agent.sessions() as session:
            decisions = (await session.scalars(select(Decision).order_by(Decision.id))).all()
            orders = (await session.scalars(select(OrderRow).order_by(OrderRow.id))).all()
            fill_rows = (await session.scalars(select(FillRow).order_by(FillRow.filled_at, FillRow.id))).all()
            funding_rows = (
                await session.scalars(select(FundingRow).order_by(FundingRow.funding_time, FundingRow.id))
            ).all()
        fills = [
            TradeFill(
                f.filled_at,
                f.symbol,
                "buy" if f.side == "buy" else "sell",
                f.quantity,
                f.price,
                f.fee,
                f.realized_pnl,
                f.reason,
                f.client_order_id,
            )
            for f in fill_rows
        ]
        records = [record for d in decisions for record in _decision_records(d)]
        end = equity[-1].at if equity else config.start
        cutoff = None
        if not is_baseline(config.model):
            known = (await self._catalog()).knowledge_cutoff(config.model)
            # the cutoff is the last day of training data: the model may know all of it, so out-of-sample starts
            # at the next midnight
            cutoff = datetime(known.year, known.month, known.day, tzinfo=UTC) + timedelta(days=1) if known else None
        return BacktestResult(
            config=config,
            equity=equity,
            fills=fills,
            funding=[FundingEvent(f.funding_time, f.symbol, f.amount) for f in funding_rows],
            orders=[
                OrderRecord(
                    o.created_at,
                    o.symbol,
                    o.side,
                    o.type,
                    o.quantity,
                    o.status,
                    o.kind,
                    o.client_order_id,
                    o.trigger_price,
                    o.price,
                    o.reject_reason,
                )
                for o in orders
            ],
            decisions=records,
            funding_rates={a: hist.funding_in(source, a, config.start, end) for a in config.assets},
            data_fingerprint=fingerprint,
            trade_fingerprint=trade_fingerprint(fills),
            code_version=code_version(),
            model_cost_usd=model.spent_usd if isinstance(model, CachedModel) else 0.0,
            model_calls=model.calls if isinstance(model, CachedModel) else len(decisions),
            cached_answers=model.hits if isinstance(model, CachedModel) else 0,
            cycles=len(equity),
            errors=sum(1 for d in decisions if d.status == "error"),
            fallbacks=sum(1 for d in decisions if d.is_fallback),
            knowledge_cutoff=cutoff,
            stopped=stopped,
        )

    # ------------------------------------------------------------------------------------------ storage
    async def _start_run(
        self, config: BacktestConfig, parent_id: int | None, run_id: int | None, fingerprint: str, total: int
    ) -> int:
        now = self.wall_clock.now()
        values: dict[str, Any] = {
            "status": "running",
            "data_fingerprint": fingerprint,
            "code_version": code_version(),
            "cycles_total": total,
            "cycles_done": 0,
            "pid": os.getpid(),
            "updated_at": now,
        }
        async with self.sessions.begin() as session:
            if run_id is not None:
                await session.execute(update(BacktestRun).where(BacktestRun.id == run_id).values(**values))
                return run_id
            run = BacktestRun(
                kind="backtest",
                parent_id=parent_id,
                label=config.label or f"{config.model} / {config.strategy}",
                config=config_json(config),
                spent_usd=0.0,
                created_at=now,
                **values,
            )
            session.add(run)
            await session.flush()
            return run.id

    async def _set(self, run_id: int, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(BacktestRun).where(BacktestRun.id == run_id).values(updated_at=self.wall_clock.now(), **values)
            )

    async def _finish(self, run_id: int, result: BacktestResult, summary: dict[str, Any]) -> None:
        records: list[dict[str, Any]] = []
        groups: list[tuple[str, list[Any]]] = [
            ("decision", result.decisions),
            ("order", result.orders),
            ("fill", result.fills),
            ("funding", result.funding),
        ]
        rates = [(at, asset, rate) for asset, series in result.funding_rates.items() for at, rate in series]
        for seq, (at, asset, rate) in enumerate(rates):
            records.append(
                {"run_id": run_id, "kind": "rate", "seq": seq, "at": at, "asset": asset, "payload": {"rate": rate}}
            )
        for kind, items in groups:
            for seq, item in enumerate(items):
                payload = {k: _json_value(getattr(item, k)) for k in item.__dataclass_fields__}
                at = item.cycle_time if kind == "decision" else item.at
                records.append(
                    {
                        "run_id": run_id,
                        "kind": kind,
                        "seq": seq,
                        "at": at,
                        "asset": payload.get("asset"),
                        "payload": payload,
                    }
                )
        now = self.wall_clock.now()
        async with self.sessions.begin() as session:
            for start in range(0, len(records), 2000):
                await session.execute(insert(BacktestRecord), records[start : start + 2000])
            await session.execute(
                update(BacktestRun)
                .where(BacktestRun.id == run_id)
                .values(
                    status="stopped" if result.stopped else "done",
                    trade_fingerprint=result.trade_fingerprint,
                    cycles_done=result.cycles,
                    spent_usd=result.model_cost_usd,
                    summary=summary,
                    equity=[[p.at.isoformat(), p.equity, p.wallet, p.gross_exposure, p.prices] for p in result.equity],
                    error=result.stopped,
                    updated_at=now,
                    finished_at=now,
                )
            )

    async def _fail(self, run_id: int, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, Exception):
            reason = "interrupted: the process running it stopped before the run finished"  # Ctrl-C, a stop
        try:
            now = self.wall_clock.now()
            async with self.sessions.begin() as session:
                await session.execute(
                    update(BacktestRun)
                    .where(BacktestRun.id == run_id)
                    .values(status="failed", error=reason, updated_at=now, finished_at=now)
                )
        except Exception:
            log.exception("could not mark backtest run %s failed", run_id)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _decision_records(decision: Decision) -> list[DecisionRecord]:
    """One record per asset of a stored decision: the final decision, with the validator's verdict."""
    final = decision.final_decision or decision.parsed_decision or {}
    verdicts = {
        v.get("asset"): v for v in ((decision.validation_result or {}).get("verdicts") or []) if isinstance(v, dict)
    }
    cached = (decision.provider or "").endswith(CACHED)
    rows = final.get("decisions") or []
    if not rows:
        rows = [
            {"asset": symbol, "action": "none", "allocation_usd": 0.0, "rationale": decision.error or ""}
            for symbol in decision.symbols
        ]
    records = []
    for index, row in enumerate(rows):
        verdict = verdicts.get(row.get("asset"))
        reasons = "; ".join(verdict.get("reasons") or []) if verdict else ""
        records.append(
            DecisionRecord(
                cycle_time=decision.cycle_time,
                decision_id=decision.id,
                status=decision.status,
                model=decision.model_served or decision.model_requested,
                asset=str(row.get("asset")),
                action=str(row.get("action")),
                allocation_usd=float(row.get("allocation_usd") or 0.0),
                confidence=row.get("confidence"),
                rationale=str(row.get("rationale") or ""),
                verdict=f"{verdict.get('status')}: {reasons}".rstrip(": ") if verdict else None,
                cost_usd=(decision.cost_usd or 0.0) if index == 0 and not cached else 0.0,
                latency_ms=decision.latency_ms,
                cached=cached,
            )
        )
    return records
