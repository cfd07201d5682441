"""Choose the decision model from the settings: OpenRouter, another OpenAI-compatible endpoint, or the
rule-based baseline when neither is configured.

OpenRouter's key: one set through the API or the CLI (stored encrypted) wins over `OPENROUTER_API_KEY`; `keys`
is asked before every call, so a key rotated while the agent runs is used from the next call on."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.services.llm.llm_settings import LLMSettingsStore, OpenRouterKeys, restore_default_model
from app.services.llm.providers.base import DecisionModel
from app.services.llm.providers.baseline import BaselineModel
from app.services.llm.providers.key_check import KeyChecker
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import KeySource, OpenRouterModel


@dataclass(frozen=True)
class ProviderChoice:
    provider: DecisionModel
    models: list[str]
    why: str


def build_provider(
    settings: Settings, *, keys: KeySource | None = None, stored_key: str | None = None
) -> ProviderChoice:
    """`stored_key`: the OpenRouter key stored through the API or the CLI at start-up (None: none stored);
    `keys`: where the OpenRouter key in use is read before each call (None: the start-up key for good)."""
    env_key = settings.openrouter_api_key.get_secret_value() if settings.openrouter_api_key is not None else ""
    if settings.llm_base_url:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
        base_url = settings.llm_base_url
        why = f"LLM_BASE_URL={base_url}"
        keys = None  # the OpenRouter key is not this endpoint's
    elif stored_key or env_key:
        key = stored_key or env_key
        base_url = settings.openrouter_base_url
        why = ("OpenRouter key set through the API or the CLI" if stored_key else "OPENROUTER_API_KEY") + (
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
        keys=keys,
        # Only OpenRouter has `GET /key`: another endpoint's key is never sent to a URL it did not ask for.
        key_checker=None if settings.llm_base_url else KeyChecker(base_url),
    )
    return ProviderChoice(provider, settings.llm_models, why)


async def choose_provider(settings: Settings, store: LLMSettingsStore) -> ProviderChoice:
    """`build_provider` with what is kept in the database: an OpenRouter key set through the API or the CLI
    (read again before every call), and the default model switched through the API (unless LLM_MODEL or the
    endpoint changed since)."""
    env_key = settings.openrouter_api_key.get_secret_value() if settings.openrouter_api_key is not None else None
    stored = await store.openrouter_key()
    choice = build_provider(
        settings, keys=OpenRouterKeys(store, env_key), stored_key=stored.key if stored is not None else None
    )
    if choice.provider.is_simulated:
        return choice
    endpoint = getattr(choice.provider, "base_url", None)
    restored = await restore_default_model(store, choice.models, endpoint if isinstance(endpoint, str) else None)
    if restored is None:
        return choice
    return ProviderChoice(choice.provider, restored, f"{choice.why}; {restored[0]} switched through the API")
