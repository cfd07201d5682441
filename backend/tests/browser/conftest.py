"""The browser rig: the real agent served over a socket on SQLite, driven by the system's headless Chromium through
Playwright, and by the JSON API (httpx) for what a test makes happen (a decision, a second account, a key).

Chromium is the Debian package's (/usr/bin/chromium, or $CHROMIUM): Playwright's own browser download does not work
offline. Without it the tests skip, unless REQUIRE_BROWSER=1 (CI), where they fail: the dashboard's proof must run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, START
from tests.e2e.live_support import FlatThenHold
from tests.e2e.server import serve

CHROMIUM_ENV = "CHROMIUM"
REQUIRE_BROWSER_ENV = "REQUIRE_BROWSER"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Checked on this machine: no sandbox (root in CI), and nothing that reaches out to the internet.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000  # a hang guard for every page action and wait; nothing is asserted on time


def chromium_executable() -> str:
    """The Chromium to drive; skip (or, with REQUIRE_BROWSER=1, fail) with the reason when there is none."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    reason = (
        f"no Chromium at {path} (install Debian's `chromium` package, or set {CHROMIUM_ENV} to its path): "
        "the dashboard's browser tests need it"
    )
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{REQUIRE_BROWSER_ENV}=1 and {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _chromium() -> str:
    """Every browser test needs Chromium: checked before the agent is built."""
    return chromium_executable()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the browser tests check the dashboard, not the database (they run once, not once per database)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'dashboard.db'}"


@dataclass
class Dashboard:
    """A served agent: its base URL, the agent itself, an admin JSON client and the model that decides."""

    url: str
    agent: Agent
    api: httpx.AsyncClient
    model: FlatThenHold

    async def decide(self, account_id: int) -> int:
        """One decision of the account now, through the API (not the loop: deterministic); its id."""
        response = await self.api.post(
            "/api/v1/decisions/generate", json={"account_id": account_id, "force_refresh": True}
        )
        assert response.status_code == 200, response.text
        decision_id = response.json()["id"]
        assert isinstance(decision_id, int)
        return decision_id

    async def new_account(self, name: str) -> int:
        response = await self.api.post("/api/v1/accounts", json={"name": name})
        assert response.status_code == 201, response.text
        account_id = response.json()["id"]
        assert isinstance(account_id, int)
        return account_id

    async def account_key(self, account_id: int) -> str:
        response = await self.api.post(f"/api/v1/accounts/{account_id}/keys")
        assert response.status_code == 201, response.text
        key = response.json()["key"]
        assert isinstance(key, str)
        return key


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[Dashboard]:
    """The agent (default paper account 1) on the seeded simulator at a fixed time, with a model that opens a long
    with a stop and a take-profit on every flat asset; served by the real app (the dashboard at `/`)."""
    model = FlatThenHold()
    market = MarketSimulator(settings.assets, base_timeframe=settings.interval, seed=settings.sim_seed)
    agent = await build_agent(settings, clock=ManualClock(START), market=market, provider=model)

    async def prebuilt(_settings: Settings) -> Agent:
        return agent

    # The app's shutdown closes the agent.
    async with (
        serve(create_app(settings, agent_factory=prebuilt)) as url,
        httpx.AsyncClient(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as api,
    ):
        yield Dashboard(url=url, agent=agent, api=api, model=model)


@pytest.fixture
async def browser(_chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Browsing:
    """Opens browser contexts (each its own cookie jar: one per user) on the served dashboard."""

    browser: Browser
    url: str
    contexts: list[BrowserContext]

    async def new_page(self) -> Page:
        context = await self.browser.new_context(base_url=self.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        return await context.new_page()


@pytest.fixture
async def browsing(browser: Browser, dashboard: Dashboard) -> AsyncIterator[Browsing]:
    """Browser contexts on the dashboard, closed before the server stops (an open event stream would hold it)."""
    opened = Browsing(browser=browser, url=dashboard.url, contexts=[])
    try:
        yield opened
    finally:
        for context in opened.contexts:
            await context.close()


@pytest.fixture
async def page(browsing: Browsing) -> Page:
    """A fresh page with no session."""
    return await browsing.new_page()


async def login(page: Page, key: str) -> None:
    """Log in through the form; the page ends where the dashboard sends this key."""
    await page.goto("/login")
    await page.fill("#api-key", key)
    async with page.expect_navigation():
        await page.click("#login-submit")


def path_of(page: Page) -> str:
    """The path the page is at (a redirect may add a query, such as the login's `next`)."""
    return urlsplit(page.url).path


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of what the page shows now, kept as `test-artifacts/screenshots/<name>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path
