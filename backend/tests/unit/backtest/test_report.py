"""The report: a real PNG, and one HTML page that loads nothing from elsewhere and escapes what models wrote."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.backtest.performance import build_summary
from app.backtest.report import DECISION_ROWS, render_html, render_png
from app.backtest.results import BacktestConfig, BacktestResult, DecisionRecord, EquityPoint, TradeFill

T0 = datetime(2025, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ATTACK = '<script>alert("x")</script><img src="https://evil.example/p.png">'


def decision(hour: int, action: str, rationale: str = "trend up") -> DecisionRecord:
    return DecisionRecord(
        T0 + hour * H,
        hour,
        "executed",
        "some/model",
        "BTC",
        action,
        100.0,
        0.7,
        rationale,
        None,
        0.001,
        50.0,
        False,
    )


def make_result(hours: int = 48, decisions: list[DecisionRecord] | None = None, **config: object) -> BacktestResult:
    points = [
        EquityPoint(T0 + i * H, 10_000 + 10 * i, 10_000, 100.0 if i % 2 else 0.0, {"BTC": 100 + i, "ETH": 10 - i / 10})
        for i in range(hours)
    ]
    return BacktestResult(
        config=BacktestConfig(
            assets=("BTC", "ETH"),
            interval="1h",
            long_interval="4h",
            start=T0,
            end=T0 + (hours - 1) * H,
            model="some/model",
            **config,  # type: ignore[arg-type]
        ),
        equity=points,
        fills=[
            TradeFill(T0, "BTC", "buy", 1.0, 100.0, 0.05, 0.0, "entry", "a"),
            TradeFill(T0 + 3 * H, "BTC", "sell", 1.0, 103.0, 0.05, 3.0, "close", "b"),
        ],
        funding=[],
        orders=[],
        decisions=decisions if decisions is not None else [decision(0, "open_long", ATTACK), decision(1, "hold")],
        funding_rates={"BTC": [(T0 + 8 * H, 0.0001)]},
        data_fingerprint="data-fp",
        trade_fingerprint="trade-fp",
        code_version="abc123",
        cycles=hours,
        knowledge_cutoff=T0 + 24 * H,
    )


@pytest.fixture(scope="module")
def png() -> bytes:
    result = make_result()
    return render_png(result, build_summary(result), None, baseline=make_result())


def test_png_is_a_png_and_is_written_to_the_path(tmp_path: Path) -> None:
    result = make_result(hours=3)
    path = tmp_path / "report.png"
    data = render_png(result, build_summary(result), path)

    assert data.startswith(PNG_SIGNATURE)
    assert path.read_bytes() == data


def test_html_is_self_contained_and_escapes_the_rationale(png: bytes) -> None:
    result = make_result()
    masked = make_result(mask_dates=True, date_shift=timedelta(days=100))
    page = render_html(result, build_summary(result, baseline=make_result(), masked=masked), png=png)

    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'name="viewport"' in page
    uri = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert uri is not None
    assert base64.b64decode(uri.group(1)).startswith(PNG_SIGNATURE)
    for section in ("Figures", "Per asset", "In- and out-of-sample", "with dates masked", "Settings", "Decisions"):
        assert section in page
    assert "BTC buy-and-hold" in page and "equal-weight buy-and-hold" in page and "rule baseline" in page
    assert "data-fp" in page and "trade-fp" in page


def test_long_runs_show_acted_on_decisions_and_count_holds(png: bytes) -> None:
    decisions = [decision(i, "hold" if i % 3 else "open_long", f"row {i}") for i in range(3 * DECISION_ROWS)]
    result = make_result(decisions=decisions)
    page = render_html(result, build_summary(result), png=png)

    assert f"{2 * DECISION_ROWS:,} holds are counted, not shown." in page
    assert "row 0<" in page and "row 1<" not in page  # row 1 is a hold
    assert page.count('<td class="why">') == DECISION_ROWS  # every acted-on one


def test_more_acted_on_decisions_than_the_cap_keep_the_first_and_last(png: bytes) -> None:
    decisions = [decision(i, "open_long", f"row {i}") for i in range(DECISION_ROWS + 11)]
    result = make_result(decisions=decisions)
    page = render_html(result, build_summary(result), png=png)

    assert page.count('<td class="why">') == DECISION_ROWS
    assert "11 acted-on decisions in the middle are left out" in page
    assert "row 0<" in page and f"row {DECISION_ROWS + 10}<" in page
    assert f"row {DECISION_ROWS // 2}<" not in page
