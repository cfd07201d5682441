"""LLM settings kept in the database: the first writes of a setting at once all succeed (an upsert; a read then
an insert let the second request fail on the primary key with a 500)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.bootstrap import Agent
from app.db import models

pytestmark = pytest.mark.db


async def test_first_writes_of_a_setting_at_once_all_succeed(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    store = agent.llm.store
    assert store is not None
    # Reads of a setting wait for each other (or a moment): every writer that reads first has read before any
    # writes, the race made certain (on SQLite a short read does not yield to the event loop).
    arrived: list[int] = []
    all_read = asyncio.Event()
    get = AsyncSession.get

    async def meeting(self: AsyncSession, entity: Any, ident: Any, **kwargs: Any) -> Any:
        found = await get(self, entity, ident, **kwargs)
        if entity is models.LLMSetting and not all_read.is_set():
            arrived.append(1)
            if len(arrived) >= 2:
                all_read.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_read.wait(), timeout=2)
        return found

    monkeypatch.setattr(AsyncSession, "get", meeting)
    names = [f"vendor/model-{i}" for i in range(8)]
    await asyncio.gather(
        *(
            store.save_default_model(n, configured_model="vendor/base", endpoint=None, by=f"k{i}")
            for i, n in enumerate(names)
        )
    )
    async with agent.sessions() as session:
        row = await session.get(models.LLMSetting, "default_model")
    assert row is not None and row.value in names
    assert row.updated_by == f"k{names.index(row.value)}", "the row is one whole write, not a mix"

    await store.save_default_model("vendor/again", configured_model="vendor/base", endpoint="http://x", by="later")
    stored = await store.default_model()
    assert stored is not None and stored.model == "vendor/again"
