"""The dashboard's other pages open in Chromium with what they are about: the model that decided and its cost on the
models page, the experiments and backtests pages, and an alert raised by a halt on the alerts page. Each page's
screenshot is kept (test-artifacts/screenshots)."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login, screenshot
from tests.conftest import ADMIN_KEY


async def _open(page: Page, path: str) -> None:
    response = await page.goto(path)
    assert response is not None and response.status == 200, f"{path}: {response and response.status}"
    assert await page.locator("main#main").count() == 1, path


async def test_models_experiments_backtests_and_alerts_pages(page: Page, dashboard: Dashboard) -> None:
    await dashboard.decide(1)
    second = await dashboard.new_account("second")
    halted = await dashboard.api.post(f"/api/v1/accounts/{second}/halt", json={"reason": "browser test"})
    assert halted.status_code == 200, halted.text
    await login(page, ADMIN_KEY)

    await _open(page, "/models")
    assert dashboard.model.name in await page.inner_text("main#main"), "the model that decided is listed"
    await screenshot(page, "models")

    await _open(page, "/experiments")
    await screenshot(page, "experiments")

    await _open(page, "/backtests")
    await screenshot(page, "backtests-none")  # test_dashboard_backtests keeps the one with a report

    await _open(page, "/alerts")
    # The alert is stored in the background: the page shows it once stored (at once, or on its next live update).
    row = await page.wait_for_selector('#alerts tr[data-alert-kind="account_halted"]')
    assert row is not None and "browser test" in await row.inner_text(), "the halt's alert, with its reason"
    await screenshot(page, "alerts")
