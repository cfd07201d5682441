"""HTTP rules every route keeps the same way, so the answers match what the OpenAPI schema says:

- a method a path does not serve answers 405 with an `Allow` header listing every method the path does serve
  (Starlette's own 405 names only the methods of the first route whose path matched, e.g. `Allow: POST` on a
  path that also serves GET);
- a request body that is not JSON answers 415 on the routes that read a JSON body (instead of a 422 that
  blames the body's shape), and a JSON body's types are the schema's (`"1.5"` is not a number).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app.api.auth import CurrentPrincipal

JSON_MEDIA_TYPES = ("application/json",)


def served_methods(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path regex, methods) of every route, HEAD counted with GET (Starlette answers HEAD for a GET route)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] = []
    for route in iter_route_contexts(app.routes):
        methods = set(route.methods or ())
        if not methods or route.path is None:
            continue
        if "GET" in methods:
            methods.add("HEAD")
        regex, _, _ = compile_path(route.path)
        table.append((regex, frozenset(methods)))
    return table


def allow_header(table: Iterable[tuple[re.Pattern[str], frozenset[str]]], path: str) -> str:
    allowed: set[str] = set()
    for regex, methods in table:
        if regex.match(path):
            allowed |= methods
    return ", ".join(sorted(allowed))


def install_method_rules(app: FastAPI) -> None:
    """Answer 405 with the full `Allow` header (the routes are read once, at the first 405)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        nonlocal table
        if table is None:
            table = served_methods(app)
        allow = allow_header(table, request.url.path)
        detail = exc.detail if isinstance(exc, StarletteHTTPException) else "Method Not Allowed"
        if detail == "Method Not Allowed":
            detail = f"{request.method} is not served here; this path serves {allow}"
        return JSONResponse(status_code=405, content={"detail": detail}, headers={"Allow": allow})

    app.add_exception_handler(405, method_not_allowed)


def is_json(content_type: str | None) -> bool:
    """`application/json` (with parameters, e.g. a charset) or a `+json` type such as `application/merge-patch+json`;
    a body without a Content-Type is JSON too (FastAPI reads it so). The one rule: the middleware's check of JSON
    bodies uses it as well, so a bad body gets one answer whether the header is sent or not."""
    if content_type is None:
        return True  # no body type declared: the body, if any, is read as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json"))


async def json_body(request: Request, _: CurrentPrincipal) -> None:
    """A dependency of every keyed route, checked once the key is (401 first, as without it; the principal is
    resolved once per request). On a route that reads a JSON body (others ignore what is sent):

    - 415 for a body sent with another media type (an empty body passes);
    - the body's JSON types as the schema states them: a string or a boolean where a number is expected, a
      number where a string is expected, answers 422 (Pydantic's lax mode would take `"1.5"` or `true` for a
      number, a request the schema calls invalid). The same body is then validated as usual."""
    field = getattr(request.scope.get("route"), "body_field", None)
    if field is None:
        return
    if not is_json(request.headers.get("content-type")):
        if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
            return
        raise HTTPException(status_code=415, detail="the request body must be JSON (Content-Type: application/json)")
    body = await request.body()  # already read (and cached) by FastAPI: no second read from the socket
    if not body.strip():
        return
    try:
        data = json.loads(body)
    except ValueError:  # FastAPI's own reading says what is wrong with it
        return
    try:
        _strict_adapter(field.field_info.annotation).validate_json(json.dumps(_integral(data)), strict=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _integral(value: Any) -> Any:
    """`1.0` as `1`: JSON has one number type, and a number without a fraction is an integer (as JSON Schema
    says), which Pydantic's strict mode would refuse for an `int`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


@functools.cache
def _strict_adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)
