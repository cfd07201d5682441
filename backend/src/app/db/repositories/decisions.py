"""Stored decisions (one per account and cycle) with their provenance."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from functools import cache
from typing import Any, get_args
from typing import cast as cast_type

import orjson
from sqlalchemy import Select, String, Table, Text, bindparam, cast, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.inserts import insert_row, insert_rows
from app.db.models import Decision, DecisionProvenance, Order
from app.schemas.decision_result import DecisionResult, DecisionStatus


def symbols_key(symbols: list[str]) -> str:
    """The searchable form of a decision's assets: `,BTC,ETH,` (a LIKE on `,BTC,` finds BTC only)."""
    return "," + ",".join(symbols) + ","


_decisions = Decision.__table__.c
_orders = Order.__table__.c
# What a history list reads of a decision, in the order `_decision_json` unpacks it. The context snapshot and the
# prompt (the bulk of a row) are left out; the JSON columns are read as text, not decoded (see `_decision_json`),
# and so are SQLite's times (PostgreSQL's driver returns datetimes whatever the type says; `_time` takes both).
_LIST_COLUMNS = (
    _decisions.id,
    _decisions.account_id,
    type_coerce(_decisions.cycle_time, String).label("cycle_time"),
    type_coerce(_decisions.created_at, String).label("created_at"),
    _decisions.trigger,
    _decisions.status,
    cast(_decisions.symbols, Text).label("symbols"),
    _decisions.strategy_id,
    cast(_decisions.final_decision, Text).label("final_decision"),
    cast(_decisions.parsed_decision, Text).label("parsed_decision"),
    cast(_decisions.validation_result, Text).label("validation_result"),
    _decisions.is_fallback,
    _decisions.error,
    _decisions.failure,
    cast(_decisions.context_errors, Text).label("context_errors"),
    cast(_decisions.execution_errors, Text).label("execution_errors"),
    _decisions.model_requested,
    _decisions.model_served,
    _decisions.provider,
    _decisions.finish_reason,
    _decisions.prompt_tokens,
    _decisions.completion_tokens,
    _decisions.total_tokens,
    _decisions.cost_usd,
    _decisions.latency_ms,
    _decisions.raw_response,
    _decisions.first_raw_response,
    _decisions.experiment_id,
    _decisions.variant_id,
    _decisions.shadow_of,
)
# The same statement object for every request of a kind, so its cache key is computed once.
_ORDERS_OF = (
    select(
        _orders.decision_id,
        _orders.client_order_id,
        _orders.symbol,
        _orders.side,
        _orders.type,
        _orders.kind,
        _orders.status,
        _orders.quantity,
        _orders.trigger_price,
        _orders.filled_quantity,
        _orders.avg_fill_price,
        _orders.reject_reason,
    )
    .where(_orders.decision_id.in_(bindparam("ids", expanding=True)))
    .order_by(_orders.id)
)
# What a decision learns after its row was first stored: written in one UPDATE at the end of its cycle.
_OUTCOME_FIELDS = (
    "status",
    "error",
    "failure",
    "is_fallback",
    "validation_result",
    "final_decision",
    "execution_errors",
    "model_served",
    "provider",
    "raw_response",
    "first_raw_response",
    "parsed_decision",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms",
)
_RECORD_OUTCOME = (
    update(cast_type(Table, Decision.__table__))
    .where(_decisions.id == bindparam("decision_id"))
    .values({field: bindparam(f"new_{field}") for field in _OUTCOME_FIELDS})
)
# The decision already made for a candle, assets and strategy (not one that failed or is still running).
# A candle with only these decisions was not decided: a repeat request, or the agent's next start, decides it again.
UNFINISHED = ("error", "pending", "interrupted")
_MADE_FOR = (
    select(Decision)
    .where(
        Decision.account_id == bindparam("account_id"),
        Decision.cycle_time == bindparam("cycle_time"),
        Decision.symbols_key == bindparam("symbols_key"),
        Decision.strategy_id == bindparam("strategy_id"),
        Decision.status.not_in(UNFINISHED),
        Decision.shadow_of.is_(None),  # an experiment's shadow decision was never executed
    )
    .order_by(Decision.id.desc())
    .limit(1)
)
_STATUSES = frozenset(get_args(DecisionStatus))
_NO_OBJECT = (None, "null", "{}")  # stored JSON that `to_result` reads as no decision / no validation


