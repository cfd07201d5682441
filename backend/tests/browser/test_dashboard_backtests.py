"""A backtest's report opens from the dashboard's backtests page in Chromium, behind the dashboard's login: the page
the backtest wrote, its picture drawn by the browser (an inline PNG, nothing loaded from elsewhere)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login, path_of, screenshot
from tests.conftest import ADMIN_KEY

# One asset, one day of 1h candles on the simulator, the rule baseline: 25 cycles, a few seconds of a job process.
BACKTEST = {
    "assets": ["BTC"],
    "interval": "1h",
    "long_interval": "4h",
    "from": "2025-03-01",
    "to": "2025-03-02",
    "strategy": "aggressive",
    "model": "baseline",
    "data": "simulated",
    "seed": 5,
}
HANG_GUARD_S = 180  # a job that has not ended by then is a failure, not a slow machine


async def _until_ended(dashboard: Dashboard, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        view = (await dashboard.api.get(f"/api/v1/backtests/{run_id}")).json()
        if view["status"] not in ("queued", "running"):
            assert isinstance(view, dict)
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"backtest {run_id} has not ended after {HANG_GUARD_S} s")


async def test_a_backtest_report_opens_from_the_backtests_page(page: Page, dashboard: Dashboard) -> None:
    created = await dashboard.api.post("/api/v1/backtests", json=BACKTEST)
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    view = await _until_ended(dashboard, run_id)
    assert view["status"] == "done", view["error"]

    await login(page, ADMIN_KEY)
    await page.goto("/backtests")
    row = page.locator(f'#backtests tr[data-backtest-id="{run_id}"]')
    assert await row.get_attribute("data-status") == "done"
    await screenshot(page, "backtests")

    async with page.expect_navigation() as navigation:
        await row.locator("a.report-link").click()
    response = await navigation.value
    assert response is not None and response.status == 200
    assert path_of(page) == f"/backtests/{run_id}/report"
    picture = page.locator('img[src^="data:image/png"]').first
    assert await picture.evaluate("img => img.complete && img.naturalWidth > 0"), "the browser drew the picture"
    await screenshot(page, "backtest-report")
