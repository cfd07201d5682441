"""The OpenRouter adapter of the `DecisionModel` port (OpenAI-compatible chat completions).

* Structured output when the model supports it (per the `ModelCatalog`): strict `json_schema` generated from
  `TradingDecision`, with `provider.require_parameters` so only providers honouring it are used; json mode
  when that is all the model has; otherwise the schema in the system prompt is all there is.
* Our own retries (the SDK's are off): 408, 429, 5xx, network errors and timeouts, with exponential backoff
  and full jitter, honouring `Retry-After` (capped). 400/401/402/403/404 and other 4xx are not retried.
  An HTTP 200 whose body carries an `error` object is a failure, classified by its `error.code`.
* One re-ask when the answer is valid JSON that breaks the schema, listing the validation errors.
* A bad answer never raises: the raw text comes back with `failure` set. `LLMAPIError` means no answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import openai
from sqlalchemy.exc import SQLAlchemyError

from app.core.errors import ConfigurationError
from app.schemas.trading_decision import TradingDecision
from app.services.llm.llm_exceptions import LLMAPIError
from app.services.llm.llm_metrics import KeyHealth
from app.services.llm.providers.base import ModelRequest, ModelResponse, TokenUsage
from app.services.llm.providers.json_schema import strict_json_schema
from app.services.llm.providers.key_check import KeyChecker
from app.services.llm.providers.model_catalog import RESPONSE_FORMAT, STRUCTURED_OUTPUTS, ModelCatalog
from app.services.llm.response_parser import ParseOutcome, parse_decision

if TYPE_CHECKING:
    from app.services.llm.llm_settings import KeyChoice

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
SCHEMA_NAME = "trading_decision"
STATUS_HINTS = {
    400: "bad request",
    401: "invalid API key",
    402: "out of credits",
    403: "input flagged by moderation",
    404: "no such model or no endpoint for it",
    408: "request timeout",
    429: "rate limited",
    502: "model down or invalid answer",
    503: "no provider meets the routing requirements",
}
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_retryable_status(status: int) -> bool:
    """408 timeout, 429 rate limit and 5xx (502 model down, 503 no provider) may pass by themselves."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait per `retry-after-ms` or `Retry-After` (delta-seconds or an HTTP date); None if absent."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(
    attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
    """Delay before attempt `attempt + 1`: Retry-After when given (capped), else full jitter."""
    if retry_after_s is not None:
        return min(retry_after_s, max_s)
    return rng.uniform(0.0, min(max_s, base_s * 2 ** (attempt - 1)))


class _AttemptFailed(Exception):
    def __init__(self, message: str, *, status: int | None, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class KeySource(Protocol):
    """Where the key in use comes from, asked before every call (`OpenRouterKeys`: stored key, else environment)."""

    async def choice(self) -> KeyChoice: ...


@dataclass
class _Exchange:
    """Bookkeeping of one `complete()` call: every body that carried usage, HTTP attempts, generation ids."""

    usages: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    generation_ids: list[str] = field(default_factory=list)


class OpenRouterModel:
    """A `DecisionModel` backed by OpenRouter's `POST /chat/completions`."""

    name = "openrouter"
    is_simulated = False

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 60.0,
        max_attempts: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        app_url: str | None = None,
        app_title: str | None = None,
        catalog: ModelCatalog | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        keys: KeySource | None = None,
        key_checker: KeyChecker | None = None,
    ) -> None:
        """`keys`: asked before every call for the key to use (a rotated key is used from the next call on);
        `api_key` is the key until it answers. `key_checker`: asks the endpoint about the key (OpenRouter's
        `GET /key`); None for an endpoint that is not OpenRouter (its key is never sent anywhere else)."""
        if not api_key or not api_key.strip():
            raise ConfigurationError("OpenRouter needs an API key")
        parts = urlsplit(base_url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS):
            raise ConfigurationError("the OpenRouter base URL must be https (plain http only for a local server)")
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.catalog = catalog if catalog is not None else ModelCatalog()
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._secret = api_key
        self._old_secrets: list[str] = []  # keys rotated out: still redacted from errors
        self.keys = keys
        self.key_checker = key_checker
        headers: dict[str, str] = {}
        if app_url:
            headers["HTTP-Referer"] = app_url
        if app_title:
            headers["X-OpenRouter-Title"] = app_title
            headers["X-Title"] = app_title
        # max_retries=0: we retry ourselves. No custom http client: TLS verification stays on.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout_s, default_headers=headers
        )
        self._schema = strict_json_schema(TradingDecision)

    async def aclose(self) -> None:
        await self._client.close()

    # ---------------------------------------------------------------------------------------- the port

    async def complete(self, request: ModelRequest) -> ModelResponse:
        model = request.model or self.model
        await self._use_current_key()
        await self.catalog.ensure_fresh()
        started = time.perf_counter()
        exchange = _Exchange()
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": request.system_prompt},
            {"role": "user", "content": request.user_prompt},
        ]
        params = self.request_params(model, request.temperature)
        body = await self._call(model, messages, params, exchange)
        content, finish, reasoning = _answer(body)
        outcome = parse_decision(content, request.symbols, finish_reason=finish, reasoning=reasoning)
        note: str | None = None
        first_raw: str | None = None
        if outcome.json_found and not outcome.schema_valid and outcome.failure is None:
            errors = outcome.errors or ["the JSON does not match the TradingDecision schema"]
            said = content if content and content.strip() else json.dumps(outcome.value)  # JSON found in reasoning
            reask = [
                *messages,
                {"role": "assistant", "content": said},
                {"role": "user", "content": reask_prompt(errors)},
            ]
            try:
                body2 = await self._call(model, reask, params, exchange)
            except LLMAPIError as exc:  # we have an answer: return it rather than raise
                note = f"re-ask after schema errors failed ({exc}); schema errors: {'; '.join(errors)}"
            else:
                first_raw = content if content is not None else ""
                body = body2
                content, finish, reasoning = _answer(body)
                outcome = parse_decision(content, request.symbols, finish_reason=finish, reasoning=reasoning)
                note = f"re-asked once after schema errors: {'; '.join(errors)}"
        latency_ms = (time.perf_counter() - started) * 1000
        served = body.get("model") if isinstance(body.get("model"), str) else None
        failure = _failure(outcome)
        error = _error_text(outcome, failure)
        if note:
            error = f"{error}; {note}" if error else note
        usage, estimated = self._usage(exchange.usages, served or model)
        log.info(
            "openrouter %s served by %s via %s: %.0f ms, %d HTTP attempt(s), generations %s, cost %s, failure %s",
            model,
            served,
            body.get("provider"),
            latency_ms,
            exchange.attempts,
            ",".join(exchange.generation_ids),
            usage.cost_usd,
            failure,
        )
        return ModelResponse(
            raw_text=content,
            decision=outcome.decision,
            model_requested=model,
            model_served=served,
            provider=str(body.get("provider") or self.name),
            latency_ms=latency_ms,
            usage=usage,
            finish_reason=finish,
            failure=failure,
            error=error,
            generation_id=exchange.generation_ids[-1] if exchange.generation_ids else None,
            attempts=exchange.attempts,
            reasked=first_raw is not None,
            first_raw_text=first_raw,
            cost_estimated=estimated,
        )

    def request_params(self, model: str, temperature: float | None = None) -> dict[str, Any]:
        """The model-dependent part of the request: response_format, provider routing, sampling limits.
        `temperature`: the request's own (an experiment's variant), else LLM_TEMPERATURE."""
        temperature = self.temperature if temperature is None else temperature
        params: dict[str, Any] = {}
        if self.catalog.supports(model, STRUCTURED_OUTPUTS):
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": self._schema},
            }
            params["extra_body"] = {"provider": {"require_parameters": True}}
        elif self.catalog.supports(model, RESPONSE_FORMAT):
            params["response_format"] = {"type": "json_object"}
        known = self.catalog.knows(model)  # with require_parameters, an unsupported parameter blocks routing
        if self.max_tokens is not None and (not known or self.catalog.supports(model, "max_tokens")):
            params["max_tokens"] = self.max_tokens
        if temperature is not None and (not known or self.catalog.supports(model, "temperature")):
            params["temperature"] = temperature
        return params

    # ---------------------------------------------------------------------------------------- transport

    async def _call(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], exchange: _Exchange
    ) -> dict[str, Any]:
        last: _AttemptFailed | None = None
        for attempt in range(1, self.max_attempts + 1):
            exchange.attempts += 1
            try:
                return await self._attempt(model, messages, params, exchange)
            except _AttemptFailed as failed:
                if not failed.retryable:
                    raise LLMAPIError(
                        self._redact(failed.message), status_code=failed.status, retryable=False
                    ) from None
                last = failed
            if attempt < self.max_attempts:
                delay = backoff_delay(
                    attempt,
                    base_s=self.backoff_base_s,
                    max_s=self.backoff_max_s,
                    retry_after_s=last.retry_after,
                    rng=self._rng,
                )
                log.warning(
                    "openrouter %s attempt %d/%d failed (%s); retrying in %.2f s",
                    model,
                    attempt,
                    self.max_attempts,
                    self._redact(last.message),
                    delay,
                )
                await self._sleep(delay)
        assert last is not None
        message = f"{last.message} (gave up after {self.max_attempts} attempts)"
        raise LLMAPIError(self._redact(message), status_code=last.status, retryable=True)

    async def _attempt(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any], exchange: _Exchange
    ) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(
                self._client.chat.completions.with_raw_response.create(model=model, messages=messages, **params),  # type: ignore[arg-type]
                timeout=self.timeout_s,
            )
        except (TimeoutError, openai.APITimeoutError):
            raise _AttemptFailed(
                f"OpenRouter timed out after {self.timeout_s:g} s", status=None, retryable=True
            ) from None
        except openai.APIConnectionError as exc:
            raise _AttemptFailed(f"cannot reach OpenRouter: {exc.message}", status=None, retryable=True) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            hint = STATUS_HINTS.get(status, "error")
            raise _AttemptFailed(
                f"OpenRouter HTTP {status} ({hint}): {_error_message(exc.body, exc.message)}",
                status=status,
                retryable=is_retryable_status(status),
                retry_after=parse_retry_after(exc.response.headers),
            ) from None
        except openai.OpenAIError as exc:
            raise _AttemptFailed(f"OpenRouter client error: {exc}", status=None, retryable=False) from None
        try:
            body = json.loads(raw.content)  # json.loads skips the leading whitespace padding
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            raise _AttemptFailed(
                "OpenRouter answered HTTP 200 with a body that is not JSON", status=502, retryable=True
            )
        if isinstance(body.get("id"), str):
            exchange.generation_ids.append(body["id"])
        if isinstance(body.get("usage"), dict):
            exchange.usages.append(body["usage"])
        error = body.get("error")
        if error is not None:  # the model started, then failed: HTTP 200 with an error object
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) else 502
            raise _AttemptFailed(
                f"OpenRouter error in a 200 answer (code {code}): {_error_message(error, 'unknown error')}",
                status=status,
                retryable=is_retryable_status(status),
                retry_after=parse_retry_after(raw.headers),
            )
        return body

    # ---------------------------------------------------------------------------------------- the key

    async def _use_current_key(self) -> None:
        """Switch to the key `keys` names now (rotation without a restart); LLMAPIError 401 when there is none."""
        if self.keys is None:
            return
        try:
            choice = await self.keys.choice()
        except SQLAlchemyError as exc:  # the database is down: keep the key in use rather than fail the call
            log.warning("cannot read the stored OpenRouter key (%s); keeping the key in use", type(exc).__name__)
            return
        if choice.key is None:
            raise LLMAPIError(
                "no OpenRouter key: none is stored and OPENROUTER_API_KEY is unset (set one with "
                "PUT /api/v1/llm/openrouter-key or `trading-agent llm set-key`)",
                status_code=401,
                retryable=False,
            )
        if choice.key != self._secret:
            self.use_key(choice.key)
            log.info("OpenRouter key changed: now the %s key %s", choice.source, choice.fingerprint)

    def use_key(self, key: str) -> None:
        """Send `key` from the next request on (requests in flight finish with the old one)."""
        if key == self._secret:
            return
        self._old_secrets.append(self._secret)
        self._secret = key
        # A copy of the client sharing its connection pool: requests in flight keep theirs.
        self._client = self._client.with_options(api_key=key)
        self.catalog.use_api_key(key)

    async def check_key(self, *, ask: bool = True) -> KeyHealth | None:
        """The provider's word on the key in use (validity, credit left), cached by `key_checker`; None without
        a key checker (not OpenRouter). `ask=False`: only the last answer about that key, never a request."""
        from app.services.llm.llm_settings import key_fingerprint

        if self.key_checker is None:
            return None
        key: str | None = self._secret
        source = "environment"
        fingerprint: str | None = key_fingerprint(self._secret)
        if self.keys is not None:
            try:
                choice = await self.keys.choice()
            except SQLAlchemyError:
                pass  # the database is down: the key in use
            else:
                key, source, fingerprint = choice.key, choice.source, choice.fingerprint
        if not ask and key is not None:  # no key at all: `check` says so without a request
            last = self.key_checker.last(fingerprint)
            return last.model_copy(update={"source": source}) if last is not None else None
        return await self.key_checker.check(key, source=source, fingerprint=fingerprint)

    # ---------------------------------------------------------------------------------------- helpers

    def _redact(self, text: str) -> str:
        for secret in (self._secret, *self._old_secrets):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _usage(self, usages: list[dict[str, Any]], model: str) -> tuple[TokenUsage, bool]:
        """Usage summed over every billed body; True when the cost is the catalog's estimate."""

        def total(*path: str) -> int | float | None:
            values = [
                v for v in (_dig(u, path) for u in usages) if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            return sum(values) if values else None

        def as_int(value: int | float | None) -> int | None:
            return int(value) if value is not None else None

        prompt, completion = as_int(total("prompt_tokens")), as_int(total("completion_tokens"))
        cost = total("cost")
        estimated = False
        if cost is None and prompt is not None and completion is not None:
            cost = self.catalog.estimate_cost(model, prompt, completion)  # no `usage.cost`: the catalog price
            estimated = cost is not None
        usage = TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=as_int(total("total_tokens")),
            reasoning_tokens=as_int(total("completion_tokens_details", "reasoning_tokens")),
            cached_tokens=as_int(total("prompt_tokens_details", "cached_tokens")),
            cost_usd=float(cost) if cost is not None else None,
        )
        return usage, estimated


