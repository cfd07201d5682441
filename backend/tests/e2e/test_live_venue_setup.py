"""Live venue set-up before the first entry: the agent's first entry in an asset is made in isolated margin, at the
leverage the executor chose (the lowest of the strategy's, the account's and the venue's maximum), and both were
set at the venue before the entry order was sent. Read at the fake: its book, the requests it received in order, and
what its wire answers say (Binance `positionRisk` / `symbolConfig`, Hyperliquid `clearinghouseState`).

The fakes start an asset as the venues do: cross margin at 20x (Binance's default leverage of a symbol; Hyperliquid's
default for an asset allowing 20x or more), so an adapter that skipped the set-up, or asked for cross margin, would
trade in the fake's defaults and fail these tests.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.db import models
from tests.e2e.live_support import VENUES, LiveRig, is_entry_create, live_agent
from tests.fakes import exchange_bodies as bodies
from tests.fakes.hyperliquid_trading import FakeHyperliquidPerps

pytestmark = pytest.mark.db

VENUE_DEFAULT_LEVERAGE = 20  # Binance: a symbol's default leverage; Hyperliquid: the default for BTC (max 40x)
# (strategy, account's max leverage, the leverage the entry must use): the strategy's 3x binds, then the account's 4x
# under the aggressive strategy's 8x; the venue's maximum (Binance 125x, Hyperliquid 40x for BTC) is far above both
CAPS = {"strategy_binds": ("conservative", 5.0, 3), "account_binds": ("aggressive", 4.0, 4)}
STRATEGY_MAX = {"conservative": 3.0, "aggressive": 8.0}  # the built-in strategies' max_leverage (strategy_manager)


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def signed_binance(fake: Any, path: str, **params: str) -> Any:
    """A signed GET at the fake Binance, made by hand (no ccxt, no adapter): what the venue answers a trader."""
    query = urlencode({**params, "timestamp": fake.now_ms, "recvWindow": 5000})
    signature = hmac.new(fake.API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{fake.base_url}{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": fake.API_KEY}
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def hyperliquid_state(fake: Any) -> dict[str, Any]:
    """The wallet's clearinghouseState at the fake Hyperliquid, asked by hand."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.base_url}/info", json={"type": "clearinghouseState", "user": fake.WALLET})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def venue_says(fake: Any, asset: str) -> tuple[str, int, float]:
    """(margin mode, leverage, isolated margin) of `asset` as the venue's own answers report them."""
    if isinstance(fake, FakeHyperliquidPerps):
        state = await hyperliquid_state(fake)
        rows = [r["position"] for r in state["assetPositions"] if r["position"]["coin"] == asset]
        assert len(rows) == 1, state
        leverage = rows[0]["leverage"]
        isolated = (
            float(leverage["rawUsd"]) + float(rows[0]["szi"]) * float(rows[0]["entryPx"])
            if "rawUsd" in leverage
            else 0.0
        )
        return str(leverage["type"]), int(leverage["value"]), isolated
    [row] = await signed_binance(fake, "/fapi/v2/positionRisk", symbol=f"{asset}USDT")
    [config] = await signed_binance(fake, "/fapi/v1/symbolConfig", symbol=f"{asset}USDT")
    assert config["marginType"] == ("ISOLATED" if row["marginType"] == "isolated" else "CROSSED"), (config, row)
    assert int(config["leverage"]) == int(row["leverage"]), (config, row)
    [v3] = await signed_binance(fake, "/fapi/v3/positionRisk", symbol=f"{asset}USDT")
    assert v3["isolatedWallet"] == row["isolatedWallet"], (v3, row)
    return str(row["marginType"]), int(row["leverage"]), float(row["isolatedWallet"])


def venue_max(fake: Any, asset: str) -> float:
    """The highest leverage the fake venue allows for `asset` (Binance: its top bracket; Hyperliquid: meta)."""
    if isinstance(fake, FakeHyperliquidPerps):
        return float(bodies.spec(asset).max_leverage)
    return float(fake.max_leverage(asset))


def setup_requests(rig: LiveRig, asset: str) -> tuple[list[tuple[int, str, int | None]], int]:
    """The margin-mode and leverage requests for `asset` the fake answered, as (index, mode, leverage) in the order
    received (mode "" for a Binance leverage request, leverage None for a Binance margin-type request), and the index of
    the first entry order create."""
    fake, requests = rig.fake, list(rig.fake.requests)
    setups: list[tuple[int, str, int | None]] = []
    if isinstance(fake, FakeHyperliquidPerps):
        index = fake.assets.index(asset)
        for i, r in enumerate(requests):
            action = r.json.get("action") if r.path == "/exchange" and isinstance(r.json, dict) else None
            if isinstance(action, dict) and action.get("type") == "updateLeverage" and action.get("asset") == index:
                setups.append((i, "cross" if action["isCross"] else "isolated", int(action["leverage"])))
    else:
        for i, r in enumerate(requests):
            if r.method != "POST" or r.query.get("symbol") != f"{asset}USDT" or r.status != 200:
                continue
            if r.path == "/fapi/v1/marginType":
                setups.append((i, "isolated" if r.query["marginType"].upper() == "ISOLATED" else "cross", None))
            elif r.path == "/fapi/v1/leverage":
                setups.append((i, "", int(r.query["leverage"])))
    entries = [i for i, r in enumerate(requests) if is_entry_create(fake, r.method, r.path, r.query, r.json)]
    assert entries, "no entry order was sent"
    return setups, entries[0]


