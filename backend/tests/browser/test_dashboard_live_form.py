"""Live updates and a form being filled: while the trader is filling in a form on an open page the page is left alone,
and a change made meanwhile shows once they leave the form (not only at the next change)."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login
from tests.browser.test_dashboard_live import _poll
from tests.conftest import ADMIN_KEY


async def test_a_change_while_a_form_is_filled_shows_once_the_form_is_left(page: Page, dashboard: Dashboard) -> None:
    await login(page, ADMIN_KEY)
    async with page.expect_response(_poll):
        await page.goto("/accounts/1")
    assert await page.locator('#positions tr[data-asset="BTC"]').count() == 0
    await page.fill('form.control[data-action="halt"] input[name="reason"]', "typing a reason")

    await dashboard.decide(1)  # opens positions while the trader types
    # Two polls after the decision: the first saw the change while the form was being filled, and was handled
    # before the second was sent (the script polls one at a time).
    for _ in range(2):
        async with page.expect_request(_poll):
            pass
    assert await page.evaluate("document.body.dataset.swaps") == "0", "the form being filled is left alone"
    assert await page.input_value('form.control[data-action="halt"] input[name="reason"]') == "typing a reason"

    await page.evaluate("document.activeElement.blur()")  # the trader leaves the form
    await page.wait_for_selector('#positions tr[data-asset="BTC"]')
