"""The outcome of one asset decision on real candles, the answers worked out by hand from the named rows of
`market/binance_usdm_typhonun_mit/BTC_USDT-5m.csv` (Binance USD-M BTC perpetual, 5m candles of 2025-03-06 UTC,
each named by its open time: open, high, low, close).

A decision made at cycle time T saw the close of the candle opening at T - 5m as its price; its horizon of h
candles is the h candles opening at T, T + 5m, ...
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.schemas.trading_decision import AssetDecision, OrderAdjustment, PositionAdjustment
from app.schemas.validation import AssetVerdict
from app.services.evaluation.asset_state import asset_state_of
from app.services.evaluation.outcomes import AssetState, asset_state_of_snapshot, call_of, measure
from app.services.llm.decision_validator import fallback_hold
from app.services.market_data.base import Candle
from tests import factories

BTC_5M = "market/binance_usdm_typhonun_mit/BTC_USDT-5m.csv"
DAY = datetime(2025, 3, 6, tzinfo=UTC)


@pytest.fixture
def btc(shared_data: Path) -> dict[datetime, Candle]:
    with (shared_data / BTC_5M).open() as rows:
        candles = [
            Candle(int(r["timestamp_ms"]), *(float(r[k]) for k in ("open", "high", "low", "close", "volume")))
            for r in csv.DictReader(rows)
        ]
    return {datetime.fromtimestamp(c.open_time_ms / 1000, tz=UTC): c for c in candles}


def at(hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return DAY.replace(hour=int(hours), minute=int(minutes))


def horizon(btc: dict[datetime, Candle], cycle: str, candles: int) -> list[Candle]:
    start = at(cycle)
    return [btc[start + timedelta(minutes=5 * i)] for i in range(candles)]


def verdict(original: AssetDecision | None, *, status: str = "accepted", final: AssetDecision | None = None) -> Any:
    final = final or original or fallback_hold("BTC", "no usable answer")
    return AssetVerdict(
        asset="BTC", status=status, original=original, final=final, is_fallback=original is None
    ).model_dump(mode="json")


def state(price: float, position: str | None = None, stop: float | None = None, target: float | None = None) -> Any:
    return {"price": price, "position": position, "stop": stop, "target": target}


def test_a_long_that_hit_its_stop_first_and_still_gained_at_the_horizon(btc: dict[datetime, Candle]) -> None:
    # Decided at 19:25 at the close of the 19:20 candle, 88270.6: buy, stop 87900, target 88600.
    # 19:25  88270.6 88304.0 88046.3 88063.3   neither (low 88046.3 > 87900, high 88304.0 < 88600)
    # 19:30  88063.3 88223.1 87790.5 88146.7   stop: low 87790.5 <= 87900; high 88223.1 < 88600
    # 19:35  88146.6 88269.8 87969.3 88200.0
    # 19:40  88200.0 88628.1 88144.9 88440.0   the target (high 88628.1) only comes later
    assert btc[at("19:20")].close == 88270.6
    buy = factories.decision("BTC", "buy", allocation_usd=500.0, sl_price=87900.0, tp_price=88600.0)
    call = call_of(verdict(buy), state(88270.6))
    assert call is not None and (call.direction, call.stop, call.target) == (1, 87900.0, 88600.0)
    outcome = measure(call, horizon(btc, "19:25", 4))
    assert outcome.exit_price == 88440.0
    assert outcome.market_return == pytest.approx(169.4 / 88270.6)  # 88440.0 / 88270.6 - 1 = +0.19191%
    assert outcome.direction_return == pytest.approx(169.4 / 88270.6)
    assert outcome.hit is True
    assert outcome.max_adverse == pytest.approx(480.1 / 88270.6)  # 88270.6 - low 87790.5 (19:30) = 0.54390%
    assert outcome.max_favourable == pytest.approx(357.5 / 88270.6)  # high 88628.1 (19:40) - 88270.6 = 0.40500%
    assert (outcome.first_hit, outcome.first_hit_at) == ("stop", at("19:30"))


def test_a_short_that_hit_its_target_first(btc: dict[datetime, Candle]) -> None:
    # Decided at 19:55 at the close of the 19:50 candle, 89049.6: sell, stop 89400, target 88500.
    # 19:55  89049.5 89051.6 88451.3 88488.5   target: low 88451.3 <= 88500; high 89051.6 < 89400
    # 20:00  88488.5 88935.1 88428.8 88842.0
    # 20:05  88841.9 89021.5 88717.6 88833.5
    # 20:10  88833.5 89187.3 88813.4 89162.0
    assert btc[at("19:50")].close == 89049.6
    sell = factories.decision("BTC", "sell", allocation_usd=500.0, sl_price=89400.0, tp_price=88500.0)
    call = call_of(verdict(sell), state(89049.6))
    assert call is not None and call.direction == -1

    one = measure(call, horizon(btc, "19:55", 1))
    assert one.exit_price == 88488.5
    assert one.market_return == pytest.approx(-561.1 / 89049.6)  # -0.63010%
    assert one.direction_return == pytest.approx(561.1 / 89049.6)  # the short gained 0.63010%
    assert one.hit is True
    assert one.max_adverse == pytest.approx(2.0 / 89049.6)  # high 89051.6 against the short
    assert one.max_favourable == pytest.approx(598.3 / 89049.6)  # low 88451.3
    assert (one.first_hit, one.first_hit_at) == ("target", at("19:55"))

    four = measure(call, horizon(btc, "19:55", 4))
    assert four.exit_price == 89162.0
    assert four.direction_return == pytest.approx(-112.4 / 89049.6)  # back above: the short lost 0.12622%
    assert four.hit is False
    assert four.max_adverse == pytest.approx(137.7 / 89049.6)  # high 89187.3 (20:10)
    assert four.max_favourable == pytest.approx(620.8 / 89049.6)  # low 88428.8 (20:00)
    assert (four.first_hit, four.first_hit_at) == ("target", at("19:55"))


def test_a_hold_on_an_open_long_that_would_have_lost(btc: dict[datetime, Candle]) -> None:
    # Decided at 20:15 at the close of the 20:10 candle, 89162.0, holding a long with stop 88500, target 89500.
    # 20:15  89162.0 89349.9 89032.2 89189.6
    # 20:20  89189.5 89250.0 88770.0 88899.0
    # 20:25  88899.1 89037.5 88850.5 88964.5
    # 20:30  88964.6 89246.5 88867.5 89042.6   neither level reached (lows >= 88770.0, highs <= 89349.9)
    assert btc[at("20:10")].close == 89162.0
    call = call_of(verdict(factories.decision("BTC", "hold")), state(89162.0, "long", 88500.0, 89500.0))
    assert call is not None and (call.direction, call.stop, call.target) == (1, 88500.0, 89500.0)
    outcome = measure(call, horizon(btc, "20:15", 4))
    assert outcome.exit_price == 89042.6
    assert outcome.direction_return == pytest.approx(-119.4 / 89162.0)  # -0.13391%
    assert outcome.hit is False
    assert outcome.max_adverse == pytest.approx(392.0 / 89162.0)  # low 88770.0 (20:20)
    assert outcome.max_favourable == pytest.approx(187.9 / 89162.0)  # high 89349.9 (20:15)
    assert (outcome.first_hit, outcome.first_hit_at) == ("none", None)


def test_a_stop_and_a_target_inside_one_candle_count_the_stop_first(btc: dict[datetime, Candle]) -> None:
    # The paper venue's rule: inside one candle the stop fills before the target, whatever the assumed path.
    # Decided at 19:30 at 88063.3 (close of 19:25): sell, stop 88200, target 87800. The 19:30 candle
    # (88063.3 88223.1 87790.5 88146.7) closed up, so its path O-L-H-C reaches the target (low 87790.5) before
    # the stop (high 88223.1); both are touched, and the stop counts.
    sell = factories.decision("BTC", "sell", allocation_usd=500.0, sl_price=88200.0, tp_price=87800.0)
    call = call_of(verdict(sell), state(88063.3))
    assert call is not None
    outcome = measure(call, horizon(btc, "19:30", 1))
    assert (outcome.first_hit, outcome.first_hit_at) == ("stop", at("19:30"))
    assert outcome.direction_return == pytest.approx(-83.4 / 88063.3)  # closed at 88146.7


def test_a_target_already_passed_at_the_open_is_first() -> None:
    # A gap is not a guess (the venue fills a target reached at the open at once): a long's target 101 under an
    # open of 102, in a candle that later falls through the stop 99.
    gap = Candle(0, open=102.0, high=102.5, low=98.0, close=98.5, volume=1.0)
    call = call_of(verdict(factories.decision("BTC", "hold")), state(100.0, "long", 99.0, 101.0))
    assert call is not None
    assert measure(call, [gap]).first_hit == "target"
    later = Candle(0, open=100.5, high=102.5, low=98.0, close=98.5, volume=1.0)  # reaches both inside: stop
    assert measure(call, [later]).first_hit == "stop"


def test_a_flat_call_has_a_return_and_nothing_else(btc: dict[datetime, Candle]) -> None:
    call = call_of(verdict(factories.decision("BTC", "close_position")), state(88270.6, "long", 87000.0, 90000.0))
    assert call is not None and (call.direction, call.stop, call.target) == (0, None, None)
    outcome = measure(call, horizon(btc, "19:25", 4))
    assert outcome.market_return == pytest.approx(169.4 / 88270.6)
    assert outcome.direction_return == 0.0
    assert (outcome.max_adverse, outcome.max_favourable, outcome.first_hit, outcome.hit) == (None, None, None, None)


@pytest.mark.parametrize(
    ("original", "status", "seen", "expected"),
    [
        # (proposed action, verdict, the asset as the decision saw it) -> (direction, stop, target, verdict)
        (factories.decision("BTC", "buy", sl_price=95.0, tp_price=110.0), "accepted", state(100.0), (1, 95.0, 110.0)),
        (factories.decision("BTC", "sell", sl_price=105.0, tp_price=90.0), "adjusted", state(100.0), (-1, 105.0, 90.0)),
        # a rejected proposal is judged as proposed
        (
            factories.decision("BTC", "buy", sl_price=99.0),
            "rejected",
            state(100.0, "short", 104.0, 95.0),
            (1, 99.0, None),
        ),
        (factories.decision("BTC", "hold"), "accepted", state(100.0), (0, None, None)),
        (factories.decision("BTC", "hold"), "accepted", state(100.0, "short", 104.0, 95.0), (-1, 104.0, 95.0)),
        (factories.decision("BTC", "close_position"), "accepted", state(100.0, "short", 104.0, 95.0), (0, None, None)),
        (
            factories.decision(
                "BTC",
                "adjust_orders",
                order_adjustment=OrderAdjustment(adjust_sl=True, new_sl_price=98.0, cancel_tp=True),
            ),
            "accepted",
            state(100.0, "long", 95.0, 110.0),
            (1, 98.0, None),
        ),
        # as the executor applies it: a stop is never cancelled, a new target wins over a cancel sent with it
        (
            factories.decision(
                "BTC",
                "adjust_orders",
                order_adjustment=OrderAdjustment(cancel_sl=True, cancel_tp=True, adjust_tp=True, new_tp_price=112.0),
            ),
            "accepted",
            state(100.0, "long", 95.0, 110.0),
            (1, 95.0, 112.0),
        ),
        (
            factories.decision(
                "BTC",
                "adjust_position",
                position_adjustment=PositionAdjustment(
                    adjustment_type="decrease", adjustment_amount_usd=100.0, new_tp_price=108.0
                ),
            ),
            "accepted",
            state(100.0, "long", 95.0, 110.0),
            (1, 95.0, 108.0),
        ),
    ],
)
def test_the_direction_a_decision_leaves(
    original: AssetDecision, status: str, seen: AssetState, expected: tuple[int, float | None, float | None]
) -> None:
    call = call_of(verdict(original, status=status, final=fallback_hold("BTC", "x")), seen)
    assert call is not None
    assert (call.direction, call.stop, call.target) == expected
    assert (call.action, call.verdict, call.confidence, call.entry_price) == (original.action, status, 60.0, 100.0)


def test_a_fallback_holds_what_is_open_without_a_confidence() -> None:
    call = call_of(verdict(None, status="rejected"), state(100.0, "long", 95.0, 110.0))
    assert call is not None
    assert (call.action, call.verdict, call.confidence, call.direction) == ("hold", "fallback", None, 1)
    assert call_of(verdict(None, status="rejected"), None) is None  # no price: nothing to measure from


def test_the_asset_state_of_a_context_and_of_its_stored_snapshot_agree() -> None:
    long_btc = factories.position("BTC", "long", current_price=100.0, stop_loss=95.0, take_profit=110.0)
    context = factories.trading_context(account=factories.account_context(positions=[long_btc]))
    expected = {
        "BTC": {
            "price": context.market_data.assets["BTC"].current_price,
            "position": "long",
            "stop": 95.0,
            "target": 110.0,
        },
        "ETH": {
            "price": context.market_data.assets["ETH"].current_price,
            "position": None,
            "stop": None,
            "target": None,
        },
        "SOL": {
            "price": context.market_data.assets["SOL"].current_price,
            "position": None,
            "stop": None,
            "target": None,
        },
    }
    assert asset_state_of(context) == expected
    assert asset_state_of_snapshot(context.model_dump(mode="json")) == expected
