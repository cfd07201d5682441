"""`/api/v1/decisions/metrics` and `/api/v1/strategies/{id}/performance` over a real socket, on the rows of
`tests.integration.test_outcome_metrics.seed` (its docstring tabulates them): every outcome figure, per model,
strategy, asset and account, against numbers worked out by hand here; shadow decisions out by default and in with
`include_shadow`; what an account key may see; the horizon and the window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_KEY
from tests.e2e.server import serve
from tests.e2e.test_api import simulated
from tests.integration.test_outcome_metrics import Seeded, assert_figures, seed

pytestmark = pytest.mark.db

METRICS = "/api/v1/decisions/metrics"


@dataclass
class Served:
    client: httpx.AsyncClient
    ids: Seeded

    async def metrics(self, key: str = ADMIN_KEY, **params: Any) -> dict[str, Any]:
        response = await self.client.get(METRICS, params=params, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def served(settings: Settings, clock: ManualClock) -> AsyncIterator[Served]:
    app = create_app(settings, agent_factory=simulated(clock))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield Served(client, await seed(app.state.agent))


Bucket = tuple[float, int, float, float]  # (low, decisions, mean confidence, hit rate): ten points wide


def fig(
    counts: tuple[int, int, int],
    hit_rate: float | None,
    returns: tuple[float | None, float | None, float | None],
    profit_factor: float | None,
    brier: float | None,
    reliability: list[Bucket],
    excursions: tuple[float | None, float | None],
    first: tuple[int, int],
    trades: tuple[int, float, float, float, float] = (0, 0.0, 0.0, 0.0, 0.0),
    cost: tuple[int, int, int, float] = (0, 0, 0, 0.0),
) -> dict[str, Any]:
    """The figures of a group, from hand-worked values: (decisions, directional, hits), (mean, median, mean over
    all), the reliability buckets, (mean adverse, mean favourable), (stop first, target first), trades (count,
    realized, fees, funding, net) and cost (decisions, calls, tokens, USD)."""
    decisions, calls, tokens, usd = cost
    return {
        "decisions": counts[0],
        "directional": counts[1],
        "hits": counts[2],
        "hit_rate": hit_rate,
        "mean_return": returns[0],
        "median_return": returns[1],
        "mean_return_all": returns[2],
        "profit_factor": profit_factor,
        "brier": brier,
        "reliability": [
            {"low": low, "high": low + 10, "decisions": n, "mean_confidence": mean, "hit_rate": rate}
            for low, n, mean, rate in reliability
        ],
        "mean_adverse": excursions[0],
        "mean_favourable": excursions[1],
        "stop_first": first[0],
        "target_first": first[1],
        "trades": dict(zip(("trades", "realized_pnl", "fees", "funding", "net_pnl"), trades, strict=True)),
        "cost": {
            "decisions": decisions,
            "llm_calls": calls,
            "tokens": tokens,
            "cost_usd": usd,
            "tokens_per_decision": tokens / decisions if decisions else None,
            "cost_usd_per_decision": usd / decisions if decisions else None,
        },
    }


D1_TRADE = (1, 12.0, 1.5, -0.5, 10.0)
D3_TRADE = (1, -8.0, 1.0, 0.2, -8.8)
BOTH_TRADES = (2, 4.0, 2.5, -0.3, 1.2)
# Brier terms (confidence/100 - hit)^2: D1 BTC 80 hit 0.04, D1 ETH 88 missed 0.7744, D2 SOL 100 hit 0, D3 BTC 30
# hit 0.49 (D3 ETH has no confidence, D2 BTC is flat), D0 BTC 40 missed 0.16, S1 BTC 70 hit 0.09.
D3_BTC: Bucket = (30.0, 1, 30.0, 1.0)
D1_BOTH: Bucket = (80.0, 2, 84.0, 0.5)  # D1 BTC at 80 hit, D1 ETH at 88 missed
D2_SOL: Bucket = (90.0, 1, 100.0, 1.0)  # 100 falls in the last bucket

# The window's six asset decisions at horizon 4, shadow aside: returns +0.02, -0.01, (flat), +0.03, +0.005, -0.02.
OVERALL = fig(
    (6, 5, 3),
    0.6,
    (0.025 / 5, 0.005, 0.025 / 6),
    0.055 / 0.03,
    (0.04 + 0.7744 + 0.0 + 0.49) / 4,
    [D3_BTC, D1_BOTH, D2_SOL],
    (0.048 / 5, 0.073 / 5),
    (2, 1),
    BOTH_TRADES,
    (3, 3, 3200, 0.035),
)
# D1 BTC, D1 ETH, D3 BTC, D3 ETH
MODEL_A = fig(
    (4, 4, 2),
    0.5,
    (-0.005 / 4, (-0.01 + 0.005) / 2, -0.005 / 4),
    0.025 / 0.03,
    (0.04 + 0.7744 + 0.49) / 3,
    [D3_BTC, D1_BOTH],
    (0.047 / 4, 0.038 / 4),
    (2, 1),
    BOTH_TRADES,
    (2, 3, 3200, 0.035),
)
# D2 BTC (flat), D2 SOL
MODEL_B = fig((2, 1, 1), 1.0, (0.03, 0.03, 0.015), None, 0.0, [D2_SOL], (0.001, 0.035), (0, 0), cost=(1, 0, 0, 0.0))
# D1 BTC, D1 ETH, D2 BTC (flat), D2 SOL: account 1's too
CONSERVATIVE = fig(
    (4, 3, 2),
    2 / 3,
    (0.04 / 3, 0.02, 0.01),
    0.05 / 0.01,
    (0.04 + 0.7744 + 0.0) / 3,
    [D1_BOTH, D2_SOL],
    (0.021 / 3, 0.067 / 3),
    (1, 1),
    D1_TRADE,
    (2, 2, 2600, 0.03),
)
# D3 BTC, D3 ETH: account B's too
AGGRESSIVE = fig(
    (2, 2, 1),
    0.5,
    (-0.0075, -0.0075, -0.0075),
    0.25,
    0.49,
    [D3_BTC],
    (0.0135, 0.003),
    (1, 0),
    D3_TRADE,
    (1, 1, 600, 0.005),
)
# D1 BTC, D2 BTC (flat), D3 BTC
BTC = fig(
    (3, 2, 2),
    1.0,
    (0.0125, 0.0125, 0.025 / 3),
    None,
    (0.04 + 0.49) / 2,
    [D3_BTC, (80.0, 1, 80.0, 1.0)],
    (0.0035, 0.018),
    (0, 1),
    D1_TRADE,
    (3, 3, 3200, 0.035),
)
# D1 ETH, D3 ETH
ETH = fig(
    (2, 2, 0),
    0.0,
    (-0.015, -0.015, -0.015),
    0.0,  # losses and no gain
    0.7744,
    [(80.0, 1, 88.0, 0.0)],
    (0.02, 0.001),
    (2, 0),
    D3_TRADE,
    (2, 3, 3200, 0.035),
)
SOL = fig((1, 1, 1), 1.0, (0.03, 0.03, 0.03), None, 0.0, [D2_SOL], (0.001, 0.035), (0, 0), cost=(1, 0, 0, 0.0))
# The shadow S1 BTC: +0.02 at confidence 70, its own model call
MODEL_C = fig(
    (1, 1, 1),
    1.0,
    (0.02, 0.02, 0.02),
    None,
    0.09,
    [(70.0, 1, 70.0, 1.0)],
    (0.005, 0.03),
    (0, 1),
    cost=(1, 1, 950, 0.04),
)


def _groups(body: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {group["key"]: group for group in body["outcomes"]["groups"]}


def _check_groups(body: dict[str, Any], expected: dict[Any, dict[str, Any]]) -> None:
    groups = _groups(body)
    assert list(groups) == list(expected), "one group per key, in order"
    for key, figures in expected.items():
        assert_figures(groups[key], figures, str(key))


async def test_every_figure_overall_and_per_model(served: Served) -> None:
    """An admin key without account_id: every account. The counts leave the shadow out; model calls count all."""
    body = await served.metrics()
    assert body["account_id"] is None
    assert (body["decisions"], body["by_status"]) == (3, {"executed": 1, "no_action": 1, "fallback": 1})
    assert body["fallback_rate"] == pytest.approx(1 / 3)
    assert body["rejected_assets"] == 1, "S1's rejected asset is not counted"
    assert (body["llm_calls"], body["llm_failures"], body["prompt_tokens"], body["completion_tokens"]) == (
        4,
        2,
        3400,
        750,
    )
    assert body["cost_usd"] == pytest.approx(0.075)
    outcomes = body["outcomes"]
    assert {k: outcomes[k] for k in ("horizon", "interval", "include_shadow", "group_by", "capped")} == {
        "horizon": 4,
        "interval": "5m",
        "include_shadow": False,
        "group_by": "model",
        "capped": False,
    }
    assert outcomes["row_limit"] == 50_000 and outcomes["oldest_cycle"] == "2026-03-02T09:00:00Z"
    assert_figures(outcomes["overall"], OVERALL, "overall")
    _check_groups(body, {"m/a": MODEL_A, "m/b": MODEL_B})


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("strategy", {"aggressive": AGGRESSIVE, "conservative": CONSERVATIVE}),
        ("asset", {"BTC": BTC, "ETH": ETH, "SOL": SOL}),
        ("account", {1: CONSERVATIVE, 2: AGGRESSIVE}),
    ],
)
async def test_figures_per_strategy_asset_and_account(
    served: Served, group_by: str, expected: dict[Any, dict[str, Any]]
) -> None:
    assert served.ids.account_b == 2
    body = await served.metrics(group_by=group_by)
    assert body["outcomes"]["group_by"] == group_by
    assert_figures(body["outcomes"]["overall"], OVERALL, "overall")
    _check_groups(body, expected)


async def test_shadow_decisions_count_in_the_outcomes_only_when_asked(served: Served) -> None:
    body = await served.metrics(include_shadow="true")
    assert body["outcomes"]["include_shadow"] is True
    assert (body["decisions"], body["rejected_assets"]) == (3, 1), "the counts never include shadows"
    _check_groups(body, {"m/a": MODEL_A, "m/b": MODEL_B, "m/c": MODEL_C})
    # Seven asset decisions: the six above and S1 BTC +0.02 (confidence 70, target first, 950 tokens, 0.04 USD).
    assert_figures(
        body["outcomes"]["overall"],
        fig(
            (7, 6, 4),
            4 / 6,
            (0.045 / 6, (0.005 + 0.02) / 2, 0.045 / 7),
            0.075 / 0.03,
            (0.04 + 0.7744 + 0.0 + 0.49 + 0.09) / 5,
            [D3_BTC, (70.0, 1, 70.0, 1.0), D1_BOTH, D2_SOL],
            (0.053 / 6, 0.103 / 6),
            (2, 2),
            BOTH_TRADES,
            (4, 4, 4150, 0.075),
        ),
    )


async def test_an_account_key_sees_its_own_account(served: Served) -> None:
    b = served.ids.account_b
    created = await served.client.post(f"/api/v1/accounts/{b}/keys", headers={"X-API-Key": ADMIN_KEY})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    own = await served.metrics(key)
    assert own == await served.metrics(key, account_id=b)
    assert (own["account_id"], own["decisions"], own["by_status"], own["fallback_rate"]) == (b, 1, {"fallback": 1}, 1.0)
    assert (own["llm_calls"], own["llm_failures"], own["prompt_tokens"]) == (1, 1, 500)
    assert_figures(own["outcomes"]["overall"], AGGRESSIVE, "overall")
    _check_groups(own, {"m/a": AGGRESSIVE})
    for account_id in (1, 999):
        other = await served.client.get(METRICS, params={"account_id": account_id}, headers={"X-API-Key": key})
        assert (other.status_code, other.json()["detail"]) == (404, f"account {account_id} does not exist")
    # The admin key names one account: that account's figures only.
    one = await served.metrics(account_id=1, group_by="account")
    assert (one["account_id"], one["by_status"], one["rejected_assets"]) == (1, {"executed": 1, "no_action": 1}, 1)
    assert one["llm_calls"] == 3, "D1's two calls and the shadow's: model calls count all"
    _check_groups(one, {1: CONSERVATIVE})
    missing = await served.client.get(METRICS, params={"account_id": 999}, headers={"X-API-Key": ADMIN_KEY})
    assert missing.status_code == 404


async def test_the_horizon_and_the_window(served: Served) -> None:
    one = await served.metrics(horizon=1)
    # D1 BTC alone at horizon 1; the trades do not depend on the horizon.
    d1_btc = fig(
        (1, 1, 1),
        1.0,
        (0.004, 0.004, 0.004),
        None,
        0.04,
        [(80.0, 1, 80.0, 1.0)],
        (0.001, 0.005),
        (0, 0),
        BOTH_TRADES,
        (1, 2, 2600, 0.03),
    )
    assert one["outcomes"]["horizon"] == 1
    assert_figures(one["outcomes"]["overall"], d1_btc, "overall")
    _check_groups(one, {"m/a": d1_btc})
    # At horizon 12 only the outcome on 1h candles exists: none on this agent's INTERVAL (the trades stay).
    twelve = await served.metrics(horizon=12)
    nothing = fig((0, 0, 0), None, (None, None, None), None, None, [], (None, None), (0, 0), BOTH_TRADES)
    assert_figures(twelve["outcomes"]["overall"], nothing, "overall")
    assert twelve["outcomes"]["oldest_cycle"] is None
    _check_groups(twelve, {"m/a": nothing})
    for bad in ({"horizon": 5}, {"horizon": "four"}, {"group_by": "venue"}, {"include_shadow": "maybe"}):
        refused = await served.client.get(METRICS, params=bad, headers={"X-API-Key": ADMIN_KEY})
        assert refused.status_code == 422, f"{bad}: {refused.text}"
    # A week: D0 (two days ago, BTC -0.05 at confidence 40, stop first) joins model m/a.
    week = await served.metrics(timeframe="7d")
    assert week["by_status"] == {"executed": 2, "no_action": 1, "fallback": 1}
    assert week["outcomes"]["oldest_cycle"] == "2026-02-28T12:00:00Z"
    _check_groups(
        week,
        {
            "m/a": fig(
                (5, 5, 2),
                0.4,
                (-0.011, -0.01, -0.011),
                0.025 / 0.08,
                (0.04 + 0.7744 + 0.49 + 0.16) / 4,
                [D3_BTC, (40.0, 1, 40.0, 0.0), D1_BOTH],
                (0.107 / 5, 0.048 / 5),
                (3, 1),
                BOTH_TRADES,
                (3, 3, 3200, 0.035),
            ),
            "m/b": MODEL_B,
        },
    )


async def test_strategy_performance_carries_the_outcomes(served: Served) -> None:
    """Over the route's default week and horizon 4: D0, D1 and D2 for `conservative` (the shadow S1 left out); an
    account key sees its own account's."""
    response = await served.client.get("/api/v1/strategies/conservative/performance", headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["decisions"], body["trades"]) == (3, 1)
    assert (body["outcomes"]["horizon"], body["outcomes"]["group_by"], body["outcomes"]["groups"]) == (4, None, [])
    assert (body["outcomes"]["overall"]["decisions"], body["outcomes"]["overall"]["hits"]) == (5, 2)
    assert body["outcomes"]["overall"]["trades"]["net_pnl"] == pytest.approx(10.0)
    b = served.ids.account_b
    key = (await served.client.post(f"/api/v1/accounts/{b}/keys", headers={"X-API-Key": ADMIN_KEY})).json()["key"]
    mine = (await served.client.get("/api/v1/strategies/conservative/performance", headers={"X-API-Key": key})).json()
    assert (mine["decisions"], mine["outcomes"]["overall"]["decisions"]) == (0, 0)
    aggressive = await served.client.get("/api/v1/strategies/aggressive/performance", headers={"X-API-Key": key})
    assert_figures(aggressive.json()["outcomes"]["overall"], AGGRESSIVE, "overall")


async def test_model_calls_count_in_the_window_of_their_decisions_market_time(
    settings: Settings, clock: ManualClock
) -> None:
    """A model call is stamped on the wall clock, the window is the market's: a simulation runs days in minutes,
    so a call counts by its decision's cycle, not by when it was stamped."""
    app = create_app(settings, agent_factory=simulated(clock))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        agent = app.state.agent
        old = await agent.engine.make_trading_decision(None, 1)
        clock.advance(timedelta(days=2))
        new = await agent.engine.make_trading_decision(None, 1)
        served = Served(client, Seeded.__new__(Seeded))
        body = await served.metrics(account_id=1, timeframe="24h")
    assert old.id != new.id
    assert body["decisions"] == 1
    assert body["llm_calls"] == 1, "the call of the decision two market days ago is outside the window"
