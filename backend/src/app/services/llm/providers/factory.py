"""Choose the decision model from the settings: OpenRouter, another OpenAI-compatible endpoint, or the
rule-based baseline when neither is configured."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.services.llm.providers.base import DecisionModel
from app.services.llm.providers.baseline import BaselineModel
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel


@dataclass(frozen=True)
class ProviderChoice:
    provider: DecisionModel
    models: list[str]
    why: str


def build_provider(settings: Settings) -> ProviderChoice:
    if settings.llm_base_url:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
        base_url = settings.llm_base_url
        why = f"LLM_BASE_URL={base_url}"
    elif settings.openrouter_api_key is not None and settings.openrouter_api_key.get_secret_value():
        key = settings.openrouter_api_key.get_secret_value()
        base_url = settings.openrouter_base_url
        why = "OPENROUTER_API_KEY" + (
            f", OPENROUTER_BASE_URL={base_url}"
            if base_url != Settings.model_fields["openrouter_base_url"].default
            else ""
        )
    else:
        baseline = BaselineModel()
        return ProviderChoice(baseline, [baseline.name], "no OPENROUTER_API_KEY or LLM_BASE_URL")
    catalog = ModelCatalog(base_url=base_url, api_key=key)
    provider = OpenRouterModel(
        api_key=key,
        model=settings.llm_model,
        base_url=base_url,
        timeout_s=settings.llm_timeout_s,
        max_attempts=settings.llm_max_attempts,
        app_url=settings.llm_app_url,
        app_title=settings.llm_app_title,
        catalog=catalog,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
    )
    return ProviderChoice(provider, settings.llm_models, why)
