"""What a backtest produces: its settings, the equity after every cycle, the trades, the funding and the decisions.

Plain values (no database rows), so the report, the arena and the stored run read one shape. Times are the
market's (the backtest's clock); with masked dates they are the masked times, and `BacktestConfig.date_shift`
maps them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

DataKind = Literal["folder", "stored", "simulated"]


@dataclass(frozen=True)
class BacktestConfig:
    """One backtest: which data, which period, which model and strategy, which money."""

    assets: tuple[str, ...]
    interval: str  # the decision cycle (INTERVAL), e.g. "1h"
    long_interval: str  # the trend timeframe (LONG_INTERVAL), e.g. "4h"
    start: datetime  # first cycle time (a candle close), UTC
    end: datetime  # last cycle time, inclusive, UTC
    strategy: str = "conservative"
    model: str = "baseline"  # an OpenRouter slug, or "baseline"
    data: DataKind = "simulated"
    data_dir: str | None = None  # the CSV folder when data == "folder"
    data_source: str | None = None  # the candle store's source name when data == "stored" (e.g. binanceusdm)
    seed: int = 42  # the simulator's seed when data == "simulated"
    initial_balance: float = 10_000.0
    venue: str = "binanceusdm"  # the paper venue's fee profile
    temperature: float | None = None
    prompt_version: str | None = None
    max_cost_usd: float | None = None  # refuse to start (and stop) past this model cost
    mask_dates: bool = False  # dates shifted, prices rebased to 100
    mask_assets: bool = False  # with mask_dates: asset names replaced by ASSET1, ASSET2, ...
    date_shift: timedelta = timedelta(0)  # masked time = real time + date_shift (0 unless masked)
    label: str | None = None  # a name for the run (the arena names its entrants)


@dataclass(frozen=True)
class EquityPoint:
    """The account after the cycle of `at`, marked to the last close."""

    at: datetime
    equity: float  # wallet + unrealized PnL
    wallet: float
    gross_exposure: float  # sum of |size * mark| of the open positions, USD
    prices: dict[str, float]  # each asset's last close at `at`


@dataclass(frozen=True)
class TradeFill:
    at: datetime
    asset: str
    side: Literal["buy", "sell"]
    quantity: float  # base units, positive
    price: float
    fee: float  # USD, positive: paid
    realized_pnl: float  # gross of fees
    reason: str  # entry | exit | stop_loss | take_profit | liquidation | ...
    client_order_id: str


@dataclass(frozen=True)
class FundingEvent:
    at: datetime
    asset: str
    amount: float  # USD, positive: received


@dataclass(frozen=True)
class OrderRecord:
    at: datetime  # created
    asset: str
    side: str
    type: str
    quantity: float
    status: str
    reason: str
    client_order_id: str
    trigger_price: float | None = None
    price: float | None = None
    reject_reason: str | None = None


@dataclass(frozen=True)
class DecisionRecord:
    """One asset's part of one cycle's decision, with what became of it."""

    cycle_time: datetime
    decision_id: int
    status: str  # the cycle's: executed | partially_executed | rejected | hold | fallback | error ...
    model: str | None
    asset: str
    action: str
    allocation_usd: float
    confidence: float | None
    rationale: str
    verdict: str | None  # the validator's / executor's word on this asset, when it has one
    cost_usd: float  # the cycle's model cost (on its first asset only, so sums are right)
    latency_ms: float | None
    cached: bool  # the answer came from the answer cache


@dataclass
class BacktestResult:
    config: BacktestConfig
    equity: list[EquityPoint]  # one per cycle, oldest first
    fills: list[TradeFill]
    funding: list[FundingEvent]
    orders: list[OrderRecord]
    decisions: list[DecisionRecord]
    funding_rates: dict[str, list[tuple[datetime, float]]]  # each asset's settlements in the period (for buy-and-hold)
    data_fingerprint: str
    trade_fingerprint: str
    code_version: str
    model_cost_usd: float = 0.0  # spent on model calls in this run (cached answers cost nothing)
    model_calls: int = 0  # answers asked of a model in this run
    cached_answers: int = 0  # answers taken from the cache
    cycles: int = 0
    errors: int = 0  # cycles stored in `error`
    fallbacks: int = 0  # cycles decided by a fallback (the chain's next model, or none)
    knowledge_cutoff: datetime | None = None  # the model's training cutoff, where known
    stopped: str | None = None  # why the run ended before its last cycle (the cost cap), None when complete
    notes: list[str] = field(default_factory=list)
