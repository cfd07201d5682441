"""Recorded model answers, checked at the fake OpenRouter over a real socket: a backtest asks the model once per
prompt; its rerun asks nothing and trades the same; a run whose estimated cost is above --max-cost asks nothing."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.backtest.history import BacktestError
from app.backtest.results import BacktestConfig
from app.backtest.runner import Backtester
from app.db.migrate import ensure_migrated
from app.db.session import create_engine, create_session_factory
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel
from tests.conftest import IsolatedSettings
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, model_entry

KEY = "sk-or-v1-" + "c" * 64
MODEL = "openai/gpt-5-mini"
COST = 0.012  # what the fake bills a call (usage.cost)
START = datetime(2025, 3, 3, tzinfo=UTC)
CONFIG = BacktestConfig(
    assets=("BTC", "ETH"),
    interval="1h",
    long_interval="4h",
    start=START,
    end=START + timedelta(days=1),
    data="simulated",
    seed=5,
    strategy="aggressive",
    model=MODEL,
)


def _answer(body: dict[str, Any]) -> Scripted:
    """A decision that depends on the prompt only (its hash): buy BTC with a 2 % stop on some prompts, else hold."""
    prompt = body["messages"][-1]["content"]
    digest = hashlib.sha256(prompt.encode()).digest()
    found = re.search(r"^BTC: price ([0-9.]+);", prompt, re.MULTILINE)
    assert found is not None, "the prompt states BTC's price"
    decisions: list[dict[str, Any]] = [
        {
            "asset": asset,
            "action": "hold",
            "allocation_usd": 0,
            "exit_plan": "wait",
            "rationale": f"scripted {digest[i]}",
            "confidence": 50,
            "risk_level": "low",
        }
        for i, asset in enumerate(CONFIG.assets)
    ]
    if digest[0] < 96:
        decisions[0].update(action="buy", allocation_usd=500, sl_price=round(float(found.group(1)) * 0.98, 2))
    content = json.dumps(
        {
            "decisions": decisions,
            "portfolio_rationale": "scripted",
            "total_allocation_usd": 0,
            "portfolio_risk_level": "low",
        }
    )
    return Scripted(200, chat_completion(content, model=MODEL, cost=COST))


@pytest.fixture
def fake() -> Iterator[FakeOpenRouter]:
    catalog = [
        model_entry(MODEL, ["temperature", "max_tokens", "response_format"], prompt_per_m=0.25, completion_per_m=2.0)
    ]
    with FakeOpenRouter(models=catalog) as server:
        server.responder = _answer
        yield server


async def _backtester(tmp_path: Path, fake: FakeOpenRouter) -> tuple[Backtester, Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'main.db'}"
    settings = IsolatedSettings(
        database_url=url,
        openrouter_api_key=KEY,
        openrouter_base_url=fake.base_url,
        llm_model=MODEL,
        llm_requests_per_minute=100_000,
        secret_key_file=str(tmp_path / "secret.key"),
    )
    engine = create_engine(url)
    await ensure_migrated(engine)
    catalog = ModelCatalog(base_url=fake.base_url, api_key=KEY)
    provider = OpenRouterModel(api_key=KEY, model=MODEL, base_url=fake.base_url, timeout_s=10, catalog=catalog)
    return Backtester(settings, create_session_factory(engine), provider=provider), engine


async def test_a_rerun_asks_the_model_nothing_and_trades_the_same(tmp_path: Path, fake: FakeOpenRouter) -> None:
    backtester, engine = await _backtester(tmp_path, fake)
    try:
        first = await backtester.run(CONFIG, with_baseline=False)
        asked = len(fake.chat_requests)
        assert asked == first.result.cycles == 25, "one model call per cycle"
        assert first.result.model_calls == asked and first.result.cached_answers == 0
        assert first.result.model_cost_usd == pytest.approx(COST * asked)

        second = await backtester.run(CONFIG, with_baseline=False)
        assert len(fake.chat_requests) == asked, "the rerun made no model call"
        assert second.result.cached_answers == second.result.cycles and second.result.model_calls == 0
        assert second.result.model_cost_usd == 0.0
        assert second.result.trade_fingerprint == first.result.trade_fingerprint
        assert [(d.cycle_time, d.asset, d.action, d.rationale) for d in second.result.decisions] == [
            (d.cycle_time, d.asset, d.action, d.rationale) for d in first.result.decisions
        ]
        assert all(d.cached for d in second.result.decisions)
        assert first.result.fills, "the scripted answers traded: the fingerprint covers trades"
    finally:
        await engine.dispose()


async def test_a_run_above_max_cost_is_refused_before_any_call(tmp_path: Path, fake: FakeOpenRouter) -> None:
    backtester, engine = await _backtester(tmp_path, fake)
    try:
        with pytest.raises(BacktestError, match=r"estimated model cost \$[0-9.]+ .* above --max-cost \$0\.00"):
            await backtester.run(BacktestConfig(**{**CONFIG.__dict__, "max_cost_usd": 0.001}), with_baseline=False)
        assert fake.chat_requests == [], "no model was asked"
    finally:
        await engine.dispose()


async def test_the_cost_cap_stops_a_run_that_reaches_it(tmp_path: Path, fake: FakeOpenRouter) -> None:
    backtester, engine = await _backtester(tmp_path, fake)
    try:
        # the estimate (~$0.05 at the catalog's prices) is below the cap; the fake bills $0.012 a call: 5 reach it
        stored = await backtester.run(BacktestConfig(**{**CONFIG.__dict__, "max_cost_usd": 0.055}), with_baseline=False)
        assert stored.result.stopped and "--max-cost" in stored.result.stopped
        assert len(fake.chat_requests) == 5 == stored.result.cycles
    finally:
        await engine.dispose()


async def test_the_estimate_and_the_cap_cover_the_masked_run_too(tmp_path: Path, fake: FakeOpenRouter) -> None:
    backtester, engine = await _backtester(tmp_path, fake)
    try:
        # ~$0.05 a run at the catalog's prices: $0.08 covers the run alone, not the run and its masked twin
        masked = BacktestConfig(**{**CONFIG.__dict__, "max_cost_usd": 0.08, "mask_dates": True})
        with pytest.raises(BacktestError, match=r"50 cycles .* above --max-cost \$0\.08"):
            await backtester.run(masked, with_baseline=False)
        assert fake.chat_requests == [], "no model was asked"
        alone = await backtester.run(BacktestConfig(**{**CONFIG.__dict__, "max_cost_usd": 0.08}), with_baseline=False)
        assert alone.result.stopped and "--max-cost" in alone.result.stopped  # $0.012 a call billed: 7 calls reach it
    finally:
        await engine.dispose()
