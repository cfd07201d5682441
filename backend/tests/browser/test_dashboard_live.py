"""Live updates of an open account page: a halt made elsewhere (through the API) shows without a reload."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Page, Request, expect

from tests.browser.conftest import TIMEOUT_MS, Dashboard, login
from tests.conftest import ADMIN_KEY


def _poll(request: Request) -> bool:
    return urlsplit(request.url).path == "/events"


async def test_a_halt_made_elsewhere_shows_on_the_open_account_page(page: Page, dashboard: Dashboard) -> None:
    await login(page, ADMIN_KEY)
    async with page.expect_response(_poll):  # the page has its first version before the halt
        await page.goto("/accounts/1")
    await page.evaluate("window.__marker = 1")
    halted = await dashboard.api.post("/api/v1/accounts/1/halt", json={"reason": "from elsewhere"})
    assert halted.status_code == 200, halted.text
    await expect(page.locator("#account-status")).to_have_text("halted", timeout=TIMEOUT_MS)
    assert await page.evaluate("window.__marker") == 1, "updated in place, not reloaded"
