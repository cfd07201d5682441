"""The strict JSON schema sent as `response_format` (checked structurally: jsonschema is not installed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

import tests.factories as f
from app.schemas.trading_decision import OrderAdjustment, PositionAdjustment, TradingDecision
from app.services.llm.providers.json_schema import is_nullable, strict_json_schema

ALLOWED_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "description",
}


def nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema node (not the property-name maps)."""
    if not isinstance(node, dict):
        return
    yield node
    for name in ("items",):
        if name in node:
            yield from nodes(node[name])
    for option in node.get("anyOf", []):
        yield from nodes(option)
    for container in ("properties", "$defs"):
        for child in node.get(container, {}).values():
            yield from nodes(child)


def resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/$defs/")
    definition: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return definition


def conforms(value: Any, node: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """A tiny validator for the keywords the strict schema uses; returns the problems found."""
    if "$ref" in node:
        return conforms(value, resolve(root, node["$ref"]), root)
    if "anyOf" in node:
        options = [conforms(value, option, root) for option in node["anyOf"]]
        return [] if any(not problems for problems in options) else [f"{value!r} matches no anyOf option"]
    if "enum" in node and value not in node["enum"]:
        return [f"{value!r} not in {node['enum']}"]
    kind = node.get("type")
    checks = {
        "null": value is None,
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    if kind is not None and not checks[kind]:
        return [f"{value!r} is not a {kind}"]
    problems: list[str] = []
    if kind == "array":
        for item in value:
            problems += conforms(item, node["items"], root)
    if kind == "object":
        missing = set(node["required"]) - set(value)
        extra = set(value) - set(node["properties"])
        problems += [f"missing {name}" for name in sorted(missing)]
        problems += [f"unexpected {name}" for name in sorted(extra)]
        for name, child in node["properties"].items():
            if name in value:
                problems += conforms(value[name], child, root)
    return problems


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return strict_json_schema(TradingDecision)


def test_every_object_is_closed_and_requires_all_its_properties(schema: dict[str, Any]) -> None:
    objects = [n for n in nodes(schema) if n.get("type") == "object"]
    assert len(objects) == 4  # TradingDecision, AssetDecision, PositionAdjustment, OrderAdjustment
    for node in objects:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])


def test_only_supported_keywords_remain(schema: dict[str, Any]) -> None:
    for node in nodes(schema):
        assert set(node) <= ALLOWED_KEYWORDS, set(node) - ALLOWED_KEYWORDS
        if "$ref" in node:
            assert set(node) == {"$ref"}
    assert "date-time" not in json.dumps(schema)


def test_optional_fields_are_nullable_and_required(schema: dict[str, Any]) -> None:
    asset = schema["$defs"]["AssetDecision"]
    for name in ("tp_price", "sl_price", "position_adjustment", "order_adjustment"):
        assert name in asset["required"]
        assert is_nullable(asset["properties"][name])
    for name in ("asset", "action", "allocation_usd", "confidence"):
        assert not is_nullable(asset["properties"][name])
    order = schema["$defs"]["OrderAdjustment"]["properties"]
    assert order["adjust_tp"] == {"description": "Whether to adjust take-profit", "type": "boolean"}


def test_the_server_side_timestamp_is_left_out(schema: dict[str, Any]) -> None:
    assert "timestamp" not in schema["properties"]
    assert schema["required"] == ["decisions", "portfolio_rationale", "total_allocation_usd", "portfolio_risk_level"]


def test_bounds_move_into_the_description(schema: dict[str, Any]) -> None:
    confidence = schema["$defs"]["AssetDecision"]["properties"]["confidence"]
    assert confidence == {"description": "Confidence score (must be >= 0, <= 100)", "type": "number"}
    tp = schema["$defs"]["AssetDecision"]["properties"]["tp_price"]
    assert {"type": "number", "description": "must be > 0"} in tp["anyOf"]


def test_enums_survive(schema: dict[str, Any]) -> None:
    action = schema["$defs"]["AssetDecision"]["properties"]["action"]
    assert action["enum"] == ["buy", "sell", "hold", "adjust_position", "close_position", "adjust_orders"]


def test_a_real_decision_dump_conforms(schema: dict[str, Any]) -> None:
    decision = f.trading_decision(
        [
            f.buy("BTC", 1_000.0),
            f.decision(
                "ETH",
                "adjust_position",
                position_adjustment=PositionAdjustment(adjustment_type="decrease", adjustment_amount_usd=100.0),
            ),
            f.decision("SOL", "adjust_orders", order_adjustment=OrderAdjustment(adjust_sl=True, new_sl_price=140.0)),
        ]
    )
    dumped = decision.model_dump(mode="json", exclude={"timestamp"})
    assert conforms(dumped, schema, schema) == []
    # and it still round-trips through the model
    assert TradingDecision.model_validate(dumped).decisions[1].position_adjustment is not None


def test_the_checker_catches_what_strict_mode_refuses(schema: dict[str, Any]) -> None:
    dumped = f.trading_decision([f.decision("BTC")]).model_dump(mode="json")
    assert "unexpected timestamp" in conforms(dumped, schema, schema)
    del dumped["timestamp"]
    del dumped["decisions"][0]["tp_price"]
    dumped["decisions"][0]["action"] = "yolo"
    problems = conforms(dumped, schema, schema)
    assert "missing tp_price" in problems
    assert any("yolo" in p for p in problems)


class Inner(BaseModel):
    level: int = Field(..., ge=1, le=5)


class Outer(BaseModel):
    name: str = Field(..., min_length=1, description="A name")
    inner: Inner = Field(..., description="described reference")
    maybe: Inner | None = None
    flag: bool = False
    tags: list[str] = Field(default_factory=list)


def test_generic_rules_on_a_small_model() -> None:
    schema = strict_json_schema(Outer, omit={"flag"})
    props = schema["properties"]
    assert list(props) == ["name", "inner", "maybe"]  # `tags` has a factory default, `flag` omitted on request
    assert props["name"] == {"description": "A name (must be at least 1 characters)", "type": "string"}
    assert props["inner"] == {"$ref": "#/$defs/Inner"}
    assert props["maybe"]["anyOf"] == [{"$ref": "#/$defs/Inner"}, {"type": "null"}]
    level = schema["$defs"]["Inner"]["properties"]["level"]
    assert level == {"description": "must be >= 1, <= 5", "type": "integer"}


def test_free_form_mappings_are_refused() -> None:
    class Mapping(BaseModel):
        values: dict[str, float]

    with pytest.raises(ValueError):
        strict_json_schema(Mapping)
