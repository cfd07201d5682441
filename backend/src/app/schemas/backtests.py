"""Request and response bodies of backtests (`/api/v1/backtests`).

Everything the schema can state is stated here (a request that breaks it answers 422 with the reason). What is
between fields (the period in order and at most `MAX_CYCLES` cycles, the timeframes, the data's kind with what it
needs, masking) is `BacktestCreate.conflict`, answered 409 by the route with the reason and nothing stored, as the
experiments answer a conflict within a request; what depends on the server (the strategy, the data folder) 404 or
409. The period against the history itself is checked by the job, whose failure is stored with the run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.core.symbols import SYMBOL_PATTERN, normalise_asset
from app.core.timeframes import floor_time, timeframe_seconds
from app.schemas.api import MAX_DB_ID, WALL_CLOCK, _as_utc, _not_a_number
from app.schemas.experiments import MODEL_PATTERN
from app.schemas.text import CleanLine
from app.schemas.trading_decision import STRATEGY_ID_PATTERN

MAX_CYCLES = 20_000  # a backtest's cycles at most (2 years of 1h candles; 8,760 run in about half a minute)
MAX_ASSETS = 20
Timeframe = Literal[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d"
]  # strategy_checks.VENUE_TIMEFRAMES
RunStatus = Literal["queued", "running", "done", "failed", "stopped"]
DATA_SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


def _iso_time(value: object) -> object:
    """ISO 8601 text as Python reads it (`2025-03-01`, `2025-03-01T12:00`, `...Z`), the same in the lax and the
    strict pass (`app.api.protocol`: pydantic's strict mode takes full RFC 3339 times only)."""
    value = _not_a_number(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().upper())
        except ValueError:
            raise ValueError(
                f"{value[:40]!r} is not an ISO 8601 date or time, e.g. 2025-03-01 or 2025-03-01T12:00:00Z"
            ) from None
    return value


# A time in a body: a date, or a time with or without a zone (UTC without), never a number.
BodyTime = Annotated[datetime, BeforeValidator(_iso_time), AfterValidator(_as_utc)]


def server_folder(path: str) -> str | None:
    """The folder's absolute path (the job may not start where the server did), or None when there is none."""
    try:
        folder = FilePath(path)
        return str(folder.resolve()) if folder.is_dir() else None
    except (OSError, ValueError):  # a name too long, a NUL
        return None


class BacktestCreate(BaseModel):
    """A backtest to run as a job: the one engine over history on a manual clock."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "assets": ["BTC", "ETH"],
                    "interval": "1h",
                    "long_interval": "4h",
                    "from": "2025-03-01T00:00:00Z",
                    "to": "2025-03-03T00:00:00Z",
                    "strategy": "conservative",
                    "model": "baseline",
                    "data": "simulated",
                }
            ]
        },
    )

    assets: list[Annotated[str, Field(max_length=62, pattern=SYMBOL_PATTERN)]] = Field(
        default_factory=lambda: ["BTC", "ETH", "SOL"],
        min_length=1,
        max_length=MAX_ASSETS,
        description="The assets traded (BTC, or BTCUSDT and BTC/USDT:USDT for the same asset), each once",
    )
    interval: Timeframe = Field("1h", description="The decision timeframe: one cycle per closed candle")
    long_interval: Timeframe = Field("4h", description="The trend timeframe: a whole multiple of `interval`")
    start: BodyTime = Field(
        ...,
        alias="from",
        description="The first cycle (a candle close; a time between closes starts at the close before it): ISO 8601, "
        "UTC without a zone",
        examples=["2025-03-01T00:00:00Z"],
    )
    end: BodyTime = Field(
        ..., alias="to", description="The last cycle, inclusive: ISO 8601, UTC without a zone", examples=["2025-03-03"]
    )
    strategy: str = Field(
        "conservative",
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="A strategy of this agent (built-in or custom) that can run at `interval`",
    )
    model: str = Field(
        "baseline",
        min_length=1,
        max_length=200,
        pattern=MODEL_PATTERN,
        description="A model of the catalog, or `baseline` (the rule-based model, offline and free). Its answers are "
        "cached: a rerun asks no model",
    )
    data: Literal["simulated", "stored", "folder"] = Field(
        "simulated",
        description="`simulated`: the seeded market simulator; `stored`: the candle store's candles (`data_source`); "
        "`folder`: a folder of CSV files on the server (`data_dir`)",
    )
    data_source: str | None = Field(
        None,
        max_length=32,
        pattern=DATA_SOURCE_PATTERN,
        description="With `stored`: the candle store's source (e.g. binanceusdm); null: MARKET_SOURCE",
    )
    data_dir: str | None = Field(
        None, min_length=1, max_length=1000, description="With `folder`: the folder of CSV files, on the server"
    )
    seed: int = Field(42, ge=0, le=MAX_DB_ID, description="With `simulated`: the simulator's seed")
    initial_balance: float = Field(10_000.0, gt=0, le=1e12, description="USD in the paper account at the start")
    max_cost_usd: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="Refuse to start when the estimated model cost is above this, and stop when the spend reaches it",
    )
    mask_dates: bool = Field(
        False, description="Also run with dates shifted and prices rebased to 100, and report both"
    )
    mask_assets: bool = Field(False, description="With `mask_dates`: assets named ASSET1, ASSET2, ...")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; null: LLM_TEMPERATURE")
    baseline: bool = Field(True, description="Also run the rule baseline on the same data (for a model other than it)")
    label: CleanLine | None = Field(None, min_length=1, max_length=200, description="A name for the run")

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: list[str]) -> list[str]:
        return [normalise_asset(a) for a in value]

    def conflict(self) -> str | None:
        """What no schema can state, between fields (the route answers 409 with it, as for an experiment's
        conflicting variants): the timeframes, the period's order and length, masking, the data's options."""
        twice = sorted({a for a in self.assets if self.assets.count(a) > 1})
        if twice:
            return f"an asset is listed twice: {', '.join(twice)}"
        long_s, short_s = timeframe_seconds(self.long_interval), timeframe_seconds(self.interval)
        if long_s <= short_s or long_s % short_s:
            return (
                f"long_interval ({self.long_interval}) must be a whole multiple of interval ({self.interval}), longer "
                "than it"
            )
        if self.end < self.start:
            return f"to ({self.end.isoformat()}) is before from ({self.start.isoformat()})"
        if self.cycles > MAX_CYCLES:
            return (
                f"{self.cycles:,} cycles of {self.interval} from {self.start.isoformat()} to {self.end.isoformat()}: "
                f"at most {MAX_CYCLES:,}; shorten the period or take a longer interval"
            )
        if self.mask_assets and not self.mask_dates:
            return "mask_assets goes with mask_dates"
        if self.data == "folder" and not self.data_dir:
            return "data folder needs data_dir, a folder of CSV files on the server"
        if self.data != "folder" and self.data_dir is not None:
            return f"data_dir goes with data folder, not {self.data}"
        if self.data_source is not None and self.data != "stored":
            return f"data_source goes with data stored, not {self.data}"
        return None

    @property
    def cycles(self) -> int:
        """The cycles of the period: every close of `interval` from `from` to `to` (both floored to a close)."""
        step = timeframe_seconds(self.interval)
        first, last = floor_time(self.start, self.interval), floor_time(self.end, self.interval)
        return int((last - first).total_seconds()) // step + 1


class BacktestLinks(BaseModel):
    self_: str = Field(..., alias="self", description="The run: status and progress")
    report: str = Field(..., description="The summary (JSON), once done")
    report_html: str = Field(..., description="The report page, self-contained, once done")
    report_png: str = Field(..., description="The equity and drawdown picture, once done")

    model_config = ConfigDict(populate_by_name=True)


class BacktestCreated(BaseModel):
    id: int
    status: RunStatus
    links: BacktestLinks


class BacktestPart(BaseModel):
    """A run beside the main one: the rule baseline or the masked dates, on the same data."""

    id: int
    label: str | None
    status: RunStatus
    cycles_done: int
    cycles_total: int
    trade_fingerprint: str | None
    error: str | None


class BacktestView(BaseModel):
    id: int
    kind: str = Field(..., description="backtest, or arena")
    parent_id: int | None = Field(..., description="The arena or backtest this run is part of")
    label: str | None
    status: RunStatus = Field(
        ...,
        description="queued (its process is starting), running, done, failed (`error` says why) or stopped (ended "
        "early by its cost cap; a report of the cycles run)",
    )
    config: dict[str, Any] = Field(..., description="The settings it runs with")
    cycles_done: int = Field(..., description="Cycles run, over every part (the strategy, masked dates, baseline)")
    cycles_total: int = Field(..., description="Cycles of every part (0 until the job knows the period)")
    percent: float = Field(..., ge=0, le=100)
    eta_s: float | None = Field(..., description="Seconds left at the rate so far (wall clock); null when not running")
    spent_usd: float = Field(..., description="Model cost so far, every part (cached answers cost nothing)")
    estimated_cost_usd: float | None = Field(
        ..., description="The strategy's model cost at most, estimated before it started (0 for the baseline)"
    )
    error: str | None
    data_fingerprint: str | None = Field(..., description="sha256 of every candle and funding settlement it read")
    trade_fingerprint: str | None = Field(..., description="sha256 of its trade list, once done")
    code_version: str | None
    created_at: datetime = Field(..., description=f"By the {WALL_CLOCK}")
    updated_at: datetime = Field(..., description=f"Its last progress, by the {WALL_CLOCK}")
    finished_at: datetime | None = Field(..., description=f"By the {WALL_CLOCK}")
    parts: list[BacktestPart] = Field(..., description="The baseline and masked runs beside it")
    summary: dict[str, Any] | None = Field(
        ..., description="The figures, once done (also at `links.report`); null in a list"
    )
    links: BacktestLinks
