"""Wiring: build every part of the agent from the settings, and say which parts are simulated and why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import AcceleratedClock, Clock, WallClock
from app.core.config import Settings
from app.core.metrics import AgentMetrics
from app.core.security import SecretBox
from app.core.timeframes import timeframe_delta, timeframe_seconds
from app.db.migrate import ensure_migrated
from app.db.repositories.accounts import AccountRepository
from app.db.repositories.api_keys import ApiKeyRepository
from app.db.repositories.decisions import DecisionRepository
from app.db.session import create_engine, create_session_factory, one_at_a_time
from app.services.account.account_service import AccountService
from app.services.account.new_account import new_account
from app.services.alerts import events as alert
from app.services.alerts.center import AlertCenter
from app.services.evaluation.tracker import OutcomeTracker
from app.services.exchange.base import FEE_PROFILES
from app.services.exchange.registry import LivePolicy, VenueRegistry
from app.services.execution.executor import Executor
from app.services.execution.leases import AccountLocks, process_name
from app.services.execution.reconciler import Reconciler
from app.services.limits.llm_gate import SharedLLMGate
from app.services.llm.ab_testing import ExperimentService
from app.services.llm.circuit_breaker import CircuitBreakerRegistry
from app.services.llm.context_builder import CANDLES_FOR_INDICATORS, ContextBuilder
from app.services.llm.decision_engine import DecisionEngine
from app.services.llm.decision_validator import DecisionValidator
from app.services.llm.experiment_plan import ExperimentPlans
from app.services.llm.llm_service import LLMService
from app.services.llm.llm_settings import LLMSettingsStore
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.providers.base import DecisionModel
from app.services.llm.providers.factory import choose_provider
from app.services.llm.strategy_manager import DEFAULT_STRATEGY_ID, StrategyManager
from app.services.market_data.availability import MarketAvailability
from app.services.market_data.base import MarketDataSource
from app.services.market_data.candle_store import CandleStore, CandleSync, StoredMarketData
from app.services.market_data.factory import build_market, data_end_of
from app.services.market_data.market_sync import MarketSync
from app.services.market_data.simulator import MarketSimulator
from app.trading.loop import TradingLoop

log = logging.getLogger(__name__)
DEFAULT_ACCOUNT_NAME = "paper-1"
FIRST_START_LOCK = 18_000_001  # PostgreSQL advisory lock key


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    simulated: bool
    why: str


@dataclass
class Agent:
    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    market: MarketDataSource
    venues: VenueRegistry
    llm: LLMService
    strategies: StrategyManager
    engine: DecisionEngine
    experiments: ExperimentService
    loop: TradingLoop
    secrets: SecretBox
    metrics: AgentMetrics
    market_status: MarketAvailability  # does the market answer (the loop decides only once it does)
    alerts: AlertCenter  # stored, deduplicated, sent through apprise (ALERT_URLS)
    parts: list[Part] = field(default_factory=list)
    # Operational records (audit entries, keys, accounts' times) and rate limits run on the wall clock; cycles and
    # candles on `clock`, the market's (simulated, replayed or real).
    wall_clock: Clock = field(default_factory=WallClock)
    new_admin_key: str | None = None  # generated at this start; shown once, never stored in clear

    def describe(self) -> str:
        lines = ["AI Trading Agent: what is real and what is simulated"]
        for part in self.parts:
            flag = "SIMULATED" if part.simulated else "real"
            lines.append(f"  {part.name:<9} {flag:<9} {part.what}  ({part.why})")
        if self.new_admin_key:
            lines.append("")
            lines.append(f"Admin API key (shown only now; store it, e.g. as ADMIN_API_KEY): {self.new_admin_key}")
        return "\n".join(lines)

    async def close(self) -> None:
        """Stop: the decisions this process leaves pending are marked interrupted, then everything is closed."""
        self.loop.stop()
        await self.engine.cancel_shadows()
        try:
            await self.engine.interrupt_in_flight("interrupted: the agent was stopped before this decision completed")
        except Exception:  # the database is gone: the next start of `run` marks them
            log.exception("could not mark the decisions in flight as interrupted")
        closer = getattr(self.llm.provider, "aclose", None)
        if closer is not None:
            await closer()
        await self.alerts.close()  # what was raised until now is stored and sent (bounded wait)
        await self.venues.close()
        await self.market.close()
        await self.db.dispose()


async def _live_parts(sessions: async_sessionmaker[AsyncSession], venues: VenueRegistry) -> list[Part]:
    """One line per live account: which trade real money, which a test network, and which are refused (why)."""
    async with sessions() as session:
        accounts = [a for a in await AccountRepository(session).all() if a.mode == "live"]
    parts = []
    for account in accounts:
        money = "REAL MONEY" if account.network == "mainnet" else "test network, no real money"
        what = f"account {account.id} {account.name!r}: {account.venue} {account.network} ({money})"
        gate = venues.live_gate(account)
        parts.append(Part("live", what, False, f"NOT TRADED: {gate}" if gate else "TRADING_MODE=live"))
    return parts


async def _resume_at(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> datetime | None:
    """The candle after the last stored cycle: simulated and replayed time resume there after a restart."""
    async with sessions() as session:
        last = await DecisionRepository(session).last_cycle_time()
    return last + timeframe_delta(settings.interval) if last else None


async def ensure_default_account(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock, wall_clock: Clock | None = None
) -> int:
    """Create the default paper account on first start; returns its id (or the first account's). The account's
    times are the wall clock's, its strategy assignment the market's."""
    async with sessions.begin() as session:
        repo = AccountRepository(session)
        existing = await repo.all()
        if existing:
            return existing[0].id
        now = clock.now()
        account = await repo.add(
            new_account(
                DEFAULT_ACCOUNT_NAME,
                now=(wall_clock or WallClock()).now(),
                venue=settings.venue,
                strategy_id=DEFAULT_STRATEGY_ID,
                initial_balance=settings.initial_balance,
            ),
            reason="default paper account created at first start",
            now=now,
        )
        return account.id


async def ensure_admin_key(sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> str | None:
    """ADMIN_API_KEY is stored (hashed) when given; otherwise the first start generates one and returns it
    so it can be shown once. `clock` is the wall clock (a key's creation is an operational record)."""
    async with sessions.begin() as session:
        repo = ApiKeyRepository(session)
        if settings.admin_api_key is not None and settings.admin_api_key.get_secret_value():
            await repo.ensure(
                settings.admin_api_key.get_secret_value(), role="admin", name="ADMIN_API_KEY", now=clock.now()
            )
            return None
        if await repo.count_active_admins():
            return None
        key, _ = await repo.create(role="admin", account_id=None, name="generated at first start", now=clock.now())
        return key


async def build_agent(
    settings: Settings,
    *,
    clock: Clock | None = None,
    market: MarketDataSource | None = None,
    provider: DecisionModel | None = None,
    wall_clock: Clock | None = None,
    frozen_history: bool = False,
) -> Agent:
    """Migrate the database, create the defaults and wire every service. `wall_clock` (real time unless a test
    injects one) stamps operational records and times rate limits; `clock` is the market's. `frozen_history`: the
    injected market is history held in memory (a backtest): the context reads it directly, with no copy into the
    candle store, and no outcome tracker runs (the backtest's report measures the run)."""
    wall_clock = wall_clock or WallClock()
    db = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    await ensure_migrated(db)
    sessions = create_session_factory(db)
    parts: list[Part] = []
    db_kind = "SQLite" if settings.is_sqlite else "PostgreSQL"
    parts.append(
        Part(
            "database",
            db_kind,
            False,
            "default SQLite file" if settings.uses_default_database else "DATABASE_URL",
        )
    )

    if market is None:
        market_choice = build_market(settings, resume_at=await _resume_at(sessions, settings), now=datetime.now(UTC))
        market, what, why = market_choice.market, market_choice.what, market_choice.why
        clock, data_end = clock or market_choice.clock, market_choice.data_end
    else:
        what = f"seeded simulator (seed {market.seed})" if isinstance(market, MarketSimulator) else market.name
        why, data_end = "injected", data_end_of(market, settings.interval)
    try:
        return await _wire(
            settings, db, sessions, parts, clock, wall_clock, market, what, why, data_end, provider, frozen_history
        )
    except BaseException:
        await market.close()  # the market's HTTP session (ccxt) is the agent's to close, also when wiring fails
        await db.dispose()
        raise


async def _wire(
    settings: Settings,
    db: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    parts: list[Part],
    clock: Clock | None,
    wall_clock: Clock,
    market: MarketDataSource,
    what: str,
    why: str,
    data_end: datetime | None,
    provider: DecisionModel | None,
    frozen_history: bool = False,
) -> Agent:
    if clock is None:
        clock = AcceleratedClock(await _resume_at(sessions, settings) or datetime.now(UTC), settings.sim_speed)
    if isinstance(clock, AcceleratedClock):
        every = timeframe_seconds(settings.interval) / clock.speed
        parts.append(
            Part(
                "clock",
                f"accelerated x{clock.speed:g}",
                True,
                f"a {settings.interval} candle every {every:g} s; SIM_SPEED",
            )
        )
    else:
        parts.append(Part("clock", type(clock).__name__, not isinstance(clock, WallClock), "wall clock"))
    parts.append(Part("market", what, market.is_simulated, why))
    parts.append(Part("venue", f"paper {settings.venue}", True, "paper accounts"))

    secret_box = SecretBox.from_settings(
        settings.secret_key.get_secret_value() if settings.secret_key else None, Path(settings.secret_key_file)
    )
    llm_store = LLMSettingsStore(sessions, secret_box)
    if provider is None:
        choice = await choose_provider(settings, llm_store)  # with the key and default model kept in the database
        provider, models, why = choice.provider, choice.models, choice.why
    else:
        models, why = ([provider.name] if provider.is_simulated else settings.llm_models), "injected"
    parts.append(Part("model", f"{provider.name}: {', '.join(models)}", provider.is_simulated, why))

    strategies = StrategyManager(
        sessions, clock, interval=settings.interval, long_interval=settings.long_interval, wall_clock=wall_clock
    )
    async with one_at_a_time(db, FIRST_START_LOCK):  # processes starting together create the defaults once
        await strategies.ensure_builtins()
        await ensure_default_account(sessions, settings, clock, wall_clock)
        new_admin_key = await ensure_admin_key(sessions, settings, wall_clock)

    venues = VenueRegistry(
        market=market,
        sessions=sessions,
        clock=clock,
        assets=settings.assets,
        interval=settings.interval,
        venue=settings.venue,
        live=LivePolicy(
            enabled=settings.trading_mode == "live",
            mainnet_confirmed=settings.mainnet_confirmed,
            market_venue=settings.market_source
            if settings.market_source in ("binanceusdm", "hyperliquid") and not frozen_history
            else None,
            api_url=settings.venue_api_url,
        ),
        secrets=secret_box,
        wall_clock=wall_clock,
    )
    parts.extend(await _live_parts(sessions, venues))
    metrics = AgentMetrics()
    alerts = AlertCenter(
        sessions,
        wall_clock,
        urls=() if frozen_history else settings.alert_url_list,  # a backtest's events page nobody
        quiet_s=settings.alert_quiet_s,
        metrics=metrics,
        secrets=settings.secret_values(),
    )
    parts.append(Part("alerts", alerts.describe(), False, "ALERT_URLS"))
    # The venue's rules are asked when the market first answers (MarketAvailability, or a venue built for a request),
    # not at start-up: a venue outage must not stop the agent. The executor reads them from the registry's table.
    market_status = MarketAvailability(market.name, venues.rules, alerts=alerts)
    holder = process_name()  # this process, as the leases and model-call slots it holds in the database name it
    accounts = AccountService(periods_per_year=365 * 86400 / timeframe_seconds(settings.interval))
    prompts = PromptBuilder(interval=settings.interval, long_interval=settings.long_interval)
    llm = LLMService(
        provider=provider,
        models=models,
        prompts=prompts,
        breakers=CircuitBreakerRegistry(
            failure_threshold=settings.llm_circuit_failure_threshold,
            recovery_timeout_s=settings.llm_circuit_recovery_s,
            on_change=lambda model, state, why: alerts.emit(alert.circuit(model, state == "open", why)),
        ),
        requests_per_minute=settings.llm_requests_per_minute,
        max_concurrency=settings.llm_max_concurrency,
        # the request rate and the calls in flight are the agent's, not each process's: on PostgreSQL (where workers
        # and API servers may share the work) they are counted in the database
        gate=None
        if settings.is_sqlite
        else SharedLLMGate(
            sessions,
            wall_clock,
            requests_per_minute=settings.llm_requests_per_minute,
            max_concurrency=settings.llm_max_concurrency,
            holder=holder,
        ),
        store=llm_store,
        sessions=sessions,
        configured_model=settings.llm_model,
    )
    store = CandleStore(sessions)
    stored_market = StoredMarketData(store, market, source_name=market.name)
    market_sync = MarketSync(
        CandleSync(store, market, source_name=market.name),
        assets=settings.assets,
        timeframes=[settings.interval, settings.long_interval],
        lookback=CANDLES_FOR_INDICATORS,
    )
    context_builder = ContextBuilder(
        market=market if frozen_history else stored_market,
        sessions=sessions,
        accounts=accounts,
        venues=venues,
        strategies=strategies,
        clock=clock,
        interval=settings.interval,
        long_interval=settings.long_interval,
        price_history_candles=settings.price_history_candles,
        indicator_series_length=settings.indicator_series_length,
        market_sync=None if frozen_history else market_sync,
    )
    plans = ExperimentPlans(sessions, default_budget_usd=settings.llm_daily_budget_usd)
    experiments = ExperimentService(
        sessions=sessions,
        clock=clock,
        wall_clock=wall_clock,
        interval=settings.interval,
        llm=llm,
        strategies=strategies,
        prompts=prompts,
        plans=plans,
        daily_budget_usd=settings.llm_daily_budget_usd,
    )
    engine = DecisionEngine(
        sessions=sessions,
        clock=clock,
        assets=settings.assets,
        interval=settings.interval,
        context_builder=context_builder,
        strategies=strategies,
        llm=llm,
        validator=DecisionValidator(),
        executor=Executor(
            venues.known_rules,
            taker_fee_bps=FEE_PROFILES[settings.venue].taker_bps,
            venue_max_leverage=FEE_PROFILES[settings.venue].max_leverage,
        ),
        reconciler=Reconciler(alerts),
        venues=venues,
        daily_budget_usd=settings.llm_daily_budget_usd,
        metrics=metrics,
        refreshes_per_hour=settings.decision_refreshes_per_hour,
        wall_clock=wall_clock,
        experiments=plans,
        alerts=alerts,
        # On PostgreSQL other processes may share the database (workers, API servers): the accounts' locks are leases
        # in it. On SQLite there is one process.
        locks=AccountLocks(
            sessions=None if settings.is_sqlite else sessions,
            wall_clock=wall_clock,
            holder=holder,
            lease_s=settings.account_lease_s,
        ),
    )
    loop = TradingLoop(
        engine=engine,
        sessions=sessions,
        clock=clock,
        interval=settings.interval,
        max_concurrency=settings.max_concurrent_accounts,
        metrics=metrics,
        market=market_status,
        data_end=data_end,
        alerts=alerts,
        # what followed each decision, recorded as the candles of its horizons close
        outcomes=None
        if frozen_history
        else OutcomeTracker(sessions, store, market.name, settings.interval, wall_clock=wall_clock, metrics=metrics),
    )
    return Agent(
        settings=settings,
        db=db,
        sessions=sessions,
        clock=clock,
        market=market,
        venues=venues,
        llm=llm,
        strategies=strategies,
        engine=engine,
        experiments=experiments,
        loop=loop,
        secrets=secret_box,
        metrics=metrics,
        market_status=market_status,
        alerts=alerts,
        parts=parts,
        new_admin_key=new_admin_key,
        wall_clock=wall_clock,
    )
