"""Error bodies: every failure is a JSON `{"detail": ...}` with a status that says whose fault it was."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.core.errors import TemporaryError
from app.services.exchange.registry import LiveAccountRefusedError
from app.services.llm.llm_exceptions import (
    AccountNotFoundError,
    DecisionEngineError,
    DecisionNotFoundError,
    DecisionRateLimitedError,
    UnknownAssetError,
)

log = logging.getLogger(__name__)
OUTAGE_RETRY_AFTER_S = 30  # a market or venue outage: ask again after this (the loop backs off on its own)


class ErrorBody(BaseModel):
    """Every 4xx answer but 422."""

    detail: str = Field(..., description="What was wrong, for a human")


class FieldProblem(BaseModel):
    field: str = Field(..., description="Dotted path of the offending field, or `request`")
    message: str
    type: str | None


class ValidationErrorBody(BaseModel):
    """The 422 answer: a summary and one entry per offending field."""

    detail: str
    errors: list[FieldProblem]


_ERRORS: dict[int, tuple[str, type[BaseModel]]] = {
    400: (
        "Refused: a body that cannot be decoded, or a request refused for a reason the schema cannot state "
        "(e.g. a strategy template that does not render)",
        ErrorBody,
    ),
    401: ("Missing or invalid API key", ErrorBody),
    403: ("The key is valid but this needs an admin key", ErrorBody),
    404: (
        "No such account, decision, key, strategy or asset on this agent (or not visible to this key)",
        ErrorBody,
    ),
    409: ("Conflicts with an existing resource or with the agent's state (e.g. no LLM configured)", ErrorBody),
    413: ("The request body is larger than API_MAX_BODY_BYTES", ErrorBody),
    415: ("The request body is not JSON (Content-Type: application/json)", ErrorBody),
    422: ("The request does not match the schema", ValidationErrorBody),
    429: (
        "Too many mutating requests with this key, or forced decisions for this account; retry after "
        "Retry-After seconds",
        ErrorBody,
    ),
    500: ("An unexpected failure; the server log has the details (never the answer)", ErrorBody),
    502: (
        "The venue did not carry out what was asked (e.g. a halted live account's positions could not be flattened); "
        "the detail says what was done and what was not",
        ErrorBody,
    ),
    503: (
        "A service the request depends on cannot be reached now (the market or venue, the model provider or its "
        "catalog); try again later. No order was placed; a decision cycle that had begun is stored as `error` "
        "with the reason",
        ErrorBody,
    ),
}
_HEADERS: dict[int, dict[str, Any]] = {
    503: {
        "Retry-After": {
            "description": "Seconds to wait before asking again (sent for a market or venue outage)",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    401: {"WWW-Authenticate": {"description": "The accepted scheme", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {
            "description": "Seconds to wait before the next mutating request",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the error answers a route can give, with their bodies."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description, model = _ERRORS[code]
        entry: dict[str, Any] = {"description": description, "model": model}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": _field(tuple(e.get("loc", ()))),
                "message": e.get("msg", "invalid"),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(status_code=422, content={"detail": f"invalid request: {summary}", "errors": problems})

    @app.exception_handler(AccountNotFoundError)
    async def _no_account(_: Request, exc: AccountNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(DecisionNotFoundError)
    async def _no_decision(_: Request, exc: DecisionNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(UnknownAssetError)
    async def _unknown_asset(_: Request, exc: UnknownAssetError) -> JSONResponse:
        # A well-formed symbol (the schema's pattern) this agent does not trade: no such asset here.
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(DecisionRateLimitedError)
    async def _rate_limited(_: Request, exc: DecisionRateLimitedError) -> JSONResponse:
        return JSONResponse(
            status_code=429, content={"detail": str(exc)}, headers={"Retry-After": str(exc.retry_after_s)}
        )

    @app.exception_handler(LiveAccountRefusedError)
    async def _live_refused(_: Request, exc: LiveAccountRefusedError) -> JSONResponse:
        # a live account not traded: 503 while its venue cannot be reached, 409 when a setting or its keys must change
        if exc.temporary:
            return JSONResponse(
                status_code=503,
                content={"detail": f"temporarily unavailable, try again later: {exc}"},
                headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
            )
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(TemporaryError)
    async def _unavailable(_: Request, exc: TemporaryError) -> JSONResponse:
        # a market or venue outage (after the source's own retries): the request can succeed later
        return JSONResponse(
            status_code=503,
            content={"detail": f"temporarily unavailable, try again later: {exc}"},
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
        )

    @app.exception_handler(DecisionEngineError)
    async def _engine(_: Request, exc: DecisionEngineError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Errors from the routes are answered by the request middleware (a complete 500, the connection kept);
        # this is the last resort for one in the middleware itself. Never the exception's name or message.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})
