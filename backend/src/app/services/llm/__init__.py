"""The LLM decision engine: its package interface.

    from app.services.llm import DecisionEngine, LLMService, DecisionValidator, StrategyManager

Names are imported on first use (PEP 562): importing one module of the package (the response parser, say) does
not load the others, the engine's wiring keeps its start-up cost, and no import cycle runs through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module of the package that defines it
_EXPORTS: dict[str, str] = {
    # the orchestrator and its parts
    "DecisionEngine": "decision_engine",
    "LLMService": "llm_service",
    "LLMResult": "llm_service",
    "CallRecord": "llm_service",
    "DecisionValidator": "decision_validator",
    "StrategyManager": "strategy_manager",
    "StrategyError": "strategy_manager",
    "DEFAULT_STRATEGY_ID": "strategy_manager",
    "ContextBuilder": "context_builder",
    "CircuitBreaker": "circuit_breaker",
    "CircuitBreakerRegistry": "circuit_breaker",
    "LLMSettingsStore": "llm_settings",
    # metrics
    "HealthStatus": "llm_metrics",
    "KeyHealth": "llm_metrics",
    "ModelUsage": "llm_metrics",
    "UsageMetrics": "llm_metrics",
    # exceptions
    "DecisionEngineError": "llm_exceptions",
    "LLMAPIError": "llm_exceptions",
    "LLMResponseError": "llm_exceptions",
    "ValidationError": "llm_exceptions",
    "ContextBuildingError": "llm_exceptions",
    "InsufficientDataError": "llm_exceptions",
    "AccountNotFoundError": "llm_exceptions",
    "DecisionNotFoundError": "llm_exceptions",
    "UnknownAssetError": "llm_exceptions",
    "DecisionRateLimitedError": "llm_exceptions",
    "ModelNotAvailableError": "llm_exceptions",
    "ModelCatalogUnavailableError": "llm_exceptions",
}

__all__ = [
    "DEFAULT_STRATEGY_ID",
    "AccountNotFoundError",
    "CallRecord",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "ContextBuilder",
    "ContextBuildingError",
    "DecisionEngine",
    "DecisionEngineError",
    "DecisionNotFoundError",
    "DecisionRateLimitedError",
    "DecisionValidator",
    "HealthStatus",
    "InsufficientDataError",
    "KeyHealth",
    "LLMAPIError",
    "LLMResponseError",
    "LLMResult",
    "LLMService",
    "LLMSettingsStore",
    "ModelCatalogUnavailableError",
    "ModelNotAvailableError",
    "ModelUsage",
    "StrategyError",
    "StrategyManager",
    "UnknownAssetError",
    "UsageMetrics",
    "ValidationError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup does not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from app.services.llm.circuit_breaker import CircuitBreaker, CircuitBreakerRegistry
    from app.services.llm.context_builder import ContextBuilder
    from app.services.llm.decision_engine import DecisionEngine
    from app.services.llm.decision_validator import DecisionValidator
    from app.services.llm.llm_exceptions import (
        AccountNotFoundError,
        ContextBuildingError,
        DecisionEngineError,
        DecisionNotFoundError,
        DecisionRateLimitedError,
        InsufficientDataError,
        LLMAPIError,
        LLMResponseError,
        ModelCatalogUnavailableError,
        ModelNotAvailableError,
        UnknownAssetError,
        ValidationError,
    )
    from app.services.llm.llm_metrics import HealthStatus, KeyHealth, ModelUsage, UsageMetrics
    from app.services.llm.llm_service import CallRecord, LLMResult, LLMService
    from app.services.llm.llm_settings import LLMSettingsStore
    from app.services.llm.strategy_manager import DEFAULT_STRATEGY_ID, StrategyError, StrategyManager
