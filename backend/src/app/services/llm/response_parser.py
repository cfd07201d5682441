"""Find and check the decision in what a real model returned.

Real answers come padded, fenced, wrapped in prose, with `<think>` blocks, with decoy JSON (MACD arrays) in
the reasoning, with trailing commas, as one asset object or a bare list instead of the whole decision, cut off
at the token limit, or empty. `parse_decision` finds the answer's JSON (see `json_extract`), applies only
conservative, noted repairs and coercions, and validates it against `TradingDecision`. A truncated answer is
never used, even when it could be closed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import ValidationError

from app.core.symbols import normalise_asset
from app.schemas.trading_decision import Action, RiskLevel, TradingDecision
from app.services.llm.json_extract import Found, Scan, scan, split_think

Failure = Literal["empty", "truncated", "no_json", "invalid_json"]


@dataclass(frozen=True)
class ParseOutcome:
    """What the parser made of one raw answer. `decision` is set only when the JSON fits the schema."""

    json_found: bool
    failure: Failure | None
    value: Any | None = None
    decision: TradingDecision | None = None
    schema_valid: bool = False
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


HOLD_RATIONALE = "model gave no decision; hold"
_ACTIONS = frozenset(get_args(Action))
_RISK_LEVELS = frozenset(get_args(RiskLevel))
_NOT_AVAILABLE = frozenset({"n/a", "na", "none", "null", "", "-"})
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_FENCE_BEFORE = re.compile(r"```[A-Za-z0-9_-]*\s*$")
_FENCE_AFTER = re.compile(r"^\s*```")
_PORTFOLIO_KEYS = ("portfolio_rationale", "total_allocation_usd", "portfolio_risk_level", "timestamp")
# (required, optional) numeric fields of an asset decision and of its nested adjustments
_ASSET_NUMBERS = (("allocation_usd", "confidence"), ("tp_price", "sl_price"))
_NESTED_NUMBERS = {
    "position_adjustment": (("adjustment_amount_usd",), ("adjustment_percentage", "new_tp_price", "new_sl_price")),
    "order_adjustment": ((), ("new_tp_price", "new_sl_price")),
}


def parse_decision(
    raw: str | None,
    symbols: list[str],
    *,
    finish_reason: str | None = None,
    reasoning: str | None = None,
) -> ParseOutcome:
    """Parse `raw` into a `TradingDecision` for `symbols`; never raises."""
    try:
        return _parse(raw, symbols, finish_reason, reasoning)
    except Exception as exc:  # a diagnostic outcome beats a crash in the decision loop
        return ParseOutcome(json_found=False, failure="invalid_json", notes=[f"parser error: {exc!r}"])


# ------------------------------------------------------------------------------------------------ finding


def _parse(raw: object, symbols: list[str], finish_reason: str | None, reasoning: str | None) -> ParseOutcome:
    notes: list[str] = []
    cut = (finish_reason or "").strip().lower() == "length"
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    if not text.strip():
        if cut:
            notes.append("finish_reason=length with empty content: the token budget ran out before any answer")
        if not (reasoning and reasoning.strip()):
            return ParseOutcome(json_found=False, failure="empty", notes=notes)
        notes.append("content empty: looked for the JSON in the reasoning text")
        text = reasoning
        found_scan, source = _find(text, notes)
        if not found_scan.anything:
            notes.append("the reasoning holds no JSON either")
            return ParseOutcome(json_found=False, failure="empty", notes=notes)
    else:
        found_scan, source = _find(text, notes)

    json_found = bool(found_scan.found)
    chosen = _choose(found_scan.top_level)
    failure = _failure(found_scan, chosen, cut, text, notes)
    if failure is not None:
        errors = [f"json: {b.error}" for b in found_scan.broken if b.kind == "invalid" and b.error][-1:]
        return ParseOutcome(
            json_found=json_found, failure=failure, errors=errors if failure == "invalid_json" else [], notes=notes
        )
    assert chosen is not None
    notes.extend(chosen.repairs)
    _note_surroundings(source, chosen, len(found_scan.top_level), notes)
    value = _wrap(chosen.value, notes)
    coerced = _coerce(value, symbols, notes)
    try:
        decision = TradingDecision.model_validate(coerced)
    except ValidationError as exc:
        return ParseOutcome(json_found=True, failure=None, value=value, errors=format_errors(exc, coerced), notes=notes)
    return ParseOutcome(json_found=True, failure=None, value=value, decision=decision, schema_valid=True, notes=notes)


def _find(text: str, notes: list[str]) -> tuple[Scan, str]:
    """Scan the text outside `<think>` blocks; fall back to the inside when the outside has no JSON."""
    parts = split_think(text)
    if not parts.had_think:
        return scan(text), text
    whole = scan(text)
    if any(f.start < tag < f.end for f in whole.top_level for tag in parts.tags):
        return whole, text  # the "tag" is inside a JSON string (e.g. a rationale quoting it), not a think block
    outside = scan(parts.outside)
    if outside.anything:
        notes.append("<think> block ignored")
        return outside, parts.outside
    inside = scan(parts.inside)
    if inside.anything:
        state = "an unclosed" if parts.unclosed else "a"
        notes.append(f"no JSON outside <think>: used the JSON inside {state} <think> block")
    return inside, parts.inside


def _is_decision_like(value: object) -> bool:
    return isinstance(value, dict) and "decisions" in value


def _is_asset_like(value: object) -> bool:
    return isinstance(value, dict) and "decisions" not in value and ("asset" in value or "action" in value)


def _is_asset_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_asset_like(item) for item in value)


def _choose(top: list[Found]) -> Found | None:
    """The last decision-looking object, else the last asset-looking value, else the largest value."""
    for test in (_is_decision_like, lambda v: _is_asset_like(v) or _is_asset_list(v)):
        matching = [f for f in top if test(f.value)]
        if matching:
            return matching[-1]
    return max(top, key=lambda f: (f.size, f.start), default=None)


def _failure(found: Scan, chosen: Found | None, cut: bool, text: str, notes: list[str]) -> Failure | None:
    if any(b.kind == "unclosed" for b in found.broken):
        notes.append("the JSON is cut off (brackets or a string never close): not used")
        if text.rstrip().endswith(("...", "…")):
            notes.append("the text ends with an ellipsis (cut by a logger or the model)")
        return "truncated"
    if cut:
        notes.append("finish_reason=length: the answer may be incomplete: not used")
        return "truncated"
    if chosen is None:
        return "invalid_json" if found.broken else "no_json"
    decision_like = _is_decision_like(chosen.value)
    for b in found.broken:
        if b.size > chosen.size and (not decision_like or b.start > chosen.start):
            notes.append("a larger JSON-looking block does not parse; the smaller valid value was not used")
            return "invalid_json"
    return None


def _note_surroundings(source: str, chosen: Found, count: int, notes: list[str]) -> None:
    before, after = source[: chosen.start], source[chosen.end :]
    fenced = _FENCE_BEFORE.search(before) is not None or _FENCE_AFTER.match(after) is not None
    if fenced:
        notes.append("markdown code fence removed")
        before, after = _FENCE_BEFORE.sub("", before), _FENCE_AFTER.sub("", after, count=1)
    if before.strip():
        notes.append("text before the JSON ignored")
    if after.strip():
        notes.append("text after the JSON ignored")
    if count > 1:
        notes.append(f"{count} JSON values in the text: used the one that looks like the decision")


# ----------------------------------------------------------------------------------------------- shaping


def _wrap(value: Any, notes: list[str]) -> Any:
    """Turn one asset decision or a bare list of them into a TradingDecision-shaped dict."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if _is_decision_like(inner):
            notes.append(f"decision nested under {key!r}: unwrapped")
            value = inner
    if _is_decision_like(value) and _is_asset_like(value["decisions"]):
        notes.append("'decisions' was one object: wrapped in a list")
        return {**value, "decisions": [value["decisions"]]}
    if _is_asset_like(value):
        notes.append("a single asset decision was returned: wrapped into a TradingDecision")
        top = {k: value[k] for k in _PORTFOLIO_KEYS if k in value}
        return {"decisions": [{k: v for k, v in value.items() if k not in _PORTFOLIO_KEYS}], **top}
    if _is_asset_list(value):
        notes.append("a bare list of asset decisions was returned: wrapped into a TradingDecision")
        return {"decisions": value}
    return value


