"""The LLM service: the configured `DecisionModel` behind a fallback chain of models, a circuit breaker per
model, and a rate limit and concurrency cap shared by every account.

Without a key the rule-based baseline answers. With OpenRouter (or any OpenAI-compatible endpoint) each
model in `models` is tried in order until one answers; a model whose circuit is open is skipped. A model
that answers badly is not asked again in the same cycle: its answer is kept and the cycle falls back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.schemas.trading_decision import TradingContext, TradingDecision
from app.services.limits.llm_gate import CallSlots, LLMGate, LocalLLMGate
from app.services.llm.circuit_breaker import CircuitBreakerRegistry
from app.services.llm.llm_exceptions import LLMAPIError, LLMResponseError
from app.services.llm.llm_metrics import HealthStatus, KeyHealth, ModelUsage, UsageMetrics, UsageTracker
from app.services.llm.llm_settings import LLMSettingsStore
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.providers.base import DecisionModel, ModelRequest, ModelResponse
from app.services.llm.providers.baseline import BASELINE_MODEL_NAME, BaselineModel

log = logging.getLogger(__name__)

# Key and credit problems are the same for every model behind one endpoint: stop the chain there.
STOP_CHAIN_STATUSES = (401, 402)
# What names the rule-based baseline as a model (an experiment's variant), whatever the provider is.
BASELINE_NAMES = frozenset({"baseline", BASELINE_MODEL_NAME})


def is_baseline(model: str | None) -> bool:
    return model in BASELINE_NAMES


# The in-process cap, now the local gate's (its tests import it by this name).
_Slots = CallSlots


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
        store: LLMSettingsStore | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        configured_model: str | None = None,
        gate: LLMGate | None = None,
    ) -> None:
        """`store` keeps a switched default model across restarts (with `configured_model`, LLM_MODEL, which it
        was switched from: a new LLM_MODEL wins over an old switch); `sessions` lets `get_usage_metrics` read the
        stored calls (every call since the database began) instead of this process's counters. `gate` paces and
        caps the remote model calls: by default in this process's memory (`requests_per_minute`,
        `max_concurrency`); a `SharedLLMGate` when several processes share one database."""
        if not models:
            raise ValueError("at least one model is needed")
        self.provider = provider
        self.models = list(models)
        self.configured_model = configured_model or models[0]
        self.store = store
        self.sessions = sessions
        self.prompts = prompts
        self.breakers = breakers
        self.usage = UsageTracker()
        self.gate: LLMGate = gate or LocalLLMGate(requests_per_minute, max_concurrency)
        self._baseline = BaselineModel()  # an experiment's variant may be the baseline, whatever the provider

    @property
    def model(self) -> str:
        return self.models[0]

    @property
    def is_simulated(self) -> bool:
        return self.provider.is_simulated

    def request_for(
        self,
        symbols: list[str],
        context: TradingContext,
        model: str | None = None,
        *,
        prompt_version: str | None = None,
        temperature: float | None = None,
    ) -> ModelRequest:
        """The request for `model` (an account's own choice, or an experiment's variant; the baseline by name
        whatever the provider), or the first model of the chain; in the context's strategy and `prompt_version`."""
        strategy = context.account_state.active_strategy
        system, user = self.prompts.build(context, strategy, prompt_version)
        chosen = self.resolve_model(model)
        return ModelRequest(
            symbols,
            context,
            strategy,
            system_prompt=system,
            user_prompt=user,
            model=chosen,
            temperature=temperature,
            prompt_version=prompt_version,
        )

    def resolve_model(self, model: str | None) -> str:
        """The model a request for `model` asks first: the baseline by name whatever the provider; without a key
        (a simulated provider) the provider's model; else `model`, or the chain's first when None."""
        if is_baseline(model):
            return BASELINE_MODEL_NAME
        return model if model and not self.is_simulated else self.model

    async def generate(self, request: ModelRequest, *, shadow: bool = False) -> LLMResult:
        """Ask the models in order until one answers; never raises for a model failure. A `shadow` request (an
        experiment's variant that is only recorded) waits for executed decisions' calls and has no fallback
        chain: it is judged on its own model's answers."""
        result = LLMResult(response=None)
        if shadow or is_baseline(request.model):
            chain = [request.model]
        else:
            chain = [request.model, *(m for m in self.models if m != request.model)]
        for model in chain:
            if not self.breakers.allow(model):
                wait = self.breakers.get(model).snapshot().get("next_attempt_in_s")
                result.calls.append(CallRecord(model, "circuit_open", error=f"circuit open; next try in {wait} s"))
                continue
            started = time.perf_counter()
            try:
                response = await self._call(dataclasses.replace(request, model=model), shadow=shadow)
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

    async def _call(self, request: ModelRequest, *, shadow: bool = False) -> ModelResponse:
        """One provider call; remote models share the rate limit and the concurrency cap."""
        if is_baseline(request.model):
            return await self._baseline.complete(request)
        if self.provider.is_simulated:
            return await self.provider.complete(request)
        async with self.gate.slot(shadow=shadow):
            await self.gate.pace()
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

    async def validate_api_health(self, *, ask_provider: bool = True) -> HealthStatus:
        """The circuits of the models, and the provider's own word on the API key (validity and credit left;
        OpenRouter's `GET /key`, cached for a minute): an invalid key or spent credit is `down`, a provider that
        cannot be asked `degraded`. `ask_provider=False` (the public `/health`): only the last answer about the
        key, never a request (`key` is null when it was never asked)."""
        circuits = {model: self.breakers.get(model).snapshot() for model in self.models}
        open_ = [m for m, snap in circuits.items() if snap["state"] != "closed"]
        status = "ok" if not open_ else ("down" if len(open_) == len(self.models) else "degraded")
        details = [f"circuit not closed for {', '.join(open_)}"] if open_ else []
        key = await self._key_health(ask=ask_provider)
        if key is not None and key.status in ("invalid", "no_credit"):
            status = "down"
            details.append(f"API key: {key.detail or key.status}")
        elif key is not None and key.status == "unreachable":
            status = "degraded" if status == "ok" else status
            details.append(f"API key not checked: {key.detail or 'provider unreachable'}")
        return HealthStatus(
            status=status,
            provider=self.provider.name,
            model=self.model,
            simulated=self.is_simulated,
            detail="; ".join(details) or None,
            circuits=circuits,
            key=key,
        )

    async def _key_health(self, *, ask: bool) -> KeyHealth | None:
        check = getattr(self.provider, "check_key", None)
        if self.is_simulated or check is None:
            return None
        health: KeyHealth | None = await check(ask=ask)
        return health

    async def get_usage_metrics(
        self, *, account_id: int | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> UsageMetrics:
        """Calls, failures, tokens, cost and latency per model: every stored call (all accounts, or one), or,
        without a database, this process's calls since it started (all accounts)."""
        if self.sessions is None:
            return self.usage.snapshot()
        from app.db.repositories.llm_calls import LLMCallRepository

        async with self.sessions() as session:
            rows = await LLMCallRepository(session).totals("model", account_id=account_id, since=since, until=until)
        by_model = {
            r.key: ModelUsage(
                calls=r.calls,
                failures=r.failures,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd,
                total_latency_ms=r.total_latency_ms,
            )
            for r in rows
        }
        return UsageMetrics(
            total_calls=sum(u.calls for u in by_model.values()),
            total_failures=sum(u.failures for u in by_model.values()),
            total_cost_usd=sum(u.cost_usd for u in by_model.values()),
            by_model=by_model,
        )

    async def switch_model(self, model_name: str, *, by: str | None = None) -> bool:
        """Make `model_name` the first model asked (the others stay as fallbacks), and keep it across restarts.

        False for text that cannot be a model slug. The slug must be in the endpoint's model catalog: raises
        ModelNotAvailableError when it is not, ModelCatalogUnavailableError when the catalog cannot be read now
        (nothing is changed then)."""
        name = model_name.strip()
        if not await self.check_model(name):
            return False
        if self.store is not None:
            await self.store.save_default_model(
                name, configured_model=self.configured_model, endpoint=self.endpoint, by=by
            )
        self.models = [name, *(m for m in self.models if m != name)]
        log.info("default model switched to %s (by %s)", name, by or "unknown")
        return True

    async def check_model(self, model_name: str) -> bool:
        """Whether `model_name` may be asked for, the default or an account's: False for text that cannot be a
        model slug; raises ModelNotAvailableError when the endpoint's model catalog does not list it, and
        ModelCatalogUnavailableError when the catalog cannot be read now."""
        if not model_name or model_name != model_name.strip() or any(c.isspace() for c in model_name):
            return False
        catalog = getattr(self.provider, "catalog", None)
        if catalog is not None:
            await catalog.check(model_name)
        return True

    @property
    def endpoint(self) -> str | None:
        base_url = getattr(self.provider, "base_url", None)
        return base_url if isinstance(base_url, str) else None
