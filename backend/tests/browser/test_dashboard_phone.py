"""The dashboard is readable on a phone: at a phone's width (390 CSS pixels) no page is wider than the screen (wide
tables scroll inside their own box), so nothing needs a sideways scroll of the whole page."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import Browsing, Dashboard, login, screenshot
from tests.conftest import ADMIN_KEY

PHONE = {"width": 390, "height": 844}


async def test_every_page_fits_a_phone_screen(browsing: Browsing, dashboard: Dashboard) -> None:
    decision = await dashboard.decide(1)  # positions, orders and fills to show
    page: Page = await browsing.new_page()
    await page.set_viewport_size(PHONE)
    await login(page, ADMIN_KEY)
    for path, name in [
        ("/", "phone-overview"),
        ("/accounts/1", "phone-account"),
        ("/accounts/1/decisions", "phone-decisions"),
        (f"/decisions/{decision}", "phone-provenance"),
        ("/models", "phone-models"),
        ("/alerts", "phone-alerts"),
    ]:
        response = await page.goto(path)
        assert response is not None and response.status == 200, path
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide on a {PHONE['width']} px screen"
        await screenshot(page, name)
