"""What each OpenRouter model supports and costs: a built-in offline table, refreshed from `GET {base}/models`.

OpenRouter lists every model's `supported_parameters` (e.g. `structured_outputs` = strict json_schema,
`response_format` = json mode, `temperature`, `max_tokens`, `reasoning`) and `pricing` (USD per token, as
strings). The built-in table is the offline default, from the public facts at the time of writing; prices
and capabilities change, so a live catalog (TTL-cached) replaces it whenever `/models` answers. A failed
refresh keeps what we have and is logged; it never fails a decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

from app.services.llm.llm_exceptions import ModelCatalogUnavailableError, ModelNotAvailableError
from app.services.llm.providers.knowledge_cutoffs import known_cutoff, parse_cutoff

log = logging.getLogger(__name__)

RECHECK_UNKNOWN_AFTER_S = 60.0  # a model missing from a catalog fetched longer ago than this: fetch it again

STRUCTURED_OUTPUTS = "structured_outputs"  # strict `response_format: {"type": "json_schema"}`
RESPONSE_FORMAT = "response_format"  # at least `{"type": "json_object"}`

_COMMON = ("max_tokens", "stop", "seed", "tools", "tool_choice")
_SAMPLING = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    prompt_per_m: float
    completion_per_m: float


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    supported_parameters: frozenset[str]
    price: ModelPrice | None = None
    context_length: int | None = None
    knowledge_cutoff: date | None = None  # the last day of its training data, when the payload says


def _info(model_id: str, params: Iterable[str], prompt: float, completion: float, context: int) -> ModelInfo:
    return ModelInfo(model_id, frozenset(params), ModelPrice(prompt, completion), context)


# Offline defaults. gpt-5, grok-4 and deepseek-r1 prices are from FACTS.md (snapshot); the others are the
# public list prices seen at the time of writing (approximate). Structured outputs: gpt-5 and grok-4 support
# strict json_schema; deepseek-r1 does not. Where support was unclear the entry stays conservative (json mode
# or prompt-only): a wrong "yes" plus `require_parameters` would make OpenRouter refuse to route at all.
BUILTIN_MODELS: dict[str, ModelInfo] = {
    info.model_id: info
    for info in (
        _info(
            "openai/gpt-5",
            (*_COMMON, "reasoning", "include_reasoning", RESPONSE_FORMAT, STRUCTURED_OUTPUTS),
            1.25,
            10.0,
            400_000,
        ),
        _info(
            "x-ai/grok-4",
            (*_COMMON, "temperature", "top_p", "reasoning", "include_reasoning", RESPONSE_FORMAT, STRUCTURED_OUTPUTS),
            3.0,
            15.0,
            256_000,
        ),
        _info("deepseek/deepseek-r1", (*_COMMON, *_SAMPLING, "reasoning", "include_reasoning"), 0.50, 2.15, 163_840),
        _info("deepseek/deepseek-chat-v3.1", (*_COMMON, *_SAMPLING, RESPONSE_FORMAT), 0.25, 1.0, 163_840),
        _info("qwen/qwen3-235b-a22b-2507", (*_COMMON, *_SAMPLING, RESPONSE_FORMAT), 0.08, 0.55, 262_144),
        _info(
            "anthropic/claude-sonnet-4.5",
            (*_COMMON, "temperature", "top_p", "reasoning", "include_reasoning"),
            3.0,
            15.0,
            1_000_000,
        ),
    )
}


def _per_million(per_token: Any) -> float:
    value = float(per_token) * 1e6
    if value < 0:  # OpenRouter uses -1 for "varies" (e.g. the auto router)
        raise ValueError("no fixed price")
    return round(value, 9)


def parse_models_payload(payload: Any) -> dict[str, ModelInfo]:
    """`GET /models` JSON (`{"data": [...]}`) -> ModelInfo per id; malformed entries are skipped."""
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise ValueError("`/models` answer has no `data` list")
    models: dict[str, ModelInfo] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        params = entry.get("supported_parameters") or []
        pricing = entry.get("pricing") or {}
        price: ModelPrice | None
        try:
            price = ModelPrice(_per_million(pricing["prompt"]), _per_million(pricing["completion"]))
        except (KeyError, TypeError, ValueError):
            price = None
        context = entry.get("context_length")
        models[entry["id"]] = ModelInfo(
            model_id=entry["id"],
            supported_parameters=frozenset(p for p in params if isinstance(p, str)),
            price=price,
            context_length=context if isinstance(context, int) else None,
            knowledge_cutoff=parse_cutoff(entry.get("knowledge_cutoff")),
        )
    return models


class ModelCatalog:
    """Capabilities and prices per model. Offline (built-in table) unless given a `base_url` to refresh from."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        ttl_s: float = 3600.0,
        retry_after_failure_s: float = 300.0,
        timeout_s: float = 10.0,
        table: Mapping[str, ModelInfo] | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key
        self.ttl_s = ttl_s
        self.retry_after_failure_s = retry_after_failure_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._transport = transport
        self._builtin: dict[str, ModelInfo] = dict(BUILTIN_MODELS if table is None else table)
        self._models: dict[str, ModelInfo] = dict(self._builtin)
        self.source = "builtin"
        self.refreshed_at: float | None = None
        self.last_error: str | None = None
        self._next_refresh_at: float | None = None  # None: never tried
        self._remote_ids: frozenset[str] = frozenset()  # what the endpoint listed at the last fetch

    # ------------------------------------------------------------------------------------------ lookups

    def info(self, model: str) -> ModelInfo | None:
        """The entry for `model`; a variant suffix (`:free`, `:nitro`) falls back to the base slug."""
        found = self._models.get(model)
        if found is None and ":" in model:
            found = self._models.get(model.split(":", 1)[0])
        return found

    def knows(self, model: str) -> bool:
        return self.info(model) is not None

    def supports(self, model: str, param: str) -> bool:
        info = self.info(model)
        return info is not None and param in info.supported_parameters

    def price(self, model: str) -> ModelPrice | None:
        info = self.info(model)
        return info.price if info else None

    def estimate_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for that many tokens at the catalog's prices; None for an unknown model."""
        price = self.price(model)
        if price is None:
            return None
        return (prompt_tokens * price.prompt_per_m + completion_tokens * price.completion_per_m) / 1e6

    def knowledge_cutoff(self, model: str) -> date | None:
        """The last day of `model`'s training data: the catalog's (`/models` `knowledge_cutoff`) first, the table of
        published cutoffs second; None when unknown, and for the rule baseline (no training data at all)."""
        info = self.info(model)
        return (info.knowledge_cutoff if info else None) or known_cutoff(model)

    def models(self) -> list[str]:
        return sorted(self._models)

    # ------------------------------------------------------------------------------------------ checking

    async def check(self, model: str) -> None:
        """Make sure `model` can be asked for: listed by the endpoint's live catalog (`GET {base}/models`).

        Raises ModelNotAvailableError when the catalog does not list it, and ModelCatalogUnavailableError when
        the catalog cannot be fetched now (a model is never taken unchecked). Offline (no `base_url`, an
        injected catalog) the built-in table is the catalog."""
        if self.base_url is None:
            if not self.knows(model):
                raise ModelNotAvailableError(f"{model!r} is not in the model catalog", model=model)
            return
        recent = self.refreshed_at is not None and self._clock() - self.refreshed_at < RECHECK_UNKNOWN_AFTER_S
        unreadable = self.last_error is not None or self.source != "remote" or self.is_stale()
        if unreadable or (not self._listed(model) and not recent):  # an unknown one may be listed since
            await self.refresh()
        if self.last_error is not None or self.source != "remote":
            raise ModelCatalogUnavailableError(
                f"the model catalog at {self.base_url}/models cannot be read ({self.last_error or 'never fetched'}), "
                f"so {model!r} cannot be checked: nothing was changed; try again when the endpoint answers"
            )
        if not self._listed(model):
            raise ModelNotAvailableError(
                f"{model!r} is not in the model catalog of {self.base_url} ({len(self._remote_ids)} models listed "
                f"at {self.base_url}/models)",
                model=model,
            )

    def _listed(self, model: str) -> bool:
        """Listed by the endpoint itself (the built-in table does not count: another endpoint serves others)."""
        return model in self._remote_ids or (":" in model and model.split(":", 1)[0] in self._remote_ids)

    def use_api_key(self, api_key: str | None) -> None:
        """The key for the next fetch (a rotated key)."""
        self._api_key = api_key

    # ------------------------------------------------------------------------------------------ refresh

    def is_stale(self) -> bool:
        if self.base_url is None:
            return False
        return self._next_refresh_at is None or self._clock() >= self._next_refresh_at

    async def ensure_fresh(self) -> None:
        """Refresh when the TTL has passed (no-op offline); never raises."""
        if self.is_stale():
            await self.refresh()

    async def refresh(self) -> bool:
        """Fetch `GET {base}/models`; True on success. On failure keep the current table and log why."""
        if self.base_url is None:
            return False
        url = f"{self.base_url}/models"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport) as client:
                response = await client.get(url, headers=headers)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            fetched = parse_models_payload(response.json())
            if not fetched:
                raise ValueError("empty model list")
        except (httpx.HTTPError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._next_refresh_at = self._clock() + min(self.retry_after_failure_s, self.ttl_s)
            log.warning("model catalog refresh from %s failed (%s); keeping the %s table", url, exc, self.source)
            return False
        self._models = {**self._builtin, **fetched}
        self._remote_ids = frozenset(fetched)
        self.source = "remote"
        self.last_error = None
        self.refreshed_at = self._clock()
        self._next_refresh_at = self.refreshed_at + self.ttl_s
        log.info("model catalog refreshed from %s: %d models", url, len(fetched))
        return True
