"""The decision schemas: timestamps always aware UTC, and the constraints that keep nonsense out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, get_args, get_origin

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from app.schemas.api import ValidationContext
from app.schemas.trading_decision import (
    AssetDecision,
    OrderAdjustment,
    PositionAdjustment,
    PricePoint,
    StrategyRiskParameters,
    TradeHistory,
    TradingDecision,
    _UTCModel,
    ensure_utc,
)
from tests import factories as f

PARIS_WINTER = timezone(timedelta(hours=1))


def asset_decision(**overrides: Any) -> AssetDecision:
    values: dict[str, Any] = {
        "asset": "BTC",
        "action": "buy",
        "allocation_usd": 100.0,
        "tp_price": 104_000.0,
        "sl_price": 98_000.0,
        "exit_plan": "stop and target",
        "rationale": "trend",
        "confidence": 60.0,
        "risk_level": "medium",
    }
    values.update(overrides)
    return AssetDecision.model_validate(values)


def risk(**overrides: Any) -> StrategyRiskParameters:
    values: dict[str, Any] = {"max_risk_per_trade": 1.0, "max_daily_loss": 3.0, "stop_loss_percentage": 2.0}
    values.update(overrides)
    return StrategyRiskParameters.model_validate(values)


# ---- time ----------------------------------------------------------------------------------------------


def test_a_naive_datetime_is_read_as_utc() -> None:
    point = PricePoint(timestamp=datetime(2026, 3, 2, 12, 5), open=1, high=1, low=1, close=1, volume=1)
    assert point.timestamp == datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
    assert point.timestamp.utcoffset() == timedelta(0)


def test_an_aware_datetime_is_converted_to_utc() -> None:
    point = PricePoint(
        timestamp=datetime(2026, 3, 2, 13, 5, tzinfo=PARIS_WINTER), open=1, high=1, low=1, close=1, volume=1
    )
    assert point.timestamp == datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
    assert point.timestamp.tzinfo == UTC  # converted, not just equal
    assert point.timestamp.hour == 12


def test_an_iso_string_with_an_offset_is_converted_to_utc() -> None:
    decision = TradingDecision.model_validate(
        {
            "decisions": [],
            "portfolio_rationale": "",
            "total_allocation_usd": 0,
            "portfolio_risk_level": "low",
            "timestamp": "2026-03-02T07:05:00-05:00",
        }
    )
    assert decision.timestamp == datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
    assert decision.timestamp.tzinfo == UTC


def test_the_default_timestamp_is_aware_utc() -> None:
    decision = TradingDecision(decisions=[], portfolio_rationale="", total_allocation_usd=0, portfolio_risk_level="low")
    assert decision.timestamp.tzinfo == UTC
    assert abs(datetime.now(UTC) - decision.timestamp) < timedelta(minutes=1)


def test_optional_datetimes_are_normalised_and_none_stays_none() -> None:
    trade = TradeHistory(
        symbol="BTC",
        side="long",
        size=0.01,
        entry_price=100_000,
        exit_price=101_000,
        realized_pnl=10,
        fees=1,
        exit_reason="take_profit",
        opened_at=datetime(2026, 3, 2, 10, 0),
        closed_at=datetime(2026, 3, 2, 13, 0, tzinfo=PARIS_WINTER),
    )
    assert trade.opened_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert trade.closed_at.tzinfo == UTC and trade.closed_at.hour == 12
    position = f.position().model_copy(update={"opened_at": None})
    assert type(position).model_validate(position.model_dump()).opened_at is None


def test_a_context_round_trips_through_json() -> None:
    context = f.trading_context()
    again = type(context).model_validate_json(context.model_dump_json())
    assert again == context
    assert again.timestamp.tzinfo == UTC


def _plain_datetimes(annotation: object, metadata: list[object]) -> Iterator[object]:
    """The plain `datetime`s in a field's type: those without the `ensure_utc` validator."""
    if annotation is datetime:
        if not any(isinstance(m, AfterValidator) and m.func is ensure_utc for m in metadata):
            yield annotation
    elif get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        yield from _plain_datetimes(inner, extra)
    else:
        for arg in get_args(annotation):
            yield from _plain_datetimes(arg, [])


def _models(base: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for model in base.__subclasses__():
        yield model
        yield from _models(model)


def test_no_model_has_a_datetime_field_left_as_read() -> None:
    """Only `UTCTimestamp` fields are normalised: a new field typed plain `datetime` would keep a naive time."""
    models = list(_models(_UTCModel))
    assert PricePoint in models and ValidationContext in models
    plain = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if list(_plain_datetimes(field.annotation, list(field.metadata)))
    ]
    assert plain == []


