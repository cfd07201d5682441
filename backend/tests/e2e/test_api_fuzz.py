"""Property-based fuzzing of the live API with Schemathesis and ALL its checks: the real app serves `/openapi.json`
over a loopback socket, and `st run --checks all` tests every operation with the admin key: its examples, the
schema's boundaries and every undeclared method (coverage), generated valid and invalid data (fuzzing), and
chains of calls that follow the responses' links (stateful). Beyond "no 5xx", every answer must be one the schema
documents (status, content type, body, headers), a schema-valid request must be served (2xx, or 401/403/404/409/
429), a schema-violating one refused (4xx), a method the schema does not list must answer 405 with `Allow`, and
a request without the key 401.

The run is bounded (examples per operation) and deterministic (derandomized generation, a fixed seed), on the
market simulator, the paper venue and the rule-based baseline (no order waits on anything real).
Runs on SQLite only (its own temporary database); the PostgreSQL pass (`-m db -k postgresql`) skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, START, IsolatedSettings
from tests.e2e.server import free_port
from tests.e2e.test_api_security import ADMIN_ONLY, PUBLIC, api_operations
from tests.fakes.openrouter_server import FakeOpenRouter

pytestmark = pytest.mark.db

MAX_EXAMPLES = 6  # per operation and phase (the coverage phase is not random and not bounded by it)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
AUTH = {"X-API-Key": ADMIN_KEY}


@contextlib.contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn in its own thread and event loop, so synchronous Schemathesis calls can reach
    it over a loopback socket."""

    async def factory(s: Settings) -> Agent:
        market = MarketSimulator(s.assets, base_timeframe=s.interval, seed=s.sim_seed)
        return await build_agent(s, clock=ManualClock(START), market=market)

    port = free_port()
    config = uvicorn.Config(
        create_app(settings, agent_factory=factory), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or errors or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError(f"server did not start: {errors!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    with FakeOpenRouter() as openrouter:
        settings = IsolatedSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}",
            admin_api_key=ADMIN_KEY,
            secret_key_file=str(tmp_path / "secret.key"),
            # The fuzzer sends hundreds of mutating requests; the per-key limit has its own test.
            api_mutations_per_minute=100_000,
            # No OpenRouter key (the baseline decides), but a key set through the API is checked against the
            # fake, never the real provider.
            openrouter_base_url=openrouter.base_url,
        )
        with serve_in_thread(settings) as url:
            created = requests.post(f"{url}/api/v1/accounts", json={"name": "fuzz-b"}, headers=AUTH, timeout=30)
            assert created.status_code == 201, created.text
            yield url


