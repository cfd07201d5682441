"""Sending an alert through apprise (Telegram, Discord, Slack, e-mail, webhooks...) to the ALERT_URLS.

The URLs hold tokens. Nothing here logs them, and what a failed delivery leaves on the alert's row names the service
by apprise's privacy URL (tokens masked) and is scrubbed of every secret-looking part of the configured URLs. The
`apprise` logger is kept at WARNING: below that it prints the URLs it loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import apprise

from app.core.config import url_secret_parts
from app.core.security import redact

log = logging.getLogger(__name__)

DELIVERED = "delivered"
NOT_CONFIGURED = "not configured"
_NOTIFY_TYPE = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}
_MAX_REASON = 500


class Delivery(Protocol):
    async def send(self, title: str, body: str, severity: str) -> str:
        """`DELIVERED`, or `failed: <reason>`; never raises."""
        ...


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "?"


class AppriseDelivery:
    """Every URL apprise understands gets each alert; the ones it does not are named (by scheme) in `describe()`."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float = 20.0) -> None:
        logging.getLogger("apprise").setLevel(logging.WARNING)
        self.timeout_s = timeout_s
        self._apprise = apprise.Apprise()
        self.accepted: list[str] = []  # schemes
        self.refused: list[str] = []
        for url in urls:
            (self.accepted if self._apprise.add(url) else self.refused).append(_scheme(url))
        self._secrets = sorted({part for url in urls for part in [url, *url_secret_parts(url)]}, key=len, reverse=True)

    @property
    def configured(self) -> bool:
        return bool(self.accepted)

    def describe(self) -> str:
        """What the start-up lines say: how many URLs, which services; never a URL."""
        text = f"apprise to {len(self.accepted)} URL(s) (schemes: {', '.join(sorted(set(self.accepted))) or '-'})"
        if self.refused:
            text += f"; {len(self.refused)} URL(s) not understood by apprise (schemes: {', '.join(self.refused)})"
        return text

    def scrub(self, text: str) -> str:
        """`text` without any part of the configured URLs that may be secret."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    async def send(self, title: str, body: str, severity: str) -> str:
        if not self.accepted:
            return NOT_CONFIGURED
        try:
            async with asyncio.timeout(self.timeout_s + 5):
                result = await self._apprise.async_notify(
                    body=body,
                    title=title,
                    notify_type=_NOTIFY_TYPE.get(severity, apprise.NotifyType.INFO),
                    timeout=self.timeout_s,
                )
        except TimeoutError:
            return f"failed: no answer within {self.timeout_s + 5:g} s"
        except Exception as exc:  # a plugin's bug must not reach the agent
            return self._failed(f"{type(exc).__name__}: {exc}")
        try:
            if result:
                return DELIVERED
            failures = []
            for service in result:
                if service:
                    continue
                where = service.url.split("?", 1)[0]  # apprise's privacy URL: tokens masked
                said = "; ".join(entry.message for entry in service.logs()) or service.status.name.lower()
                failures.append(f"{service.name} {where}: {said}")
            delivered = sum(1 for service in result if service)
            why = " | ".join(failures) or result.status.name.lower()
            if delivered:
                why += f" (delivered to {delivered} of {len(result)})"
            return self._failed(why)
        finally:
            result.close()

    def _failed(self, why: str) -> str:
        reason = self.scrub(why)
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 3] + "..."
        return f"failed: {reason}"
