"""What a ccxt exception means for the `Exchange` port's outcome policy (see `base.py`), with a clear reason.

`classify(exc, venue)` sorts a ccxt error into one of:

- `refused`: the venue said no, definitively (insufficient margin, below the minimum notional, reduce-only
  would increase the position, would trigger immediately, bad precision...). An order comes back rejected.
- `duplicate`: the client order id is already used on the account: the order is ours, look it up.
- `not_found`: no such order (cancel / fetch).
- `clock`: the request's timestamp was outside the venue's window (Binance -1021): re-sync the time; the
  request was refused, not processed.
- `rate_limited`: 429 / 418 (or a venue code saying so): nothing was processed; wait before the next request.
- `auth`: the credentials were refused.
- `ambiguous`: timeout, network error, 5xx, an unreadable answer, any non-ccxt exception: the request may or may
  not have been processed; an order must be looked up by its client id, never sent again.

Venue codes and messages (Binance `{"code": -2019, "msg": ...}` in the error text, Hyperliquid's status
`error` strings) win over ccxt's exception class, which differs between ccxt's API sections (Binance -2019 is
`InsufficientFunds` in one and `OperationFailed` in another).

`scrub(text, secrets)` removes signatures, API keys, private keys and the given secrets from a text before it
goes into an exception or a log line (ccxt's errors echo the URL with its query string).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import ccxt.async_support as ccxt

from app.services.exchange.base import ExchangeUnavailableError


class RateLimitedError(ExchangeUnavailableError):
    """The venue refused a request for its rate limit (429 / 418), or the adapter held one back while waiting out
    such a refusal: nothing was processed. No request goes to the venue before `retry_after_s` has passed."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OutcomeUnknownError(ExchangeUnavailableError):
    """An order was sent, its outcome is unknown and the lookups by client id did not find it: it is never sent
    again; the reconciler looks it up by `client_order_id`."""

    def __init__(self, message: str, client_order_id: str) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


Kind = Literal["refused", "duplicate", "not_found", "clock", "rate_limited", "auth", "ambiguous"]


@dataclass(frozen=True, slots=True)
class Classified:
    kind: Kind
    reason: str  # clear, scrubbed, for a rejected order's reason or an exception message
    code: str | None = None  # the venue's code when it gave one (Binance)


_SCRUB = [
    (re.compile(r"(signature=)[^&\s'\"]+", re.I), r"\1***"),
    (re.compile(r"(\"signature\"\s*:\s*)(\{[^}]*\}|\"[^\"]*\")", re.I), r"\1\"***\""),
    (
        re.compile(r"((?:apiKey|api_key|X-MBX-APIKEY|secret|privateKey)['\"]?\s*[:=]\s*['\"]?)[^'\",&}\s]+", re.I),
        r"\1***",
    ),
    (re.compile(r"\b(0x)?[0-9a-fA-F]{64}\b"), "***"),
]

_CODE = re.compile(r"\"code\"\s*:\s*\"?(-?\d+)")
_MSG = re.compile(r"\"msg\"\s*:\s*\"((?:[^\"\\]|\\.)*)\"")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without signatures, API keys, 64-hex keys and any of `secrets` (each replaced by ***)."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class ScrubFilter(logging.Filter):
    """Scrubs every record of a logger (ccxt logs each request at DEBUG with its API key header and signature)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage(), self.secrets), ()
        return True


_CCXT_FILTER = ScrubFilter()


def scrub_ccxt_logs(secrets: Iterable[str]) -> None:
    """Scrub ccxt's request logs, and `secrets` in them, from now on."""
    _CCXT_FILTER.secrets.update(s for s in secrets if s and len(s) >= 6)
    for name in ("ccxt", "ccxt.base.exchange"):
        logger = logging.getLogger(name)
        if _CCXT_FILTER not in logger.filters:
            logger.addFilter(_CCXT_FILTER)


def venue_code(text: str) -> tuple[str | None, str | None]:
    """The Binance error code and message found in an error text, if any."""
    code, msg = _CODE.search(text), _MSG.search(text)
    return (code.group(1) if code else None), (msg.group(1) if msg else None)


