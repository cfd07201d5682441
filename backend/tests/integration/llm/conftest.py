"""Fixtures and builders shared by the OpenRouter provider tests (a fake OpenRouter on a real socket)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import tests.factories as f
from app.services.llm.providers.base import ModelRequest
from app.services.llm.providers.openrouter import OpenRouterModel
from tests.fakes.openrouter_server import FakeOpenRouter, fake_openrouter_fixture  # noqa: F401 (fixture)

KEY = "sk-or-v1-test-secret-5f3c2a9d81e04b7c"
Fake = FakeOpenRouter
Make = Callable[..., OpenRouterModel]
SYMBOLS = ["BTC", "ETH"]


def valid_json() -> str:
    decision = f.trading_decision([f.decision("BTC"), f.buy("ETH", 500.0)])
    return decision.model_dump_json(exclude={"timestamp"})


def schema_breaking_json() -> str:
    value = json.loads(valid_json())
    value["decisions"][0]["confidence"] = 150  # > 100
    del value["portfolio_rationale"]
    return json.dumps(value)


def request(model: str = "openai/gpt-5") -> ModelRequest:
    context = f.trading_context(SYMBOLS)
    return ModelRequest(
        symbols=SYMBOLS,
        context=context,
        strategy=context.account_state.active_strategy,
        system_prompt="SYSTEM: answer with a TradingDecision JSON object",
        user_prompt="USER: the market",
        model=model,
    )


@pytest.fixture
def server(fake_openrouter: FakeOpenRouter) -> FakeOpenRouter:
    return fake_openrouter


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def make_model(server: Fake, sleeps: list[float]) -> AsyncIterator[Make]:
    created: list[OpenRouterModel] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def build(**overrides: Any) -> OpenRouterModel:
        options: dict[str, Any] = {
            "api_key": KEY,
            "base_url": server.base_url,
            "model": "openai/gpt-5",
            "timeout_s": 2.0,
            "max_attempts": 3,
            "backoff_base_s": 0.5,
            "backoff_max_s": 30.0,
            "app_url": "https://github.com/example/ai-trading-agent",
            "app_title": "AI Trading Agent",
            "sleep": record_sleep,
            "rng": random.Random(7),
        }
        options.update(overrides)
        model = OpenRouterModel(**options)
        created.append(model)
        return model

    yield build
    for model in created:
        await model.aclose()