def run_schemathesis(base_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`st run` with every check; its files (the failures it keeps for `st replay`) go to `workdir`."""
    command = [
        sys.executable,  # the `st` command of this environment, whatever its bin directory
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # the same cases every run (no seed, no example database)
        "--workers",  # one: Hypothesis is not thread-safe, and the cases then come in the same order every run
        "1",
        "--continue-on-failure",
        "--request-timeout",
        "30",
        "--header",
        f"X-API-Key: {ADMIN_KEY}",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    # The strategy templates' format (`jinja2-template`), which Schemathesis does not know by itself.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py"))}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=workdir, env=env)


def test_schemathesis_with_all_checks_finds_nothing(base_url: str, tmp_path: Path) -> None:
    app = create_app(IsolatedSettings(database_url="sqlite+aiosqlite://"))
    served = {(method, path) for method, path in api_operations(app) if path == "/health" or path not in PUBLIC}
    schema = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    documented = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert documented == served, "every API route (the docs aside) is in the schema"

    result = run_schemathesis(base_url, tmp_path)
    report = result.stdout + result.stderr
    print(report)
    assert f"Tested: {len(served)}" in report, "Schemathesis tested every operation"
    assert result.returncode == 0, report


def test_edge_cases_get_a_documented_4xx(base_url: str) -> None:
    """Inputs that used to end in a 500 (an id too large for the database, a window reaching before year 1) or
    in an undocumented status (a body that is not UTF-8): each gets a documented 4xx now, checked like the fuzzing.
    A window the schema allows is served."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=schemathesis.Config(), timeout=30)
    too_big = 2**31  # ids are 32-bit integers in PostgreSQL
    cases = [
        # A window outside the schema's pattern (it would reach before year 1) is refused; the longest one the
        # pattern allows is served.
        ("GET", "/api/v1/decisions/metrics", {"query": {"account_id": 1, "timeframe": "9999999w"}}, 422),
        ("GET", "/api/v1/decisions/metrics", {"query": {"account_id": 1, "timeframe": "99999w"}}, 200),
        (
            "GET",
            "/api/v1/strategies/{strategy_id}/performance",
            {"path_parameters": {"strategy_id": "conservative"}, "query": {"timeframe": "9999999w"}},
            422,
        ),
        (
            "GET",
            "/api/v1/strategies/{strategy_id}/performance",
            {"path_parameters": {"strategy_id": "conservative"}, "query": {"timeframe": "99999w"}},
            200,
        ),
        ("GET", "/api/v1/accounts/{account_id}", {"path_parameters": {"account_id": too_big}}, 422),
        ("GET", "/api/v1/accounts/{account_id}", {"path_parameters": {"account_id": 2**64}}, 422),
        ("GET", "/api/v1/accounts/{account_id}", {"path_parameters": {"account_id": 0}}, 422),
        ("GET", "/api/v1/decisions/history", {"query": {"account_id": 1, "before_id": too_big}}, 422),
        ("GET", "/api/v1/decisions/history", {"query": {"account_id": too_big}}, 422),
        ("POST", "/api/v1/decisions/generate", {"body": {"account_id": too_big}}, 422),
        ("POST", "/api/v1/decisions/models/switch", {"body": {"model": "a/b", "account_id": too_big}}, 422),
        ("POST", "/api/v1/accounts/{account_id}/pause", {"path_parameters": {"account_id": too_big}, "body": {}}, 422),
    ]
    with requests.Session() as session:
        for method, path, parts, status in cases:
            case = schema[path][method].Case(**parts)
            response = case.call_and_validate(base_url=base_url, session=session, headers=AUTH, checks=CHECKS)
            assert response.status_code == status, f"{method} {path} {parts}: {response.status_code} {response.text}"
        # A body that is not UTF-8 cannot be decoded: a documented 400, not a 500.
        case = schema["/api/v1/accounts/{account_id}/pause"]["POST"].Case(path_parameters={"account_id": 1})
        raw = session.post(
            f"{base_url}/api/v1/accounts/1/pause",
            data=b'{"reason": "\xff"}',
            headers={**AUTH, "Content-Type": "application/json"},
            timeout=30,
        )
        case.validate_response(raw, checks=CHECKS)
        assert raw.status_code == 400, raw.text


def test_schema_valid_requests_are_served_and_invalid_ones_refused(base_url: str) -> None:
    """What Schemathesis found: requests the schema called valid were refused with 400, and the schema did not
    state what the server checks. A well-formed name of something this agent does not have is a 404, a request
    the agent's state refuses a 409; what the server refuses is outside the schema (422)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=schemathesis.Config(), timeout=30)
    cases = [
        # Well-formed, but not traded here / no such strategy: 404.
        ("GET", "/api/v1/decisions/history", {"query": {"account_id": 1, "symbol": "ZZZ"}}, 404),
        ("POST", "/api/v1/decisions/generate", {"body": {"account_id": 1, "symbols": ["ZZZ/USDT:USDT"]}}, 404),
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-c", "strategy_id": "no_such_strategy"}}, 404),
        (
            "POST",
            "/api/v1/strategies/account/{account_id}/switch",
            {"path_parameters": {"account_id": 1}, "body": {"strategy_id": "no_such_strategy"}},
            404,
        ),
        # Valid, but this agent has no LLM configured: 409 (the state, not the request, is the problem).
        ("POST", "/api/v1/decisions/models/switch", {"body": {"model": "a/b", "account_id": 1}}, 409),
        (
            "PUT",
            "/api/v1/accounts/{account_id}/model",
            {"path_parameters": {"account_id": 1}, "body": {"model": "a"}},
            409,
        ),
        # Valid, but this agent has no LIVE_MAINNET_CONFIRM: a mainnet account is refused with 409, nothing saved.
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-m", "mode": "live", "network": "mainnet"}}, 409),
        # What the server refuses is outside the schema: 422.
        ("GET", "/api/v1/decisions/history", {"query": {"account_id": 1, "symbol": "0" * 40}}, 422),
        ("GET", "/api/v1/decisions/metrics", {"query": {"account_id": 1, "timeframe": "0000000"}}, 422),
        ("GET", "/api/v1/strategies/{strategy_id}/performance", {"path_parameters": {"strategy_id": "X!"}}, 422),
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-d", "mode": "real"}}, 422),
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-f", "mode": "live", "network": "main"}}, 422),
        (
            "POST",
            "/api/v1/strategies/account/{account_id}/switch",
            {"path_parameters": {"account_id": 1}, "body": {"strategy_id": "0"}},
            422,
        ),
        # The body's JSON types are the schema's: a string is not a number, a boolean is not one either.
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-e", "initial_balance": "5000"}}, 422),
        ("POST", "/api/v1/accounts", {"body": {"name": "fuzz-f", "max_leverage": True}}, 422),
    ]
    with requests.Session() as session:
        for method, path, parts, status in cases:
            case = schema[path][method].Case(**parts)
            response = case.call_and_validate(base_url=base_url, session=session, headers=AUTH, checks=CHECKS)
            assert response.status_code == status, f"{method} {path} {parts}: {response.status_code} {response.text}"


def test_methods_and_media_types(base_url: str) -> None:
    """A method a path does not serve answers 405 with every method it does serve in `Allow` (a path served by
    two routes listed both; `GET /decisions/generate` is not a malformed decision id), and a body that is not JSON
    415."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        for method, path, allowed in [
            ("GET", "/api/v1/decisions/generate", {"POST"}),
            ("GET", "/api/v1/decisions/validate", {"POST"}),
            ("OPTIONS", "/api/v1/accounts", {"GET", "HEAD", "POST"}),
            ("DELETE", "/api/v1/accounts", {"GET", "HEAD", "POST"}),
            ("OPTIONS", "/api/v1/accounts/1/keys", {"GET", "HEAD", "POST"}),
            ("PATCH", "/health", {"GET", "HEAD"}),
        ]:
            response = session.request(method, f"{base_url}{path}", timeout=30)
            assert response.status_code == 405, f"{method} {path}: {response.status_code} {response.text}"
            assert set(response.headers["Allow"].split(", ")) == allowed, f"{method} {path}"
            assert response.json()["detail"]
        # A decision id is still read as one.
        assert session.get(f"{base_url}/api/v1/decisions/999999", timeout=30).status_code == 404

        text = {"Content-Type": "text/plain"}
        refused = session.post(f"{base_url}/api/v1/accounts", data='{"name": "plain"}', headers=text, timeout=30)
        assert refused.status_code == 415, refused.text
        assert session.get(f"{base_url}/api/v1/accounts", timeout=30).json()[-1]["name"] != "plain"
        # A route that reads no body ignores one; an empty body with any type passes.
        assert session.get(f"{base_url}/api/v1/accounts", data="x", headers=text, timeout=30).status_code == 200
        paused = session.post(f"{base_url}/api/v1/accounts/2/pause", data=b"", headers=text, timeout=30)
        assert paused.status_code == 200, paused.text
        schema = session.get(f"{base_url}/openapi.json", timeout=30).json()
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                codes = set(operation["responses"])
                assert {"413", "500"} <= codes, f"{method} {path}"
                assert ("415" in codes) == ("requestBody" in operation), f"{method} {path}"
                assert ("401" in codes) == bool(operation.get("security")), f"{method} {path}"


