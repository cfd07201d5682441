"""The LLM client's own cost per call, and the size of what it sends.

* overhead per call: `OpenRouterModel.complete()` against a fake OpenRouter on loopback that answers at
  once, minus a bare HTTP round trip of the same request body to the same server (so the server's answer
  time and the socket are excluded); the remainder is request building, SDK, parsing and validation.
* request size: the JSON body sent for a real context of 3 and of 10 assets (prompt + strict schema).

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_llm_client.py)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.openrouter_server import FakeOpenRouter, chat_completion

from app.bootstrap import build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings
from app.services.llm.providers.openrouter import OpenRouterModel

CALLS = 200
TEN = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT"]


def answer(symbols: list[str]) -> str:
    return json.dumps(
        {
            "decisions": [
                {
                    "asset": s,
                    "action": "hold",
                    "allocation_usd": 0,
                    "exit_plan": "wait",
                    "rationale": "flat",
                    "confidence": 50,
                    "risk_level": "low",
                }
                for s in symbols
            ],
            "portfolio_rationale": "hold",
            "total_allocation_usd": 0,
            "portfolio_risk_level": "low",
        }
    )


async def measure(assets: list[str], fake: FakeOpenRouter, tmp: Path) -> None:
    settings = ExplicitSettings(database_url=f"sqlite:///{tmp / f'bench{len(assets)}.db'}", assets=",".join(assets))
    agent = await build_agent(settings, clock=ManualClock(datetime(2026, 3, 2, 12, tzinfo=UTC)))
    model = OpenRouterModel(api_key="sk-bench", model="openai/gpt-5", base_url=fake.base_url, max_attempts=1)
    try:
        context = await agent.engine.context_builder.build_trading_context(assets, 1)
        request = agent.llm.request_for(assets, context)
        body = answer(assets)
        fake.reply(chat_completion(body), times=CALLS + 5)
        await model.complete(request)  # warm-up (connection, schema caches)
        sent = fake.chat_requests[-1].json
        size = len(json.dumps(sent).encode())
        timings = []
        for _ in range(CALLS):
            started = time.perf_counter()
            response = await model.complete(request)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.decision is not None
        fake.reply(chat_completion(body), times=CALLS)
        raw = []
        async with httpx.AsyncClient() as client:
            for _ in range(CALLS):
                started = time.perf_counter()
                reply = await client.post(f"{fake.base_url}/chat/completions", json=sent)
                reply.json()
                raw.append((time.perf_counter() - started) * 1000)
        overhead = statistics.median(timings) - statistics.median(raw)
        print(
            f"{len(assets)} assets: request body {size:,} bytes (system prompt {len(request.system_prompt):,} chars,"
            f" user prompt {len(request.user_prompt):,} chars)"
        )
        print(
            f"  complete() median {statistics.median(timings):.2f} ms; bare round trip median"
            f" {statistics.median(raw):.2f} ms; client overhead ~{overhead:.2f} ms per call ({CALLS} calls)"
        )
    finally:
        await model.aclose()
        await agent.close()


async def main() -> None:
    with FakeOpenRouter() as fake, tempfile.TemporaryDirectory() as tmp:
        for assets in (["BTC", "ETH", "SOL"], TEN):
            await measure(assets, fake, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
