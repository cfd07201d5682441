"""Charts drawn on the server as inline SVG: no script and no chart library to load, readable at any width (the
SVG scales with its box), and the page stays one request. Only numbers and escaped labels go into the markup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600.0, 180.0
_PAD_LEFT, _PAD_RIGHT, _PAD_Y = 64.0, 8.0, 14.0


def drawdown(values: Sequence[float]) -> list[float]:
    """Each point's fall from the highest value before it, in percent (0 or negative)."""
    peak = float("-inf")
    out = []
    for value in values:
        peak = max(peak, value)
        out.append((value / peak - 1) * 100 if peak > 0 else 0.0)
    return out


def line_chart(
    chart_id: str,
    times: Sequence[datetime],
    values: Sequence[float],
    *,
    label: str,
    unit: str = "",
    area: bool = False,
    empty: str = "no data yet",
) -> Markup:
    """A line (or, with `area`, a filled area down from 0: a drawdown) of `values` over `times`."""
    title = escape(label)
    if len(values) < 2:
        return Markup(
            f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img" '
            f'aria-label="{title}"><text x="{WIDTH / 2:g}" y="{HEIGHT / 2:g}" text-anchor="middle" '
            f'class="chart-empty">{escape(empty)}</text></svg>'
        )
    low, high = min(values), max(values)
    if area:
        high = max(high, 0.0)
    if high == low:
        low, high = low - 1, high + 1
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - _PAD_LEFT - _PAD_RIGHT, HEIGHT - 2 * _PAD_Y

    def x(t: datetime) -> float:
        return _PAD_LEFT + (t.timestamp() - t0) / span * plot_w

    def y(v: float) -> float:
        return _PAD_Y + (high - v) / (high - low) * plot_h

    points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
    shape = f'<polyline class="chart-line" fill="none" points="{points}"/>'
    if area:
        base = y(0.0)
        outline = f"{x(times[0]):.1f},{base:.1f} {points} {x(times[-1]):.1f},{base:.1f}"
        shape = f'<polygon class="chart-area" points="{outline}"/>' + shape
    labels = (
        f'<text class="chart-label" x="{_PAD_LEFT - 6:g}" y="{y(high) + 4:.1f}" text-anchor="end">'
        f"{escape(_number(high, unit))}</text>"
        f'<text class="chart-label" x="{_PAD_LEFT - 6:g}" y="{y(low) + 4:.1f}" text-anchor="end">'
        f"{escape(_number(low, unit))}</text>"
        f'<text class="chart-label" x="{_PAD_LEFT:g}" y="{HEIGHT - 1:g}">{times[0]:%m-%d %H:%M}</text>'
        f'<text class="chart-label" x="{WIDTH - _PAD_RIGHT:g}" y="{HEIGHT - 1:g}" text-anchor="end">'
        f"{times[-1]:%m-%d %H:%M}</text>"
    )
    axis = (
        f'<line class="chart-axis" x1="{_PAD_LEFT:g}" x2="{WIDTH - _PAD_RIGHT:g}" y1="{y(low):.1f}" y2="{y(low):.1f}"/>'
    )
    return Markup(
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img" '
        f'aria-label="{title}: {escape(_number(values[-1], unit))} now" data-points="{len(values)}">'
        f"<title>{title}</title>{axis}{shape}{labels}</svg>"
    )


def _number(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:,.2f}{unit}"


def interval_chart(chart_id: str, rows: Sequence[tuple[str, float, float, float]], *, label: str) -> Markup:
    """Each row's estimate (a dot) with its confidence interval (a bar): `rows` are (name, value, low, high)."""
    if not rows:
        return Markup("")
    row_h, top = 26.0, 8.0
    height = top * 2 + row_h * len(rows)
    low = min(min(r[2] for r in rows), 0.0)
    high = max(max(r[3] for r in rows), 0.0)
    if high == low:
        low, high = low - 1, high + 1
    left, right = 150.0, WIDTH - 60.0

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * (right - left)

    body = [f'<line class="chart-axis" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top:g}" y2="{height - top:g}"/>']
    for i, (name, value, lo, hi) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        body.append(
            f'<text class="chart-label" x="{left - 8:g}" y="{y + 4:.1f}" text-anchor="end">{escape(name[:22])}</text>'
            f'<line class="chart-line" x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<circle class="chart-dot" cx="{x(value):.1f}" cy="{y:.1f}" r="4"/>'
            f'<text class="chart-label" x="{right + 6:g}" y="{y + 4:.1f}">{value:.4g}</text>'
        )
    return Markup(
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH:g} {height:g}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>{"".join(body)}</svg>'
    )
