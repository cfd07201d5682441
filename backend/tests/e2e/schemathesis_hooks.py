"""What a client must know to send a strategy template the server accepts, for the Schemathesis run of
`test_api_fuzz.py` (loaded through SCHEMATHESIS_HOOKS): the schema gives such a template the format
`jinja2-template`, a Jinja2 template over `risk`, `max_positions` and `strategy` that renders to text. Text
without braces and the strategy's own variables always render."""

from __future__ import annotations

import re

import schemathesis
from hypothesis import strategies as st

from app.schemas.text import TEMPLATE_FORMAT

VARIABLES = [
    "{{ max_positions }}",
    "{{ risk.max_risk_per_trade }}",
    "{{ risk.max_daily_loss }}",
    "{{ risk.stop_loss_percentage }}",
    "{{ risk.take_profit_ratio }}",
    "{{ risk.max_leverage }}",
    "{{ risk.cooldown_period }}",
    "{{ strategy.strategy_name }}",
]
_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f]")  # the schema's pattern: at least one character that is not blank

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="{}"),
    min_size=1,
    max_size=40,
)
templates = (
    st.lists(st.one_of(text, st.sampled_from(VARIABLES)), min_size=1, max_size=8)
    .map("".join)
    .filter(lambda template: bool(_VISIBLE.search(template)))
)
schemathesis.openapi.format(TEMPLATE_FORMAT, templates)
