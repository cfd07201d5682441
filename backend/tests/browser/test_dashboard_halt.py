"""Halting a paper account from its page, in Chromium: the halt asks for a confirmation (a required checkbox and the
browser's confirm dialog); once halted, the account's open position keeps its stop order, on the page and in the
database (a paper halt stops decisions and new orders, it does not take the protection away)."""

from __future__ import annotations

from playwright.async_api import Dialog, Page

from tests.browser.conftest import Dashboard, login, path_of, screenshot
from tests.conftest import ADMIN_KEY


async def test_halting_an_account_with_a_position_keeps_its_stop(page: Page, dashboard: Dashboard) -> None:
    await dashboard.decide(1)  # the model opens a long with a stop and a take-profit on each asset
    orders = (await dashboard.api.get("/api/v1/accounts/1/orders")).json()
    stop = next(o for o in orders if o["symbol"] == "BTC" and o["type"] == "stop_market")
    assert stop["status"] == "open"

    await login(page, ADMIN_KEY)
    await page.goto("/accounts/1")
    assert (await page.inner_text("#account-status")).strip().lower() == "active"
    assert await page.locator('#positions tr[data-asset="BTC"]').count() == 1
    for chart in ("#equity-chart", "#drawdown-chart", "#fills"):
        assert await page.locator(chart).count() == 1, chart
    stop_row = page.locator(f'#orders tr[data-order-id="{stop["id"]}"]')
    assert await stop_row.get_attribute("data-order-type") == "stop_market"
    assert await stop_row.get_attribute("data-order-status") == "open"
    for action in ("pause", "resume", "reduce", "halt"):
        assert await page.locator(f'form.control[data-action="{action}"]').count() == 1, action
    assert await page.locator("form#switch-model select[name=model]").count() == 1
    assert await page.locator("form#switch-strategy select[name=strategy_id]").count() == 1
    await screenshot(page, "account")

    asked: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    halt_form = page.locator('form.control[data-action="halt"]')
    assert not await halt_form.evaluate("f => f.checkValidity()"), "the halt cannot be sent unconfirmed"
    await page.check("#halt-confirm")
    assert await halt_form.evaluate("f => f.checkValidity()")
    async with page.expect_navigation():
        await page.click("#halt-submit")
    assert asked, "the halt asked for a confirmation"
    assert path_of(page) == "/accounts/1"
    assert (await page.inner_text("p.flash")).strip()
    assert (await page.inner_text("#account-status")).strip().lower() == "halted"
    stop_row = page.locator(f'#orders tr[data-order-id="{stop["id"]}"]')
    assert await stop_row.get_attribute("data-order-status") == "open", "the stop stays after a paper halt"
    assert await page.locator('#positions tr[data-asset="BTC"]').count() == 1
    await screenshot(page, "account-halted")

    account = (await dashboard.api.get("/api/v1/accounts/1")).json()
    assert account["status"] == "HALTED"
    orders = {o["id"]: o for o in (await dashboard.api.get("/api/v1/accounts/1/orders")).json()}
    assert orders[stop["id"]]["status"] == "open", "the database agrees: the stop is still open"
    open_stops = [o for o in orders.values() if o["type"] == "stop_market" and o["status"] == "open"]
    assert {o["symbol"] for o in open_stops} == {"BTC", "ETH", "SOL"}, "every position keeps its stop"