def test_the_schema_is_public_and_documents_keys_limits_and_defaults(base_url: str) -> None:
    """One rule for keys: every route needs one but `/health` and the API's description (`/openapi.json`,
    `/docs`), and the schema says so; admin-only routes document their 403; the history's limit (500
    at most) and the positions' default (`open`) are in the schema."""
    for path in ("/openapi.json", "/docs", "/health"):
        assert requests.get(f"{base_url}{path}", timeout=30).status_code == 200, path
    assert requests.get(f"{base_url}/redoc", timeout=30).status_code == 404  # ReDoc only loads from a CDN
    schema = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    assert "`/openapi.json`, `/docs`" in schema["info"]["description"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert bool(operation.get("security")) == (path != "/health"), f"{method} {path}: key needed?"
            if (method.upper(), path) in ADMIN_ONLY:
                assert "403" in operation["responses"], f"{method} {path}: admin only"
            if path != "/health":  # without a key: 401, as documented
                url = base_url + re.sub(r"{[^}]+}", "1", path)
                refused = requests.request(method, url, timeout=30)
                assert refused.status_code == 401, f"{method} {path}: {refused.status_code}"

    def query(path: str, name: str) -> dict[str, Any]:
        (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name]
        return dict(parameter)

    limit = query("/api/v1/decisions/history", "limit")
    assert (limit["schema"]["maximum"], limit["schema"]["default"]) == (500, 50)
    assert "500" in limit["description"]
    status = query("/api/v1/accounts/{account_id}/positions", "status")
    assert status["schema"]["default"] == "open" and "default" in status["description"]
