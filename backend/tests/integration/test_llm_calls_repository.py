"""Usage totals per model, account and day, and the daily spend, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.db import models
from app.db.migrate import ensure_migrated
from app.db.repositories.llm_calls import LLMCallRepository
from app.db.session import create_engine, create_session_factory

pytestmark = pytest.mark.db


def _call(
    account: int | None, model: str, served: str | None, outcome: str, cost: float | None, day: int, hour: int = 12
) -> models.LLMCall:
    return models.LLMCall(
        account_id=account,
        model_requested=model,
        model_served=served,
        outcome=outcome,
        attempts=1,
        reasked=False,
        cost_estimated=False,
        prompt_tokens=100,
        completion_tokens=10,
        cost_usd=cost,
        created_at=datetime(2026, 5, day, hour, tzinfo=UTC),
    )


async def test_totals_and_spend(database_url: str) -> None:
    engine = create_engine(database_url)
    await ensure_migrated(engine)
    sessions = create_session_factory(engine)
    try:
        async with sessions.begin() as session:
            now = datetime(2026, 5, 1, tzinfo=UTC)
            for account_id in (1, 2):
                session.add(
                    models.Strategy(
                        strategy_id=f"s{account_id}",
                        strategy_name="s",
                        strategy_type="custom",
                        prompt_template="",
                        risk_parameters={},
                        timeframe_preference=[],
                        max_positions=1,
                        position_sizing="fixed",
                        is_active=True,
                        is_builtin=False,
                        created_at=now,
                    )
                )
                await session.flush()
                session.add(
                    models.Account(
                        id=account_id,
                        name=f"a{account_id}",
                        mode="paper",
                        venue="binanceusdm",
                        status="ACTIVE",
                        strategy_id=f"s{account_id}",
                        initial_balance=1000,
                        max_position_size=100,
                        max_leverage=2,
                        maker_fee_bps=2,
                        taker_fee_bps=5,
                        created_at=now,
                        updated_at=now,
                    )
                )
            await session.flush()
            repo = LLMCallRepository(session)
            await repo.add_all(
                [
                    _call(1, "openai/gpt-5", "openai/gpt-5", "ok", 0.01, 1),
                    _call(1, "openai/gpt-5", None, "api_error", None, 1, hour=23),
                    _call(2, "openai/gpt-5", "openai/gpt-5", "truncated", 0.02, 2),
                    _call(2, "x-ai/grok-4", "x-ai/grok-4", "ok", 0.03, 2),
                ]
            )
        async with sessions() as session:
            repo = LLMCallRepository(session)
            by_model = {t.key: t for t in await repo.totals("model")}
            assert by_model["openai/gpt-5"].calls == 3 and by_model["openai/gpt-5"].failures == 2
            assert by_model["openai/gpt-5"].cost_usd == pytest.approx(0.03)
            assert by_model["x-ai/grok-4"].cost_usd == pytest.approx(0.03)
            by_account = {t.key: t.cost_usd for t in await repo.totals("account")}
            assert by_account == pytest.approx({"1": 0.01, "2": 0.05})
            by_day = {t.key: t.calls for t in await repo.totals("day")}
            assert by_day == {"2026-05-01": 2, "2026-05-02": 2}
            assert await repo.spent_since(2, datetime(2026, 5, 2, tzinfo=UTC)) == pytest.approx(0.05)
            assert await repo.spent_since(1, datetime(2026, 5, 2, tzinfo=UTC)) == 0.0
    finally:
        await engine.dispose()
