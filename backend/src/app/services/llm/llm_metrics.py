"""Usage and health figures of the LLM service, kept in memory per model."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.services.llm.providers.base import ModelResponse


class ModelUsage(BaseModel):
    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    total_latency_ms: float = 0.0

    @property
    def avg_latency_ms(self) -> float:
        return self.total_latency_ms / self.calls if self.calls else 0.0


class UsageMetrics(BaseModel):
    total_calls: int
    total_failures: int
    total_cost_usd: float
    by_model: dict[str, ModelUsage] = Field(default_factory=dict)


class KeyHealth(BaseModel):
    """What the provider says about the API key in use (OpenRouter's `GET /key`), cached for a while."""

    status: Literal["ok", "invalid", "no_credit", "unreachable", "unsupported"] = Field(
        ...,
        description="ok; invalid (the provider refused the key); no_credit (its credit limit is spent); "
        "unreachable (the provider could not be asked); unsupported (the endpoint has no key endpoint)",
    )
    source: Literal["stored", "environment", "none"] = Field(
        ..., description="Where the key comes from: set through the API/CLI (stored, encrypted) or OPENROUTER_API_KEY"
    )
    fingerprint: str | None = Field(None, description="A one-way name of the key (never the key)")
    checked_at: datetime = Field(..., description="When the provider was asked (wall clock, UTC)")
    limit_usd: float | None = Field(None, description="The key's credit limit; null: unlimited")
    usage_usd: float | None = Field(None, description="Credit used by the key")
    limit_remaining_usd: float | None = Field(None, description="Credit left under the limit; null: unlimited")
    limit_reset: str | None = Field(None, description="When the limit resets (daily, weekly, monthly), if it does")
    is_free_tier: bool | None = None
    detail: str | None = None


class HealthStatus(BaseModel):
    status: Literal["ok", "degraded", "down"]
    provider: str
    model: str
    simulated: bool
    detail: str | None = None
    circuits: dict[str, dict[str, Any]] = Field(default_factory=dict)
    key: KeyHealth | None = Field(None, description="The provider's word on the API key (null for the baseline)")


class UsageTracker:
    def __init__(self) -> None:
        self._by_model: dict[str, ModelUsage] = defaultdict(ModelUsage)

    def record(self, response: ModelResponse) -> None:
        usage = self._by_model[response.model_served or response.model_requested]
        usage.calls += 1
        usage.failures += 1 if response.failure else 0
        usage.prompt_tokens += response.usage.prompt_tokens or 0
        usage.completion_tokens += response.usage.completion_tokens or 0
        usage.cost_usd += response.usage.cost_usd or 0.0
        usage.total_latency_ms += response.latency_ms

    def record_failure(self, model: str) -> None:
        usage = self._by_model[model]
        usage.calls += 1
        usage.failures += 1

    def snapshot(self) -> UsageMetrics:
        models = {name: usage.model_copy() for name, usage in self._by_model.items()}
        return UsageMetrics(
            total_calls=sum(u.calls for u in models.values()),
            total_failures=sum(u.failures for u in models.values()),
            total_cost_usd=sum(u.cost_usd for u in models.values()),
            by_model=models,
        )
