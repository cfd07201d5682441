"""What must hold in a database an agent process left behind, however it stopped (the kill tests check it from the
outside: `trading-agent run` in test_kill_restart, the scheduler and its workers in test_workers)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.sql import rows, scalar


async def check_records(db: AsyncEngine) -> None:
    """What must hold whenever the agent is not running, however it stopped."""
    duplicates = await rows(
        db,
        "SELECT account_id, venue_order_id, count(*) FROM orders WHERE venue_order_id IS NOT NULL "
        "GROUP BY account_id, venue_order_id HAVING count(*) > 1",
    )
    assert not duplicates, f"venue order ids reused: {duplicates}"
    duplicates = await rows(
        db,
        "SELECT account_id, client_order_id, count(*) FROM orders "
        "GROUP BY account_id, client_order_id HAVING count(*) > 1",
    )
    assert not duplicates, f"an order sent twice (client order ids repeated): {duplicates}"
    twice = await rows(
        db,
        "SELECT account_id, cycle_time, count(*) FROM decisions WHERE trigger = 'loop' AND shadow_of IS NULL "
        "AND status <> 'interrupted' GROUP BY account_id, cycle_time HAVING count(*) > 1",
    )
    assert not twice, f"a candle decided twice by the loop: {twice}"
    duplicates = await rows(
        db,
        "SELECT account_id, venue_fill_id, count(*) FROM fills GROUP BY account_id, venue_fill_id HAVING count(*) > 1",
    )
    assert not duplicates, f"fill ids reused: {duplicates}"
    failed = await rows(db, "SELECT id, error FROM decisions WHERE status = 'error'")
    assert not failed, f"failed decisions: {failed}"
    # Every order's fills add up to what it says was filled; a filled order has its fills.
    mismatched = await rows(
        db,
        "SELECT o.client_order_id, o.status, o.quantity, o.filled_quantity, coalesce(sum(f.quantity), 0) "
        "FROM orders o LEFT JOIN fills f ON f.order_id = o.id "
        "GROUP BY o.id, o.client_order_id, o.status, o.quantity, o.filled_quantity "
        "HAVING abs(o.filled_quantity - coalesce(sum(f.quantity), 0)) > 1e-9 "
        "OR (o.status = 'filled' AND count(f.id) = 0)",
    )
    assert not mismatched, f"orders whose fills do not add up: {mismatched}"
    orphan_fills = await rows(
        db, "SELECT venue_fill_id, client_order_id FROM fills WHERE order_id IS NULL AND reason <> 'liquidation'"
    )
    assert not orphan_fills, f"fills of no stored order: {orphan_fills}"
    # One open position per asset, each protected by an open stop covering its size.
    doubled = await rows(
        db,
        "SELECT account_id, symbol, count(*) FROM positions WHERE status = 'open' "
        "GROUP BY account_id, symbol HAVING count(*) > 1",
    )
    assert not doubled, f"two open positions for one asset: {doubled}"
    unprotected = await rows(
        db,
        "SELECT p.account_id, p.symbol, p.size, coalesce(sum(o.quantity), 0) FROM positions p "
        "LEFT JOIN orders o ON o.account_id = p.account_id AND o.symbol = p.symbol "
        "AND o.kind = 'stop_loss' AND o.status = 'open' "
        "WHERE p.status = 'open' GROUP BY p.id, p.account_id, p.symbol, p.size "
        "HAVING coalesce(sum(o.quantity), 0) < p.size - 1e-9",
    )
    assert not unprotected, f"open positions without a stop covering them: {unprotected}"


async def check_stopped_cleanly(db: AsyncEngine) -> int:
    """After a graceful stop: nothing pending, and the venue's last word (the equity snapshot written with the
    last decision) matches the database's ledger and positions. Returns how many margin comparisons were made
    (the test requires some, so that the checks cannot all be skipped)."""
    compared = 0
    pending = await rows(db, "SELECT id, cycle_time FROM decisions WHERE status = 'pending'")
    assert not pending, f"decisions left pending by a graceful stop: {pending}"
    for (account_id,) in await rows(db, "SELECT id FROM accounts"):
        snapshot = await rows(
            db,
            "SELECT wallet_balance, margin_used, realized_pnl, fees_paid, funding_net FROM equity_snapshots "
            f"WHERE account_id = {account_id} ORDER BY id DESC LIMIT 1",
        )
        if not snapshot:
            continue
        wallet, margin_used, realized, fees, funding_net = snapshot[0]
        initial = await scalar(db, f"SELECT initial_balance FROM accounts WHERE id = {account_id}")
        ledger_realized = await scalar(
            db, f"SELECT coalesce(sum(realized_pnl), 0) FROM fills WHERE account_id = {account_id}"
        )
        ledger_fees = await scalar(db, f"SELECT coalesce(sum(fee), 0) FROM fills WHERE account_id = {account_id}")
        ledger_funding = await scalar(
            db, f"SELECT coalesce(sum(amount), 0) FROM funding_payments WHERE account_id = {account_id}"
        )
        assert round(realized, 6) == round(ledger_realized, 6)
        assert round(fees, 6) == round(ledger_fees, 6)
        assert round(funding_net, 6) == round(ledger_funding, 6)
        # equity identity: wallet = initial + realized - fees + funding (unrealized PnL comes on top)
        assert round(wallet, 6) == round(initial + ledger_realized - ledger_fees + ledger_funding, 6)
        resting = await scalar(
            db,
            f"SELECT count(*) FROM orders WHERE account_id = {account_id} AND status = 'open' "
            "AND type = 'limit' AND reduce_only = false",
        )
        if not resting:  # no margin reserved by resting limits: the venue's margin is its positions'
            stored_margin = await scalar(
                db,
                f"SELECT coalesce(sum(margin), 0) FROM positions WHERE account_id = {account_id} AND status = 'open'",
            )
            assert round(margin_used, 6) == round(stored_margin, 6), "the venue's positions are not the database's"
            compared += 1
    return compared