def _number(value: object) -> float | str | None:
    """A float for a plain numeric string, "N/A" for a not-available marker, None otherwise."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower() in _NOT_AVAILABLE:
        return "N/A"
    return float(text) if _NUMBER.match(text) else None


def _coerce_numbers(item: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...], path: str) -> list[str]:
    changed: list[str] = []
    for name in (*required, *optional):
        if name not in item:
            continue
        parsed = _number(item[name])
        if isinstance(parsed, float):
            item[name] = parsed
            changed.append(f"{path}{name}: numeric string -> number")
        elif parsed == "N/A" and name in optional:
            changed.append(f"{path}{name}: {item[name]!r} in an optional field -> null")
            item[name] = None
    return changed


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _symbol(name: str) -> str:
    try:
        return normalise_asset(name)
    except ValueError:
        return name.strip().upper()


def _coerce(value: Any, symbols: list[str], notes: list[str]) -> Any:
    """Harmless, noted coercions on a copy; adds `hold` for the requested assets the model left out."""
    if not (isinstance(value, dict) and isinstance(value.get("decisions"), list)):
        return value
    out = copy.deepcopy(value)
    decisions: list[Any] = out["decisions"]
    changes: list[str] = []
    renamed: list[str] = []
    for index, item in enumerate(decisions):
        if not isinstance(item, dict):
            continue
        asset = item.get("asset")
        if isinstance(asset, str):
            try:
                name = normalise_asset(asset)
            except ValueError:
                name = asset
            if name != asset:
                item["asset"] = name
                renamed.append(f"{asset} -> {name}")
        for key, allowed in (("action", _ACTIONS), ("risk_level", _RISK_LEVELS)):
            if isinstance(item.get(key), str) and item[key] not in allowed and item[key].strip().lower() in allowed:
                changes.append(f"decisions[{index}].{key}: {item[key]!r} -> {item[key].strip().lower()!r}")
                item[key] = item[key].strip().lower()
        changes += _coerce_numbers(item, *_ASSET_NUMBERS, f"decisions[{index}].")
        for nested, (required, optional) in _NESTED_NUMBERS.items():
            if isinstance(item.get(nested), dict):
                changes += _coerce_numbers(item[nested], required, optional, f"decisions[{index}].{nested}.")
    if isinstance(out.get("portfolio_risk_level"), str):
        level = out["portfolio_risk_level"].strip().lower()
        if level != out["portfolio_risk_level"] and level in _RISK_LEVELS:
            changes.append(f"portfolio_risk_level: {out['portfolio_risk_level']!r} -> {level!r}")
            out["portfolio_risk_level"] = level
    changes += _coerce_numbers(out, ("total_allocation_usd",), (), "")
    if renamed:
        notes.append("asset names normalised: " + ", ".join(renamed))
    notes.extend(changes)
    _confidence_fractions(decisions, notes)
    _total_allocation(out, decisions, notes)
    _hold_missing(decisions, symbols, notes)
    return out


def _confidence_fractions(decisions: list[Any], notes: list[str]) -> None:
    items = [d for d in decisions if isinstance(d, dict)]
    values = [d.get("confidence") for d in items]
    if items and all(_is_number(v) and 0 <= v <= 1 for v in values) and any(v > 0 for v in values):  # type: ignore[operator]
        for item in items:
            item["confidence"] = round(float(item["confidence"]) * 100, 6)
        notes.append("confidences given as 0..1 fractions: multiplied by 100")


def _total_allocation(out: dict[str, Any], decisions: list[Any], notes: list[str]) -> None:
    if "total_allocation_usd" in out:
        return
    trades = [d for d in decisions if isinstance(d, dict) and d.get("action") in ("buy", "sell")]
    amounts = [d.get("allocation_usd") for d in trades]
    if all(_is_number(a) for a in amounts):
        out["total_allocation_usd"] = float(sum(amounts))  # type: ignore[arg-type]
        notes.append("total_allocation_usd missing: computed as the sum of buy/sell allocations")


def _hold_missing(decisions: list[Any], symbols: list[str], notes: list[str]) -> None:
    present = {_symbol(d["asset"]) for d in decisions if isinstance(d, dict) and isinstance(d.get("asset"), str)}
    for name in dict.fromkeys(_symbol(s) for s in symbols if s.strip()):
        if name in present:
            continue
        decisions.append(
            {
                "asset": name,
                "action": "hold",
                "allocation_usd": 0.0,
                "exit_plan": "unchanged",
                "rationale": HOLD_RATIONALE,
                "confidence": 0.0,
                "risk_level": "low",
            }
        )
        notes.append(f"model gave no decision for {name}: hold added")


# ------------------------------------------------------------------------------------------------ errors


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(root)"


def format_errors(exc: ValidationError, value: Any = None) -> list[str]:
    """Pydantic errors as `path: message (got ...)` lines, ready to send back to the model in a re-ask."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        line = f"{_path(loc)}: {error['msg']}"
        if error["type"] != "missing" and loc:
            got = json.dumps(error.get("input"), default=str, ensure_ascii=False)
            line += f" (got {got[:80] + '...' if len(got) > 80 else got})"
        if len(loc) >= 2 and loc[0] == "decisions" and isinstance(loc[1], int) and isinstance(value, dict):
            items = value.get("decisions")
            if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
                asset = items[loc[1]].get("asset")
                if isinstance(asset, str):
                    line += f" [asset {asset}]"
        lines.append(line)
    return lines