def reask_prompt(errors: list[str]) -> str:
    listed = "\n".join(f"- {error}" for error in errors[:20])
    return (
        "Your previous answer was valid JSON but did not match the required schema:\n"
        f"{listed}\n"
        "Answer again with only the corrected JSON object, following the schema exactly, and nothing else."
    )


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _answer(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(content, finish_reason, reasoning) of the first choice."""
    choices = body.get("choices")
    choice: dict[str, Any] = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    reasoning = message.get("reasoning")
    finish = choice.get("finish_reason")
    return (
        content if isinstance(content, str) else None,
        finish if isinstance(finish, str) else None,
        reasoning if isinstance(reasoning, str) else None,
    )


def _error_message(error: Any, fallback: str) -> str:
    """`error.message` of an OpenRouter error object (plus the upstream provider's raw message if any)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict) or not error.get("message"):
        return fallback
    message = str(error["message"])
    metadata = error.get("metadata")
    if isinstance(metadata, dict) and metadata.get("raw"):
        provider = metadata.get("provider_name") or "upstream"
        message = f"{message} ({provider}: {str(metadata['raw'])[:500]})"
    return message


def _failure(outcome: ParseOutcome) -> str | None:
    if outcome.decision is not None:
        return None
    return outcome.failure or "schema"


def _error_text(outcome: ParseOutcome, failure: str | None) -> str | None:
    if failure is None:
        return None
    if outcome.errors:
        return f"{failure}: {'; '.join(outcome.errors)}"
    return {
        "empty": "the model returned no content",
        "truncated": "the answer was cut off (finish_reason length)",
        "no_json": "no JSON object in the answer",
        "invalid_json": "the JSON in the answer does not parse",
    }.get(failure, "the JSON does not match the TradingDecision schema")
