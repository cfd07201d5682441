"""Decision endpoints: generate a decision now, and read the stored history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_engine
from app.schemas.decision_result import DecisionResult
from app.services.llm.decision_engine import DecisionEngine

router = APIRouter(prefix="/api/v1/decisions", tags=["decisions"])


class GenerateDecisionRequest(BaseModel):
    """The seed's request shape."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] | None = Field(
        None,
        description="Assets to decide on (BTC, BTCUSDT or BTC/USDT:USDT); defaults to $ASSETS",
        max_length=50,
    )
    account_id: int = Field(..., ge=1)
    force_refresh: bool = Field(False, description="Decide again even if this candle already has a decision")


@router.post("/generate", response_model=DecisionResult)
async def generate_decision(
    body: GenerateDecisionRequest, engine: Annotated[DecisionEngine, Depends(get_engine)]
) -> DecisionResult:
    """Run one decision cycle for the account now (context, model, validation, execution) and return it."""
    return await engine.make_trading_decision(
        body.symbols, body.account_id, trigger="api", force_refresh=body.force_refresh
    )


@router.get("/history", response_model=list[DecisionResult])
async def decision_history(
    engine: Annotated[DecisionEngine, Depends(get_engine)],
    account_id: Annotated[int, Query(ge=1)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    symbol: Annotated[str | None, Query(max_length=40, description="Only decisions covering this asset")] = None,
    before_id: Annotated[int | None, Query(ge=1, description="Page: decisions older than this id")] = None,
    since: Annotated[datetime | None, Query(description="Cycle time from (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Cycle time until (ISO 8601)")] = None,
) -> list[DecisionResult]:
    """Stored decisions of an account, newest first."""
    return await engine.get_decision_history(account_id, limit, symbol, before_id=before_id, since=since, until=until)
