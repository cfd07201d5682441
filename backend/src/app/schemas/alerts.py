"""The API's view of a stored alert."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.api import WALL_CLOCK


class AlertView(BaseModel):
    """An alert: raised once per kind, subject and quiet period (`ALERT_QUIET_S`); repeats inside the period are
    counted here and not sent again."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(..., description="account_halted, order_rejected, model_circuit_open, ... (AlertKind)")
    subject: str = Field(..., description="What it is about, e.g. 'account 3 BTC' or 'model x/y'; with kind, the key")
    severity: str = Field(..., description="critical | warning | info")
    title: str
    message: str = Field(..., description="The reason, plain text")
    account_id: int | None = Field(None, description="None: agent-wide (loop, market, model circuit)")
    first_at: datetime = Field(..., description=f"When it was raised, by the {WALL_CLOCK}")
    last_at: datetime = Field(..., description=f"Its last repeat, by the {WALL_CLOCK}")
    repeats: int = Field(..., description="Times it was raised again within the quiet period (not sent again)")
    delivery: str = Field(..., description="pending | delivered | not configured | failed: <reason>")
    delivered_at: datetime | None = None
