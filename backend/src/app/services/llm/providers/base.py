"""The `DecisionModel` port: a `TradingDecision` (plus raw text, usage, cost, latency) for a prompt.

Adapters: the rule-based baseline (offline default) and, with a key, OpenRouter or any OpenAI-compatible
endpoint. A provider never raises for a bad answer: it returns the raw text with `failure` set, so the
answer is stored whatever happens. It raises `LLMAPIError` only when there is no answer at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from app.schemas.trading_decision import TradingContext, TradingDecision, TradingStrategy


@dataclass(frozen=True)
class ModelRequest:
    symbols: list[str]
    context: TradingContext
    strategy: TradingStrategy
    system_prompt: str
    user_prompt: str
    model: str
    temperature: float | None = None  # None: the provider's (LLM_TEMPERATURE)
    prompt_version: str | None = None  # the prompts' version (None: v1)


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None


@dataclass
class ModelResponse:
    raw_text: str | None
    decision: TradingDecision | None
    model_requested: str
    model_served: str | None
    provider: str
    latency_ms: float
    usage: TokenUsage = field(default_factory=TokenUsage)
    finish_reason: str | None = None
    failure: str | None = None  # empty | truncated | no_json | invalid_json | schema
    error: str | None = None
    generation_id: str | None = None  # the provider's id of the (last) generation, e.g. OpenRouter's gen-...
    attempts: int = 1  # HTTP attempts, retries and the re-ask included
    reasked: bool = False  # valid JSON broke the schema and the model was asked once more
    first_raw_text: str | None = None  # the first answer when a re-ask happened
    cost_estimated: bool = False  # cost from the price table, not reported by the provider


class DecisionModel(Protocol):
    """Something that turns a prompt and a context into a trading decision."""

    name: str
    is_simulated: bool

    async def complete(self, request: ModelRequest) -> ModelResponse: ...
