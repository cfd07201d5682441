"""`/docs` loads everything from the agent itself: Swagger UI's script, style and icon come from the
`swagger-ui-bundle` package, so the page works offline and loads nothing from a CDN."""

from __future__ import annotations

import re

import httpx
import pytest

from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from tests.e2e.server import serve
from tests.e2e.test_api import simulated

pytestmark = pytest.mark.db


async def test_the_docs_page_loads_only_the_agents_own_files(settings: Settings, clock: ManualClock) -> None:
    async with (
        serve(create_app(settings, agent_factory=simulated(clock))) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        page = await client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        loaded += re.findall(r"""url: ?["']([^"']+)["']""", page.text)  # the schema Swagger UI fetches
        assert loaded, page.text
        assert all(u.startswith("/") and not u.startswith("//") for u in loaded), loaded
        for url in loaded:
            answer = await client.get(url)
            assert answer.status_code == 200 and answer.content, url
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in script.text and "javascript" in script.headers["content-type"]
