"""The LLM service: one entry point to whichever `DecisionModel` is configured.

Without an API key the rule-based baseline answers; the OpenRouter provider plugs in behind the same port.
"""

from __future__ import annotations

from app.schemas.trading_decision import TradingContext, TradingDecision
from app.services.llm.llm_exceptions import LLMAPIError, LLMResponseError
from app.services.llm.llm_metrics import HealthStatus, UsageMetrics, UsageTracker
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.providers.base import DecisionModel, ModelRequest, ModelResponse


class LLMService:
    def __init__(self, *, provider: DecisionModel, model: str, prompts: PromptBuilder) -> None:
        self.provider = provider
        self.model = model
        self.prompts = prompts
        self.usage = UsageTracker()

    @property
    def is_simulated(self) -> bool:
        return self.provider.is_simulated

    async def generate(self, request: ModelRequest) -> ModelResponse:
        """Ask the model; the response carries the raw answer whatever its quality."""
        try:
            response = await self.provider.complete(request)
        except LLMAPIError:
            self.usage.record_failure(request.model)
            raise
        self.usage.record(response)
        return response

    def request_for(self, symbols: list[str], context: TradingContext) -> ModelRequest:
        strategy = context.account_state.active_strategy
        system, user = self.prompts.build(context, strategy)
        return ModelRequest(
            symbols=symbols,
            context=context,
            strategy=strategy,
            system_prompt=system,
            user_prompt=user,
            model=self.model,
        )

    async def generate_trading_decision(self, symbols: list[str], context: TradingContext) -> TradingDecision:
        """The model's decision for `symbols`; raises LLMResponseError when its answer is unusable."""
        response = await self.generate(self.request_for(symbols, context))
        if response.decision is None:
            raise LLMResponseError(
                response.error or "the model gave no usable decision",
                failure=response.failure or "invalid_json",
                raw=response.raw_text,
            )
        return response.decision

    async def validate_api_health(self) -> HealthStatus:
        return HealthStatus(
            status="ok", provider=type(self.provider).__name__, model=self.model, simulated=self.is_simulated
        )

    async def get_usage_metrics(self) -> UsageMetrics:
        return self.usage.snapshot()

    async def switch_model(self, model_name: str) -> bool:
        if not model_name.strip():
            return False
        self.model = model_name.strip()
        return True