# Binance codes -> (kind, reason); `{notional}` is filled in by the caller's min notional text.
_BINANCE: dict[str, tuple[Kind, str]] = {
    "-2019": ("refused", "insufficient margin"),
    "-2018": ("refused", "insufficient balance"),
    "-4164": ("refused", "below the minimum notional of {notional}"),
    "-2022": ("refused", "reduce-only order would increase the position (or there is no position to reduce)"),
    "-2021": ("refused", "would trigger immediately"),
    "-4118": ("refused", "reduce-only order refused: the position, less its other reduce-only orders, is too small"),
    "-4045": ("refused", "the venue's limit of open stop orders is reached"),
    "-4061": ("refused", "the order's position side does not match the account's setting (hedge mode is not used)"),
    "-4047": ("refused", "the margin mode cannot change while the asset has open orders"),
    "-4048": ("refused", "the margin mode cannot change while the asset has a position"),
    "-4400": ("refused", "the venue allows this account only reduce-only orders for now (its trading rules)"),
    "-4116": ("duplicate", "duplicate client order id"),
    "-20132": ("duplicate", "duplicate client order id"),
    "-2013": ("not_found", "order does not exist"),
    "-2011": ("not_found", "unknown order (already filled, canceled or never placed)"),
    "-20124": ("not_found", "unknown conditional order (already triggered, canceled or never placed)"),
    "-1021": ("clock", "timestamp outside the venue's receive window (clock drift); time difference re-synced"),
    "-1003": ("rate_limited", "rate limited"),
    "-1015": ("rate_limited", "too many new orders"),
    "-2014": ("auth", "API key format invalid"),
    "-2015": ("auth", "invalid API key, IP or permissions for this action"),
    "-1022": ("auth", "signature not valid (wrong API secret)"),
    "-1111": ("refused", "price or quantity has more decimals than the venue allows"),
    "-4003": ("refused", "quantity must be positive"),
    "-4005": ("refused", "quantity above the venue's maximum"),
    "-4014": ("refused", "price not a multiple of the tick size"),
    "-4028": ("refused", "leverage not valid for this symbol"),
    "-4131": ("refused", "no counterparty price within the venue's price band (PERCENT_PRICE)"),
    "-1000": ("ambiguous", "unknown error at the venue: outcome unknown"),
    "-1001": ("ambiguous", "venue internal error: outcome unknown"),
    "-1006": ("ambiguous", "unexpected answer from the venue's message bus: outcome unknown"),
    "-1007": ("ambiguous", "venue backend timeout: outcome unknown"),
    "-1008": ("ambiguous", "venue overloaded: outcome unknown"),
}

# Hyperliquid messages (substring, lower case) -> (kind, reason)
_HYPERLIQUID: list[tuple[str, Kind, str]] = [
    ("insufficient margin", "refused", "insufficient margin"),
    ("minimum value of", "refused", "below the minimum notional of {notional}"),
    ("reduce only order would increase position", "refused", "reduce-only order would increase the position"),
    ("reduce only", "refused", "reduce-only order would increase the position (or there is no position to reduce)"),
    ("immediately trigger", "refused", "would trigger immediately"),
    ("trigger immediately", "refused", "would trigger immediately"),
    ("invalid tp/sl price", "refused", "would trigger immediately (invalid TP/SL price)"),
    ("could not immediately match", "refused", "no liquidity: the order could not fill immediately"),
    ("no liquidity available", "refused", "no liquidity for a market order"),
    ("duplicate", "duplicate", "duplicate client order id"),
    (
        "never placed, already canceled, or filled",
        "not_found",
        "unknown order (already filled, canceled or never placed)",
    ),
    ("too many cumulative requests", "rate_limited", "rate limited (cumulative request limit)"),
    ("user or api wallet", "auth", "the wallet or API wallet is not known to the venue"),
    ("must be divisible by tick size", "refused", "price not a multiple of the tick size"),
    ("invalid size", "refused", "quantity not valid at the venue's size decimals"),
    ("zero size", "refused", "quantity rounds to zero"),
    ("80% away from the reference price", "refused", "price more than 80% away from the reference price"),
    ("invalid leverage", "refused", "leverage not valid for this asset"),
    ("nonce", "clock", "nonce outside the venue's window (clock drift)"),
]


def classify(
    exc: BaseException, venue: str, *, notional: str = "the venue's minimum", secrets: Iterable[str] = ()
) -> Classified:
    """Sort a ccxt exception by what it means for the outcome policy (see the module docstring)."""
    text = scrub(str(exc), secrets)
    if not isinstance(exc, ccxt.BaseError):  # a failure inside the client (e.g. parsing an answer): nothing is known
        return Classified("ambiguous", f"unexpected {type(exc).__name__}: {text}")
    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return Classified("rate_limited", "rate limited")
    if venue == "binanceusdm":
        code, msg = venue_code(text)
        if code is not None and code in _BINANCE:
            kind, reason = _BINANCE[code]
            return Classified(kind, reason.format(notional=notional), code)
        detail = f"{msg} (code {code})" if msg is not None else text
    else:
        code, lowered = None, text.lower()
        for needle, kind, reason in _HYPERLIQUID:
            if needle in lowered:
                return Classified(kind, reason.format(notional=notional))
        detail = text
    if isinstance(exc, ccxt.InvalidNonce) and not isinstance(exc, ccxt.ChecksumError):
        return Classified("clock", "timestamp or nonce outside the venue's window (clock drift)", code)
    if isinstance(exc, ccxt.AuthenticationError):
        return Classified("auth", f"the venue refused the credentials: {detail}", code)
    if isinstance(exc, ccxt.OrderNotFound):
        return Classified("not_found", f"order not found: {detail}", code)
    if isinstance(exc, ccxt.DuplicateOrderId):
        return Classified("duplicate", "duplicate client order id", code)
    if isinstance(exc, ccxt.InsufficientFunds):
        return Classified("refused", "insufficient margin", code)
    if isinstance(exc, ccxt.OperationFailed):  # network errors, timeouts, 5xx, unreadable answers
        return Classified("ambiguous", f"{type(exc).__name__}: {detail}", code)
    return Classified("refused", f"the venue refused it: {detail}", code)
