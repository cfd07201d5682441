"""The A/B experiment on a known answer, end to end: the seeded simulator, the loop, three scripted models behind the
fake OpenRouter (over a real socket), the outcome tracker, and the results read through the HTTP API.

One model has a real edge: it peeks at the simulator's next candle (a second simulator with the same seed, inside
the test) and goes long when that candle closes higher, short otherwise. The control and the other variant toss
seeded coins. The experiment must call the peeking model better than the control and the coin-tossing variant not
better; the test computes the paired difference itself from the stored outcomes and holds the API's to it."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.db import models
from app.main import create_app
from app.services.evaluation.tracker import RETRY_CANDLES
from app.services.llm.providers.model_catalog import ModelCatalog
from app.services.llm.providers.openrouter import OpenRouterModel
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, IsolatedSettings
from tests.e2e.server import serve
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, model_entry

pytestmark = pytest.mark.db

KEY = "sk-or-v1-known-answer-0123456789abcdef"
ASSETS = ["BTC", "ETH", "SOL"]
CONTROL, ORACLE, COIN = "test/coin-control", "test/next-candle-oracle", "test/coin-variant"
MIN_SAMPLES = 40
# horizon 1: a cycle's outcome is known once the next candle has closed, and it counts once settled (the tracker's
# wait for late candles over)
CYCLES = MIN_SAMPLES + 1 + RETRY_CANDLES + 2
STEP = timedelta(minutes=5)
_TIME = re.compile(r"Time \(UTC\): (\d{4}-\d{2}-\d{2} \d{2}:\d{2})")


def _decision(asset: str, side: str, price: float) -> dict[str, Any]:
    sign = 1 if side == "buy" else -1
    return {
        "asset": asset,
        "action": side,
        "allocation_usd": 50,
        "sl_price": round(price * (1 - sign * 0.05), 2),
        "tp_price": round(price * (1 + sign * 0.05), 2),
        "exit_plan": "the stop or the target",
        "rationale": "scripted",
        "confidence": 60,
        "risk_level": "low",
    }


class Models:
    """Answers by the model asked: the oracle from the next candle, the others from their own seeded coin."""

    def __init__(self, seed: int, sim_seed: int) -> None:
        self.peek = MarketSimulator(ASSETS, base_timeframe="5m", seed=sim_seed)
        self.coins = {CONTROL: random.Random(seed), COIN: random.Random(seed + 1)}

    def __call__(self, body: dict[str, Any]) -> Scripted:
        model = body["model"]
        found = _TIME.search(body["messages"][-1]["content"])
        assert found is not None, "the prompt states its time"
        cycle = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        decisions = []
        for asset in ASSETS:
            candles = self.peek.candles_between(asset, "5m", cycle - STEP, cycle + STEP)  # the last closed, the next
            now, following = float(candles.close[0]), float(candles.close[1])
            if model == ORACLE:
                side = "buy" if following > now else "sell"
            else:
                side = self.coins[model].choice(["buy", "sell"])
            decisions.append(_decision(asset, side, now))
        content = json.dumps(
            {
                "decisions": decisions,
                "portfolio_rationale": "scripted",
                "total_allocation_usd": 50 * len(decisions),
                "portfolio_risk_level": "low",
            }
        )
        return Scripted(200, chat_completion(content, model=model, cost=0.0))


@pytest.fixture
async def running(database_url: str, clock: ManualClock) -> AsyncIterator[tuple[Agent, httpx.AsyncClient]]:
    catalog = [model_entry(slug, ["temperature", "max_tokens", "response_format"]) for slug in (CONTROL, ORACLE, COIN)]
    with FakeOpenRouter(models=catalog) as fake:
        settings: Settings = IsolatedSettings(
            database_url=database_url,
            admin_api_key=ADMIN_KEY,
            openrouter_api_key=KEY,
            openrouter_base_url=fake.base_url,
            llm_model=CONTROL,
            llm_daily_budget_usd=None,
            llm_requests_per_minute=100_000,  # three calls a cycle, as fast as the test runs them
        )
        fake.responder = Models(seed=11, sim_seed=settings.sim_seed)
        built: list[Agent] = []

        async def factory(s: Settings) -> Agent:
            provider = OpenRouterModel(
                api_key=KEY,
                model=CONTROL,
                base_url=fake.base_url,
                timeout_s=10,
                catalog=ModelCatalog(base_url=fake.base_url, api_key=KEY),  # the fake's catalog lists the models
            )
            market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
            built.append(await build_agent(s, clock=clock, market=market, provider=provider))
            return built[0]

        async with (
            serve(create_app(settings, agent_factory=factory)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60, headers={"X-API-Key": ADMIN_KEY}) as client,
        ):
            yield built[0], client


def _paired_difference(outcomes: list[models.DecisionOutcome], variant: int, control: int) -> tuple[float, int]:
    """The mean over the first MIN_SAMPLES common cycles of (variant's mean direction return - control's)."""
    units: dict[int, dict[tuple[int, datetime], list[float]]] = {variant: defaultdict(list), control: defaultdict(list)}
    for row in outcomes:
        if row.variant_id in units:
            units[row.variant_id][(row.account_id, row.cycle_time)].append(row.direction_return)
    common = sorted(set(units[variant]) & set(units[control]), key=lambda key: key[1])[:MIN_SAMPLES]
    differences = [np.mean(units[variant][key]) - np.mean(units[control][key]) for key in common]
    return float(np.mean(differences)), len(common)


async def test_the_experiment_tells_a_real_edge_from_a_coin(
    running: tuple[Agent, httpx.AsyncClient], clock: ManualClock
) -> None:
    agent, client = running
    created = await client.post(
        "/api/v1/experiments",
        json={
            "name": "oracle vs coins",
            "assignment": "shadow",
            "metric": "mean_return",
            "horizon": 1,
            "min_samples": MIN_SAMPLES,
            "seed": 5,
            "accounts": [1],
            "variants": [
                {"name": "control", "model": CONTROL, "is_control": True},
                {"name": "oracle", "model": ORACLE},
                {"name": "coin", "model": COIN},
            ],
        },
    )
    assert created.status_code == 201, created.text
    experiment = created.json()
    ids = {v["name"]: v["id"] for v in experiment["variants"]}

    for cycle in range(CYCLES):
        clock.advance(STEP)
        await agent.loop.run_cycle()
        if cycle == MIN_SAMPLES // 2:  # half way: no verdict before the sample size set at the start
            halfway = (await client.get(f"/api/v1/experiments/{experiment['id']}/results")).json()
            assert {v["name"]: v["verdict"] for v in halfway["variants"] if not v["is_control"]} == {
                "oracle": "not yet",
                "coin": "not yet",
            }

    response = await client.get(f"/api/v1/experiments/{experiment['id']}/results")
    assert response.status_code == 200, response.text
    results = {v["name"]: v for v in response.json()["variants"]}
    assert results["oracle"]["verdict"] == "better", results["oracle"]
    assert results["coin"]["verdict"] in ("no difference", "worse"), results["coin"]
    assert results["oracle"]["units_analysed"] == MIN_SAMPLES == results["coin"]["units_analysed"]

    async with agent.sessions() as session:
        outcomes = list(
            (
                await session.scalars(
                    select(models.DecisionOutcome).where(
                        models.DecisionOutcome.experiment_id == experiment["id"], models.DecisionOutcome.horizon == 1
                    )
                )
            ).all()
        )
    for name in ("oracle", "coin"):
        expected, units = _paired_difference(outcomes, ids[name], ids["control"])
        assert units == MIN_SAMPLES
        difference = results[name]["difference"]
        assert difference["paired"] is True
        assert difference["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert difference["low"] <= difference["value"] <= difference["high"]
    assert results["oracle"]["difference"]["low"] > 0  # the edge is real: the interval stays above zero
    oracle_rows = [row for row in outcomes if row.variant_id == ids["oracle"]]
    assert oracle_rows and all(row.direction_return >= 0 for row in oracle_rows)  # it knew every next close
    assert all(row.is_shadow for row in oracle_rows)

    # The dashboard shows the same verdicts and draws each variant's estimate with its interval.
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as browser:
        assert (await browser.post("/login", data={"api_key": ADMIN_KEY})).status_code == 303
        page = (await browser.get("/experiments")).text
        models_page = (await browser.get("/models")).text
    section = page[page.index(f'data-experiment-id="{experiment["id"]}"') :]
    assert f'id="experiment-{experiment["id"]}-chart"' in section and section.count('class="chart-dot"') == 3
    assert "<td>better<br>" in section  # the oracle's verdict
    for name in (CONTROL, ORACLE, COIN):
        assert f'data-model="{name}"' in models_page, name
