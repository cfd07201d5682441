"""An account key on the dashboard sees its own account only, as in the API: logging in lands on its account's
page, `/` sends it there, and another account's page answers the 404 error page with the API's words."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login, path_of, screenshot


async def test_an_account_key_sees_its_account_and_is_refused_another(page: Page, dashboard: Dashboard) -> None:
    other_decision = await dashboard.decide(1)
    own = await dashboard.new_account("second")
    key = await dashboard.account_key(own)

    await login(page, key)
    assert path_of(page) == f"/accounts/{own}", "an account key lands on its account"
    assert (await page.inner_text("#account-status")).strip().lower() == "active"

    await page.goto("/")
    assert path_of(page) == f"/accounts/{own}", "the overview is the admin's: sent to its own account"

    response = await page.goto("/accounts/1")
    assert response is not None and response.status == 404
    error = await page.inner_text("p.error")
    assert "account 1 does not exist" in error, "the API's words: another account is as if it did not exist"
    assert await page.locator("#account-status").count() == 0, "nothing of account 1 is shown"
    await screenshot(page, "refused")

    response = await page.goto("/accounts/1/decisions")
    assert response is not None and response.status == 404, "nor its decisions"
    response = await page.goto(f"/decisions/{other_decision}")
    assert response is not None and response.status == 404, "nor one decision's provenance"
