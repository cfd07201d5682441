"""A backtest's report: the equity and drawdown picture (PNG) and one self-contained HTML page around it.

The page loads nothing from anywhere (the picture is a data URI, the CSS inline, no script) and says so in its
Content-Security-Policy, so it can be mailed or opened offline. Every text a model wrote (rationales, verdicts)
is escaped: a model's answer is untrusted input.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.backtest.performance import (
    COMPARED,
    Curve,
    btc_buy_and_hold,
    drawdown,
    equal_weight_buy_and_hold,
    strategy_curve,
)
from app.backtest.results import BacktestResult, DecisionRecord
from app.core.timeframes import to_ms

DPI = 110
DECISION_ROWS = 2_000  # more than this and only acted-on decisions are shown, the first and last of them

# (summary key, label, format) of the figures table, in order
FIGURE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_days", "Max drawdown duration (days)", "days"),
    ("calmar", "Calmar", "ratio"),
    ("end_equity", "Final equity", "money"),
    ("trades", "Closed trades", "int"),
    ("open_trades", "Open at the end", "int"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "ratio"),
    ("exposure", "Exposure (cycles in the market)", "pct"),
    ("avg_leverage", "Average gross leverage", "times"),
    ("turnover", "Turnover (notional / mean equity)", "times"),
    ("fees", "Fees paid", "money"),
    ("funding", "Funding (net, + received)", "money"),
    ("model_cost_usd", "Model cost", "money"),
    ("model_calls", "Model calls", "int"),
    ("cached_answers", "Cached answers", "int"),
    ("error_rate", "Error rate", "pct"),
    ("fallback_rate", "Fallback rate", "pct"),
)
PER_ASSET_COLUMNS = (
    ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"),
    ("realized_pnl", "Realized PnL (gross)", "money"),
    ("fees", "Fees", "money"),
    ("funding", "Funding", "money"),
    ("net_pnl", "Net PnL", "money"),
    ("traded_notional", "Traded notional", "money"),
)
SPLIT_COLUMNS = (
    ("total_return", "Return", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("max_drawdown", "Max DD", "pct"),
    ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"),
    ("model_cost_usd", "Model cost", "money"),
)
COLORS = {"strategy": "#1f5fbf", "btc": "#e8940c", "equal": "#7a7a7a", "baseline": "#2a9d4b", "cutoff": "#b8323c"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:12px;color:#1b1b1b;background:#fff;line-height:1.4}
h1{font-size:1.35em;margin:.3em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.sub{color:#555;margin:0 0 .6em}.warn{background:#fff4e0;border:1px solid #e8b04a;padding:.5em;margin:.6em 0}
img{max-width:100%;height:auto;display:block}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4em 0}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .5em;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.why{white-space:pre-wrap;min-width:16em;max-width:40em}tr.gap td{text-align:center;color:#777}
code{font-size:.85em;word-break:break-all}.note{color:#555;font-size:.9em}
"""


# ---------------------------------------------------------------- the picture


