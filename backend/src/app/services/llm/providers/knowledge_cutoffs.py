"""Models' training-data cutoffs, for naming the LLM's own look-ahead in a backtest.

A model trained on data from after a backtest's period may remember what prices did (parametric look-ahead
bias), so the report marks every window before the cutoff as in-sample for that model. OpenRouter's
`GET /models` carries a `knowledge_cutoff` per model (an ISO date, or null when unknown): `parse_cutoff`
reads it, and the catalog prefers it. This table is the fallback, for models whose vendor (or a cloud that
resells them) publishes a date. A model not listed is unknown, never guessed.

Where a vendor gives two dates (Anthropic's "reliable knowledge cutoff" and "training data cutoff") the
later one is taken: the model may have seen data up to it. A month ("January 2025") means data through that
month, so its last day is taken; both choices make more windows in-sample, the safe side.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime

from app.services.llm.llm_service import is_baseline

# model id (OpenRouter slug) -> last day of the training data. Sources:
# [MS] Microsoft's Azure OpenAI model tables, "Training data (up to)" column (MicrosoftDocs/azure-ai-docs,
#      articles/ai-foundry/openai/includes/models-azure-direct-openai.md, 2025-10-17).
# [AN] Anthropic's models overview (docs.anthropic.com/en/docs/about-claude/models/overview), "Training data
#      cutoff" row; its "reliable knowledge cutoff" is earlier (Sonnet 4.5: Jan 2025, as anthropic.com/transparency
#      also says).
# [OCI] Oracle Cloud Generative AI model pages (docs.oracle.com/en-us/iaas/Content/generative-ai/), "Knowledge Cutoff".
KNOWN_CUTOFFS: dict[str, date] = {
    "openai/gpt-5": date(2024, 9, 30),  # [MS] gpt-5 (2025-08-07): September 30, 2024
    "openai/gpt-5-chat": date(2024, 9, 30),  # [MS] gpt-5-chat (2025-08-07): September 30, 2024
    "openai/gpt-5-pro": date(2024, 9, 30),  # [MS] gpt-5-pro (2025-10-06): September 30, 2024
    "openai/gpt-5-mini": date(2024, 5, 31),  # [MS] gpt-5-mini (2025-08-07): May 31, 2024
    "openai/gpt-5-nano": date(2024, 5, 31),  # [MS] gpt-5-nano (2025-08-07): May 31, 2024
    "openai/gpt-5.1": date(2024, 9, 30),  # [MS] gpt-5.1 (2025-11-13): September 30, 2024
    "openai/gpt-5.1-chat": date(2024, 9, 30),  # [MS] gpt-5.1-chat (2025-11-13): September 30, 2024
    "openai/gpt-4.1": date(2024, 5, 31),  # [MS] gpt-4.1 (2025-04-14): May 31, 2024
    "openai/gpt-4.1-mini": date(2024, 5, 31),  # [MS] gpt-4.1-mini (2025-04-14): May 31, 2024
    "openai/gpt-4.1-nano": date(2024, 5, 31),  # [MS] gpt-4.1-nano (2025-04-14): May 31, 2024
    "openai/gpt-4o": date(2023, 10, 31),  # [MS] gpt-4o (2024-05-13, 2024-08-06, 2024-11-20): October 2023
    "openai/gpt-4o-mini": date(2023, 10, 31),  # [MS] gpt-4o-mini (2024-07-18): October 2023
    "openai/o3": date(2024, 5, 31),  # [MS] o3 (2025-04-16): May 31, 2024
    "openai/o4-mini": date(2024, 5, 31),  # [MS] o4-mini (2025-04-16): May 31, 2024
    "openai/gpt-oss-120b": date(2024, 5, 31),  # [MS] gpt-oss-120b: May 31, 2024
    "openai/gpt-oss-20b": date(2024, 5, 31),  # [MS] gpt-oss-20b: May 31, 2024
    "anthropic/claude-sonnet-4.5": date(2025, 7, 31),  # [AN] training data July 2025 (reliable: January 2025)
    "anthropic/claude-haiku-4.5": date(2025, 7, 31),  # [AN] training data July 2025 (reliable: February 2025)
    "anthropic/claude-opus-4.1": date(2025, 3, 31),  # [AN] training data March 2025 (reliable: January 2025)
    "x-ai/grok-4": date(2024, 11, 30),  # [OCI] xAI Grok 4 (xai.grok-4): November 2024
    "google/gemini-2.5-pro": date(2025, 1, 31),  # [OCI] Google Gemini 2.5 Pro (google.gemini-2.5-pro): January 2025
}

# What may follow a listed id and still name the same model: a variant (`:free`, `:nitro`) or a dated snapshot
# (`-2024-11-20`, `-20250929`). Not a bare prefix: gpt-5-mini and gpt-5.2 are other models with other cutoffs.
_SAME_MODEL_SUFFIX = re.compile(r"(?::.*|-\d.*)?")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def known_cutoff(model: str) -> date | None:
    """The table's cutoff for `model` (the longest listed id it extends by a variant or a date); None when the
    model is not listed, and for the rule baseline (it has no training data)."""
    if is_baseline(model):  # rules, no training data
        return None
    matches = [
        key for key in KNOWN_CUTOFFS if model.startswith(key) and _SAME_MODEL_SUFFIX.fullmatch(model[len(key) :])
    ]
    return KNOWN_CUTOFFS[max(matches, key=len)] if matches else None


def parse_cutoff(value: object) -> date | None:
    """A payload's `knowledge_cutoff` as a date: `YYYY-MM-DD` (OpenRouter's documented form), a full ISO timestamp,
    or `YYYY-MM` (the month's last day); None when absent, null or unreadable."""
    if not isinstance(value, str) or not (text := value.strip()):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        pass
    if month := _MONTH.fullmatch(text):
        year, number = int(month[1]), int(month[2])
        if 1 <= number <= 12:
            return date(year, number, calendar.monthrange(year, number)[1])
    return None
