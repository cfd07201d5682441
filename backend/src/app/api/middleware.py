"""Request id, body size limit, JSON bodies, unexpected errors and the audit log of every mutating request.

A plain ASGI middleware (not Starlette's `BaseHTTPMiddleware`, which runs every request through task groups
and memory streams and costs about a millisecond a request here): the request id is bound for the logs and
echoed in `X-Request-ID`, a body over the limit is refused with 413 before the app sees it (a chunked one
too, read only up to the limit), a JSON body the agent could not store or answer with (a lone surrogate,
Infinity) is refused with 422 before the app sees it, and a mutating request is
audited with its status (and the reason the route recorded in `request.state.audit_detail`) before the answer
goes out, so an operator who reads the audit log after the answer finds it there.

An exception that escapes the app is answered here with a complete 500 (the exception's class and message only
in the server log): left to the server, the answer would be followed by the connection being dropped, and a
client sees "connection reset". Audit entries carry the wall clock (`agent.wall_clock`), not the market's.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.protocol import is_json
from app.db.models import AuditEntry
from app.db.repositories.api_keys import ApiKeyRepository
from app.schemas.api import MAX_DB_ID

log = logging.getLogger(__name__)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def install_middleware(app: FastAPI, *, max_body_bytes: int) -> None:
    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes)


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = _request_id(headers.get("x-request-id"))
        mutating = scope["method"] in MUTATING
        audited = False
        started = finished = False

        async def send_with_id(message: Message) -> None:
            nonlocal audited, started, finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                if mutating and not audited:
                    audited = True
                    await _audit(scope, message["status"], request_id)
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        scope.setdefault("state", {})["request_id"] = request_id  # routes name it in what they record
        try:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(scope, receive, send_with_id)
            elif mutating and (headers.get("transfer-encoding") or _is_json(headers)):
                # Read here (at most the limit) when it is chunked, or JSON to be checked before the app parses it.
                body = await _read_at_most(receive, self.max_body_bytes)
                if body is None:
                    await self._too_large(scope, receive, send_with_id)
                elif (problem := _json_problem(body) if _is_json(headers) else None) is not None:
                    await _unusable_json(problem)(scope, receive, send_with_id)
                else:
                    await self.app(scope, _replay(body, receive), send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope.get("path", ""))
            if finished:  # answered already (the failure came after): the connection stays usable
                return
            if started:  # the answer was under way: nothing complete can be sent any more
                raise
            await _internal_error(request_id)(scope, receive, send_with_id)
        except BaseException:
            if mutating and not audited:  # cancelled before answering: the 500 is audited too
                audited = True
                await _audit(scope, 500, request_id)
            raise
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than {self.max_body_bytes} bytes"
        await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)


def _internal_error(request_id: str) -> JSONResponse:
    """A complete 500 that names neither the exception nor its message (both are in the server log)."""
    detail = f"internal error: the server could not answer this request; see the server log (request {request_id})"
    return JSONResponse(status_code=500, content={"detail": detail})


# ------------------------------------------------------------------------------------------- JSON bodies
def _is_json(headers: Headers) -> bool:
    """The app's own rule (`protocol.is_json`, FastAPI's too): a body without a Content-Type is read as JSON, so it
    is checked here as JSON, and a bad one gets the same answer with or without the header."""
    return is_json(headers.get("content-type"))


def _json_problem(body: bytes) -> str | None:
    """Why a JSON body cannot be used, or None (also None when it is not JSON at all: the app says so).

    The app's own decoder accepts what cannot be stored or answered with: a lone surrogate (`"\\ud800"`) is not
    text any database or JSON answer can hold, and `Infinity`, `NaN` or `1e400` are not numbers the agent can use.
    A long integer is a valid JSON number (the schema says so): a field that is stored bounds it (an id, a count:
    422 beyond the bound), a decimal field reads it as a float."""
    if not body.strip():
        return None
    try:
        orjson.loads(body)  # strict JSON: lone surrogates, NaN, Infinity and numbers beyond a double are refused
    except orjson.JSONDecodeError as exc:
        if not _is_valid_json(body):
            return None  # malformed JSON: the app answers it as such (422 json_invalid, or 400 for bad UTF-8)
        return f"the body cannot be used: {exc.msg}"
    return None


def _is_valid_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _unusable_json(problem: str) -> JSONResponse:
    """The 422 of a JSON body the app cannot use, in the shape of every other 422."""
    error = {"field": "body", "message": problem, "type": "json_invalid"}
    return JSONResponse(status_code=422, content={"detail": f"invalid request: {problem}", "errors": [error]})


def _request_id(given: str | None) -> str:
    """The caller's X-Request-ID if it is a plain token (letters, digits, - and _; 64 at most), else a new one."""
    cleaned = "".join(c for c in given or "" if c.isalnum() or c in "-_")[:64]
    return cleaned or uuid.uuid4().hex


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """Read a body sent without Content-Length, stopping as soon as it passes `limit` (so a huge chunked body
    is never held in memory); None when it did."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, server_receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the server's (which waits for the
    client to go away)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await server_receive()

    return receive


def _account_id(value: object) -> int | None:
    """An account id fit for the audit row: a path segment that is not a valid id is left out."""
    text = str(value) if isinstance(value, int | str) else ""
    if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_DB_ID:
        return int(text)
    return None


async def _audit(scope: Scope, status_code: int, request_id: str) -> None:
    """One audit row: who (the key's prefix and role, set by authentication), what, when, and the status."""
    agent = getattr(scope["app"].state, "agent", None)
    if agent is None:
        return
    state: dict[str, Any] = scope.get("state") or {}
    principal = state.get("principal")
    account_id = principal.account_id if principal is not None else None
    if account_id is None:
        account_id = (scope.get("path_params") or {}).get("account_id")
    path = scope.get("path", "")
    detail = state.get("audit_detail")
    try:
        async with agent.sessions.begin() as session:
            ApiKeyRepository(session).audit(
                AuditEntry(
                    request_id=request_id,
                    key_prefix=principal.key_prefix if principal else None,
                    role=principal.role if principal else None,
                    account_id=_account_id(account_id),
                    method=scope["method"],
                    path=path[:300],
                    status_code=status_code,
                    detail=detail if isinstance(detail, str) else None,
                    created_at=agent.wall_clock.now(),
                )
            )
    except Exception:  # the audit must never break the request; the log says it failed
        log.exception("could not write the audit entry for %s %s", scope["method"], path)
