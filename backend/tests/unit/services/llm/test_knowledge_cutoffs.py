"""Knowledge cutoffs: read from OpenRouter's `/models` payload first, from the table of published dates second."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from app.services.llm.providers.baseline import BASELINE_MODEL_NAME
from app.services.llm.providers.knowledge_cutoffs import KNOWN_CUTOFFS, known_cutoff, parse_cutoff
from app.services.llm.providers.model_catalog import ModelCatalog, parse_models_payload
from tests.fakes.openrouter_server import FakeOpenRouter, model_entry


def _entry(model_id: str, cutoff: Any) -> dict[str, Any]:
    return {**model_entry(model_id, ["max_tokens"]), "knowledge_cutoff": cutoff}


@pytest.fixture
def server() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter() as fake:
        fake.models = [
            _entry("acme/dated", "2025-03-31"),
            _entry("openai/gpt-5", "2024-10-15"),  # the live catalog says otherwise than the table: it wins
            _entry("acme/unknown", None),
        ]
        yield fake


# ------------------------------------------------------------------------------------------------ payload


def test_the_payload_field_is_read_into_model_info() -> None:
    payload = {
        "data": [
            _entry("a/day", "2025-01-31"),
            _entry("a/month", "2024-11"),
            _entry("a/stamp", "2025-02-28T00:00:00Z"),
            _entry("a/null", None),
            _entry("a/bad", "soon"),
            _entry("a/number", 1735603200),
            model_entry("a/absent", ["max_tokens"]),
        ]
    }
    models = parse_models_payload(payload)
    assert models["a/day"].knowledge_cutoff == date(2025, 1, 31)
    assert models["a/month"].knowledge_cutoff == date(2024, 11, 30)  # data through November
    assert models["a/stamp"].knowledge_cutoff == date(2025, 2, 28)
    for unknown in ("a/null", "a/bad", "a/number", "a/absent"):
        assert models[unknown].knowledge_cutoff is None, unknown


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-02", date(2024, 2, 29)),  # leap year
        (" 2025-07-31 ", date(2025, 7, 31)),
        ("2025-13", None),
        ("", None),
        ("2025-02-30", None),
    ],
)
def test_parse_cutoff(value: str, expected: date | None) -> None:
    assert parse_cutoff(value) == expected


async def test_the_live_catalog_cutoff_comes_first(server: FakeOpenRouter) -> None:
    catalog = ModelCatalog(base_url=server.base_url)
    assert catalog.knowledge_cutoff("openai/gpt-5") == date(2024, 9, 30)  # offline: the table
    assert await catalog.refresh() is True
    assert catalog.knowledge_cutoff("acme/dated") == date(2025, 3, 31)
    assert catalog.knowledge_cutoff("acme/dated:free") == date(2025, 3, 31)
    assert catalog.knowledge_cutoff("openai/gpt-5") == date(2024, 10, 15)
    assert catalog.knowledge_cutoff("acme/unknown") is None  # listed without a date, not in the table
    assert catalog.knowledge_cutoff("x-ai/grok-4") == date(2024, 11, 30)  # not listed live: the table


# -------------------------------------------------------------------------------------------------- table


def test_table_fallback_by_prefix() -> None:
    catalog = ModelCatalog()
    assert catalog.info("openai/gpt-5") is not None and catalog.info("openai/gpt-5").knowledge_cutoff is None
    assert catalog.knowledge_cutoff("openai/gpt-5") == date(2024, 9, 30)
    assert catalog.knowledge_cutoff("openai/gpt-5:free") == date(2024, 9, 30)  # a variant
    assert catalog.knowledge_cutoff("openai/gpt-4o-2024-11-20") == date(2023, 10, 31)  # a dated snapshot
    assert catalog.knowledge_cutoff("anthropic/claude-sonnet-4.5") == date(2025, 7, 31)
    # the longest listed id wins, and a bare prefix is another model: no borrowed date
    assert catalog.knowledge_cutoff("openai/gpt-5-mini") == date(2024, 5, 31)
    assert catalog.knowledge_cutoff("openai/gpt-4o-mini-2024-07-18") == date(2023, 10, 31)
    assert catalog.knowledge_cutoff("openai/gpt-5.2") is None
    assert catalog.knowledge_cutoff("x-ai/grok-4-fast") is None


def test_unknown_models_and_the_baseline_have_none() -> None:
    catalog = ModelCatalog()
    assert catalog.knowledge_cutoff("acme/unknown") is None
    assert catalog.knowledge_cutoff("deepseek/deepseek-r1") is None  # in the catalog, no published date read
    assert catalog.knowledge_cutoff("baseline") is None
    assert catalog.knowledge_cutoff(BASELINE_MODEL_NAME) is None
    assert known_cutoff("baseline") is None


def test_every_table_entry_is_a_plausible_past_date() -> None:
    for model, cutoff in KNOWN_CUTOFFS.items():
        assert "/" in model and model == model.strip().lower(), model
        assert date(2023, 1, 1) <= cutoff <= date(2026, 1, 1), model
