"""A fake OpenRouter: a real HTTP server on 127.0.0.1 (ephemeral port) in a background thread.

Each test scripts the answers of `POST /api/v1/chat/completions` as a queue of `Scripted` responses (status,
body, headers, delay, leading padding) and reads back every request the server saw. `GET /api/v1/models`
serves a scriptable catalog, and `GET /api/v1/key` the key's limits and credit (`key_info`; a key unknown to
`known_keys`, when set, answers 401). An empty queue answers 500 with a clear message, so a test never hangs.

    with FakeOpenRouter() as server:
        server.enqueue(Scripted(body=chat_completion('{"decisions": []}')))
        ... OpenRouterModel(base_url=server.base_url, ...)
        assert server.chat_requests[0].json["model"] == "openai/gpt-5"

or as the `fake_openrouter` pytest fixture (import `fake_openrouter_fixture` into a test module or conftest).

Body builders mirror the real bodies in `../shared/data/openrouter` (loaders for those are at the bottom).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

API_PREFIX = "/api/v1"
SHARED_OPENROUTER = Path(__file__).resolve().parents[4] / "shared" / "data" / "openrouter"
REAL_PADDING = "\n" + "         \n\n" * 8  # what the real raw bodies start with (newline + keep-alive spaces)

JSONBody = dict[str, Any] | list[Any]


@dataclass
class Scripted:
    """One scripted answer. `body` may be bytes, text, or a dict/list to JSON-encode."""

    status: int = 200
    body: bytes | str | JSONBody = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering (to trigger client timeouts)
    padding: str = ""  # whitespace sent before the JSON, like OpenRouter's keep-alive padding
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            raw = self.body
        elif isinstance(self.body, str):
            raw = self.body.encode()
        else:
            raw = json.dumps(self.body).encode()
        return self.padding.encode() + raw


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # the parsed JSON body (None when absent or not JSON)
    received_at: float


# ------------------------------------------------------------------------------------------ body builders


def chat_completion(
    content: str | None,
    *,
    model: str = "openai/gpt-5",
    provider: str = "OpenAI",
    finish_reason: str | None = "stop",
    native_finish_reason: str | None = None,
    prompt_tokens: int = 1200,
    completion_tokens: int = 350,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
    cost: float | None = 0.0049,
    reasoning: str | None = None,
    gen_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A non-streaming chat completion shaped like OpenRouter's (see responses/gpt-5-mini_with_usage_cost)."""
    created = created if created is not None else int(time.time())
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "image_tokens": 0},
    }
    if cost is not None:
        usage["cost"] = cost
        usage["is_byok"] = False
        usage["cost_details"] = {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": round(cost * 0.3, 10),
            "upstream_inference_completions_cost": round(cost * 0.7, 10),
        }
    return {
        "id": gen_id or f"gen-{created}-FakeOpenRouter0001",
        "provider": provider,
        "model": model,
        "object": "chat.completion",
        "created": created,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": finish_reason,
                "native_finish_reason": native_finish_reason or finish_reason,
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": reasoning},
            }
        ],
        "usage": usage,
    }


