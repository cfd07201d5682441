"""The OpenAPI schema states every answer a route can give, so generated clients and fuzzers agree with the server.

Routes declare their own answers (`error_responses(...)` in their decorators: 403 for admin-only routes, 404,
409, 429 ...). The answers every route shares are added here, once, so a new route cannot forget them:

- 401 on every route that needs a key (all but `/health`);
- 400 (a body that cannot be decoded) and 415 (a body that is not JSON) on every route that reads a body;
- 413 (a body larger than API_MAX_BODY_BYTES: refused before routing, whatever the route) and 500 everywhere;
- 422 with the body this server really sends (`ValidationErrorBody`), not FastAPI's default;
- a custom strategy's `timeframe_preference` as the lists this agent can serve (they depend on INTERVAL and
  LONG_INTERVAL, so the schema of this deployment lists them).

A method a path does not serve answers 405 with `Allow` (see `app.api.protocol`); it is no operation of the
schema, so it is said in the API's description.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.api.errors import ValidationErrorBody, error_responses
from app.schemas.strategies import SERVABLE_TIMEFRAMES
from app.services.llm.strategy_checks import VENUE_TIMEFRAMES, timeframe_problems

SERVABLE_TIMEFRAMES_KEY = next(iter(SERVABLE_TIMEFRAMES))

DESCRIPTION = """LLM decision engine for crypto perpetual futures: decisions, their provenance and health.

**Keys.** Every route needs an API key (`X-API-Key: <key>` or `Authorization: Bearer <key>`) except `GET /health`
and the API's own description (`/openapi.json`, `/docs`): the description holds no secret and no
account data, so a client can be generated without a key. A missing or unknown key answers 401. An account key
sees its own account only (another account answers 404, as if it did not exist); routes marked *admin only*
answer 403 to an account key.

**Answers.** Errors are JSON `{"detail": "..."}` (422 adds `errors`, one entry per offending field). A body
larger than API_MAX_BODY_BYTES answers 413 on any route, a body that is not JSON 415, a method a path does not
serve 405 with an `Allow` header, too many changes with one key 429 with `Retry-After`.

**Times.** Cycle and candle times (`cycle_time`, `since`/`until` of the history, windows such as `24h`) follow
the market clock; audit, key and account timestamps and rate limits follow the wall clock.
"""

_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def _common(operation: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    codes = [413, 500]
    if operation.get("security"):
        codes.append(401)
    if "requestBody" in operation:
        codes += [400, 415]
    return error_responses(*codes)


def _add_component(components: dict[str, Any], model: type[BaseModel]) -> None:
    """`model`'s JSON schema (and the models it uses) among the schema's components."""
    if model.__name__ in components:
        return
    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in body.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components[model.__name__] = body


def servable_timeframe_lists(interval: str, long_interval: str) -> list[list[str]]:
    """Every `timeframe_preference` this agent can serve: one or two of the venue's timeframes, whole multiples
    of INTERVAL, the trend longer than the decision (with one, LONG_INTERVAL longer than it)."""
    candidates = [[a] for a in VENUE_TIMEFRAMES] + [[a, b] for a in VENUE_TIMEFRAMES for b in VENUE_TIMEFRAMES]
    return [c for c in candidates if not timeframe_problems(c, interval=interval, long_interval=long_interval)]


def _list_servable_timeframes(components: dict[str, Any], lists: list[list[str]]) -> None:
    """A request's `timeframe_preference` (marked `x-servable-timeframes`) as the lists this agent serves."""
    for component in components.values():
        for name, prop in (component.get("properties") or {}).items():
            if isinstance(prop, dict) and prop.pop(SERVABLE_TIMEFRAMES_KEY, False):
                kept = {k: v for k, v in prop.items() if k in ("title", "description", "default")}
                component["properties"][name] = {**kept, "type": "array", "enum": lists}


def complete_schema(app: FastAPI, *, interval: str = "5m", long_interval: str = "4h") -> dict[str, Any]:
    """The app's OpenAPI schema with the shared answers added (built once, then served as it is)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for code, entry in _common(operation).items():
                if str(code) in responses:
                    continue
                model = entry["model"]
                responses[str(code)] = {
                    "description": entry["description"],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
                    **({"headers": entry["headers"]} if "headers" in entry else {}),
                }
                _add_component(components, model)
            invalid = responses.get("422")
            if invalid is not None:
                _add_component(components, ValidationErrorBody)
                ref = f"#/components/schemas/{ValidationErrorBody.__name__}"
                invalid["content"] = {"application/json": {"schema": {"$ref": ref}}}
    for name in _FASTAPI_VALIDATION:
        components.pop(name, None)
    _list_servable_timeframes(components, servable_timeframe_lists(interval, long_interval))
    app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI, *, interval: str, long_interval: str) -> None:
    app.openapi = lambda: complete_schema(app, interval=interval, long_interval=long_interval)  # type: ignore[method-assign]
