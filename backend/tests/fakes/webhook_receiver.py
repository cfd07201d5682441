"""A webhook receiver on 127.0.0.1 for apprise's `json://` URLs: it keeps every notification it is sent.

A path ending in `/fail` answers 500; `hold()` makes it wait before answering until `release()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str


@dataclass
class WebhookReceiver:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request, as it comes in

    def __post_init__(self) -> None:
        self._gate.set()

    def url(self, path: str = "hook", *, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"json://{auth}127.0.0.1:{self.port}/{path}"

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def titles(self) -> list[str]:
        return [r.body.get("title", "") for r in self.received]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        self.arrived.set()
        await self._gate.wait()
        self.received.append(Received(request.path, dict(request.headers), json.loads(raw), raw))
        if request.path.endswith("/fail"):
            return web.Response(status=500, text="receiver failure")
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        receiver.release()
        await runner.cleanup()


@pytest.fixture(name="receiver")
async def receiver_fixture() -> AsyncIterator[WebhookReceiver]:
    """The `receiver` fixture: a running receiver for one test. Import `receiver_fixture` into a test module or a
    conftest (`# noqa: F401`) and ask for `receiver`."""
    async with webhook_receiver() as running:
        yield running
