"""Strategies stored in the database (built-in ones are written at start-up).

A stored definition is read through the same schema a new one is checked with, so a row that no longer
validates (e.g. a null or an infinity in `risk_parameters`, written before the schema refused them) is
returned with the reason instead of a strategy: one bad row never breaks a listing or a read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Account, Strategy
from app.schemas.trading_decision import TradingStrategy


def to_schema(row: Strategy) -> TradingStrategy:
    """The row as a strategy; raises pydantic's ValidationError when the stored definition is invalid."""
    return TradingStrategy.model_validate(
        {
            "strategy_id": row.strategy_id,
            "strategy_name": row.strategy_name,
            "strategy_type": row.strategy_type,
            "prompt_template": row.prompt_template,
            "risk_parameters": row.risk_parameters,
            "timeframe_preference": row.timeframe_preference,
            "max_positions": row.max_positions,
            "position_sizing": row.position_sizing,
            "is_active": row.is_active,
        }
    )


def validation_summary(errors: Sequence[ErrorDetails]) -> str:
    """`field: message` for each of pydantic's errors, without the offending values (they may be unprintable)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ())) or "strategy"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class StoredStrategy:
    """A stored strategy as read: its definition, or why the stored definition cannot be used."""

    strategy_id: str
    is_builtin: bool
    is_active: bool
    created_at: datetime
    strategy: TradingStrategy | None
    problem: str | None


def load(row: Strategy) -> StoredStrategy:
    try:
        strategy, problem = to_schema(row), None
    except (ValidationError, TypeError, ValueError) as exc:
        strategy = None
        summary = (
            validation_summary(exc.errors()) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        )
        problem = f"the stored definition is invalid ({summary})"
    return StoredStrategy(row.strategy_id, row.is_builtin, row.is_active, row.created_at, strategy, problem)


# Stored strategies as last read, by the repr of their row (every column): the same row gives the same result, so a
# decision does not check a definition again (0.1 ms of pydantic) until it changes. StoredStrategy is frozen and
# nothing changes a TradingStrategy read from here (an engine's variant takes a copy).
_STORED = select(*Strategy.__table__.columns).where(Strategy.strategy_id == bindparam("strategy_id"))
_LOADED_SIZE = 256
_loaded: dict[str, StoredStrategy] = {}


class StrategyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def locked(self, strategy_id: str) -> Strategy | None:
        """The row, read fresh and locked until the transaction ends, so that what is written from it was not
        changed meanwhile (no lost update): `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite, which has no row
        locks, a write that changes nothing first takes the database's write lock (other writers wait)."""
        if self.session.get_bind().dialect.name == "sqlite":
            touch = update(Strategy).where(Strategy.strategy_id == strategy_id).values(strategy_id=Strategy.strategy_id)
            await self.session.execute(touch.execution_options(synchronize_session=False))
        return await self.session.get(Strategy, strategy_id, with_for_update=True, populate_existing=True)

    async def stored(self, strategy_id: str) -> StoredStrategy | None:
        """The strategy as stored now (every decision reads it: it may have been edited, by any process). The row
        is read as columns, and a definition already checked as it stands is not checked again (`_loaded`)."""
        row = (await self.session.execute(_STORED, {"strategy_id": strategy_id})).one_or_none()
        if row is None:
            return None
        key = repr(tuple(row))
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = load(row)  # type: ignore[arg-type]  # the row has the columns `load` reads
            if len(_loaded) >= _LOADED_SIZE:
                _loaded.pop(next(iter(_loaded)))
            _loaded[key] = loaded
        return loaded

    async def all(self, *, include_inactive: bool = False, custom_only: bool = False) -> list[StoredStrategy]:
        """Every stored strategy (the active ones unless `include_inactive`), oldest first, each read alone."""
        query = select(Strategy).order_by(Strategy.created_at, Strategy.strategy_id)
        if not include_inactive:
            query = query.where(Strategy.is_active)
        if custom_only:
            query = query.where(Strategy.is_builtin.is_(False))
        return [load(row) for row in (await self.session.scalars(query)).all()]

    async def accounts_on(self, strategy_id: str) -> list[int]:
        """The accounts whose strategy it is, by id."""
        query = select(Account.id).where(Account.strategy_id == strategy_id).order_by(Account.id)
        return list((await self.session.scalars(query)).all())

    async def upsert(self, strategy: TradingStrategy, *, builtin: bool, now: datetime) -> None:
        row = await self.session.get(Strategy, strategy.strategy_id)
        if row is None:
            row = Strategy(strategy_id=strategy.strategy_id, created_at=now, is_builtin=builtin)
            self.session.add(row)
        row.strategy_name = strategy.strategy_name
        row.strategy_type = strategy.strategy_type
        row.prompt_template = strategy.prompt_template
        row.risk_parameters = strategy.risk_parameters.model_dump()
        row.timeframe_preference = list(strategy.timeframe_preference)
        row.max_positions = strategy.max_positions
        row.position_sizing = strategy.position_sizing
        row.is_active = strategy.is_active
        await self.session.flush()

    async def set_active(self, strategy_id: str, active: bool) -> None:
        row = await self.session.get(Strategy, strategy_id)
        if row is not None:
            row.is_active = active
            await self.session.flush()
