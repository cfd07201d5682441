"""The OpenRouter provider against a fake OpenRouter over a real socket: the request it sends, the answers
it parses (padded, fenced, truncated, empty, schema-breaking with one re-ask) and its configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.errors import ConfigurationError
from app.schemas.trading_decision import TradingDecision
from app.services.llm.providers.json_schema import strict_json_schema
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel
from tests.fakes.openrouter_server import (
    REAL_PADDING,
    Scripted,
    chat_completion,
    error_body,
    load_body,
    model_entry,
    raw_body_files,
)
from tests.integration.llm.conftest import KEY, SYMBOLS, Fake, Make, request, schema_breaking_json, valid_json

# ------------------------------------------------------------------------------------------------ success


async def test_a_decision_with_usage_cost_and_who_served_it(server: Fake, make_model: Make) -> None:
    body = chat_completion(
        valid_json(),
        model="openai/gpt-5-2025-08-07",
        provider="Azure",
        prompt_tokens=2000,
        completion_tokens=400,
        reasoning_tokens=128,
        cached_tokens=1024,
        cost=0.0123,
        gen_id="gen-1767760885-abc",
    )
    server.reply(body)
    response = await make_model().complete(request())

    assert response.decision is not None
    assert [d.asset for d in response.decision.decisions] == SYMBOLS
    assert response.failure is None and response.error is None
    assert response.raw_text == valid_json()
    assert response.model_requested == "openai/gpt-5"
    assert response.model_served == "openai/gpt-5-2025-08-07"
    assert response.provider == "Azure"
    assert response.finish_reason == "stop"
    assert response.latency_ms > 0
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2000, 400, 2400)
    assert (usage.reasoning_tokens, usage.cached_tokens, usage.cost_usd) == (128, 1024, 0.0123)


async def test_gpt5_gets_a_strict_json_schema_and_require_parameters(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json()))
    await make_model(max_tokens=4000, temperature=0.2).complete(request("openai/gpt-5"))

    sent = server.chat_requests[0].json
    assert sent["model"] == "openai/gpt-5"
    assert sent["messages"] == [
        {"role": "system", "content": "SYSTEM: answer with a TradingDecision JSON object"},
        {"role": "user", "content": "USER: the market"},
    ]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "trading_decision", "strict": True, "schema": strict_json_schema(TradingDecision)},
    }
    assert sent["provider"] == {"require_parameters": True}
    assert sent["max_tokens"] == 4000
    assert "temperature" not in sent  # gpt-5 does not take it: with require_parameters it would block routing


async def test_deepseek_r1_gets_no_json_schema(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json(), model="deepseek/deepseek-r1", provider="DeepInfra"))
    await make_model(temperature=0.3).complete(request("deepseek/deepseek-r1"))

    sent = server.chat_requests[0].json
    assert "response_format" not in sent
    assert "provider" not in sent
    assert sent["temperature"] == 0.3


async def test_json_mode_only_model_gets_json_object(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json(), model="deepseek/deepseek-chat-v3.1"))
    await make_model().complete(request("deepseek/deepseek-chat-v3.1"))

    sent = server.chat_requests[0].json
    assert sent["response_format"] == {"type": "json_object"}
    assert "provider" not in sent


async def test_a_live_catalog_enables_structured_output(server: Fake, make_model: Make) -> None:
    server.models = [model_entry("acme/new-model", ["max_tokens", "response_format", "structured_outputs"])]
    server.reply(chat_completion(valid_json(), model="acme/new-model"))
    catalog = ModelCatalog(base_url=server.base_url, api_key=KEY)
    await make_model(catalog=catalog).complete(request("acme/new-model"))

    assert len(server.models_requests) == 1
    assert server.chat_requests[0].json["response_format"]["type"] == "json_schema"


async def test_auth_and_attribution_headers(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json()))
    await make_model().complete(request())

    headers = server.chat_requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["http-referer"] == "https://github.com/example/ai-trading-agent"
    assert headers["x-openrouter-title"] == "AI Trading Agent"
    assert headers["x-title"] == "AI Trading Agent"
    assert headers["x-stainless-retry-count"] == "0"


# ------------------------------------------------------------------------------------- answers to parse


async def test_a_padded_body_parses(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json()), padding=REAL_PADDING)
    response = await make_model().complete(request())

    assert response.decision is not None


@pytest.mark.shared_data
async def test_the_real_padded_raw_bodies_parse(shared_data: Path, server: Fake, make_model: Make) -> None:
    files = raw_body_files()
    assert files
    for name in files:
        raw = load_body(name)
        assert raw[:1].isspace()  # they really start with padding
        server.enqueue(Scripted(body=raw))
    model = make_model()
    for name in files:
        response = await model.complete(request())
        expected = json.loads(load_body(name))
        assert response.raw_text == expected["choices"][0]["message"]["content"]
        assert response.model_served == "anthropic/claude-sonnet-4"
        assert response.provider == "Google"
        assert response.usage.cost_usd == expected["usage"]["cost"]
        assert response.decision is None and response.failure == "no_json"  # prose, not a decision


async def test_a_fenced_answer_is_parsed(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(f"Here is my decision:\n```json\n{valid_json()}\n```\n"))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert response.failure is None


async def test_a_truncated_answer_is_a_truncated_failure(server: Fake, make_model: Make) -> None:
    cut = valid_json()[:150]
    server.reply(chat_completion(cut, finish_reason="length"))
    response = await make_model().complete(request())

    assert response.decision is None
    assert response.failure == "truncated"
    assert response.raw_text == cut
    assert response.finish_reason == "length"
    assert len(server.chat_requests) == 1  # not re-asked


async def test_empty_content_with_reasoning(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion("", reasoning="The trend is up but RSI is high, so I would", reasoning_tokens=900))
    response = await make_model().complete(request())

    assert response.decision is None
    assert response.failure == "empty"
    assert response.usage.reasoning_tokens == 900


async def test_the_decision_is_found_in_the_reasoning_when_content_is_empty(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion("", reasoning=f"Weighing the trend... final answer:\n{valid_json()}"))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert response.raw_text == ""


async def test_schema_breaking_json_is_re_asked_once(server: Fake, make_model: Make) -> None:
    first = schema_breaking_json()
    server.reply(chat_completion(first, prompt_tokens=1000, completion_tokens=300, cost=0.01))
    server.reply(chat_completion(valid_json(), prompt_tokens=1400, completion_tokens=320, cost=0.02))
    response = await make_model().complete(request())

    assert len(server.chat_requests) == 2
    messages = server.chat_requests[1].json["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == first
    assert "confidence" in messages[3]["content"] and "portfolio_rationale" in messages[3]["content"]
    assert response.decision is not None and response.failure is None
    assert response.raw_text == valid_json()
    assert response.error is not None and "re-asked" in response.error
    assert response.reasked and response.first_raw_text == first and response.attempts == 2
    assert response.usage.prompt_tokens == 2400 and response.usage.completion_tokens == 620
    assert response.usage.cost_usd == pytest.approx(0.03)


async def test_a_failed_re_ask_returns_the_first_answer(server: Fake, make_model: Make) -> None:
    first = schema_breaking_json()
    server.reply(chat_completion(first))
    server.reply(error_body(400, "context length exceeded"), status=400)
    response = await make_model().complete(request())

    assert len(server.chat_requests) == 2
    assert response.raw_text == first
    assert response.decision is None and response.failure == "schema"
    assert response.error is not None and "re-ask after schema errors failed" in response.error


async def test_only_one_re_ask(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(schema_breaking_json()), times=2)
    response = await make_model().complete(request())

    assert len(server.chat_requests) == 2
    assert response.decision is None
    assert response.failure == "schema"
    assert response.error is not None and "confidence" in response.error


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        OpenRouterModel(api_key="", model="openai/gpt-5")
    with pytest.raises(ConfigurationError):
        OpenRouterModel(api_key=KEY, model="openai/gpt-5", base_url="http://openrouter.ai/api/v1")
    model = OpenRouterModel(api_key=KEY, model="openai/gpt-5")
    assert model.name == "openrouter" and model.is_simulated is False
    assert model.base_url == "https://openrouter.ai/api/v1"
