"""A strict JSON schema from a pydantic model, for `response_format: {"type": "json_schema", "strict": true}`.

Strict structured output (OpenAI's rules, which OpenRouter passes on) accepts a subset of JSON Schema:
every object lists all its properties in `required` and sets `additionalProperties: false`; a field the
model may leave out is made nullable instead; keywords such as `default`, `title`, `format`, numeric and
length bounds are not accepted everywhere. So this function:

* makes every property required and every object closed;
* keeps optional fields (default `None`) as `anyOf [..., {"type": "null"}]`;
* drops fields filled by a `default_factory` (no JSON default), e.g. `TradingDecision.timestamp`: the
  server sets them, the model must not;
* removes unsupported keywords, writing bounds into the `description` so the model still sees them
  (pydantic enforces them when the answer is parsed);
* keeps `$defs`/`$ref`, `enum`, `const`, `items`, `anyOf`, `description`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel

_KEEP = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "$ref", "description"}
)
_BOUNDS = {
    "minimum": ">= {}",
    "maximum": "<= {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "multipleOf": "a multiple of {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "pattern": "matching /{}/",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "format": "{} format",
}


def strict_json_schema(model_cls: type[BaseModel], *, omit: Collection[str] = ()) -> dict[str, Any]:
    """The strict schema of `model_cls` (see the module doc); `omit` drops more top-level properties."""
    schema = model_cls.model_json_schema(mode="validation")
    defs: dict[str, Any] = schema.pop("$defs", {})
    strict = _strict(schema, omit=frozenset(omit))
    if defs:
        strict["$defs"] = {name: _strict(definition) for name, definition in defs.items()}
    return strict


def is_nullable(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(isinstance(option, dict) and is_nullable(option) for option in node.get("anyOf", []))


def _strict(node: dict[str, Any], *, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    if "allOf" in node and len(node["allOf"]) == 1:  # pydantic's older wrapping of a described `$ref`
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
    if "allOf" in node or "oneOf" in node or "not" in node:
        raise ValueError(f"keyword not supported by strict structured output in {sorted(node)}")
    if "$ref" in node:  # siblings of `$ref` are not allowed in strict mode
        return {"$ref": node["$ref"]}

    out: dict[str, Any] = {key: value for key, value in node.items() if key in _KEEP}
    bounds = [template.format(node[key]) for key, template in _BOUNDS.items() if key in node]
    if bounds:
        text = "must be " + ", ".join(bounds)
        out["description"] = f"{out['description']} ({text})" if out.get("description") else text

    if "anyOf" in node:
        out["anyOf"] = [_strict(option) for option in node["anyOf"]]
    if "items" in node:
        if not isinstance(node["items"], dict):
            raise ValueError("tuple-style `items` is not supported by strict structured output")
        out["items"] = _strict(node["items"])

    if node.get("type") == "object" or "properties" in node:
        if isinstance(node.get("additionalProperties"), dict):
            raise ValueError("free-form mappings (additionalProperties with a schema) are not strict-compatible")
        required = set(node.get("required", []))
        properties: dict[str, Any] = {}
        for name, prop in node.get("properties", {}).items():
            if name in omit:
                continue
            if name not in required and "default" not in prop:
                continue  # filled by a default_factory on our side (e.g. a timestamp): not the model's to set
            converted = _strict(prop)
            if name not in required and prop.get("default", 0) is None and not is_nullable(converted):
                converted = {"anyOf": [converted, {"type": "null"}]}
            properties[name] = converted
        out["type"] = "object"
        out["properties"] = properties
        out["required"] = list(properties)
        out["additionalProperties"] = False
    return out
