"""A liquidation at the venue, end to end: a live account on a fake Binance USD-M or Hyperliquid venue (ccxt over a
real socket, the real engine in process) opens a long; its stop is cancelled by hand at the venue and the price falls
past the position's liquidation price between two cycles, so the venue closes it with a liquidation fill (the whole
isolated margin lost, the rest charged as the clearance fee). The next cycle's reconciliation closes the database row
with `exit_reason="liquidation"` and the venue's PnL and fees, and that decision's context (and the prompt the model
reads) lists the liquidated trade.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.live_support import (
    VENUES,
    assert_db_matches_venue,
    db_positions,
    live_agent,
    no_position_left_unprotected,
    stops_at,
)

pytestmark = pytest.mark.db

FEE_ROUNDING = 1e-5  # the venues write fees and PnL with 6 (Hyperliquid) or 8 (Binance) decimals


@pytest.mark.parametrize("venue", VENUES)
async def test_a_liquidation_at_the_venue_closes_the_position_with_the_venues_loss_and_the_model_is_told(
    venue: str, database_url: str, tmp_path: Path
) -> None:
    async with live_agent(venue, tmp_path, database_url=database_url) as rig:  # type: ignore[arg-type]
        fake = rig.fake
        opened = await rig.cycle()
        [stop] = stops_at(fake)
        [held] = fake.book.positions()
        assert held.size > 0 and held.liquidation_price is not None and held.liquidation_price < (stop.trigger or 0)
        fake.book.cancel(order_id=stop.id)  # by hand: nothing stands between the position and its liquidation
        rig.model.opening = False

        fake.book.set_price("BTC", held.liquidation_price * 0.99)  # between cycles: the venue liquidates

        assert fake.book.positions() == []
        fills = fake.book.fills()
        [liquidation] = [f for f in fills if f.liquidation]
        assert liquidation.side == "sell" and liquidation.quantity == pytest.approx(held.size)
        assert liquidation.price == pytest.approx(held.liquidation_price)
        seen = len(rig.model.requests)

        await rig.cycle()

        [row] = await db_positions(rig.agent, rig.account_id)
        assert row.status == "closed" and row.exit_reason == "liquidation"
        assert row.decision_id == opened.id
        assert row.exit_price == pytest.approx(liquidation.price)
        assert row.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills), abs=FEE_ROUNDING)
        assert row.fees == pytest.approx(sum(f.fee for f in fills), abs=FEE_ROUNDING)
        entry_fee = sum(f.fee for f in fills if not f.liquidation)
        # the whole isolated margin is lost, and the entry's fee with it
        assert row.realized_pnl - row.fees == pytest.approx(-(held.margin + entry_fee), abs=2 * FEE_ROUNDING)

        request = rig.model.requests[seen]  # the decision right after the liquidation
        assert request.context.account_state.open_positions == []
        [trade] = request.context.recent_trades["BTC"]
        assert trade.exit_reason == "liquidation" and trade.side == "long"
        assert trade.realized_pnl == pytest.approx(row.realized_pnl) and trade.fees == pytest.approx(row.fees)
        assert trade.exit_price == pytest.approx(liquidation.price)
        assert "(liquidation)" in request.user_prompt.split("RECENT BTC TRADES", 1)[1].splitlines()[0]
        await assert_db_matches_venue(rig.agent, rig.account_id, fake)
        no_position_left_unprotected(fake)