async def use(rig: LiveRig, strategy_id: str, account_max: float) -> None:
    """Give the rig's account `strategy_id` and `account_max` as its maximum leverage."""
    assert await rig.agent.engine.switch_strategy(rig.account_id, strategy_id)
    async with rig.agent.sessions.begin() as session:
        account = await session.get(models.Account, rig.account_id)
        assert account is not None
        account.max_leverage = account_max
    strategy = await rig.agent.engine.strategies.runnable_strategy(strategy_id)
    assert strategy is not None and strategy.risk_parameters.max_leverage == STRATEGY_MAX[strategy_id]


@pytest.mark.parametrize("case", sorted(CAPS))
async def test_the_first_entry_is_made_in_isolated_margin_at_the_executors_leverage_set_before_it(
    venue: str, case: str, database_url: str, tmp_path: Path
) -> None:
    strategy_id, account_max, expected = CAPS[case]
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        assert expected == min(STRATEGY_MAX[strategy_id], account_max, venue_max(fake, "BTC"))
        assert expected != VENUE_DEFAULT_LEVERAGE
        await use(rig, strategy_id, account_max)
        # the venue's defaults before the agent touched the asset: cross margin, 20x
        assert (fake.book.margin_mode("BTC"), fake.book.leverage("BTC")) == ("cross", VENUE_DEFAULT_LEVERAGE)
        if venue == "binanceusdm":
            [row] = await signed_binance(fake, "/fapi/v2/positionRisk", symbol="BTCUSDT")
            assert (row["marginType"], row["leverage"]) == ("cross", str(VENUE_DEFAULT_LEVERAGE))

        result = await rig.cycle()

        assert result.status == "executed", (result.execution_errors, result.validation)
        decided = result.decision.decisions[0] if result.decision else None
        assert decided is not None and decided.action == "buy"
        # at the fake: isolated margin, the executor's leverage, in the book and in the venue's own answers
        assert fake.book.margin_mode("BTC") == "isolated"
        assert fake.book.leverage("BTC") == expected
        [position] = fake.book.positions()
        notional = abs(position.size) * position.entry_price
        mode, leverage, isolated = await venue_says(fake, "BTC")
        assert (mode, leverage) == ("isolated", expected)
        assert isolated == pytest.approx(notional / expected, rel=1e-6)
        assert position.margin == pytest.approx(notional / expected, rel=1e-9)
        # sized at that leverage: the margin is the model's allocation, down to one lot
        lot_value = float(
            bodies.spec("BTC").step if venue == "binanceusdm" else 10.0 ** -bodies.spec("BTC").sz_decimals
        )
        assert decided.allocation_usd * expected - lot_value * position.entry_price < notional
        assert notional <= decided.allocation_usd * expected * (1 + 1e-9)
        # in the order received: isolated margin and the leverage asked, both before the entry order
        setups, entry = setup_requests(rig, "BTC")
        before = [s for s in setups if s[0] < entry]
        modes = [m for _, m, _ in before if m]
        leverages = [x for _, _, x in before if x is not None]
        assert modes and modes[-1] == "isolated", setups
        assert leverages and leverages[-1] == expected, setups
        assert "cross" not in modes, setups


async def test_a_position_opened_without_set_up_shows_the_venues_defaults(venue: str, tmp_path: Path) -> None:
    """The fakes report the mode and leverage actually in force: a position opened by hand, with no margin or leverage
    request, is in cross margin at 20x (what an adapter that skipped the set-up would trade in)."""
    async with live_agent(venue, tmp_path) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        quantity = 0.01
        fake.book.place("BTC", "buy", "market", quantity)
        [position] = fake.book.positions()
        mode, leverage, isolated = await venue_says(fake, "BTC")
        assert (mode, leverage, isolated) == ("cross", VENUE_DEFAULT_LEVERAGE, 0.0)
        assert position.margin == pytest.approx(quantity * position.entry_price / VENUE_DEFAULT_LEVERAGE, rel=1e-9)


async def test_an_entry_under_a_bracket_below_the_strategys_leverage_commits_only_its_allocation(
    tmp_path: Path,
) -> None:
    """Binance BTC with a 2x top bracket, the conservative strategy's 3x: the venue is set at 2x, and the entry must be
    sized at 2x (margin = the allocation), not at 3x (margin 1.5 times the allocation)."""
    async with live_agent("binanceusdm", tmp_path) as rig:
        rig.fake.MAX_LEVERAGE = {**rig.fake.MAX_LEVERAGE, "BTC": 2}
        result = await rig.cycle()
        assert result.status == "executed", (result.execution_errors, result.validation)
        decided = result.decision.decisions[0] if result.decision else None
        assert decided is not None and decided.action == "buy"
        assert (await venue_says(rig.fake, "BTC"))[:2] == ("isolated", 2)
        [position] = rig.fake.book.positions()
        assert position.margin <= decided.allocation_usd * (1 + 1e-9), (position.margin, decided.allocation_usd)
