"""The context's price history: a closed candle's point is reused from the previous cycle's history, and every
point is exactly the one built from its candle (a revised candle, or a zero's sign, gets a point of its own)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from app.core.timeframes import from_ms
from app.schemas.trading_decision import PricePoint
from app.services.llm.context_builder import ContextBuilder
from app.services.market_data.base import CandleSeries

HOUR_MS = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def builder(candles: int = 4) -> ContextBuilder:
    """A context builder with nothing behind it: the price history needs only its length."""
    nothing = cast(Any, None)
    return ContextBuilder(
        market=nothing,
        sessions=nothing,
        accounts=nothing,
        venues=nothing,
        strategies=nothing,
        clock=nothing,
        interval="1h",
        long_interval="4h",
        price_history_candles=candles,
        indicator_series_length=10,
    )


def series(
    first: int, count: int, *, symbol: str = "BTC", timeframe: str = "1h", **columns: list[float]
) -> CandleSeries:
    """`count` hourly candles from the `first`-th hour; a column given replaces the default values."""
    base = np.arange(first, first + count, dtype=np.float64) * 1.5 + 100.123456789
    values = {name: base + shift for name, shift in (("open", 0.0), ("high", 2.0), ("low", -2.0), ("close", 0.5))}
    values["volume"] = base * 10.0
    values.update({name: np.array(column, dtype=np.float64) for name, column in columns.items()})
    return CandleSeries(
        symbol=symbol,
        timeframe=timeframe,
        open_time_ms=np.arange(first, first + count, dtype=np.int64) * HOUR_MS + T0,
        **values,
    )


def built(candles: CandleSeries, last: int) -> list[PricePoint]:
    """The last `last` points as built candle by candle, each from scratch."""
    return [
        PricePoint(
            timestamp=from_ms(int(candles.open_time_ms[i])),
            open=float(candles.open[i]),
            high=float(candles.high[i]),
            low=float(candles.low[i]),
            close=float(candles.close[i]),
            volume=float(candles.volume[i]),
        )
        for i in range(max(0, len(candles) - last), len(candles))
    ]


def test_the_history_is_the_last_candles_and_the_next_cycle_reuses_the_points_it_shares() -> None:
    context = builder(candles=4)
    first = context._price_history(series(0, 10))
    assert first == built(series(0, 10), 4)
    assert [p.timestamp for p in first] == [from_ms(T0 + h * HOUR_MS) for h in range(6, 10)]

    second = context._price_history(series(1, 10))  # one candle later
    assert second == built(series(1, 10), 4)
    assert all(a is b for a, b in zip(first[1:], second[:3], strict=True))  # the same candles: the same points
    assert second[3] not in first
    assert context._price_history(series(0, 3)) == built(series(0, 3), 4)  # fewer candles than the history


def test_a_revised_candle_gets_a_point_of_its_own() -> None:
    context = builder(candles=3)
    first = context._price_history(series(0, 3))
    revised = series(0, 3, close=[1.0, 2.0, 3.25])
    again = context._price_history(revised)
    assert again == built(revised, 3)
    assert [p.close for p in again] == [1.0, 2.0, 3.25]
    assert not any(a is b for a, b in zip(first, again, strict=True))


def test_a_negative_zero_is_not_taken_for_a_zero() -> None:
    context = builder(candles=2)
    context._price_history(series(0, 2, volume=[0.0, 0.0]))
    again = context._price_history(series(0, 2, volume=[-0.0, 0.0]))
    assert repr(again[0].volume) == "-0.0" and repr(again[1].volume) == "0.0"


def test_assets_and_timeframes_do_not_share_points() -> None:
    context = builder(candles=2)
    btc = context._price_history(series(0, 2))
    eth = context._price_history(series(0, 2, symbol="ETH"))
    hours = context._price_history(series(0, 2, timeframe="4h"))
    assert btc == eth == hours
    assert len({id(p) for p in (*btc, *eth, *hours)}) == 6
    assert context._price_history(series(0, 2))[0] is btc[0]
