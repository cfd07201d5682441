"""ModelCatalog.check: a model switch is checked against the endpoint's live catalog, never taken unchecked."""

from __future__ import annotations

import pytest

from app.services.llm.llm_exceptions import ModelCatalogUnavailableError, ModelNotAvailableError
from app.services.llm.providers.model_catalog import ModelCatalog
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, error_body, model_entry


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_listed_models_pass_unlisted_ones_are_refused_and_fetched_again_later() -> None:
    ticks = Ticks()
    with FakeOpenRouter(models=[model_entry("x-ai/grok-4", ["max_tokens"])]) as fake:
        catalog = ModelCatalog(base_url=fake.base_url, api_key="k" * 30, clock=ticks)
        await catalog.check("x-ai/grok-4")
        await catalog.check("x-ai/grok-4:free")  # a variant of a listed model
        with pytest.raises(ModelNotAvailableError, match="not in the model catalog"):
            await catalog.check("openai/gpt-5")  # in the built-in table, but this endpoint does not list it
        assert len(fake.models_requests) == 1, "a catalog fetched a moment ago is not fetched again"

        fake.models.append(model_entry("openai/gpt-5", ["max_tokens"]))
        ticks.now = 61
        await catalog.check("openai/gpt-5")  # listed since: a later check fetches again
        assert len(fake.models_requests) == 2


async def test_a_catalog_that_cannot_be_read_refuses_to_check() -> None:
    with FakeOpenRouter(models=[model_entry("x-ai/grok-4", ["max_tokens"])]) as fake:
        fake.enqueue_models(Scripted(500, error_body(500, "down")))
        catalog = ModelCatalog(base_url=fake.base_url)
        with pytest.raises(ModelCatalogUnavailableError, match="cannot be read"):
            await catalog.check("x-ai/grok-4")
        await catalog.check("x-ai/grok-4")  # asked again at once, not after the refresh back-off


async def test_offline_catalog_checks_its_own_table() -> None:
    catalog = ModelCatalog()
    await catalog.check("openai/gpt-5")
    with pytest.raises(ModelNotAvailableError):
        await catalog.check("nobody/nothing")
