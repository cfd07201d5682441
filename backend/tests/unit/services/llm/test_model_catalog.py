"""The model catalog: the built-in table, and its refresh from a fake OpenRouter's `GET /models`."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from app.services.llm.providers.model_catalog import (
    RESPONSE_FORMAT,
    STRUCTURED_OUTPUTS,
    ModelCatalog,
    ModelPrice,
    parse_models_payload,
)
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, error_body, model_entry

REQUIRED_MODELS = [
    "openai/gpt-5",
    "x-ai/grok-4",
    "deepseek/deepseek-r1",
    "deepseek/deepseek-chat-v3.1",
    "qwen/qwen3-235b-a22b-2507",
    "anthropic/claude-sonnet-4.5",
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter() as fake:
        fake.models = [
            model_entry("openai/gpt-5", ["max_tokens", "response_format"], prompt_per_m=2.0, completion_per_m=20.0),
            model_entry("acme/new-model", ["max_tokens", "structured_outputs"], prompt_per_m=0.1, completion_per_m=0.2),
        ]
        yield fake


# --------------------------------------------------------------------------------------------- built-in


def test_the_built_in_table_has_the_models_we_use() -> None:
    catalog = ModelCatalog()
    for model in REQUIRED_MODELS:
        assert catalog.knows(model), model
        assert catalog.price(model) is not None, model
    assert catalog.source == "builtin"


def test_built_in_structured_output_support() -> None:
    catalog = ModelCatalog()
    assert catalog.supports("openai/gpt-5", STRUCTURED_OUTPUTS)
    assert catalog.supports("x-ai/grok-4", STRUCTURED_OUTPUTS)
    assert not catalog.supports("deepseek/deepseek-r1", STRUCTURED_OUTPUTS)
    assert not catalog.supports("deepseek/deepseek-r1", RESPONSE_FORMAT)
    assert not catalog.supports("acme/unknown", STRUCTURED_OUTPUTS)


def test_built_in_prices_and_cost_estimate() -> None:
    catalog = ModelCatalog()
    assert catalog.price("openai/gpt-5") == ModelPrice(1.25, 10.0)
    assert catalog.price("x-ai/grok-4") == ModelPrice(3.0, 15.0)
    assert catalog.price("deepseek/deepseek-r1") == ModelPrice(0.50, 2.15)
    assert catalog.estimate_cost("openai/gpt-5", 1_000_000, 100_000) == pytest.approx(2.25)
    assert catalog.estimate_cost("openai/gpt-5", 2000, 500) == pytest.approx(0.0075)
    assert catalog.estimate_cost("acme/unknown", 1000, 1000) is None


def test_a_variant_suffix_falls_back_to_the_base_slug() -> None:
    catalog = ModelCatalog()
    assert catalog.supports("x-ai/grok-4:nitro", STRUCTURED_OUTPUTS)
    assert catalog.price("deepseek/deepseek-r1:free") == ModelPrice(0.50, 2.15)


async def test_offline_catalog_never_refreshes() -> None:
    catalog = ModelCatalog()
    assert not catalog.is_stale()
    await catalog.ensure_fresh()
    assert await catalog.refresh() is False
    assert catalog.source == "builtin"


# ---------------------------------------------------------------------------------------------- refresh


async def test_refresh_from_models(server: FakeOpenRouter) -> None:
    catalog = ModelCatalog(base_url=server.base_url, api_key="sk-or-test")
    assert await catalog.refresh() is True

    assert catalog.source == "remote"
    assert catalog.price("openai/gpt-5") == ModelPrice(2.0, 20.0)
    assert not catalog.supports("openai/gpt-5", STRUCTURED_OUTPUTS)  # the live answer wins
    assert catalog.supports("acme/new-model", STRUCTURED_OUTPUTS)
    assert catalog.price("acme/new-model") == ModelPrice(0.1, 0.2)
    assert catalog.knows("x-ai/grok-4")  # not listed: the built-in entry stays
    assert server.models_requests[0].headers["authorization"] == "Bearer sk-or-test"


async def test_refresh_is_cached_for_the_ttl(server: FakeOpenRouter) -> None:
    clock = Clock()
    catalog = ModelCatalog(base_url=server.base_url, ttl_s=600.0, clock=clock)
    await catalog.ensure_fresh()
    clock.now = 599.0
    await catalog.ensure_fresh()
    assert len(server.models_requests) == 1
    clock.now = 600.0
    await catalog.ensure_fresh()
    assert len(server.models_requests) == 2


async def test_a_failed_refresh_keeps_the_built_in_table_and_logs(
    server: FakeOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue_models(Scripted(500, error_body(500, "Internal Server Error")))
    clock = Clock()
    catalog = ModelCatalog(base_url=server.base_url, ttl_s=3600.0, retry_after_failure_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING):
        assert await catalog.refresh() is False

    assert catalog.source == "builtin"
    assert catalog.supports("openai/gpt-5", STRUCTURED_OUTPUTS)
    assert catalog.last_error is not None and "500" in catalog.last_error
    assert any("model catalog refresh" in record.message for record in caplog.records)
    await catalog.ensure_fresh()  # not retried before retry_after_failure_s
    assert len(server.models_requests) == 1
    clock.now = 60.0
    await catalog.ensure_fresh()  # the next one succeeds
    assert len(server.models_requests) == 2
    assert catalog.source == "remote"


async def test_a_malformed_models_answer_keeps_the_table(server: FakeOpenRouter) -> None:
    server.enqueue_models(Scripted(200, {"models": []}), Scripted(200, b"not json"), Scripted(200, {"data": []}))
    catalog = ModelCatalog(base_url=server.base_url)
    for _ in range(3):
        assert await catalog.refresh() is False
    assert catalog.source == "builtin"
    assert catalog.price("openai/gpt-5") == ModelPrice(1.25, 10.0)


async def test_an_unreachable_catalog_keeps_the_table() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    catalog = ModelCatalog(base_url=f"http://127.0.0.1:{port}/api/v1", timeout_s=1.0)
    assert await catalog.refresh() is False
    assert catalog.source == "builtin"
    assert catalog.last_error is not None


def test_parse_models_payload_skips_bad_entries() -> None:
    models = parse_models_payload(
        {
            "data": [
                {
                    "id": "a/ok",
                    "supported_parameters": ["tools"],
                    "pricing": {"prompt": "0.000001", "completion": "0.000002"},
                },
                {"id": "a/no-price", "supported_parameters": None, "pricing": {"prompt": "n/a"}},
                {"name": "no id"},
                "junk",
            ]
        }
    )
    assert sorted(models) == ["a/no-price", "a/ok"]
    assert models["a/ok"].price == ModelPrice(pytest.approx(1.0), pytest.approx(2.0))  # type: ignore[arg-type]
    assert models["a/no-price"].price is None
    assert models["a/no-price"].supported_parameters == frozenset()
    with pytest.raises(ValueError):
        parse_models_payload({"no": "data"})