@cache
def _history_query(before_id: bool, since: bool, until: bool, symbol: bool) -> Select[Any]:
    # The account's own decisions: an experiment's shadow decisions are read through the experiment (or by id).
    query = select(*_LIST_COLUMNS).where(
        _decisions.account_id == bindparam("account_id"), _decisions.shadow_of.is_(None)
    )
    if before_id:
        query = query.where(_decisions.id < bindparam("before_id"))
    if since:
        query = query.where(_decisions.cycle_time >= bindparam("since"))
    if until:
        query = query.where(_decisions.cycle_time <= bindparam("until"))
    if symbol:
        query = query.where(_decisions.symbols_key.contains(bindparam("symbol_key")))
    return query.order_by(_decisions.id.desc()).limit(bindparam("limit"))


class DecisionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, decision: Decision, provenance: DecisionProvenance | None = None) -> Decision:
        """Store a new decision (its `id` is set) and what it was made from; the objects stay outside the
        session."""
        await insert_row(self.session, decision)
        if provenance is not None:
            provenance.decision_id = decision.id
            await insert_rows(self.session, [provenance])
        return decision

    async def provenance(self, decision_id: int) -> DecisionProvenance | None:
        return await self.session.get(DecisionProvenance, decision_id)

    async def record_outcome(self, decision: Decision) -> None:
        """Store what the decision's cycle learned after its row was added (status, validation, the model's
        answer, usage): one UPDATE of those columns."""
        values = {f"new_{field}": getattr(decision, field) for field in _OUTCOME_FIELDS}
        await self.session.execute(_RECORD_OUTCOME, {"decision_id": decision.id, **values})

    async def made_for(
        self, account_id: int, cycle_time: datetime, symbols_key: str, strategy_id: str
    ) -> Decision | None:
        """The newest finished decision of the account for that candle, assets (`symbols_key`) and strategy."""
        params = {
            "account_id": account_id,
            "cycle_time": cycle_time,
            "symbols_key": symbols_key,
            "strategy_id": strategy_id,
        }
        return await self.session.scalar(_MADE_FOR, params)

    async def loop_decision(self, account_id: int, cycle_time: datetime) -> Decision | None:
        """The loop's decision of that candle for the account (not interrupted, not a shadow): at most one exists."""
        query = select(Decision).where(
            Decision.account_id == account_id,
            Decision.cycle_time == cycle_time,
            Decision.trigger == "loop",
            Decision.shadow_of.is_(None),
            Decision.status != "interrupted",
        )
        return await self.session.scalar(query)

    async def pending_ids(self, account_id: int) -> list[int]:
        """The account's decisions still pending (shadows aside)."""
        query = select(Decision.id).where(
            Decision.account_id == account_id, Decision.status == "pending", Decision.shadow_of.is_(None)
        )
        return list((await self.session.scalars(query)).all())

    async def get(self, decision_id: int) -> Decision | None:
        return await self.session.get(Decision, decision_id)

    async def history(
        self,
        account_id: int,
        *,
        limit: int = 100,
        symbol: str | None = None,
        before_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, each decision with its orders as the JSON of its `DecisionResult` (without provenance),
        ready for `orjson.dumps`. `symbol` keeps decisions whose cycle covered that asset."""
        query = _history_query(before_id is not None, since is not None, until is not None, symbol is not None)
        params: dict[str, Any] = {"account_id": account_id, "limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        if since is not None:
            params["since"] = since
        if until is not None:
            params["until"] = until
        if symbol is not None:
            params["symbol_key"] = symbols_key([symbol])
        connection = await self.session.connection()
        rows = (await connection.execute(query, params)).all()
        orders: dict[int, list[dict[str, Any]]] = {row[0]: [] for row in rows}
        if rows:
            for order in await connection.execute(_ORDERS_OF, {"ids": list(orders)}):
                orders[order[0]].append(
                    {
                        "client_order_id": order[1],
                        "symbol": order[2],
                        "side": order[3],
                        "type": order[4],
                        "kind": order[5],
                        "status": order[6],
                        "quantity": float(order[7]),
                        "trigger_price": _float(order[8]),
                        "filled_quantity": float(order[9]),
                        "avg_fill_price": _float(order[10]),
                        "reject_reason": order[11],
                    }
                )
        return [_decision_json(tuple(row), orders[row[0]]) for row in rows]

    async def last_cycle_time(self) -> datetime | None:
        """The newest candle a decision was made for (one interrupted or still pending is decided again)."""
        query = select(func.max(Decision.cycle_time)).where(
            Decision.status.not_in(("pending", "interrupted")), Decision.shadow_of.is_(None)
        )
        return await self.session.scalar(query)

    async def end_pending(self, status: str, reason: str, *, ids: Collection[int] | None = None) -> list[int]:
        """Give pending decisions (all of them, or those among `ids`) a final `status` with the reason; returns
        the ids changed. A decision that finished meanwhile is left as it is."""
        query = update(Decision).where(Decision.status == "pending")
        if ids is not None:
            if not ids:
                return []
            query = query.where(Decision.id.in_(sorted(ids)))
        ended = await self.session.scalars(
            query.values(status=status, error=reason, is_fallback=True).returning(Decision.id),
            execution_options={"synchronize_session": False},
        )
        return sorted(ended.all())


def _decision_json(row: tuple[Any, ...], orders: list[dict[str, Any]]) -> dict[str, Any]:
    """A history row as the JSON of its `DecisionResult`: once written out, the same JSON as `to_result(row, orders)`
    gives (tests/integration/test_decision_history.py holds them equal).

    The decision, the model's decision and the validation are stored as their models dumped them when the cycle
    ran, so that JSON is written out as stored (`orjson.Fragment`, spacing included) instead of being parsed and
    validated again, which made up most of a history request. A change to those models that changes their JSON
    therefore needs the stored rows migrated too. That JSON is strict: orjson writes NaN and infinities as null,
    and migration 0003 rewrote the older rows that held them. A row with an unknown status goes through
    `DecisionResult` as before."""
    (
        id_,
        account_id,
        cycle_time,
        created_at,
        trigger,
        status,
        symbols,
        strategy_id,
        final_decision,
        parsed_decision,
        validation_result,
        is_fallback,
        error,
        failure,
        context_errors,
        execution_errors,
        model_requested,
        model_served,
        provider,
        finish_reason,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        cost_usd,
        latency_ms,
        raw_response,
        first_raw_response,
        experiment_id,
        variant_id,
        shadow_of,
    ) = row
    texts = (final_decision, parsed_decision, validation_result)
    exact = status in _STATUSES
    nested = [None if t in _NO_OBJECT else orjson.Fragment(t) if exact else json.loads(t) for t in texts]
    item = {
        "id": id_,
        "account_id": account_id,
        "cycle_time": _time(cycle_time),
        "created_at": _time(created_at),
        "trigger": trigger,
        "status": status,
        "symbols": _json_list(symbols),
        "strategy_id": strategy_id,
        "decision": nested[0],
        "model_decision": nested[1],
        "validation": nested[2],
        "orders": orders,
        "is_fallback": bool(is_fallback),
        "error": error,
        "failure": failure,
        "context_errors": _json_list(context_errors),
        "execution_errors": _json_list(execution_errors),
        "model_requested": model_requested,
        "model_served": model_served,
        "provider": provider,
        "finish_reason": finish_reason,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "cost_usd": _float(cost_usd),
        },
        "latency_ms": _float(latency_ms),
        "raw_response": raw_response,
        "first_raw_response": first_raw_response,
        "experiment_id": experiment_id,
        "variant_id": variant_id,
        "shadow_of": shadow_of,
        "provenance": None,
    }
    if exact:
        return item
    return DecisionResult.model_validate(item).model_dump(mode="json")


def _time(value: datetime | str) -> str:
    """As pydantic writes an aware UTC datetime: ISO 8601 with `Z`, and the microseconds only when there are
    some. SQLite's stored text (naive UTC, `2025-12-01 00:05:00.000000`) is rewritten as text: parsing it into a
    datetime and formatting that were 13% of a history request's samples in a py-spy profile."""
    if isinstance(value, str):
        micro = value[20:]
        if len(value) == 26 and value[10] == " " and value[19] == "." and micro.isdigit():
            return f"{value[:10]}T{value[11:19]}{'' if micro == '000000' else '.' + micro}Z"
        parsed = datetime.fromisoformat(value)  # any other form a row may hold: read as UTCDateTime reads it
        value = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _json_list(text: str | None) -> list[Any]:
    return list(orjson.loads(text) or []) if text is not None else []
