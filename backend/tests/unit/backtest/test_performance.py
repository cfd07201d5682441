"""Backtest figures against answers computed by hand: returns, drawdown, trades, buy-and-hold with a fee and
funding, the split at the knowledge cutoff, and a summary that is valid JSON."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from app.backtest.performance import (
    Curve,
    btc_buy_and_hold,
    build_summary,
    curve_figures,
    equal_weight_buy_and_hold,
    per_asset,
    round_trips,
    sample_split,
    strategy_figures,
)
from app.backtest.results import (
    BacktestConfig,
    BacktestResult,
    DecisionRecord,
    EquityPoint,
    FundingEvent,
    TradeFill,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
BTC = [100.0, 110.0, 99.0, 121.0, 110.0]
ETH = [10.0, 10.0, 12.0, 12.0, 8.0]
EQUITY = [10_000.0, 11_000.0, 9_900.0, 10_890.0, 12_000.0]
GROSS = [100.0, 0.0, 100.0, 100.0, 0.0]


def fill(hour: int, asset: str, side: str, qty: float, price: float, fee: float, pnl: float = 0.0) -> TradeFill:
    return TradeFill(T0 + hour * H, asset, side, qty, price, fee, pnl, "entry" if pnl == 0 else "close", f"c{hour}")  # type: ignore[arg-type]


def decision(at: datetime, cost: float, action: str = "hold") -> DecisionRecord:
    return DecisionRecord(at, 1, "hold", "m", "BTC", action, 0.0, None, "why", None, cost, None, False)


def make_result(
    equity: list[float] = EQUITY,
    *,
    assets: tuple[str, ...] = ("BTC", "ETH"),
    shift: timedelta = timedelta(0),
    model: str = "some/model",
    cutoff: datetime | None = None,
    fills: list[TradeFill] | None = None,
    funding: list[FundingEvent] | None = None,
    rates: dict[str, list[tuple[datetime, float]]] | None = None,
    gross: list[float] | None = None,
    **config: object,
) -> BacktestResult:
    names = dict(zip(("BTC", "ETH"), assets, strict=True))
    points = [
        EquityPoint(
            T0 + i * H + shift,
            value,
            value,
            (gross or [0.0] * len(equity))[i],
            {names["BTC"]: BTC[i], names["ETH"]: ETH[i]},
        )
        for i, value in enumerate(equity)
    ]
    return BacktestResult(
        config=BacktestConfig(
            assets=assets,
            interval="1h",
            long_interval="4h",
            start=T0,
            end=T0 + 4 * H,
            model=model,
            date_shift=shift,
            **config,  # type: ignore[arg-type]
        ),
        equity=points,
        fills=[replace_at(f, shift) for f in fills or []],
        funding=[FundingEvent(e.at + shift, e.asset, e.amount) for e in funding or []],
        orders=[],
        decisions=[decision(T0 + i * H + shift, 0.01 * (i + 1)) for i in range(len(equity))],
        funding_rates={a: [(t + shift, r) for t, r in v] for a, v in (rates or {}).items()},
        data_fingerprint="data-fp",
        trade_fingerprint="trade-fp",
        code_version="abc123",
        model_cost_usd=0.15,
        model_calls=4,
        cached_answers=1,
        cycles=len(equity),
        errors=1,
        fallbacks=2,
        knowledge_cutoff=cutoff,
    )


def replace_at(f: TradeFill, shift: timedelta) -> TradeFill:
    return TradeFill(
        f.at + shift, f.asset, f.side, f.quantity, f.price, f.fee, f.realized_pnl, f.reason, f.client_order_id
    )


# a BTC round trip won (+10 gross, fees 0.05 + 0.055, funding -0.5 settled with the closing fill), an ETH one lost
# (-10 gross, fees 0.05 + 0.045), and an ETH trade still open at the end
FILLS = [
    fill(0, "BTC", "buy", 1.0, 100.0, 0.05),
    fill(1, "BTC", "sell", 1.0, 110.0, 0.055, pnl=10.0),
    fill(2, "ETH", "buy", 10.0, 10.0, 0.05),
    fill(3, "ETH", "sell", 10.0, 9.0, 0.045, pnl=-10.0),
    fill(3, "ETH", "buy", 5.0, 12.0, 0.03),
]
FUNDING = [FundingEvent(T0 + H, "BTC", -0.5), FundingEvent(T0 + 4 * H, "ETH", 0.2)]
BTC_PNL = 10.0 - 0.105 - 0.5
ETH_PNL = -10.0 - 0.095


def traded() -> BacktestResult:
    return make_result(fills=FILLS, funding=FUNDING, gross=GROSS)


def test_returns_drawdown_and_trades_match_the_hand_computation() -> None:
    figures = strategy_figures(traded())

    assert figures.total_return == pytest.approx(0.2)
    assert figures.max_drawdown == pytest.approx(0.1)  # 11,000 -> 9,900
    assert figures.max_drawdown_days == pytest.approx(3 / 24)  # peak at 01:00, back above it at 04:00
    assert figures.max_drawdown_recovered is True
    assert figures.trades == 2
    assert figures.open_trades == 1
    assert figures.win_rate == pytest.approx(0.5)
    assert figures.profit_factor == pytest.approx(BTC_PNL / -ETH_PNL)
    assert figures.exposure == pytest.approx(0.6)
    assert figures.fees == pytest.approx(0.05 + 0.055 + 0.05 + 0.045 + 0.03)
    assert figures.funding == pytest.approx(-0.3)
    notional = 100 + 110 + 100 + 90 + 60
    assert figures.traded_notional == pytest.approx(notional)
    assert figures.turnover == pytest.approx(notional / (sum(EQUITY) / 5))
    assert figures.avg_leverage == pytest.approx((100 / 10_000 + 100 / 9_900 + 100 / 10_890) / 5)
    assert figures.error_rate == pytest.approx(0.2)
    assert figures.fallback_rate == pytest.approx(0.4)
    assert figures.model_cost_usd == pytest.approx(0.15)
    returns = [0.0, 0.1, -0.1, 0.1, 12_000 / 10_890 - 1]  # the first from the initial balance
    mean = sum(returns) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4)
    assert figures.sharpe == pytest.approx(mean / std * math.sqrt(8760))
    downside = math.sqrt(0.1**2 / 5)
    assert figures.sortino == pytest.approx(mean / downside * math.sqrt(8760))


def test_cagr_compounds_over_calendar_time_and_calmar_divides_it_by_the_drawdown() -> None:
    day = 86_400_000
    start = int(T0.timestamp()) * 1000
    curve = Curve(
        label="hand",
        at_ms=np.array([start, start + 73 * day], dtype=np.int64),  # a fifth of a year
        equity=np.array([9_000.0, 11_000.0]),
        gross_exposure=np.zeros(2),
        fees_cum=np.zeros(2),
        funding_cum=np.zeros(2),
        notional_cum=np.zeros(2),
        base=10_000.0,
    )
    figures = curve_figures(curve, "1d")

    assert figures.days == pytest.approx(73)
    assert figures.total_return == pytest.approx(0.1)
    assert figures.cagr == pytest.approx(1.1**5 - 1)
    assert figures.calmar == pytest.approx((1.1**5 - 1) / 0.1)
    assert figures.max_drawdown_days == pytest.approx(73)  # 10,000 at the start, back above it at the end


def test_always_flat_run_returns_nothing_and_has_no_sharpe() -> None:
    figures = strategy_figures(make_result([10_000.0] * 5))

    assert figures.total_return == 0.0
    assert figures.sharpe is None
    assert figures.sortino is None
    assert figures.max_drawdown == 0.0
    assert figures.calmar is None
    assert figures.trades == 0
    assert figures.win_rate is None
    assert figures.profit_factor is None
    assert figures.exposure == 0.0


def test_btc_buy_and_hold_pays_one_taker_fee_and_funding_after_the_entry() -> None:
    rates = {
        "BTC": [
            (T0 - H, 0.01),  # before the entry: not paid
            (T0, 0.01),  # at the entry's close: the position is bought after it
            (T0 + 90 * timedelta(minutes=1), 0.0001),  # priced at 01:00 (110), shown from 02:00
            (T0 + 3 * H, -0.0002),  # received, priced and shown at 03:00 (121)
            (T0 + 5 * H, 0.01),  # after the run
        ]
    }
    curve = btc_buy_and_hold(make_result(rates=rates))

    size, fee = 100.0, 10_000 * 5 / 10_000  # 100 BTC at 100; binanceusdm taker 5 bps
    paid, received = 0.0001 * size * 110, 0.0002 * size * 121
    expected = [
        10_000 - fee,
        10_000 - fee + 1_000,
        10_000 - fee - 100 - paid,
        10_000 - fee + 2_100 - paid + received,
        10_000 - fee + 1_000 - paid + received,
    ]
    assert curve.label == "BTC buy-and-hold"
    assert list(curve.equity) == pytest.approx(expected)
    assert curve.funding_cum[-1] == pytest.approx(received - paid)
    assert curve.fees_cum[-1] == pytest.approx(fee)
    figures = curve_figures(curve, "1h")
    assert figures.total_return == pytest.approx(expected[-1] / 10_000 - 1)
    assert figures.exposure == 1.0


def test_equal_weight_buy_and_hold_splits_the_balance_at_the_first_prices() -> None:
    rates = {"BTC": [(T0 + 2 * H, 0.0001)], "ETH": [(T0 + 4 * H, 0.001)]}
    curve = equal_weight_buy_and_hold(make_result(rates=rates, venue="hyperliquid"))

    fee = 10_000 * 4.5 / 10_000
    btc, eth = 50.0, 500.0  # 5,000 each at 100 and 10
    last = 10_000 - fee + btc * (110 - 100) + eth * (8 - 10) - 0.0001 * btc * 99 - 0.001 * eth * 8
    assert curve.equity[-1] == pytest.approx(last)


def test_masked_asset_names_use_the_first_asset_and_say_so() -> None:
    curve = btc_buy_and_hold(make_result(assets=("ASSET1", "ASSET2"), mask_dates=True, mask_assets=True))

    assert "ASSET1" in curve.label and "masked" in curve.label
    assert curve.equity[1] == pytest.approx(10_000 - 5 + 1_000)


def test_round_trips_go_flat_to_flat_with_funding_while_open() -> None:
    trips = round_trips(FILLS, FUNDING)

    assert [(t.asset, t.side, t.closed_at is not None) for t in trips] == [
        ("BTC", "long", True),
        ("ETH", "long", True),
        ("ETH", "long", False),
    ]
    assert trips[0].pnl == pytest.approx(BTC_PNL)
    assert trips[1].pnl == pytest.approx(ETH_PNL)
    assert trips[2].funding == pytest.approx(0.2)


def test_a_flip_closes_the_trade_and_opens_a_short_sharing_the_fee() -> None:
    trips = round_trips([fill(0, "SOL", "buy", 2.0, 10.0, 0.4), fill(1, "SOL", "sell", 3.0, 11.0, 0.6, pnl=2.0)], [])

    assert [(t.side, t.closed_at is not None) for t in trips] == [("long", True), ("short", False)]
    assert trips[0].pnl == pytest.approx(2.0 - 0.4 - 0.4)
    assert trips[1].fees == pytest.approx(0.2)


def test_per_asset_breakdown() -> None:
    breakdown = per_asset(traded())

    assert list(breakdown) == ["BTC", "ETH"]
    assert breakdown["BTC"] == {
        "trades": 1,
        "open_trades": 0,
        "fills": 2,
        "win_rate": 1.0,
        "realized_pnl": 10.0,
        "fees": pytest.approx(0.105),
        "funding": -0.5,
        "net_pnl": pytest.approx(BTC_PNL),
        "traded_notional": 210.0,
    }
    assert breakdown["ETH"]["trades"] == 1 and breakdown["ETH"]["open_trades"] == 1
    assert breakdown["ETH"]["win_rate"] == 0.0
    assert breakdown["ETH"]["net_pnl"] == pytest.approx(-10.0 - 0.125 + 0.2)


def test_split_at_the_cutoff_in_real_time_when_dates_are_masked() -> None:
    shift = timedelta(days=1000)
    result = make_result(fills=FILLS, funding=FUNDING, shift=shift, cutoff=T0 + 2 * H, mask_dates=True)
    split = sample_split(result)

    assert split["status"] == "split"
    inside, after = split["parts"]
    assert inside["name"] == "in-sample" and "may remember" in inside["note"]
    assert inside["strategy"]["cycles"] == 2
    assert inside["strategy"]["total_return"] == pytest.approx(0.1)
    assert inside["strategy"]["trades"] == 1  # the BTC trade closed at 01:00
    assert inside["strategy"]["model_cost_usd"] == pytest.approx(0.01 + 0.02)
    assert after["name"] == "out-of-sample"
    assert after["strategy"]["period_from"] == (T0 + H).isoformat()  # from the equity of the cycle before it
    assert after["strategy"]["start_equity"] == 11_000.0
    assert after["strategy"]["total_return"] == pytest.approx(12_000 / 11_000 - 1)
    assert after["strategy"]["trades"] == 1


def test_a_cutoff_day_covers_that_whole_day() -> None:
    split = sample_split(make_result(cutoff=date(2025, 3, 1)))  # type: ignore[arg-type]

    assert split["status"] == "in-sample"
    assert [p["name"] for p in split["parts"]] == ["in-sample"]
    assert split["knowledge_cutoff"] == "2025-03-02T00:00:00+00:00"


def test_unknown_cutoff_is_one_part_said_unknown() -> None:
    assert sample_split(make_result())["status"] == "unknown"
    assert sample_split(make_result(cutoff=T0 - timedelta(days=1)))["status"] == "out-of-sample"
    assert sample_split(make_result(model="baseline"))["status"] == "not applicable"


def test_summary_is_strict_json_with_benchmarks_baseline_and_masked_run() -> None:
    result = traded()
    result.notes.append("a note")
    baseline = make_result([10_000.0, 10_000.0, 10_100.0, 10_050.0, 10_200.0], model="baseline")
    masked = make_result(EQUITY[:1], shift=timedelta(days=5), mask_dates=True)  # one cycle: no Sharpe, no CAGR
    summary = build_summary(result, baseline=baseline, masked=masked)

    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    assert summary["config"]["assets"] == "BTC,ETH"
    assert summary["config"]["start"] == T0.isoformat()
    assert summary["strategy"]["total_return"] == pytest.approx(0.2)
    assert summary["benchmarks"]["btc_buy_and_hold"]["figures"]["total_return"] == pytest.approx(0.0995)
    assert summary["differences"]["btc_buy_and_hold"]["total_return"] == pytest.approx(0.2 - 0.0995)
    assert summary["differences"]["baseline"]["total_return"] == pytest.approx(0.2 - 0.02)
    assert summary["baseline"]["figures"]["total_return"] == pytest.approx(0.02)
    assert summary["masked"]["label"] == "with dates masked"
    assert summary["masked"]["figures"]["sharpe"] is None
    assert summary["masked"]["differences"]["total_return"] == pytest.approx(0.0 - 0.2)
    assert summary["fingerprints"] == {
        "data": "data-fp",
        "trades": "trade-fp",
        "baseline_trades": "trade-fp",
        "masked_trades": "trade-fp",
    }
    assert summary["sample_split"]["parts"][0]["btc_buy_and_hold"]["cycles"] == 5
    assert summary["per_asset"]["BTC"]["net_pnl"] == pytest.approx(BTC_PNL)
    assert summary["stopped"] is None and summary["notes"] == ["a note"]


def test_summary_of_an_empty_run_is_still_json() -> None:
    summary = build_summary(make_result([]))

    json.dumps(summary, allow_nan=False)
    assert summary["strategy"]["total_return"] is None
    assert summary["period"]["from"] is None
