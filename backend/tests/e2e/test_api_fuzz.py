"""Property-based fuzzing of the live API: Schemathesis loads `/openapi.json` from the running server and sends
generated requests to every operation, authenticated with the admin key. No answer may be a 5xx, and every
answer must match what the schema documents (status code, content type, body, headers).

Runs on SQLite only (its own temporary database); the PostgreSQL pass (`-m db -k postgresql`) skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.bootstrap import Agent, build_agent
from app.core.clock import ManualClock
from app.core.config import Settings
from app.main import create_app
from app.services.market_data.simulator import MarketSimulator
from tests.conftest import ADMIN_KEY, START, IsolatedSettings
from tests.e2e.server import free_port
from tests.e2e.test_api_security import PUBLIC, api_operations

pytestmark = pytest.mark.db

POSITIVE_EXAMPLES = 25  # per operation
NEGATIVE_EXAMPLES = 10  # per operation: data that breaks the schema must get a documented 4xx, never a 5xx
# Generating a whole TradingContext takes about 0.8 s a case: fewer examples keep the run short.
BUDGETS = {"POST /api/v1/decisions/validate": (6, 3)}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
AUTH = {"X-API-Key": ADMIN_KEY}
EXISTING_ACCOUNTS = (1, 2)  # the default account and one created before the run


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
    settings = IsolatedSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}",
        admin_api_key=ADMIN_KEY,
        secret_key_file=str(tmp_path / "secret.key"),
        # The fuzzer sends hundreds of mutating requests; the per-key limit has its own test.
        api_mutations_per_minute=100_000,
    )
    with serve_in_thread(settings) as url:
        created = requests.post(f"{url}/api/v1/accounts", json={"name": "fuzz-b"}, headers=AUTH, timeout=30)
        assert created.status_code == 201, created.text
        yield url


def _strategy(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """Generated cases, most of them aimed at an account that exists so the happy paths run too."""
    generated = operation.as_strategy(generation_mode=mode, headers=AUTH)
    if not mode.is_positive:
        return generated
    names = {p.name for p in operation.path_parameters}
    queries = {p.name for p in operation.query}
    aimed: list[st.SearchStrategy[Any]] = []
    for account_id in EXISTING_ACCOUNTS:
        if "account_id" in names:
            aimed.append(
                operation.as_strategy(generation_mode=mode, headers=AUTH, path_parameters={"account_id": account_id})
            )
        if "account_id" in queries:
            aimed.append(operation.as_strategy(generation_mode=mode, headers=AUTH, query={"account_id": account_id}))
    return st.one_of(generated, *aimed) if aimed else generated


def _fuzz(operation: Any, mode: GenerationMode, examples: int, base_url: str, session: requests.Session) -> int:
    """Send up to `examples` generated requests; returns how many were sent. Raises on the first failing check
    (after Hypothesis has shrunk it)."""
    sent = 0

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=_strategy(operation, mode))
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=base_url, session=session, headers=AUTH, checks=CHECKS, timeout=30)

    try:
        run()
    except Unsatisfiable:
        # `GET /health` takes no input at all: there is nothing to break, so no negative case exists.
        if mode.is_positive:
            raise
    return sent


def test_fuzz_every_operation_of_the_live_schema(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=schemathesis.Config(), timeout=30)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an operation Schemathesis cannot load: {result!r}"
        operations.append(result.ok())
    app = create_app(IsolatedSettings(database_url="sqlite+aiosqlite://"))
    served = {f"{method} {path}" for method, path in api_operations(app) if path == "/health" or path not in PUBLIC}
    assert {op.label for op in operations} == served, "every API route (the docs aside) is in the schema"

    failures: list[str] = []
    sent = {GenerationMode.POSITIVE: 0, GenerationMode.NEGATIVE: 0}
    with requests.Session() as session:
        for operation in operations:
            budget = BUDGETS.get(operation.label, (POSITIVE_EXAMPLES, NEGATIVE_EXAMPLES))
            for mode, examples in zip((GenerationMode.POSITIVE, GenerationMode.NEGATIVE), budget, strict=True):
                try:
                    sent[mode] += _fuzz(operation, mode, examples, base_url, session)
                except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report them all
                    failures.append(f"== {operation.label} ({mode.value} data)\n{exc}")
    print(
        f"\nfuzzed {len(operations)} operations: {sent[GenerationMode.POSITIVE]} positive and "
        f"{sent[GenerationMode.NEGATIVE]} negative examples, {len(failures)} failing"
    )
    assert not failures, "\n\n".join(failures)


def test_edge_cases_get_a_documented_4xx(base_url: str) -> None:
    """Inputs that used to end in a 500 (an id too large for the database, a window reaching before year 1) or
    in an undocumented status (a body that is not UTF-8): each gets a documented 4xx now, checked like the fuzzing."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=schemathesis.Config(), timeout=30)
    too_big = 2**31  # ids are 32-bit integers in PostgreSQL
    cases = [
        ("GET", "/api/v1/decisions/metrics", {"query": {"account_id": 1, "timeframe": "9999999w"}}, 400),
        (
            "GET",
            "/api/v1/strategies/{strategy_id}/performance",
            {"path_parameters": {"strategy_id": "conservative"}, "query": {"timeframe": "9999999w"}},
            400,
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
