"""The OpenRouter provider's resilience against a fake OpenRouter over a real socket: retries with backoff
and Retry-After, errors that are not retried, 200 answers carrying an error, timeouts, refused connections,
and the real recorded error bodies."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.services.llm.llm_exceptions import LLMAPIError
from app.services.llm.providers.openrouter import backoff_delay, parse_retry_after
from tests.fakes.openrouter_server import chat_completion, completion_with_error, error_body, recorded
from tests.integration.llm.conftest import KEY, Fake, Make, request, valid_json

# ------------------------------------------------------------------------------------------- resilience


async def test_429_with_retry_after_waits_then_succeeds(server: Fake, make_model: Make, sleeps: list[float]) -> None:
    server.reply(error_body(429, "Rate limit exceeded"), status=429, headers={"Retry-After": "7"})
    server.reply(chat_completion(valid_json()))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert len(server.chat_requests) == 2
    assert sleeps == [7.0]


async def test_retry_after_is_capped(server: Fake, make_model: Make, sleeps: list[float]) -> None:
    server.reply(error_body(429, "slow down"), status=429, headers={"Retry-After": "600"})
    server.reply(chat_completion(valid_json()))
    await make_model(backoff_max_s=12.0).complete(request())

    assert sleeps == [12.0]


async def test_502_and_503_are_retried(server: Fake, make_model: Make, sleeps: list[float]) -> None:
    server.reply(error_body(502, "Provider returned error"), status=502)
    server.reply(error_body(503, "No available model provider that meets your routing requirements"), status=503)
    server.reply(chat_completion(valid_json()))
    response = await make_model(max_attempts=3, backoff_base_s=0.5).complete(request())

    assert response.decision is not None
    assert len(server.chat_requests) == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter within base * 2^(n-1)


async def test_500_forever_gives_up_retryable(server: Fake, make_model: Make, sleeps: list[float]) -> None:
    server.reply(error_body(500, "Internal Server Error"), status=500, times=4)
    with pytest.raises(LLMAPIError) as caught:
        await make_model(max_attempts=4).complete(request())

    assert caught.value.retryable is True
    assert caught.value.status_code == 500
    assert len(server.chat_requests) == 4
    assert len(sleeps) == 3
    assert "Internal Server Error" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "model is required"),
        (401, "No auth credentials found"),
        (402, "Insufficient credits. Add more using https://openrouter.ai/credits"),
        (403, "Input was flagged by moderation"),
        (404, "No endpoints found for acme/missing."),
    ],
)
async def test_client_errors_are_not_retried(
    server: Fake, make_model: Make, sleeps: list[float], status: int, message: str
) -> None:
    server.reply(error_body(status, message, {"echo": f"Bearer {KEY}"}), status=status)
    server.reply(chat_completion(valid_json()))  # never fetched
    with pytest.raises(LLMAPIError) as caught:
        await make_model().complete(request())

    error = caught.value
    assert len(server.chat_requests) == 1
    assert sleeps == []
    assert error.status_code == status and error.retryable is False
    assert message in str(error)
    assert KEY not in str(error) and KEY not in repr(error.args)


async def test_an_api_key_echoed_in_a_message_is_redacted(server: Fake, make_model: Make) -> None:
    server.reply(error_body(401, f"invalid key {KEY}"), status=401)
    with pytest.raises(LLMAPIError) as caught:
        await make_model().complete(request())

    assert KEY not in str(caught.value)
    assert "***" in str(caught.value)


async def test_a_200_carrying_a_retryable_error_is_retried(server: Fake, make_model: Make) -> None:
    server.reply(completion_with_error(502, "Provider returned error"))
    server.reply(chat_completion(valid_json()))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert len(server.chat_requests) == 2


async def test_a_200_carrying_a_client_error_raises(server: Fake, make_model: Make) -> None:
    server.reply(completion_with_error(400, "Token limit reached"))
    server.reply(chat_completion(valid_json()))
    with pytest.raises(LLMAPIError) as caught:
        await make_model().complete(request())

    assert caught.value.status_code == 400 and caught.value.retryable is False
    assert "Token limit reached" in str(caught.value)
    assert len(server.chat_requests) == 1


async def test_a_200_that_is_not_json_is_retried(server: Fake, make_model: Make) -> None:
    server.reply("<html>Bad gateway</html>", padding="\n  \n")
    server.reply(chat_completion(valid_json()))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert len(server.chat_requests) == 2


async def test_a_slow_answer_times_out_and_is_retried(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json()), delay_s=1.5)
    server.reply(chat_completion(valid_json()))
    response = await make_model(timeout_s=0.3).complete(request())

    assert response.decision is not None
    assert len(server.chat_requests) == 2


async def test_timeouts_forever_give_up_retryable(server: Fake, make_model: Make) -> None:
    server.reply(chat_completion(valid_json()), delay_s=1.5, times=2)
    with pytest.raises(LLMAPIError) as caught:
        await make_model(timeout_s=0.2, max_attempts=2).complete(request())

    assert caught.value.retryable is True
    assert "timed out" in str(caught.value)


async def test_connection_refused_is_retried_then_raised(make_model: Make, sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = make_model(base_url=f"http://127.0.0.1:{port}/api/v1", max_attempts=2)
    with pytest.raises(LLMAPIError) as caught:
        await model.complete(request())

    assert caught.value.retryable is True and caught.value.status_code is None
    assert len(sleeps) == 1


@pytest.mark.shared_data
async def test_the_real_429_body_then_success(
    shared_data: Path, server: Fake, make_model: Make, sleeps: list[float]
) -> None:
    server.enqueue(recorded("errors/429_provider_rate_limited.json", headers={"Retry-After": "2"}))
    server.reply(chat_completion(valid_json()))
    response = await make_model().complete(request())

    assert response.decision is not None
    assert sleeps == [2.0]


@pytest.mark.shared_data
async def test_the_real_429_body_forever_names_the_upstream(shared_data: Path, server: Fake, make_model: Make) -> None:
    server.enqueue(*[recorded("errors/429_provider_rate_limited.json") for _ in range(2)])
    with pytest.raises(LLMAPIError) as caught:
        await make_model(max_attempts=2).complete(request())

    assert caught.value.status_code == 429 and caught.value.retryable is True
    assert "Provider returned error" in str(caught.value) and "temporarily rate-limited upstream" in str(caught.value)


@pytest.mark.shared_data
async def test_the_real_404_body_is_not_retried(shared_data: Path, server: Fake, make_model: Make) -> None:
    server.enqueue(recorded("errors/404_no_endpoints.json"))
    with pytest.raises(LLMAPIError) as caught:
        await make_model().complete(request("google/gemini-2.5-flash:free"))

    assert caught.value.status_code == 404 and caught.value.retryable is False
    assert "No endpoints found for google/gemini-2.5-flash:free." in str(caught.value)
    assert len(server.chat_requests) == 1


# ------------------------------------------------------------------------------------ helpers and config


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Mon, 02 Mar 2026 12:00:09 GMT"}, now=now) == 9.0
    assert parse_retry_after({"retry-after": "Mon, 02 Mar 2026 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        delay = backoff_delay(attempt, base_s=1.0, max_s=30.0, retry_after_s=None, rng=rng)
        assert 0.0 <= delay <= min(30.0, 2 ** (attempt - 1))
    assert backoff_delay(1, base_s=1.0, max_s=30.0, retry_after_s=45.0, rng=rng) == 30.0