def hold_all(assets: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> str:
    """A model's answer (the message content) that holds every asset."""
    return json.dumps(
        {
            "decisions": [
                {
                    "asset": asset,
                    "action": "hold",
                    "allocation_usd": 0,
                    "exit_plan": "wait",
                    "rationale": "no edge",
                    "confidence": 40,
                    "risk_level": "low",
                }
                for asset in assets
            ],
            "portfolio_rationale": "stay flat",
            "total_allocation_usd": 0,
            "portfolio_risk_level": "low",
        }
    )


def error_body(code: int, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenRouter's error body: `{"error": {"code", "message", "metadata"}}`."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


def completion_with_error(
    code: int,
    message: str,
    *,
    model: str = "openai/gpt-5",
    provider: str = "OpenAI",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP 200 body carrying an `error` object: the model started, then failed (see the mid-stream error)."""
    body = chat_completion("", model=model, provider=provider, finish_reason=None, completion_tokens=0, cost=0.0)
    body.update(error_body(code, message, metadata))
    return body


def model_entry(
    model_id: str,
    supported_parameters: list[str],
    *,
    prompt_per_m: float = 1.0,
    completion_per_m: float = 2.0,
    context_length: int = 128_000,
) -> dict[str, Any]:
    """One `GET /models` entry; OpenRouter quotes prices in USD per token, as strings."""
    return {
        "id": model_id,
        "name": model_id,
        "context_length": context_length,
        "pricing": {"prompt": f"{prompt_per_m / 1e6:.10f}", "completion": f"{completion_per_m / 1e6:.10f}"},
        "supported_parameters": supported_parameters,
    }


def key_info(
    *,
    limit: float | None = 100.0,
    usage: float = 25.5,
    limit_remaining: float | None = None,
    limit_reset: str | None = "monthly",
    is_free_tier: bool = False,
    label: str = "sk-or-v1-au7...890",
) -> dict[str, Any]:
    """`GET /key`'s body, shaped like OpenRouter's documented answer (docs: api-reference/api-keys/get-current-key;
    `limit` and `limit_remaining` are null for a key without a credit limit)."""
    remaining = limit_remaining if limit_remaining is not None else (None if limit is None else limit - usage)
    return {
        "data": {
            "label": label,
            "limit": limit,
            "usage": usage,
            "usage_daily": usage,
            "usage_weekly": usage,
            "usage_monthly": usage,
            "byok_usage": 0,
            "byok_usage_daily": 0,
            "byok_usage_weekly": 0,
            "byok_usage_monthly": 0,
            "is_free_tier": is_free_tier,
            "is_provisioning_key": False,
            "is_management_key": False,
            "limit_remaining": remaining,
            "limit_reset": limit_reset,
            "include_byok_in_limit": False,
            "rate_limit": {"requests": 1000, "interval": "1h", "note": "This field is deprecated and safe to ignore."},
        }
    }


# --------------------------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr logging
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed: Any | None = json.loads(body) if body else None
        except ValueError:
            parsed = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake._record(
            RecordedRequest(
                method=self.command,
                path=path,
                headers=headers,
                body=body,
                json=parsed,
                received_at=time.monotonic(),
            )
        )
        self._send(fake._answer(self.command, path, headers.get("authorization", ""), parsed))

    def _send(self, scripted: Scripted) -> None:
        fake = self.server.fake
        if scripted.delay_s and fake._stopping.wait(scripted.delay_s):
            return
        payload = scripted.payload()
        try:
            self.send_response(scripted.status)
            self.send_header("Content-Type", scripted.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in scripted.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeOpenRouter) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeOpenRouter:
    """The scripted server. Use as a context manager (starts and stops the thread)."""

    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.models: list[dict[str, Any]] = list(models or [])
        self.requests: list[RecordedRequest] = []
        self._chat_queue: deque[Scripted] = deque()
        self._models_queue: deque[Scripted] = deque()
        self._key_queue: deque[Scripted] = deque()
        # `GET /key`: None answers `key_info()` for any key; otherwise each known key's body, 401 for the others.
        self.known_keys: dict[str, dict[str, Any]] | None = None
        # A chat completion with nothing queued: `responder(request body)` answers it when set (an answer that
        # depends on the model or the prompt), else 500.
        self.responder: Callable[[Any], Scripted] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeOpenRouter:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openrouter", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenRouter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenRouter is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    # ---------------------------------------------------------------------------------------- scripting

    def enqueue(self, *responses: Scripted) -> FakeOpenRouter:
        """Queue answers for `POST /chat/completions`, served in order."""
        with self._lock:
            self._chat_queue.extend(responses)
        return self

    def reply(
        self,
        body: bytes | str | JSONBody,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        padding: str = "",
        times: int = 1,
    ) -> FakeOpenRouter:
        """Shorthand: queue the same answer `times` times."""
        for _ in range(times):
            self.enqueue(Scripted(status, body, dict(headers or {}), delay_s, padding))
        return self

    def enqueue_models(self, *responses: Scripted) -> FakeOpenRouter:
        """Queue answers for `GET /models` (e.g. failures); when empty, `self.models` is served."""
        with self._lock:
            self._models_queue.extend(responses)
        return self

    def enqueue_key(self, *responses: Scripted) -> FakeOpenRouter:
        """Queue answers for `GET /key` (e.g. failures); when empty, `known_keys` decides."""
        with self._lock:
            self._key_queue.extend(responses)
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._chat_queue)

    # ---------------------------------------------------------------------------------------- inspection

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == f"{API_PREFIX}/chat/completions"]

    @property
    def models_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == f"{API_PREFIX}/models"]

    @property
    def key_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == f"{API_PREFIX}/key"]

    # ---------------------------------------------------------------------------------------- internals

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer(self, method: str, path: str, authorization: str = "", body: Any = None) -> Scripted:
        with self._lock:
            if method == "POST" and path == f"{API_PREFIX}/chat/completions":
                if self._chat_queue:
                    return self._chat_queue.popleft()
                if self.responder is not None:
                    return self.responder(body)
                return Scripted(500, error_body(500, "FakeOpenRouter: no scripted response left in the queue"))
            if method == "GET" and path == f"{API_PREFIX}/models":
                if self._models_queue:
                    return self._models_queue.popleft()
                return Scripted(200, {"data": list(self.models)})
            if method == "GET" and path == f"{API_PREFIX}/key":
                if self._key_queue:
                    return self._key_queue.popleft()
                key = authorization.removeprefix("Bearer ").strip()
                if self.known_keys is None:
                    return (
                        Scripted(200, key_info())
                        if key
                        else Scripted(401, error_body(401, "No auth credentials found"))
                    )
                if key in self.known_keys:
                    return Scripted(200, self.known_keys[key])
                return Scripted(401, error_body(401, "User not found."))
        return Scripted(404, error_body(404, f"FakeOpenRouter: no route for {method} {path}"))


@pytest.fixture(name="fake_openrouter")
def fake_openrouter_fixture() -> Iterator[FakeOpenRouter]:
    """The `fake_openrouter` fixture: a running fake for one test. Import `fake_openrouter_fixture` into a test
    module or a conftest (`# noqa: F401`) and ask for `fake_openrouter`."""
    with FakeOpenRouter() as fake:
        yield fake


# ------------------------------------------------------------------------------- the real recorded bodies


def openrouter_data_dir() -> Path | None:
    """`../shared/data/openrouter` when present (absent on a fresh clone)."""
    return SHARED_OPENROUTER if SHARED_OPENROUTER.is_dir() else None


def load_index() -> list[dict[str, Any]]:
    """`INDEX.json`: one entry per recorded file (http_status, models, provider, source)."""
    root = openrouter_data_dir()
    if root is None:
        return []
    entries: list[dict[str, Any]] = json.loads((root / "INDEX.json").read_text())
    return entries


def load_body(relative: str) -> bytes:
    """The exact bytes of a recorded file, e.g. `errors/429_provider_rate_limited.json`."""
    root = openrouter_data_dir()
    if root is None:
        raise FileNotFoundError(f"{SHARED_OPENROUTER} is absent")
    return (root / relative).read_bytes()


def recorded(relative: str, *, headers: dict[str, str] | None = None) -> Scripted:
    """A scripted answer replaying a recorded file with its recorded HTTP status (from INDEX.json)."""
    status = next((int(e["http_status"]) for e in load_index() if e["file"] == f"openrouter/{relative}"), 200)
    return Scripted(status=status, body=load_body(relative), headers=dict(headers or {}))


def raw_body_files() -> list[str]:
    """Relative names of the exact raw HTTP bodies (with leading whitespace padding)."""
    root = openrouter_data_dir()
    if root is None:
        return []
    return sorted(f"raw_bodies/{p.name}" for p in (root / "raw_bodies").glob("*.body.txt"))