def render_png(
    result: BacktestResult, summary: dict[str, Any], path: str | Path | None, *, baseline: BacktestResult | None = None
) -> bytes:
    """Draw the equity curves (strategy, BTC and equal-weight buy-and-hold, the baseline when given) over their
    drawdowns, with the model's knowledge cutoff as a line when it falls inside the period; write it to `path`
    (when given) and return the PNG."""
    # imported here: matplotlib takes a while to import and only the report needs it; the Figure API with the
    # Agg canvas draws without pyplot, so no display and no global backend state are involved
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    figure = Figure(figsize=(11, 6.4), dpi=DPI)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.06})
    figure.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.08)
    figure.suptitle(_title(result, summary), fontsize=11)
    curves = _curves(result, baseline)
    if curves[0][0].at_ms.size == 0:
        top.text(0.5, 0.5, "no cycles", ha="center", va="center", transform=top.transAxes)
    else:
        for curve, color, style, width in curves:
            x = curve.at_ms.astype("datetime64[ms]")
            on_top = 3 if color == COLORS["strategy"] else 2  # the strategy stays visible where curves overlap
            top.plot(x, curve.equity, color=color, linestyle=style, linewidth=width, label=curve.label, zorder=on_top)
            drops = -100 * drawdown(curve)
            if color == COLORS["strategy"]:
                bottom.fill_between(x, drops, 0, color=color, alpha=0.25, linewidth=0)
            bottom.plot(x, drops, color=color, linestyle=style, linewidth=width * 0.8, zorder=on_top)
        cutoff = _cutoff_ms(summary)
        first, last = int(curves[0][0].at_ms[0]), int(curves[0][0].at_ms[-1])
        if cutoff is not None and first < cutoff <= last:
            when = np.datetime64(cutoff, "ms")
            for axes in (top, bottom):
                axes.axvline(when, color=COLORS["cutoff"], linestyle=":", linewidth=1.2)
            top.text(when, 0.98, " knowledge cutoff", color=COLORS["cutoff"], va="top", fontsize=8,
                     transform=top.get_xaxis_transform())  # fmt: skip
        locator = AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        top.legend(loc="upper left", fontsize=8, frameon=False)
    top.set_ylabel("equity (USD)")
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(StrMethodFormatter("{x:.0f}%"))
    for axes in (top, bottom):
        axes.grid(True, color="#e6e6e6", linewidth=0.6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def _curves(result: BacktestResult, baseline: BacktestResult | None) -> list[tuple[Curve, str, str, float]]:
    """(curve, colour, line style, width), the strategy first."""
    curves = [
        (strategy_curve(result), COLORS["strategy"], "-", 1.6),
        (btc_buy_and_hold(result), COLORS["btc"], "-", 1.0),
        (equal_weight_buy_and_hold(result), COLORS["equal"], "-", 1.0),
    ]
    if baseline is not None:
        curves.append((replace(strategy_curve(baseline), label="rule baseline"), COLORS["baseline"], "--", 1.0))
    return curves


def _title(result: BacktestResult, summary: dict[str, Any]) -> str:
    config = result.config
    period = summary.get("period", {})
    masked = " (dates masked for the model)" if config.mask_dates else ""
    return (
        f"{config.label or config.model} · {config.strategy} · {','.join(config.assets)} {config.interval}\n"
        f"{_day(period.get('from'))} → {_day(period.get('to'))}{masked}"
    )


def _cutoff_ms(summary: dict[str, Any]) -> int | None:
    text = summary.get("sample_split", {}).get("knowledge_cutoff")
    return None if not text else to_ms(datetime.fromisoformat(text))


# ---------------------------------------------------------------- the page


def render_html(
    result: BacktestResult, summary: dict[str, Any], *, png: bytes, baseline: BacktestResult | None = None
) -> str:
    """One page with everything: the picture, the figures against the benchmarks (and the baseline), per asset, in-
    and out-of-sample, the masked run, the settings, the fingerprints and the decisions with their rationale."""
    config = result.config
    label = summary.get("label") or config.model
    period = summary.get("period", {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">",
        '<link rel="icon" href="data:,">',
        f"<title>Backtest: {_e(label)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Backtest: {_e(label)}</h1>",
        f'<p class="sub">{_e(config.model)} · strategy {_e(config.strategy)} · {_e(", ".join(config.assets))} · '
        f"{_e(config.interval)} / {_e(config.long_interval)} · {_e(_day(period.get('from')))} → "
        f"{_e(_day(period.get('to')))} · {_e(_fmt(period.get('cycles'), 'int'))} cycles · "
        f"{_e(_fmt(config.initial_balance, 'money'))} initial</p>",
    ]
    if summary.get("stopped"):
        parts.append(f'<p class="warn">Stopped before the last cycle: {_e(summary["stopped"])}</p>')
    if config.mask_dates:
        parts.append(
            '<p class="warn">The model saw these dates shifted and prices rebased to 100'
            f"{' and asset names masked' if config.mask_assets else ''}; times here are real.</p>"
        )
    parts.append(
        f'<img alt="Equity and drawdown of {_e(label)} against buy-and-hold" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )
    parts += _figures_section(summary, baseline)
    parts += _per_asset_section(summary)
    parts += _split_section(summary)
    parts += _masked_section(summary)
    parts += _settings_section(summary)
    parts += _decisions_section(result)
    parts.append("</body></html>")
    return "\n".join(parts)


def _figures_section(summary: dict[str, Any], baseline: BacktestResult | None) -> list[str]:
    columns: list[tuple[str, dict[str, Any]]] = [("Strategy", summary.get("strategy", {}))]
    for bench in summary.get("benchmarks", {}).values():
        columns.append((bench["label"], bench["figures"]))
    if summary.get("baseline"):
        columns.append((summary["baseline"]["label"], summary["baseline"]["figures"]))
    elif baseline is not None:
        columns.append(("rule baseline", {}))  # given without its figures in the summary: named, not computed
    rows = [[label, *(_fmt(figures.get(key), kind) for _, figures in columns)] for key, label, kind in FIGURE_ROWS]
    out = ["<h2>Figures</h2>", _table(["", *(name for name, _ in columns)], rows, numeric_from=1)]
    differences = summary.get("differences", {})
    if differences:
        names = {key: bench["label"] for key, bench in summary.get("benchmarks", {}).items()}
        names["baseline"] = "rule baseline"
        diff_rows = [
            [label, *(_fmt(diff.get(key), kind, signed=True) for diff in differences.values())]
            for key, label, kind in FIGURE_ROWS
            if key in COMPARED
        ]
        heads = ["Strategy minus", *(names.get(key, key) for key in differences)]
        out += ['<p class="note">Differences (returns in percentage points):</p>', _table(heads, diff_rows, 1)]
    out.append(
        '<p class="note">Buy-and-hold buys at the first close with one taker fee and pays funding as a long 1x '
        "position. A trade is one asset's fills from flat to flat (realized PnL minus fees plus funding while "
        "open). Sharpe and Sortino are annualised from per-cycle returns over 365 days, risk-free 0.</p>"
    )
    return out


def _per_asset_section(summary: dict[str, Any]) -> list[str]:
    assets = summary.get("per_asset", {})
    rows = [[asset, *(_fmt(row.get(key), kind) for key, _, kind in PER_ASSET_COLUMNS)] for asset, row in assets.items()]
    return ["<h2>Per asset</h2>", _table(["Asset", *(label for _, label, _ in PER_ASSET_COLUMNS)], rows, 1)]


def _split_section(summary: dict[str, Any]) -> list[str]:
    split = summary.get("sample_split", {})
    bench_keys = [key for key in summary.get("benchmarks", {}) if any(key in part for part in split.get("parts", []))]
    bench_names = [summary["benchmarks"][key]["label"] for key in bench_keys]
    heads = ["Part", "From", "To", *(label for _, label, _ in SPLIT_COLUMNS), *(f"{n} return" for n in bench_names)]
    rows = []
    for part in split.get("parts", []):
        figures = part.get("strategy", {})
        rows.append(
            [
                part.get("name", ""),
                _day(figures.get("period_from")),
                _day(figures.get("period_to")),
                *(_fmt(figures.get(key), kind) for key, _, kind in SPLIT_COLUMNS),
                *(_fmt(part.get(key, {}).get("total_return"), "pct") for key in bench_keys),
            ]
        )
    notes = "".join(f"<br>{_e(part.get('note', ''))}" for part in split.get("parts", []))
    return [
        "<h2>In- and out-of-sample</h2>",
        f'<p class="note">Knowledge cutoff: {_e(split.get("knowledge_cutoff") or "unknown")}{notes}</p>',
        _table(heads, rows, 3),
    ]


def _masked_section(summary: dict[str, Any]) -> list[str]:
    masked = summary.get("masked")
    if not masked:
        return []
    ours, theirs = summary.get("strategy", {}), masked.get("figures", {})
    rows = [[label, _fmt(ours.get(key), kind), _fmt(theirs.get(key), kind)] for key, label, kind in FIGURE_ROWS]
    same = "the same trades" if masked.get("same_trades") else "different trades"
    return [
        f"<h2>{_e(masked.get('label', 'masked'))}</h2>",
        f'<p class="note">The same period run again with the model unable to recognise it: {_e(same)}.</p>',
        _table(["", "As run", str(masked.get("label", "masked"))], rows, 1),
    ]


def _settings_section(summary: dict[str, Any]) -> list[str]:
    settings = [[key, "—" if value is None else str(value)] for key, value in summary.get("config", {}).items()]
    cost = summary.get("cost", {})
    provenance = [
        *([f"{key.replace('_', ' ')} fingerprint", value] for key, value in summary.get("fingerprints", {}).items()),
        ["code version", str(summary.get("code_version") or "—")],
        ["cycles", _fmt(summary.get("cycles"), "int")],
        ["model cost", _fmt(cost.get("model_cost_usd"), "money")],
        ["model calls", _fmt(cost.get("model_calls"), "int")],
        ["cached answers", _fmt(cost.get("cached_answers"), "int")],
        ["stopped", str(summary.get("stopped") or "no: ran to the last cycle")],
        *(["note", str(note)] for note in summary.get("notes", [])),
    ]
    return [
        "<h2>Settings</h2>",
        _table(["Setting", "Value"], settings),
        "<h2>Fingerprints and cost</h2>",
        _table(["", ""], provenance),
    ]


def _decisions_section(result: BacktestResult) -> list[str]:
    decisions = sorted(result.decisions, key=lambda d: to_ms(d.cycle_time))  # newest last
    shown, note = _pick_decisions(decisions, DECISION_ROWS)
    shift = result.config.date_shift
    heads = ["Time (UTC)", "Asset", "Action", "Allocation", "Confidence", "Status", "Verdict", "Model"]
    rows: list[str] = []
    for decision in shown:
        if decision is None:
            rows.append(f'<tr class="gap"><td colspan="{len(heads) + 1}">…</td></tr>')
            continue
        cells = [
            (decision.cycle_time - shift).strftime("%Y-%m-%d %H:%M"),
            decision.asset,
            decision.action,
            _fmt(decision.allocation_usd, "money"),
            _fmt(decision.confidence, "ratio"),
            decision.status,
            decision.verdict or "",
            f"{decision.model or '—'}{' (cached)' if decision.cached else ''}",
        ]
        numeric = {3, 4}
        tds = "".join(
            f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(cells)
        )
        rows.append(f'<tr>{tds}<td class="why">{_e(decision.rationale)}</td></tr>')
    head = "".join(f"<th>{_e(h)}</th>" for h in [*heads, "Rationale"])
    return [
        "<h2>Decisions</h2>",
        f'<p class="note">{_e(f"{len(decisions):,} decisions, oldest first. {note}".strip())}</p>',
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>',
    ]


def _pick_decisions(decisions: Sequence[DecisionRecord], cap: int) -> tuple[list[DecisionRecord | None], str]:
    """All decisions when they fit; else the acted-on ones (holds counted), and past the cap the first and last
    half of those with a gap (None) between."""
    if len(decisions) <= cap:
        return list(decisions), ""
    acted: list[DecisionRecord | None] = [d for d in decisions if d.action != "hold"]
    note = f"{len(decisions) - len(acted):,} holds are counted, not shown."
    if len(acted) <= cap:
        return acted, note
    half = cap // 2
    left_out = len(acted) - 2 * half
    note += f" {left_out:,} acted-on decisions in the middle are left out (the first and last {half:,} are shown)."
    return [*acted[:half], None, *acted[-half:]], note


# ---------------------------------------------------------------- helpers


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int | None = None) -> str:
    """A scrollable table of plain texts (escaped here); cells from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if numeric_from is not None and i >= numeric_from else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _fmt(value: Any, kind: str, *, signed: bool = False) -> str:
    """A figure as text: percent, ratio, money, count, days or a multiple; None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    sign = "+" if signed else ""
    number = float(value)
    if kind == "pct":
        return f"{number * 100:{sign}.2f}{' pp' if signed else '%'}"
    if kind == "money":
        text = f"${abs(number):,.2f}"
        return f"-{text}" if number < 0 else f"+{text}" if signed and number > 0 else text
    if kind == "int":
        return f"{int(number):{sign},}"
    if kind == "days":
        return f"{number:{sign}.1f}"
    if kind == "times":
        return f"{number:{sign}.2f}×"
    return f"{number:{sign}.2f}"


def _day(iso: str | None) -> str:
    return "—" if not iso else iso[:16].replace("T", " ")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
