"""The kill switch through the HTTP API when the venue fails (README "Live trading": a live account is halted all the
same and the answer is 502 naming what is left; halt again to flatten). A live account on a fake Binance USD-M or
Hyperliquid venue (ccxt over a real socket, the real engine and app in process) holds a long with its stop and
target; `POST /api/v1/accounts/{id}/halt` is sent while the venue does not answer, or refuses the close.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.live_support import (
    VENUES,
    LiveRig,
    assert_db_matches_venue,
    db_orders,
    db_positions,
    halt,
    live_agent,
    order_creates,
    served,
    stops_at,
)

pytestmark = pytest.mark.db


async def assert_halted(client: httpx.AsyncClient, rig: LiveRig) -> None:
    """The account reads HALTED and its history says why."""
    account = await client.get(f"/api/v1/accounts/{rig.account_id}")
    assert account.status_code == 200 and account.json()["status"] == "HALTED", account.text
    latest = (await client.get(f"/api/v1/accounts/{rig.account_id}/history")).json()[0]
    assert (latest["from_status"], latest["to_status"], latest["reason"]) == ("ACTIVE", "HALTED", "e2e kill switch")


async def assert_sends_nothing(rig: LiveRig) -> None:
    """A cycle of the (halted) account is skipped and places no order."""
    sent = len(order_creates(rig.fake))
    skipped = await rig.cycle()
    assert skipped.status == "skipped" and skipped.orders == [], skipped
    assert len(order_creates(rig.fake)) == sent


def venue_down(fake: Any) -> None:
    """Every request to the venue answers 503 until `venue_up`."""
    fake.fail(503, {"code": -1001, "msg": "Service Unavailable."}, times=1_000_000)


def venue_up(fake: Any) -> None:
    with fake._lock:
        fake._faults.clear()


@pytest.mark.parametrize("venue", VENUES)
async def test_halting_while_the_venue_is_down_answers_502_halts_the_account_and_halting_again_flattens_it(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        opened = await rig.cycle()
        assert opened.status == "executed" and not opened.execution_errors, opened
        [stop] = stops_at(fake)
        async with served(rig.settings, rig.agent) as client:
            venue_down(fake)
            answer = await halt(client, rig)

            assert answer.status_code == 502, answer.text
            detail = answer.json()["detail"]
            assert f"account {rig.account_id} is HALTED" in detail and "could not be flattened" in detail, detail
            assert "halt again" in detail
            [held] = fake.book.positions()  # nothing was done at the venue: the position keeps its stop
            assert held.size > 0 and stops_at(fake) == [stop] and stop.status == "open"
            [row] = await db_positions(rig.agent, rig.account_id)
            assert row.status == "open"
            await assert_halted(client, rig)

            venue_up(fake)
            await assert_sends_nothing(rig)
            again = await halt(client, rig)

            assert again.status_code == 200, again.text
            assert again.json()["status"] == "HALTED"
            assert fake.book.positions() == [] and fake.book.open_orders() == []
            [row] = await db_positions(rig.agent, rig.account_id)
            assert row.status == "closed" and row.exit_reason == "close"
            await assert_db_matches_venue(rig.agent, rig.account_id, fake)


@pytest.mark.parametrize("venue", VENUES)
async def test_halting_when_the_venue_refuses_the_close_answers_502_naming_the_position_left_with_its_stop(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        opened = await rig.cycle()
        assert opened.status == "executed" and not opened.execution_errors, opened
        [stop] = stops_at(fake)
        resting = fake.book.place("BTC", "buy", "limit", 0.01, price=round(fake.book.mark("BTC") * 0.9))
        fake.book.reject_next(
            lambda o: o.type == "market" and o.reduce_only, "insufficient_margin", "Margin is insufficient."
        )
        async with served(rig.settings, rig.agent) as client:
            answer = await halt(client, rig)

            assert answer.status_code == 502, answer.text
            detail = answer.json()["detail"]
            assert f"account {rig.account_id} is HALTED" in detail, detail
            assert "but BTC could not be closed" in detail and "the close was refused" in detail, detail
            assert "keep their stops" in detail
            [held] = fake.book.positions()
            assert held.size > 0 and stops_at(fake) == [stop] and stop.status == "open", "the stop was not kept"
            assert fake.book.order(order_id=resting.id).status == "canceled", "the entry order was not cancelled"
            [row] = await db_positions(rig.agent, rig.account_id)  # mirrored after the halt: still open, its stop
            assert row.status == "open" and row.size == pytest.approx(held.size)
            assert row.stop_loss == pytest.approx(stop.trigger)
            await assert_halted(client, rig)
            await assert_sends_nothing(rig)

            again = await halt(client, rig)

            assert again.status_code == 200, again.text
            assert fake.book.positions() == [] and fake.book.open_orders() == []
            [row] = await db_positions(rig.agent, rig.account_id)
            assert row.status == "closed"
            rows = await db_orders(rig.agent, rig.account_id)  # the entry placed by hand included
            assert len(rows) >= 4 and not [o.client_order_id for o in rows if o.status == "open"]
