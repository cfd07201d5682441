"""`trading-agent llm parse` through Typer's test runner (the `llm` group on its own, before cli.py wires it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from app.commands.llm import llm_app

runner = CliRunner()

ASSET = (
    '{"asset": "BTC", "action": "buy", "allocation_usd": 100, "exit_plan": "tp 120k", "rationale": "trend",'
    ' "confidence": 70, "risk_level": "low"}'
)
VALID = (
    f'{{"decisions": [{ASSET}], "portfolio_rationale": "p", "total_allocation_usd": 100,'
    ' "portfolio_risk_level": "low"}'
)


def _rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_jsonl_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "ok", "kind": "raw_response", "raw": "```json\n" + VALID + "\n```"}),
        json.dumps({"id": "cut", "raw": VALID, "finish_reason": "length"}),
        json.dumps({"raw": None}),
        json.dumps({"id": "prose", "raw": "hold everything"}),
        "{not json",
        json.dumps({"id": "other", "raw": '{"ETH": {"signal": "hold"}}'}),
        "",
        json.dumps({"id": "no raw field"}),
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = runner.invoke(llm_app, ["parse", str(path), "--symbols", "BTC"])

    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert [r["id"] for r in rows] == ["ok", "cut", 3, "prose", 5, "other", 8]
    by_id = {r["id"]: r for r in rows}
    assert by_id["ok"]["json_found"] and by_id["ok"]["schema_valid"] and by_id["ok"]["failure"] is None
    assert by_id["ok"]["kind"] == "raw_response"
    assert "markdown code fence removed" in by_id["ok"]["notes"]
    assert by_id["cut"]["failure"] == "truncated" and not by_id["cut"]["schema_valid"]
    assert by_id[3]["failure"] == "empty"
    assert by_id["prose"]["failure"] == "no_json" and not by_id["prose"]["json_found"]
    assert "not valid JSON" in by_id[5]["input_error"]
    assert by_id["other"]["json_found"] and not by_id["other"]["schema_valid"]
    assert "decisions: Field required" in by_id["other"]["errors"]
    assert "'raw'" in by_id[8]["input_error"]
    for row in rows:
        assert {"id", "json_found", "failure", "schema_valid", "errors", "notes"} <= row.keys()


def test_default_symbols_add_holds(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"id": 1, "raw": VALID}) + "\n", encoding="utf-8")

    result = runner.invoke(llm_app, ["parse", str(path)])

    (row,) = _rows(result.stdout)
    assert row["schema_valid"]
    assert "model gave no decision for ETH: hold added" in row["notes"]
    assert "model gave no decision for SOL: hold added" in row["notes"]


def test_text_file_is_one_answer(tmp_path: Path) -> None:
    path = tmp_path / "answer.txt"
    path.write_text("<think>MACD [1, 2]</think>\nHere it is:\n" + VALID + "\n", encoding="utf-8")

    result = runner.invoke(llm_app, ["parse", str(path), "--symbols", "BTC", "--summary"])

    assert result.exit_code == 0, result.output
    (row,) = _rows(result.stdout)
    assert row["id"] == "answer.txt"
    assert row["json_found"] and row["schema_valid"] and row["errors"] == []
    assert "kind" not in row
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"answers": 1, "json_found": 1, "schema_valid": 1}


def test_truncated_text_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    path.write_text(VALID[:-30], encoding="utf-8")

    result = runner.invoke(llm_app, ["parse", str(path)])

    (row,) = _rows(result.stdout)
    assert row["failure"] == "truncated" and not row["schema_valid"]


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(llm_app, ["parse", str(tmp_path / "absent.jsonl")])

    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert result.stdout == ""


def test_directory_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(llm_app, ["parse", str(tmp_path)])

    assert result.exit_code == 2
    assert "cannot read" in result.stderr
