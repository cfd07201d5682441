"""Request and response bodies of A/B experiments (`/api/v1/experiments`, `trading-agent experiments`).

An experiment compares variants of how an account decides (model, strategy, prompt version, temperature) on one
metric of the decisions' outcomes at a horizon. Everything the schema can state is stated here (a request that
breaks it answers 422); what depends on the agent's state (accounts, strategies, models, budgets, running
experiments) or on several fields at once (one control, distinct names) is checked by the service, which answers
404 or 409 with the reason and stores nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.api import MARKET_CLOCK, MAX_DB_ID, WALL_CLOCK
from app.schemas.text import CleanLine, CleanText
from app.schemas.trading_decision import STRATEGY_ID_PATTERN

Assignment = Literal["accounts", "shadow"]
# The metrics an experiment can judge by (app.services.evaluation.scoring.METRICS says which way is better).
Metric = Literal["mean_return", "hit_rate", "brier"]
# The horizons, in candles of INTERVAL, at which decision outcomes are recorded.
Horizon = Literal[1, 4, 12, 24]
# The prompt versions of app.services.llm.prompts.builder.PROMPT_VERSIONS (a test keeps the two the same).
PromptVersion = Literal["v1", "lean"]
Verdict = Literal["not yet", "better", "worse", "no difference"]
MIN_SAMPLES = 20  # the smallest sample a verdict may rest on (units: cycles, per variant)

VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL_PATTERN = r"^\S+$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class VariantCreate(_Body):
    """One arm. A field left out (null) keeps each account's own setting."""

    name: str = Field(
        ...,
        max_length=64,
        pattern=VARIANT_NAME_PATTERN,
        description="Unique within the experiment: letters, digits, '_', '.' or '-'",
        examples=["control"],
    )
    is_control: bool = Field(
        False, description="The variant the others are compared with (one at most; none marked: the first)"
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=MODEL_PATTERN,
        description="A model of the endpoint's catalog, or `baseline` (the rule-based model, also without a key); "
        "null: the account's own model",
        examples=["baseline"],
    )
    strategy_id: str | None = Field(
        None,
        min_length=3,
        max_length=64,
        pattern=STRATEGY_ID_PATTERN,
        description="A strategy that can run (an unknown one answers 404); null: the account's own",
        examples=["conservative"],
    )
    prompt_version: PromptVersion | None = Field(
        None, description="`v1` (the full prompt) or `lean` (without the account's record); null: v1"
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; null: LLM_TEMPERATURE (unset: the model's default)"
    )
    weight: float = Field(
        1.0, gt=0, le=1000, description="`accounts` assignment: the share of the accounts this variant runs on"
    )
    daily_budget_usd: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="USD a day this variant's model calls may spend; null: the daily LLM budgets of its accounts "
        "summed (an account's own, else LLM_DAILY_BUDGET_USD)",
    )


