"""Recorded model answers: a backtest asks a model once per (model, prompt, parameters), ever.

`CachedModel` is a `DecisionModel` in front of the real one (ARCHITECTURE.md: "cached answers (backtests)"). Its
key is the sha256 of the model, both prompts and the parameters that change an answer (temperature, max tokens, the
prompts' version). A hit answers at once, costs nothing and is marked `(cached)` in the provider field the decision
stores; a miss asks the model within the run's rate limit and keeps whatever it answered, a malformed answer too (a
rerun must decide the same). A call that brought no answer at all (`LLMAPIError`) is not kept: it is asked again.
Without a model behind it (no key), a miss is an error that names the prompt's key: a rerun of a cached run needs
no key at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from aiolimiter import AsyncLimiter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.db.models import ModelAnswer
from app.db.upsert import insert_for
from app.schemas.trading_decision import TradingDecision
from app.services.llm.llm_exceptions import LLMAPIError
from app.services.llm.providers.base import DecisionModel, ModelRequest, ModelResponse, TokenUsage

CACHED = " (cached)"


def answer_key(request: ModelRequest, *, temperature: float | None, max_tokens: int | None) -> str:
    """sha256 of what decides a model's answer: the model, the prompts and the sampling parameters."""
    material = json.dumps(
        {
            "model": request.model,
            "system": request.system_prompt,
            "user": request.user_prompt,
            "temperature": request.temperature if request.temperature is not None else temperature,
            "max_tokens": max_tokens,
            "prompt_version": request.prompt_version,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _stored(response: ModelResponse) -> dict[str, Any]:
    return {
        "raw_text": response.raw_text,
        "decision": response.decision.model_dump(mode="json") if response.decision is not None else None,
        "model_served": response.model_served,
        "provider": response.provider,
        "latency_ms": response.latency_ms,
        "usage": asdict(response.usage),
        "finish_reason": response.finish_reason,
        "failure": response.failure,
        "error": response.error,
        "generation_id": response.generation_id,
        "attempts": response.attempts,
        "reasked": response.reasked,
        "first_raw_text": response.first_raw_text,
    }


def _restored(stored: dict[str, Any], request: ModelRequest) -> ModelResponse:
    decision = stored.get("decision")
    usage = dict(stored.get("usage") or {})
    usage["cost_usd"] = 0.0  # this run pays nothing for it
    return ModelResponse(
        raw_text=stored.get("raw_text"),
        decision=TradingDecision.model_validate(decision) if decision is not None else None,
        model_requested=request.model,
        model_served=stored.get("model_served"),
        provider=f"{stored.get('provider') or 'model'}{CACHED}",
        latency_ms=0.0,
        usage=TokenUsage(**{k: v for k, v in usage.items() if k in TokenUsage.__dataclass_fields__}),
        finish_reason=stored.get("finish_reason"),
        failure=stored.get("failure"),
        error=stored.get("error"),
        generation_id=stored.get("generation_id"),
        attempts=0,
        reasked=bool(stored.get("reasked")),
        first_raw_text=stored.get("first_raw_text"),
    )


class AnswerCache:
    """The `model_answers` table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], wall_clock: Clock) -> None:
        self.sessions = sessions
        self.wall_clock = wall_clock

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self.sessions() as session:
            return (await session.execute(select(ModelAnswer.response).where(ModelAnswer.key == key))).scalar()

    async def put(self, key: str, model: str, response: dict[str, Any], now: datetime | None = None) -> None:
        async with self.sessions.begin() as session:
            statement = insert_for(session)(ModelAnswer).values(
                key=key, model=model, response=response, created_at=now or self.wall_clock.now()
            )
            await session.execute(statement.on_conflict_do_nothing(index_elements=["key"]))


class CachedModel:
    """A `DecisionModel` that answers from the cache, and asks `inner` (rate-limited) only for a new prompt."""

    is_simulated = False

    def __init__(
        self,
        inner: DecisionModel | None,
        cache: AnswerCache,
        *,
        requests_per_minute: float = 60.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name if inner is not None else "answer-cache"
        self.temperature = temperature if temperature is not None else getattr(inner, "temperature", None)
        self.max_tokens = max_tokens if max_tokens is not None else getattr(inner, "max_tokens", None)
        self._limiter = AsyncLimiter(max(1.0, requests_per_minute), 60.0)
        self.hits = 0
        self.calls = 0  # answers asked of the model behind
        self.spent_usd = 0.0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        key = answer_key(request, temperature=self.temperature, max_tokens=self.max_tokens)
        stored = await self.cache.get(key)
        if stored is not None:
            self.hits += 1
            return _restored(stored, request)
        if self.inner is None:
            raise LLMAPIError(
                f"no answer of {request.model} is cached for this prompt (key {key[:12]}) and no model can be asked: "
                "set OPENROUTER_API_KEY"
            )
        started = time.perf_counter()
        async with self._limiter:
            response = await self.inner.complete(request)
        self.calls += 1
        self.spent_usd += response.usage.cost_usd or 0.0
        if response.latency_ms <= 0:
            response.latency_ms = (time.perf_counter() - started) * 1000
        await self.cache.put(key, request.model, _stored(response))
        return response
