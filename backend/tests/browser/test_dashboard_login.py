"""Logging in to the dashboard with an API key, in Chromium: a wrong key is refused on the login page, the admin key
lands on the overview, a page without a session sends to the login page, and logging out ends the session."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login, path_of, screenshot
from tests.conftest import ADMIN_KEY


async def test_a_wrong_key_is_refused_and_the_admin_key_lands_on_the_overview(page: Page, dashboard: Dashboard) -> None:
    await page.goto("/")
    assert path_of(page) == "/login", "a page without a session sends to the login page"
    await screenshot(page, "login")

    await login(page, "ta_admin_not-the-key-0123456789abcdefghijkl")
    assert path_of(page) == "/login"
    error = await page.text_content("p.error")
    assert error and error.strip(), "the refusal says why"
    await page.goto("/")
    assert path_of(page) == "/login", "a refused key opens no session"

    await login(page, ADMIN_KEY)
    assert path_of(page) == "/"
    row = page.locator('#accounts tr[data-account-id="1"]')
    assert await row.count() == 1, "the default paper account is listed"
    assert await row.locator("a.account-link").get_attribute("href") == "/accounts/1"
    for section in ("#loop", "#loop-cycles", "#parts", "#recent-alerts"):
        assert await page.locator(section).count() == 1, section
    parts = await page.text_content("#parts")
    assert parts and "SIMULATED" in parts.upper(), "what is simulated is said"
    await screenshot(page, "overview")

    async with page.expect_navigation():
        await page.click("#logout")
    assert path_of(page) == "/login"
    await page.goto("/accounts/1")
    assert path_of(page) == "/login", "logged out: the session no longer opens pages"
