"""`parse_decision` on synthetic answers: one table row per malformation real models produce."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.schemas.trading_decision import AssetDecision, TradingDecision
from app.services.llm.response_parser import HOLD_RATIONALE, ParseOutcome, parse_decision

SYMBOLS = ["BTC", "ETH", "SOL"]

BTC = (
    '{"asset": "BTC", "action": "buy", "allocation_usd": 500.0, "tp_price": 120000.0, "sl_price": 95000.0,'
    ' "exit_plan": "TP 120k, SL 95k", "rationale": "breakout above 110k", "confidence": 72, "risk_level": "medium"}'
)
ETH = (
    '{"asset": "ETH", "action": "sell", "allocation_usd": 300.0, "tp_price": 3500.0, "sl_price": 4200.0,'
    ' "exit_plan": "cover at 3.5k", "rationale": "lower highs", "confidence": 64, "risk_level": "high"}'
)
SOL = (
    '{"asset": "SOL", "action": "hold", "allocation_usd": 0, "tp_price": null, "sl_price": null,'
    ' "exit_plan": "unchanged", "rationale": "range", "confidence": 50, "risk_level": "low"}'
)
TAIL = (
    '"portfolio_rationale": "trend long BTC, short ETH", "total_allocation_usd": 800.0,'
    ' "portfolio_risk_level": "medium"'
)
VALID = f'{{"decisions": [{BTC}, {ETH}, {SOL}], {TAIL}}}'
VALID_PRETTY = json.dumps(json.loads(VALID), indent=2)
DECOY = (
    '{"decisions": [{"asset": "BTC", "action": "sell", "allocation_usd": 1.0, "exit_plan": "x", "rationale": "draft",'
    ' "confidence": 10, "risk_level": "low"}], "portfolio_rationale": "draft", "total_allocation_usd": 1.0,'
    ' "portfolio_risk_level": "low"}'
)


def btc_action(action: str) -> Callable[[ParseOutcome], bool]:
    def check(outcome: ParseOutcome) -> bool:
        return outcome.decision is not None and _by_asset(outcome.decision)["BTC"].action == action

    return check


def _by_asset(decision: TradingDecision) -> dict[str, AssetDecision]:
    return {d.asset: d for d in decision.decisions}


@dataclass(frozen=True)
class Case:
    raw: str | None
    json_found: bool = True
    failure: str | None = None
    schema_valid: bool = True
    notes: tuple[str, ...] = ()  # substrings that must appear in some note
    errors: tuple[str, ...] = ()  # substrings that must appear in some error
    check: Callable[[ParseOutcome], bool] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "plain": Case(VALID, check=btc_action("buy")),
    "pretty printed": Case(VALID_PRETTY, check=btc_action("buy")),
    "leading whitespace padding": Case("\n\n   \t" + VALID + "\n\n"),
    "json fence": Case("```json\n" + VALID_PRETTY + "\n```", notes=("markdown code fence",)),
    "bare fence": Case("```\n" + VALID + "\n```", notes=("markdown code fence",)),
    "prose before and after": Case(
        "Here is my decision:\n" + VALID + "\nLet me know if you need more.",
        notes=("text before the JSON", "text after the JSON"),
    ),
    "fence inside prose": Case("Analysis done.\n\n```json\n" + VALID + "\n```\n\nGood luck!"),
    "think block with decoy decision": Case(
        "<think>\nMaybe sell BTC: " + DECOY + "\nno, buy.\n</think>\n\n" + VALID,
        notes=("<think> block ignored",),
        check=btc_action("buy"),
    ),
    "think block decoy array": Case("<think>MACD [1.2, 3.4]</think>" + VALID, check=btc_action("buy")),
    "unclosed think at start holding the only JSON": Case(
        "<think>\nI will buy BTC.\n" + VALID, notes=("inside an unclosed <think>",), check=btc_action("buy")
    ),
    "closing think tag without opening tag": Case(
        "reasoning... " + DECOY + "\n</think>\n" + VALID, check=btc_action("buy")
    ),
    "think tag quoted inside a rationale": Case(
        VALID.replace("breakout above 110k", "no <think> tags please"), check=btc_action("buy")
    ),
    "MACD arrays before the object": Case(
        "MACD: [1.2, 3.4, -0.5], signal [0.9, 1.1]. RSI [55]\n" + VALID,
        notes=("JSON values in the text",),
        check=btc_action("buy"),
    ),
    "draft then final decision: last wins": Case("Draft:\n" + DECOY + "\nFinal:\n" + VALID, check=btc_action("buy")),
    "prose brackets that are not JSON": Case("Assets [BTC, ETH, SOL] and {COIN} placeholders.\n" + VALID),
    "trailing commas": Case(
        VALID.replace('"risk_level": "low"}', '"risk_level": "low",}').replace("}]", "},]"),
        notes=("trailing commas removed",),
    ),
    "typographic quotes only": Case(
        "".join(part + ("“" if i % 2 == 0 else "”") for i, part in enumerate(VALID.split('"')[:-1]))
        + VALID.split('"')[-1],
        notes=("typographic quotes replaced",),
        check=btc_action("buy"),
    ),
    "single asset decision": Case(
        BTC, schema_valid=False, notes=("single asset decision",), errors=("portfolio_rationale: Field required",)
    ),
    "single asset decision with portfolio keys": Case(
        BTC[:-1] + ', "portfolio_rationale": "only BTC", "portfolio_risk_level": "medium"}',
        notes=("single asset decision", "hold added", "total_allocation_usd missing"),
        check=lambda o: o.decision is not None and o.decision.total_allocation_usd == 500.0,
    ),
    "bare list of asset decisions": Case(
        f"[{BTC}, {ETH}]",
        schema_valid=False,
        notes=("bare list",),
        errors=("portfolio_rationale: Field required", "portfolio_risk_level: Field required"),
    ),
    "decision nested under one key": Case('{"trading_decision": ' + VALID + "}", notes=("unwrapped",)),
    "decisions given as one object": Case(f'{{"decisions": {BTC}, {TAIL}}}', notes=("wrapped in a list",)),
    "empty string": Case("", json_found=False, failure="empty", schema_valid=False),
    "None": Case(None, json_found=False, failure="empty", schema_valid=False),
    "whitespace only": Case(" \n\t\n ", json_found=False, failure="empty", schema_valid=False),
    "finish_reason length with complete JSON": Case(
        VALID, failure="truncated", schema_valid=False, kwargs={"finish_reason": "length"}
    ),
    "finish_reason length and empty content": Case(
        "", json_found=False, failure="empty", schema_valid=False, kwargs={"finish_reason": "length"}
    ),
    "cut mid-number": Case(
        '{"decisions": [{"asset": "BTC", "action": "buy", "allocation_usd": 500, "sl_price": 901',
        json_found=False,
        failure="truncated",
        schema_valid=False,
    ),
    "cut mid-string": Case(VALID[:-60], failure="truncated", schema_valid=False),
    "cut after a complete decoy array": Case(
        "MACD [1.2, 3.4]\n" + VALID[:-40], json_found=True, failure="truncated", schema_valid=False
    ),
    "ellipsis appended by a logger": Case(
        VALID[: len(BTC) + 40] + "...", failure="truncated", schema_valid=False, notes=("ellipsis",)
    ),
    "cut right after the opening brace": Case(
        "Decision:\n```json\n{\n  ", json_found=False, failure="truncated", schema_valid=False
    ),
    "reasoning holds the JSON, content empty": Case(
        None, notes=("content empty",), check=btc_action("buy"), kwargs={"reasoning": "thinking...\n" + VALID}
    ),
    "reasoning without JSON, content empty": Case(
        "", json_found=False, failure="empty", schema_valid=False, kwargs={"reasoning": "I could not decide."}
    ),
    "no JSON at all": Case(
        "I recommend holding everything today.", json_found=False, failure="no_json", schema_valid=False
    ),
    "broken JSON": Case(
        VALID.replace('"portfolio_rationale"', '"portfolio_rationale" "x"'),
        json_found=True,  # the inner asset objects are complete values
        failure="invalid_json",
        schema_valid=False,
        errors=("json: ",),
    ),
    "broken object with valid inner objects is not half-used": Case(
        f'{{"decisions": [{BTC} {ETH}], {TAIL}}}', json_found=True, failure="invalid_json", schema_valid=False
    ),
    "N/A in optional numbers": Case(
        VALID.replace('"tp_price": 120000.0', '"tp_price": "N/A"').replace('"sl_price": 95000.0', '"sl_price": ""'),
        notes=("tp_price: 'N/A' in an optional field -> null", "sl_price: '' in an optional field -> null"),
        check=lambda o: o.decision is not None and _by_asset(o.decision)["BTC"].tp_price is None,
    ),
    "N/A in a required number": Case(
        VALID.replace('"allocation_usd": 500.0', '"allocation_usd": "N/A"'),
        schema_valid=False,
        errors=("decisions[0].allocation_usd: Input should be a valid number",),
    ),
    "numeric strings": Case(
        VALID.replace('"allocation_usd": 500.0', '"allocation_usd": "500.0"').replace("120000.0", '"120000"'),
        notes=("allocation_usd: numeric string -> number",),
        check=lambda o: o.decision is not None and _by_asset(o.decision)["BTC"].tp_price == 120000.0,
    ),
    "confidences as fractions": Case(
        VALID.replace('"confidence": 72', '"confidence": 0.72')
        .replace('"confidence": 64', '"confidence": 0.64')
        .replace('"confidence": 50', '"confidence": 0.5'),
        notes=("multiplied by 100",),
        check=lambda o: o.decision is not None and _by_asset(o.decision)["BTC"].confidence == pytest.approx(72),
    ),
    "mixed confidences are left alone": Case(
        VALID.replace('"confidence": 72', '"confidence": 0.72'),
        check=lambda o: o.decision is not None and _by_asset(o.decision)["BTC"].confidence == 0.72,
    ),
    "missing assets become hold": Case(
        f'{{"decisions": [{BTC}], {TAIL}}}',
        notes=("no decision for ETH: hold added", "no decision for SOL: hold added"),
        check=lambda o: (
            o.decision is not None
            and _by_asset(o.decision)["SOL"].model_dump(exclude={"position_adjustment", "order_adjustment"})
            == {
                "asset": "SOL",
                "action": "hold",
                "allocation_usd": 0.0,
                "tp_price": None,
                "sl_price": None,
                "exit_plan": "unchanged",
                "rationale": HOLD_RATIONALE,
                "confidence": 0.0,
                "risk_level": "low",
            }
        ),
    ),
    "assets outside the symbols are kept": Case(
        f'{{"decisions": [{BTC}, {ETH}, {SOL}, {BTC.replace("BTC", "DOGE")}], {TAIL}}}',
        check=lambda o: o.decision is not None and "DOGE" in _by_asset(o.decision),
    ),
    "exchange symbols normalised": Case(
        VALID.replace('"BTC"', '"BTCUSDT"').replace('"ETH"', '"ETH/USDT:USDT"'),
        notes=("BTCUSDT -> BTC", "ETH/USDT:USDT -> ETH"),
        check=lambda o: o.decision is not None and set(_by_asset(o.decision)) == {"BTC", "ETH", "SOL"},
    ),
    "enum case": Case(VALID.replace('"buy"', '"BUY"'), notes=("'BUY' -> 'buy'",), check=btc_action("buy")),
    "total allocation missing": Case(
        VALID.replace('"total_allocation_usd": 800.0, ', ""),
        notes=("total_allocation_usd missing",),
        check=lambda o: o.decision is not None and o.decision.total_allocation_usd == 800.0,
    ),
    "portfolio_rationale missing": Case(
        VALID.replace('"portfolio_rationale": "trend long BTC, short ETH", ', ""),
        schema_valid=False,
        errors=("portfolio_rationale: Field required",),
    ),
    "portfolio_risk_level missing": Case(
        VALID.replace(', "portfolio_risk_level": "medium"', ""),
        schema_valid=False,
        errors=("portfolio_risk_level: Field required",),
    ),
    "schema errors are readable": Case(
        VALID.replace('"confidence": 72', '"confidence": 150').replace('"action": "sell"', '"action": "short"'),
        schema_valid=False,
        errors=(
            "decisions[0].confidence: Input should be less than or equal to 100 (got 150) [asset BTC]",
            "decisions[1].action: Input should be 'buy', 'sell'",
        ),
    ),
    "another schema (nof1 per-coin dict)": Case(
        '{"ETH": {"signal": "hold", "quantity": 5.7, "confidence": 0.65}}',
        schema_valid=False,
        errors=("decisions: Field required",),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_parse_cases(case: Case) -> None:
    outcome = parse_decision(case.raw, SYMBOLS, **case.kwargs)
    assert outcome.json_found is case.json_found, outcome
    assert outcome.failure == case.failure, outcome
    assert outcome.schema_valid is case.schema_valid, outcome
    assert (outcome.decision is not None) is case.schema_valid
    if case.failure is not None:
        assert outcome.decision is None and outcome.value is None
    for wanted in case.notes:
        assert any(wanted in note for note in outcome.notes), (wanted, outcome.notes)
    for wanted in case.errors:
        assert any(wanted in error for error in outcome.errors), (wanted, outcome.errors)
    if case.check is not None:
        assert case.check(outcome), outcome


def test_value_is_the_json_after_wrapping() -> None:
    outcome = parse_decision(BTC, SYMBOLS)
    assert outcome.value == {"decisions": [json.loads(BTC)]}
    assert parse_decision("x " + VALID, SYMBOLS).value == json.loads(VALID)


def test_clean_answer_has_no_notes() -> None:
    outcome = parse_decision(VALID, SYMBOLS)
    assert outcome.schema_valid and outcome.notes == [] and outcome.errors == []


def test_fifty_kilobyte_answer_is_fast() -> None:
    decision = json.loads(VALID)
    decision["decisions"] = [dict(decision["decisions"][0], asset=f"A{i}", rationale="r" * 300) for i in range(120)]
    raw = "MACD [1.2, 3.4] " * 200 + "```json\n" + json.dumps(decision, indent=2) + "\n```"
    assert len(raw) > 50_000
    best = min(_timed(raw) for _ in range(5))
    assert best < 0.05


def _timed(raw: str) -> float:
    start = time.perf_counter()
    assert parse_decision(raw, SYMBOLS).json_found
    return time.perf_counter() - start


@pytest.mark.parametrize(
    "raw",
    ["[" * 5000, "{" * 5000, '"[' * 5000, '["\\"[' * 3000, "[" * 3000 + "]" * 3000, "<think>" * 100, "\x00\ud7ff{"],
)
def test_pathological_inputs_do_not_raise(raw: str) -> None:
    assert isinstance(parse_decision(raw, SYMBOLS), ParseOutcome)


# ------------------------------------------------------------------------------------------ properties

ASSETS = ["BTC", "ETH", "SOL", "DOGE", "XRP"]
TRICKY_TEXT = st.one_of(
    st.text(max_size=40), st.sampled_from(["<think>", "</think>", "```json", '{"decisions": [', "...", "N/A", "[1, 2"])
)
PRICE = st.floats(min_value=0.0001, max_value=1e7, allow_nan=False, allow_infinity=False)
# All-fraction confidences (every value in (0, 1]) are deliberately rescaled by the parser, so keep one > 1 or 0.
CONFIDENCE = st.one_of(st.just(0.0), st.floats(min_value=1, max_value=100, exclude_min=True))


@st.composite
def trading_decisions(draw: st.DrawFn) -> TradingDecision:
    assets = draw(st.lists(st.sampled_from(ASSETS), min_size=1, max_size=5, unique=True))
    decisions = [
        AssetDecision(
            asset=asset,
            action=draw(st.sampled_from(["buy", "sell", "hold", "close_position"])),
            allocation_usd=draw(st.floats(min_value=0, max_value=1e6)),
            tp_price=draw(st.none() | PRICE),
            sl_price=draw(st.none() | PRICE),
            exit_plan=draw(TRICKY_TEXT),
            rationale=draw(TRICKY_TEXT),
            confidence=draw(CONFIDENCE),
            risk_level=draw(st.sampled_from(["low", "medium", "high"])),
        )
        for asset in assets
    ]
    return TradingDecision(
        decisions=decisions,
        portfolio_rationale=draw(TRICKY_TEXT),
        total_allocation_usd=draw(st.floats(min_value=0, max_value=1e7)),
        portfolio_risk_level=draw(st.sampled_from(["low", "medium", "high"])),
        timestamp=draw(st.datetimes(timezones=st.just(UTC), min_value=datetime(2020, 1, 1))),
    )


PROSE = st.text(alphabet=st.characters(blacklist_characters="{[<`"), max_size=60)


@st.composite
def dressed(draw: st.DrawFn, body: str) -> str:
    style = draw(st.sampled_from(["plain", "json fence", "fence", "prose", "decoy array", "think"]))
    pad = draw(st.sampled_from(["", " ", "\n\n", "\n \t \n"]))
    if style == "json fence":
        body = f"```json\n{body}\n```"
    elif style == "fence":
        body = f"```\n{body}\n```"
    elif style == "prose":
        body = f"{draw(PROSE)}\n{body}\n{draw(PROSE)}"
    elif style == "decoy array":
        body = f"MACD {draw(st.lists(st.integers(), max_size=4))} then\n{body}"
    elif style == "think":
        body = f"<think>{draw(PROSE)} [1.5, 2]</think>\n{body}"
    return pad + body + draw(st.sampled_from(["", "\n", "  "]))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), decision=trading_decisions(), indent=st.sampled_from([None, 2]), ascii_only=st.booleans())
def test_any_valid_decision_round_trips(
    data: st.DataObject, decision: TradingDecision, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(decision.model_dump(mode="json"), indent=indent, ensure_ascii=ascii_only)
    raw = data.draw(dressed(body))
    outcome = parse_decision(raw, [d.asset for d in decision.decisions])
    assert outcome.failure is None, (raw, outcome)
    assert outcome.decision == decision, (raw, outcome)


@settings(max_examples=300)
@given(raw=st.text(), finish=st.sampled_from([None, "stop", "length"]), reasoning=st.none() | st.text())
def test_never_raises(raw: str, finish: str | None, reasoning: str | None) -> None:
    outcome = parse_decision(raw, SYMBOLS, finish_reason=finish, reasoning=reasoning)
    assert outcome.decision is None or outcome.schema_valid
    assert outcome.failure is None or outcome.decision is None


@settings(max_examples=200)
@given(cut=st.integers(min_value=1, max_value=len(VALID) - 1))
def test_a_cut_answer_is_never_used(cut: int) -> None:
    outcome = parse_decision(VALID[:cut], SYMBOLS)
    assert outcome.decision is None
    assert outcome.failure in ("truncated", "no_json")
