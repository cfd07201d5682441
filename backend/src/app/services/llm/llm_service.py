"""The LLM service: the configured `DecisionModel` behind a fallback chain of models, a circuit breaker per
model, and a rate limit and concurrency cap shared by every account.

Without a key the rule-based baseline answers. With OpenRouter (or any OpenAI-compatible endpoint) each
model in `models` is tried in order until one answers; a model whose circuit is open is skipped. A model
that answers badly is not asked again in the same cycle: its answer is kept and the cycle falls back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from app.schemas.trading_decision import TradingContext, TradingDecision
from app.services.llm.circuit_breaker import CircuitBreakerRegistry
from app.services.llm.llm_exceptions import LLMAPIError, LLMResponseError
from app.services.llm.llm_metrics import HealthStatus, UsageMetrics, UsageTracker
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.providers.base import DecisionModel, ModelRequest, ModelResponse

# Key and credit problems are the same for every model behind one endpoint: stop the chain there.
STOP_CHAIN_STATUSES = (401, 402)


@dataclass(frozen=True)
class CallRecord:
    """One model call for the `llm_calls` table."""

    model: str
    outcome: str  # ok | empty | truncated | no_json | invalid_json | schema | api_error | circuit_open
    response: ModelResponse | None = None
    status_code: int | None = None
    error: str | None = None
    latency_ms: float = 0.0


@dataclass
class LLMResult:
    """The answer that counts (if any) and every call made to get it."""

    response: ModelResponse | None
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None


class LLMService:
    def __init__(
        self,
        *,
        provider: DecisionModel,
        models: list[str],
        prompts: PromptBuilder,
        breakers: CircuitBreakerRegistry,
        requests_per_minute: float = 60.0,
        max_concurrency: int = 8,
    ) -> None:
        if not models:
            raise ValueError("at least one model is needed")
        self.provider = provider
        self.models = list(models)
        self.prompts = prompts
        self.breakers = breakers
        self.usage = UsageTracker()
        self._limiter = AsyncLimiter(max(1.0, requests_per_minute), 60.0)
        self._semaphore = asyncio.Semaphore(max_concurrency)

    @property
    def model(self) -> str:
        return self.models[0]

    @property
    def is_simulated(self) -> bool:
        return self.provider.is_simulated

    def request_for(self, symbols: list[str], context: TradingContext, model: str | None = None) -> ModelRequest:
        """The request for `model` (an account's own choice), or the first model of the chain."""
        strategy = context.account_state.active_strategy
        system, user = self.prompts.build(context, strategy)
        chosen = model if model and not self.is_simulated else self.model
        return ModelRequest(symbols, context, strategy, system_prompt=system, user_prompt=user, model=chosen)

    async def generate(self, request: ModelRequest) -> LLMResult:
        """Ask the models in order until one answers; never raises for a model failure."""
        result = LLMResult(response=None)
        chain = [request.model, *(m for m in self.models if m != request.model)]
        for model in chain:
            if not self.breakers.allow(model):
                wait = self.breakers.get(model).snapshot().get("next_attempt_in_s")
                result.calls.append(CallRecord(model, "circuit_open", error=f"circuit open; next try in {wait} s"))
                continue
            started = time.perf_counter()
            try:
                response = await self._call(dataclasses.replace(request, model=model))
            except LLMAPIError as exc:
                self.breakers.record_failure(model)
                self.usage.record_failure(model)
                latency = (time.perf_counter() - started) * 1000
                result.calls.append(CallRecord(model, "api_error", None, exc.status_code, str(exc), latency))
                if exc.status_code in STOP_CHAIN_STATUSES:
                    break
                continue
            if response.decision is None:
                self.breakers.record_failure(model)
            else:
                self.breakers.record_success(model)
            self.usage.record(response)
            result.calls.append(
                CallRecord(model, response.failure or "ok", response, None, response.error, response.latency_ms)
            )
            result.response = response
            return result
        result.error = "; ".join(f"{c.model}: {c.outcome}: {c.error}" for c in result.calls) or "no model to ask"
        return result

    async def _call(self, request: ModelRequest) -> ModelResponse:
        """One provider call; remote models share the rate limit and the concurrency cap."""
        if self.provider.is_simulated:
            return await self.provider.complete(request)
        async with self._semaphore, self._limiter:
            return await self.provider.complete(request)

    async def generate_trading_decision(self, symbols: list[str], context: TradingContext) -> TradingDecision:
        """The model's decision for `symbols`; raises LLMAPIError or LLMResponseError when there is none."""
        result = await self.generate(self.request_for(symbols, context))
        if result.response is None:
            raise LLMAPIError(result.error or "no model answered", retryable=True)
        if result.response.decision is None:
            raise LLMResponseError(
                result.response.error or "the model gave no usable decision",
                failure=result.response.failure or "invalid_json",
                raw=result.response.raw_text,
            )
        return result.response.decision

    async def validate_api_health(self) -> HealthStatus:
        circuits = {model: self.breakers.get(model).snapshot() for model in self.models}
        open_ = [m for m, snap in circuits.items() if snap["state"] != "closed"]
        status = "ok" if not open_ else ("down" if len(open_) == len(self.models) else "degraded")
        return HealthStatus(
            status=status,
            provider=self.provider.name,
            model=self.model,
            simulated=self.is_simulated,
            detail=f"circuit not closed for {', '.join(open_)}" if open_ else None,
            circuits=circuits,
        )

    async def get_usage_metrics(self) -> UsageMetrics:
        return self.usage.snapshot()

    async def switch_model(self, model_name: str) -> bool:
        """Make `model_name` the first model asked (the others stay as fallbacks)."""
        name = model_name.strip()
        if not name or any(c.isspace() for c in name):
            return False
        self.models = [name, *(m for m in self.models if m != name)]
        return True