def test_every_time_of_a_context_given_naive_is_read_as_utc() -> None:
    """Every datetime a context holds, down to its candles, positions and trades, given without a zone."""
    trade = TradeHistory(
        symbol="BTC",
        side="long",
        size=0.01,
        entry_price=100_000,
        exit_price=101_000,
        realized_pnl=10,
        fees=1,
        exit_reason="take_profit",
        opened_at=datetime(2026, 3, 2, 10, 0),
        closed_at=datetime(2026, 3, 2, 11, 0),
    )
    context = f.trading_context(account=f.account_context(positions=[f.position()]), recent_trades={"BTC": [trade]})
    naive = context.model_dump(mode="json")

    def strip_zones(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip_zones(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip_zones(v) for v in value]
        if isinstance(value, str) and value.endswith("Z") and value[:4].isdigit():
            return value[:-1]
        return value

    naive = strip_zones(naive)
    assert naive["timestamp"] == context.timestamp.replace(tzinfo=None).isoformat()
    again = ValidationContext.model_validate(naive)
    times = [
        again.timestamp,
        again.market_data.timestamp,
        *(p.timestamp for data in again.market_data.assets.values() for p in data.price_history),
        *(p.opened_at for p in again.account_state.open_positions),
        again.recent_trades["BTC"][0].opened_at,
        again.recent_trades["BTC"][0].closed_at,
    ]
    assert len(times) > 5 and all(t is not None and t.tzinfo == UTC for t in times)
    assert again.model_dump() == context.model_dump()


# ---- constraints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.0, 55.5, 100.0])
def test_confidence_within_0_and_100_is_accepted(confidence: float) -> None:
    assert asset_decision(confidence=confidence).confidence == confidence


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidence", -0.1),
        ("confidence", 100.1),
        ("allocation_usd", -0.01),
        ("tp_price", 0.0),
        ("tp_price", -5.0),
        ("sl_price", 0.0),
        ("sl_price", -1.0),
        ("action", "short"),
        ("risk_level", "extreme"),
    ],
)
def test_bad_asset_decisions_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        asset_decision(**{field: value})


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "Infinity", "1e400"])
@pytest.mark.parametrize("field", ["allocation_usd", "tp_price", "confidence"])
def test_a_number_that_is_not_finite_is_refused(field: str, value: object) -> None:
    """`Infinity`, `NaN` and `1e400` (which JSON parsers read as infinite) are no allocation, price or
    confidence: a clear error (it used to pass `allocation_usd >= 0` and be stored as null)."""
    with pytest.raises(ValidationError, match=rf"{field}\n  Input should be a finite number"):
        asset_decision(**{field: value})


def test_a_decision_from_json_with_an_infinite_total_is_refused() -> None:
    good = f.trading_decision([asset_decision()])
    text = good.model_dump_json().replace('"total_allocation_usd":100.0', '"total_allocation_usd":1e999')
    assert "1e999" in text
    with pytest.raises(ValidationError, match="total_allocation_usd\n  Input should be a finite number"):
        TradingDecision.model_validate_json(text)
    with pytest.raises(ValidationError, match="adjustment_amount_usd\n  Input should be a finite number"):
        PositionAdjustment(adjustment_amount_usd=float("inf"))


def test_zero_allocation_and_no_stop_or_target_pass_the_schema() -> None:
    # the schema allows them; the validator decides whether they make sense for the action
    item = asset_decision(action="hold", allocation_usd=0.0, tp_price=None, sl_price=None)
    assert (item.allocation_usd, item.tp_price, item.sl_price) == (0.0, None, None)


@pytest.mark.parametrize("value", [1.0, 2.5, 10.0])
def test_max_leverage_up_to_10_is_accepted(value: float) -> None:
    assert risk(max_leverage=value).max_leverage == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_leverage", 10.01),
        ("max_leverage", 0.5),
        ("max_risk_per_trade", 101.0),
        ("max_risk_per_trade", -1.0),
        ("stop_loss_percentage", 51.0),
        ("take_profit_ratio", 0.9),
        ("cooldown_period", -1),
    ],
)
def test_bad_risk_parameters_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        risk(**{field: value})


@pytest.mark.parametrize(
    "values",
    [
        {"adjustment_type": "increase", "adjustment_amount_usd": 0.0},
        {"adjustment_type": "decrease", "adjustment_amount_usd": 10.0, "adjustment_percentage": 100.5},
        {"adjustment_type": "decrease", "adjustment_amount_usd": 10.0, "adjustment_percentage": -1},
        {"adjustment_type": "increase", "adjustment_amount_usd": 10.0, "new_sl_price": 0.0},
        {"adjustment_type": "double", "adjustment_amount_usd": 10.0},
    ],
)
def test_bad_position_adjustments_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PositionAdjustment.model_validate(values)


@pytest.mark.parametrize("field", ["new_sl_price", "new_tp_price"])
def test_order_adjustment_prices_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        OrderAdjustment.model_validate({field: 0.0})


def test_a_negative_total_allocation_is_refused() -> None:
    with pytest.raises(ValidationError, match="total_allocation_usd"):
        TradingDecision(decisions=[], portfolio_rationale="", total_allocation_usd=-1, portfolio_risk_level="low")
