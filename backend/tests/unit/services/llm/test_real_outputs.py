"""`parse_decision` on real model outputs from ../shared/data (skipped on a fresh clone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.services.llm.response_parser import parse_decision

pytestmark = pytest.mark.shared_data

SYMBOLS = ["BTC", "ETH", "SOL"]
NOF1 = "llm_outputs/nof1_alpha_arena_scodive.jsonl"
_DECODER = json.JSONDecoder()


def has_complete_json(raw: object) -> bool:
    """Independent brute force: does `raw_decode` succeed at any `{` or `[`?"""
    if not isinstance(raw, str):
        return False
    for index, char in enumerate(raw):
        if char in "{[":
            try:
                _DECODER.raw_decode(raw, index)
            except ValueError:
                continue
            return True
    return False


def _records(shared_data: Path) -> list[dict[str, Any]]:
    lines = (shared_data / NOF1).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _parse(record: dict[str, Any]) -> Any:
    return parse_decision(record["raw"], SYMBOLS, finish_reason=record.get("finish_reason"))


def test_every_record_is_classified(shared_data: Path) -> None:
    records = _records(shared_data)
    assert len(records) == 417
    for record in records:
        outcome = _parse(record)
        assert outcome.failure in (None, "empty", "truncated", "no_json", "invalid_json"), record["id"]
        assert (outcome.decision is not None) == outcome.schema_valid


def test_json_is_found_wherever_a_complete_value_exists(shared_data: Path) -> None:
    records = _records(shared_data)
    expected = [has_complete_json(r["raw"]) for r in records]
    found = [_parse(r).json_found for r in records]
    missed = [
        r["id"] + " " + r["kind"] for r, want, got in zip(records, expected, found, strict=True) if want and not got
    ]
    assert missed == []
    assert sum(expected) > 150  # the per-coin dicts and structured traces at least


def test_empty_records_fail_as_empty(shared_data: Path) -> None:
    tagged = [r for r in _records(shared_data) if {"empty", "null_response"} & set(r["tags"])]
    assert tagged
    for record in tagged:
        assert _parse(record).failure == "empty", record["id"]


def test_cut_records_never_yield_a_decision(shared_data: Path) -> None:
    cut_tags = {"finish_reason_length", "ellipsis_truncated", "unbalanced_brackets"}
    tagged = [r for r in _records(shared_data) if cut_tags & set(r["tags"])]
    assert tagged
    for record in tagged:
        assert _parse(record).decision is None, record["id"]


def test_other_schemas_are_found_but_not_valid(shared_data: Path) -> None:
    for record in _records(shared_data):
        if record["kind"] in ("llm_response_parsed", "cot_trace_structured"):
            outcome = _parse(record)
            assert outcome.json_found and outcome.failure is None, record["id"]
            assert not outcome.schema_valid and outcome.errors, record["id"]


def test_failed_nof1_answers(shared_data: Path) -> None:
    failed = [r for r in _records(shared_data) if r["kind"] == "failed_json_response_raw_text"]
    outcomes = {("empty" if not r["raw"] else "array"): _parse(r) for r in failed}
    assert outcomes["empty"].failure == "empty"
    array = outcomes["array"]  # reasoning with a placeholder template, then a JSON array of per-coin objects
    assert array.json_found and array.failure is None and isinstance(array.value, list)
    assert not array.schema_valid


def _openrouter_messages(shared_data: Path) -> list[tuple[str, dict[str, Any]]]:
    base = shared_data / "openrouter"
    bodies = [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(base.glob("responses/*.json"))]
    for path in sorted(base.glob("raw_bodies/*.body.txt")):
        text = path.read_text(encoding="utf-8")
        assert text[:1].isspace()  # keep-alive padding before the JSON body
        bodies.append((path.name, json.loads(text.strip())))
    return [(name, body["choices"][0]) for name, body in bodies]


def test_openrouter_contents_are_not_decisions(shared_data: Path) -> None:
    choices = _openrouter_messages(shared_data)
    assert len(choices) >= 8
    for name, choice in choices:
        message = choice["message"]
        outcome = parse_decision(
            message.get("content"),
            SYMBOLS,
            finish_reason=choice.get("finish_reason"),
            reasoning=message.get("reasoning"),
        )
        assert not outcome.json_found or not outcome.schema_valid, name
        assert outcome.decision is None, name
