"""Request id, body size limit and the audit log of every mutating request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from app.db.models import AuditEntry
from app.db.repositories.api_keys import ApiKeyRepository
from app.schemas.api import MAX_DB_ID

log = logging.getLogger(__name__)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def install_middleware(app: FastAPI, *, max_body_bytes: int) -> None:
    @app.middleware("http")
    async def _request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        request_id = "".join(c for c in request_id if c.isalnum() or c in "-_")[:64] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
                response: Response = JSONResponse(
                    status_code=413, content={"detail": f"request body larger than {max_body_bytes} bytes"}
                )
            elif length is None and request.method in MUTATING and request.headers.get("transfer-encoding"):
                if await _read_at_most(request, max_body_bytes):
                    response = await call_next(request)
                else:
                    response = JSONResponse(
                        status_code=413, content={"detail": f"request body larger than {max_body_bytes} bytes"}
                    )
            else:
                response = await call_next(request)
            response.headers["X-Request-ID"] = request_id
            if request.method in MUTATING:
                await _audit(request, response, request_id)
            return response
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


async def _read_at_most(request: Request, limit: int) -> bool:
    """Read a body sent without Content-Length, stopping as soon as it passes `limit` (so a huge chunked body
    is never held in memory); False when it did. A body within the limit is kept for the route to read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return False
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what Request.body() caches; the middleware hands it on downstream
    return True


def _account_id(value: object) -> int | None:
    """An account id fit for the audit row: a path segment that is not a valid id is left out."""
    text = str(value) if isinstance(value, int | str) else ""
    if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_DB_ID:
        return int(text)
    return None


async def _audit(request: Request, response: Response, request_id: str) -> None:
    agent = getattr(request.app.state, "agent", None)
    if agent is None:
        return
    principal = getattr(request.state, "principal", None)
    account_id = principal.account_id if principal is not None else None
    if account_id is None:
        account_id = request.path_params.get("account_id") if request.path_params else None
    try:
        async with agent.sessions.begin() as session:
            ApiKeyRepository(session).audit(
                AuditEntry(
                    request_id=request_id,
                    key_prefix=principal.key_prefix if principal else None,
                    role=principal.role if principal else None,
                    account_id=_account_id(account_id),
                    method=request.method,
                    path=request.url.path[:300],
                    status_code=response.status_code,
                    detail=None,
                    created_at=agent.clock.now(),
                )
            )
    except Exception:  # the audit must never break the request; the log says it failed
        log.exception("could not write the audit entry for %s %s", request.method, request.url.path)
