"""KeyChecker: OpenRouter's GET /key (the fake's real socket) read as the key's health, cached per key."""

from __future__ import annotations

import pytest

from app.services.llm.providers.key_check import KeyChecker, key_health
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, error_body, key_info

KEY = "sk-or-v1-key-check-0123456789abcdef"
OTHER = "sk-or-v1-key-check-other-0123456789"


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_health_reads_limits_and_spent_credit() -> None:
    unlimited = key_health(key_info(limit=None, usage=3.0)["data"], source="environment", fingerprint="f")
    assert (unlimited.status, unlimited.limit_usd, unlimited.limit_remaining_usd) == ("ok", None, None)
    assert (unlimited.usage_usd, unlimited.is_free_tier, unlimited.limit_reset) == (3.0, False, "monthly")
    no_remaining_field = {"limit": 10, "usage": 4}
    assert key_health(no_remaining_field, source="stored", fingerprint=None).limit_remaining_usd == 6.0
    spent = key_health(key_info(limit=5.0, usage=5.0)["data"], source="stored", fingerprint=None)
    assert spent.status == "no_credit" and spent.limit_usd == 5.0
    assert spent.detail == "the key's credit limit is spent", "no amount in the detail (the public /health shows it)"
    odd = key_health({"limit": "a lot", "usage": True, "is_free_tier": "no"}, source="stored", fingerprint=None)
    assert (odd.status, odd.limit_usd, odd.usage_usd, odd.is_free_tier) == ("ok", None, None, None)


async def test_answers_are_cached_per_key_and_failures_for_less_time() -> None:
    ticks = Ticks()
    with FakeOpenRouter() as fake:
        fake.known_keys = {KEY: key_info(limit=20.0, usage=5.0), OTHER: key_info(limit=None)}
        checker = KeyChecker(fake.base_url, ttl_s=60, failure_ttl_s=15, clock=ticks)

        first = await checker.check(KEY, source="environment", fingerprint="a")
        assert (first.status, first.limit_remaining_usd, first.source) == ("ok", 15.0, "environment")
        assert fake.key_requests[0].headers["authorization"] == f"Bearer {KEY}"
        again = await checker.check(KEY, source="stored", fingerprint="a")
        assert len(fake.key_requests) == 1 and again.source == "stored"

        rotated = await checker.check(OTHER, source="stored", fingerprint="b")  # a new key is asked at once
        assert len(fake.key_requests) == 2 and rotated.limit_usd is None

        ticks.now = 61
        fake.enqueue_key(Scripted(503, error_body(503, "down")))
        failed = await checker.check(OTHER, source="stored", fingerprint="b")
        assert failed.status == "unreachable" and "503" in (failed.detail or "")
        ticks.now = 70
        assert (await checker.check(OTHER, source="stored", fingerprint="b")).status == "unreachable"
        assert len(fake.key_requests) == 3
        ticks.now = 77  # past the failure's 15 s
        assert (await checker.check(OTHER, source="stored", fingerprint="b")).status == "ok"
        assert len(fake.key_requests) == 4


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (Scripted(401, error_body(401, "User not found.")), "invalid"),
        (Scripted(404, error_body(404, "no route")), "unsupported"),
        (Scripted(200, {"nothing": "here"}), "unreachable"),
        (Scripted(200, b"not json"), "unreachable"),
    ],
)
async def test_refusals_and_odd_answers(answer: Scripted, status: str) -> None:
    with FakeOpenRouter() as fake:
        fake.enqueue_key(answer)
        health = await KeyChecker(fake.base_url).check(KEY, source="environment", fingerprint="a")
    assert health.status == status
    assert KEY not in health.model_dump_json()


async def test_no_key_and_an_unreachable_host() -> None:
    checker = KeyChecker("http://127.0.0.1:9/api/v1", timeout_s=2)
    none = await checker.check(None, source="none", fingerprint=None)
    assert none.status == "invalid" and "no API key" in (none.detail or "")
    down = await checker.check(KEY, source="environment", fingerprint="a")
    assert down.status == "unreachable" and KEY not in down.model_dump_json()
