"""Alerts from live accounts (a fake Binance USD-M and a fake Hyperliquid, real adapters, real engine): a stop the
venue refuses (the order rejected, the position closed at market) and a venue the account cannot be reconciled with
reach a webhook receiver on 127.0.0.1, once each, and no body carries the venue's credentials or an API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.db import models
from app.services.exchange.registry import LiveAccountRefusedError
from tests.conftest import ADMIN_KEY
from tests.e2e.live_support import VENUES, LiveRig, credentials_of, live_agent, secrets_of
from tests.fakes.webhook_receiver import WebhookReceiver, receiver_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.db


@pytest.fixture(params=VENUES)
async def rig(request: pytest.FixtureRequest, tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[LiveRig]:
    async with live_agent(request.param, tmp_path, alert_urls=SecretStr(receiver.url())) as built:
        yield built


async def _alerts(rig: LiveRig) -> list[models.Alert]:
    await rig.agent.alerts.flush()
    async with rig.agent.sessions() as session:
        return list((await session.scalars(select(models.Alert).order_by(models.Alert.id))).all())


def _no_secret_in(rig: LiveRig, receiver: WebhookReceiver) -> None:
    secrets = [*secrets_of(rig.fake), credentials_of(rig.fake)[1], ADMIN_KEY]
    for sent in receiver.received:
        assert not [s for s in secrets if s and s in sent.raw]


async def test_a_refused_stop_alerts_the_rejection_and_the_position_closed(
    rig: LiveRig, receiver: WebhookReceiver
) -> None:
    rig.fake.book.reject_next(
        lambda o: o.type == "stop_market", "would_trigger_immediately", "Order would immediately trigger."
    )
    await rig.cycle()
    rows = await _alerts(rig)
    assert [(r.kind, r.subject, r.delivery) for r in rows] == [
        ("order_rejected", f"account {rig.account_id} BTC", "delivered"),
        ("stop_failed_position_closed", f"account {rig.account_id} BTC", "delivered"),
    ]
    assert "would trigger immediately" in rows[0].message and "position was closed" in rows[1].message
    # each alert is sent on its own (a slow webhook holds up no other): they may arrive in either order
    assert sorted(r.body["title"] for r in receiver.received) == sorted(
        f"[{r.severity.upper()}] {r.title}" for r in rows
    )
    _no_secret_in(rig, receiver)


async def test_an_account_that_cannot_be_reconciled_is_alerted(rig: LiveRig, receiver: WebhookReceiver) -> None:
    rig.model.opening = False
    await rig.cycle()  # the adapter is up
    if rig.venue == "hyperliquid":
        rig.fake.rate_limit("clearinghouseState")
    else:
        rig.fake.fail(429, match="/fapi/v3/positionRisk")
    with pytest.raises(LiveAccountRefusedError, match="could not reconcile"):
        await rig.cycle()
    [row] = await _alerts(rig)
    assert (row.kind, row.subject, row.account_id) == (
        "reconciliation_mismatch",
        f"account {rig.account_id}",
        rig.account_id,
    )
    assert "could not reconcile with the venue" in row.message and "not traded until it can" in row.message
    assert row.delivery == "delivered" and len(receiver.received) == 1
    _no_secret_in(rig, receiver)