class ExperimentCreate(_Body):
    """A new experiment; it starts at once (its first cycle is the current candle)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "aggressive vs conservative",
                    "assignment": "shadow",
                    "metric": "mean_return",
                    "horizon": 4,
                    "min_samples": 50,
                    "variants": [
                        {"name": "control", "model": "baseline", "strategy_id": "conservative"},
                        {"name": "aggressive", "model": "baseline", "strategy_id": "aggressive"},
                    ],
                }
            ]
        },
    )

    name: CleanLine = Field(..., min_length=1, max_length=100, description="A name to tell experiments apart")
    description: CleanText | None = Field(None, max_length=2000, description="What it tests, and why")
    assignment: Assignment = Field(
        "shadow",
        description="`shadow`: on every cycle of every account each variant decides on the same context; only the "
        "control's decision is executed, the others are recorded (and cost model calls). `accounts`: the accounts "
        "are split between the variants by weight (drawn once from the seed, never changed); each runs its own",
    )
    metric: Metric = Field(
        "mean_return",
        description="What a cycle scores: `mean_return` (the direction's return at the horizon, higher is better), "
        "`hit_rate` (share of directional decisions that gained, higher is better) or `brier` (calibration of "
        "the stated confidence, lower is better)",
    )
    horizon: Horizon = Field(4, description="Candles of INTERVAL after the decision at which its outcome counts")
    min_samples: int = Field(
        ...,
        ge=MIN_SAMPLES,
        le=100_000,
        description="Cycles per variant the verdict is taken on, fixed at the start: the verdict stays `not yet` "
        "until each variant (with its control) has that many, and is taken on the first that many only",
        examples=[50],
    )
    confidence_level: float = Field(0.95, ge=0.8, le=0.99, description="Of the intervals and the verdict")
    seed: int | None = Field(
        None, ge=0, le=MAX_DB_ID, description="Of the bootstrap and the `accounts` split; null: drawn and stored"
    )
    accounts: list[Annotated[int, Field(ge=1, le=MAX_DB_ID)]] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="The accounts it runs on (none may be in another running experiment). Null: the caller's "
        "account for an account key, every account for an admin key",
        examples=[[1]],
    )
    variants: list[VariantCreate] = Field(..., min_length=2, max_length=6, description="2 to 6 arms, one control")


class ExperimentStop(_Body):
    """The optional body of a stop."""

    reason: CleanLine | None = Field(None, min_length=1, max_length=500, description="Why: stored and audited")


class VariantView(BaseModel):
    id: int
    name: str
    is_control: bool
    model: str | None = Field(..., description="null: each account's own model")
    strategy_id: str | None = Field(..., description="null: each account's own strategy")
    prompt_version: str | None = Field(..., description="null: v1")
    temperature: float | None
    weight: float
    daily_budget_usd: float | None = Field(..., description="Its own budget; null: its accounts' budgets summed")
    expected_daily_cost_usd: float = Field(..., description="Estimated when the experiment started")
    accounts: list[int] = Field(..., description="The accounts it decides for (`shadow`: every account)")


class ExperimentView(BaseModel):
    id: int
    name: str
    description: str | None
    status: Literal["running", "stopped"]
    assignment: Assignment
    metric: str
    higher_is_better: bool = Field(..., description="Which way of the metric is better")
    horizon: int = Field(..., description="Candles of `interval`")
    interval: str
    min_samples: int = Field(..., description="Cycles per variant the verdict rests on (fixed at the start)")
    confidence_level: float
    seed: int
    accounts: list[int]
    owner_account_id: int | None = Field(..., description="The account whose key started it; null: an admin")
    expected_daily_cost_usd: float = Field(
        ..., description="Every variant's model calls a day, estimated at the start (`shadow`: the control's too)"
    )
    extra_daily_cost_usd: float = Field(
        ...,
        description="What the experiment adds to the accounts' own spend a day: `shadow`, the non-control "
        "variants; `accounts`, every variant",
    )
    started_cycle: datetime = Field(..., description=f"Its first cycle, by the {MARKET_CLOCK}")
    created_at: datetime = Field(..., description=f"By the {WALL_CLOCK}")
    stopped_at: datetime | None = Field(..., description=f"By the {WALL_CLOCK}")
    stop_reason: str | None
    variants: list[VariantView]


class Estimate(BaseModel):
    """A mean with its confidence interval."""

    value: float
    low: float
    high: float


class Difference(BaseModel):
    """A variant's metric minus its control's, with its confidence interval and two-sided p-value."""

    value: float
    low: float
    high: float
    p_value: float
    paired: bool = Field(..., description="Compared cycle by cycle (`shadow`) or as independent samples")


class VariantResults(BaseModel):
    variant_id: int
    name: str
    is_control: bool
    decisions: int = Field(..., description="Its stored decisions (shadow decisions included)")
    shadow_decisions: int
    fallback_rate: float | None = Field(..., description="Share of its decisions that fell back (null: none yet)")
    error_rate: float | None = Field(
        ..., description="Share of its decisions that failed: the cycle stored as error, or no model answered"
    )
    mean_latency_ms: float | None
    cost_usd: float = Field(..., description="Its model calls' cost so far")
    prompt_tokens: int
    completion_tokens: int
    units_available: int = Field(..., description="Cycles with outcomes at the horizon so far")
    units_analysed: int = Field(..., description="Cycles the estimate, the difference and the verdict rest on")
    units_needed: int = Field(..., description="Cycles still missing before a verdict (0 once it is taken)")
    estimate: Estimate | None = Field(..., description="The metric's mean over the units analysed")
    difference: Difference | None = Field(..., description="Against the control; null for the control")
    verdict: Verdict | None = Field(..., description="Against the control; null for the control")
    note: str
    scores: dict[str, float | int | None] = Field(
        ..., description="Figures of every outcome of this variant at the horizon (hit rate, Brier score, ...)"
    )


class ExperimentResults(BaseModel):
    experiment: ExperimentView
    variants: list[VariantResults]
