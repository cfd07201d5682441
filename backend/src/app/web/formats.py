"""How the dashboard writes numbers and times: one place, so every page says a price or a time the same way."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+,.2f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}%"


def pct_rate(value: float | None) -> str:
    """A share (0..1) as a percentage."""
    return "—" if value is None else f"{value * 100:.1f}%"


def price(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    return f"{value:.6g}"


def qty(value: float | None) -> str:
    return "—" if value is None else f"{value:.8g}"


def ts(value: datetime | str | None) -> str:
    """UTC, to the minute (a candle's precision); ISO strings from JSON views too."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def tojson_pretty(value: Any) -> str:
    if value is None:
        return "(no context stored)"
    return json.dumps(value, indent=2, sort_keys=False, default=str)


FILTERS = {
    "money": money,
    "signed": signed,
    "pct": pct,
    "pct_rate": pct_rate,
    "price": price,
    "qty": qty,
    "ts": ts,
    "tojson_pretty": tojson_pretty,
}
