"""A decision arrives on the open decisions page by itself (server-sent events, no reload), and one click on it shows
what the model saw (the stored context and the prompt) and what it answered."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from playwright.async_api import Page

from tests.browser.conftest import Dashboard, login, path_of, screenshot
from tests.conftest import ADMIN_KEY


async def test_a_decision_arrives_live_and_its_provenance_shows_context_prompt_and_answer(
    page: Page, dashboard: Dashboard
) -> None:
    first = await dashboard.decide(1)
    await login(page, ADMIN_KEY)
    # The page listens (its first look at /events) before the decision is made: it cannot miss it.
    async with page.expect_response(lambda r: urlsplit(r.url).path == "/events"):
        await page.goto("/accounts/1/decisions")
    assert await page.locator(f'article.decision[data-decision-id="{first}"]').count() == 1
    await page.evaluate("window.__marker = 1")

    second = await dashboard.decide(1)
    await page.wait_for_selector(f'article.decision[data-decision-id="{second}"]')
    assert await page.evaluate("window.__marker") == 1, "the page was updated in place, not reloaded"
    ids = await page.locator("article.decision").evaluate_all("els => els.map(e => Number(e.dataset.decisionId))")
    assert ids[:2] == [second, first], "newest first"
    await screenshot(page, "decisions")

    async with page.expect_navigation():
        await page.click(f'article.decision[data-decision-id="{second}"] a.provenance')
    assert path_of(page) == f"/decisions/{second}"
    stored = (await dashboard.api.get(f"/api/v1/decisions/{second}")).json()
    context = json.loads(await page.inner_text("#context"))
    assert context == stored["provenance"]["context"], "the context the model saw, as stored"
    prompt = await page.inner_text("#prompt")
    assert "[system]" in prompt and prompt.strip() == stored["provenance"]["prompt"].strip()
    answer = json.loads(await page.inner_text("#answer"))
    assert answer == json.loads(stored["raw_response"]), "the model's raw answer"
    assert [d["action"] for d in answer["decisions"]] == ["hold", "hold", "hold"], "the second cycle holds"
    assert (await page.inner_text("#verdicts")).strip()
    await screenshot(page, "provenance")
