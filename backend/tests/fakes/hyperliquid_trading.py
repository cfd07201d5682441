"""Fake Hyperliquid perpetuals with trading: signed `POST /exchange` actions and the private `POST /info` types,
on one `VenueBook` account, over a real socket (extends the public fake `FakeHyperliquid`).

Wire format as the venue speaks it (learned from its API docs, ccxt 4.5.90's hyperliquid client and ccxt's static
request/response samples):
- `/exchange` takes `{"action": {...}, "nonce": ms, "signature": {"r", "s", "v"}, "vaultAddress"?, "expiresAfter"?}`.
  L1 actions (order, cancel, cancelByCloid, updateLeverage, setReferrer, ...) are signed as the EIP-712 "Agent"
  phantom agent: connectionId = keccak(msgpack(action) + nonce as 8 bytes + vault flag [+ vault address]
  [+ 0x00 + expiresAfter]), source "b" on testnet and "a" on mainnet, domain ("Exchange", "1", 1337, 0x0).
  User-signed actions (approveBuilderFee) are typed data under ("HyperliquidSignTransaction", "1",
  signatureChainId, 0x0). The signer is recovered from r/s/v (coincurve) and must be the configured wallet
  (or an agent added with `add_agent`); any other signer gets the venue's answer for an unknown signer,
  `{"status": "err", "response": "User or API Wallet 0x... does not exist."}` (ccxt raises InvalidOrder for it).
  The nonce must be new for the signer, larger than the smallest of its 100 highest nonces, and within
  (now - 2 days, now + 1 day) of the fake's clock; otherwise `"Invalid nonce: ..."`.
- Order answers: `{"status": "ok", "response": {"type": "order", "data": {"statuses": [...]}}}`, one status per
  order: `{"resting": {"oid"[, "cloid"]}}`, `{"filled": {"totalSz", "avgPx", "oid"[, "cloid"]}}`,
  `"waitingForTrigger"` (TP/SL of a grouped request) or `{"error": "<the venue's text> asset=N"}`.
  Cancels: statuses `"success"` or `{"error": "Order was never placed, already canceled, or filled. asset=N"}`.
- Mapping onto the book: a Hyperliquid market order is an IOC limit with a slippage price; every `Ioc` order is a
  book market order capped at that price (it fills at the mark if the mark is within the cap, else expires:
  `partial_next` applies to it). `Gtc` is a book limit, `Alo` a book limit refused if marketable. Trigger orders
  (`{"trigger": {"isMarket", "triggerPx", "tpsl"}}`): tpsl "sl" -> stop_market, "tp" -> take_profit_market, with
  the sent reduce-only flag; in a `positionTpsl` group a size of 0 means the whole position (close_position).
  A stop-limit (isMarket false) executes as a market order when it fires (simplification). In a `normalTpsl`
  group the first order is the parent and the TP/SL are placed once the parent has filled (a parent that rests is
  not supported: its TP/SL are answered with an error). The cloid (0x + 32 hex) is the book's client id.
- A fired trigger order keeps its oid and cloid: its status becomes "filled" (or "triggered" while its market
  order is open) and its fills carry its oid; the book's child market order is not shown.
- Errors of the book -> the venue's texts: insufficient margin "Insufficient margin to place order.", minimum
  "Order must have minimum value of $10.", "Reduce only order would increase position.", "Order has invalid
  size.", "Invalid TP/SL price." (a trigger that would fire at once), a used cloid "Duplicate cloid." (the exact
  text of the venue is not documented: ccxt raises a plain ExchangeError for it), an unfilled IOC "Order could not
  immediately match against any resting orders.", a price off the tick rule "Price must be divisible by tick size.".
- Private info types: clearinghouseState, openOrders, frontendOpenOrders, orderStatus (oid or cloid; unknown ->
  `{"status": "unknownOid"}`), historicalOrders, userFills, userFillsByTime, userFunding, userAbstraction
  ("default"), userRateLimit. An address other than the wallet is an empty account.
- Not modelled: builder fees (ccxt attaches a builder after approveBuilderFee: accepted, not charged), vaults and
  sub-accounts (refused), cross margin (the book's margin is isolated; the mode is stored and shown).

Faults: `fail`/`slow` (FakeVenue: before processing), `lose_answer(match)` (processed, the answer withheld past
the client's timeout, then the connection is closed), `fail_after(match, status)` (processed, then answered with
`status`), `rate_limit(...)` (a 429, or the address-based limit answer); `match` is the /exchange action type
("order", "cancel", "cancelByCloid", "updateLeverage") or the /info type. `fake.book` is the VenueBook (pin a
price with `fake.book.set_price`); the book is ticked at every request.

Standalone (README dry run), from backend/: `python -m tests.fakes.hyperliquid_trading --port 9101`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self

import coincurve
from ccxt.static_dependencies.keccak import SHA3

from tests.fakes import exchange_bodies as bodies
from tests.fakes.exchange_servers import Answer, FakeHyperliquid, _Handler
from tests.fakes.venue_book import (
    BookFill,
    BookOrder,
    BookOrderType,
    Side,
    VenueBook,
    VenueReject,
    add_open_by_hand_option,
    open_by_hand,
)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
NONCE_PAST_MS = 2 * 86_400_000  # the venue takes nonces within (T - 2 days, T + 1 day)
NONCE_FUTURE_MS = 86_400_000
NONCES_KEPT = 100  # the venue keeps the 100 highest nonces per signer
UNDESERIALIZABLE: Answer = (422, b"Failed to deserialize the JSON body into the target type", {})
CLOID = re.compile(r"^0x[0-9a-f]{32}$")
ORDER_ERRORS = {
    "insufficient_margin": "Insufficient margin to place order.",
    "min_notional": "Order must have minimum value of $10.",
    "reduce_only": "Reduce only order would increase position.",
    "duplicate_client_id": "Duplicate cloid.",
    "bad_quantity": "Order has invalid size.",
    "would_trigger_immediately": "Invalid TP/SL price.",
    "unknown_order": "Order was never placed, already canceled, or filled.",
    "bad_leverage": "Invalid leverage value.",
    "unknown_symbol": "Invalid asset.",
}
IOC_CANCEL = "Order could not immediately match against any resting orders."
MISSING_ORDER = "Order was never placed, already canceled, or filled."
TICK = "Price must be divisible by tick size."
ADDRESS_RATE_LIMIT = (
    "Too many cumulative requests sent (10437 > 10436) for cumulative volume traded $436.00. "
    "Place taker orders to free up 1 request per USDC traded."
)
PRIVATE_INFO = {
    "clearinghouseState",
    "openOrders",
    "frontendOpenOrders",
    "orderStatus",
    "historicalOrders",
    "userFills",
    "userFillsByTime",
    "userFunding",
    "userAbstraction",
    "userRateLimit",
}


# ----------------------------------------------------------------------------------------- signing (verification)


def keccak(data: bytes) -> bytes:
    return bytes(SHA3(data))


def address_of(private_key: str) -> str:
    """The Ethereum address (lowercase 0x hex) of a hex private key."""
    public = coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x"))).public_key.format(compressed=False)
    return "0x" + keccak(public[1:])[-20:].hex()


def msgpack(value: Any) -> bytes:
    """MessagePack of a JSON value in its smallest form (as the venue hashes an action)."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        return _pack_int(value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        n = len(raw)
        head = bytes([0xA0 | n]) if n < 32 else _sized(n, b"\xd9", b"\xda", b"\xdb")
        return head + raw
    if isinstance(value, list):
        n = len(value)
        head = bytes([0x90 | n]) if n < 16 else _sized(n, None, b"\xdc", b"\xdd")
        return head + b"".join(msgpack(v) for v in value)
    if isinstance(value, dict):
        n = len(value)
        head = bytes([0x80 | n]) if n < 16 else _sized(n, None, b"\xde", b"\xdf")
        return head + b"".join(msgpack(k) + msgpack(v) for k, v in value.items())
    raise TypeError(f"cannot pack {type(value).__name__}")


def _pack_int(v: int) -> bytes:
    if 0 <= v < 128:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack(">b", v)
    if v >= 0:
        for code, fmt, limit in ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16), (0xCE, ">I", 1 << 32)):
            if v < limit:
                return bytes([code]) + struct.pack(fmt, v)
        return b"\xcf" + struct.pack(">Q", v)
    for code, fmt, low in ((0xD0, ">b", -(1 << 7)), (0xD1, ">h", -(1 << 15)), (0xD2, ">i", -(1 << 31))):
        if v >= low:
            return bytes([code]) + struct.pack(fmt, v)
    return b"\xd3" + struct.pack(">q", v)


def _sized(n: int, one: bytes | None, two: bytes, four: bytes) -> bytes:
    if one is not None and n < 1 << 8:
        return one + bytes([n])
    if n < 1 << 16:
        return two + struct.pack(">H", n)
    return four + struct.pack(">I", n)


def action_hash(action: dict[str, Any], nonce: int, vault: str | None, expires_after: int | None) -> bytes:
    data = msgpack(action) + nonce.to_bytes(8, "big")
    data += b"\x00" if vault is None else b"\x01" + bytes.fromhex(vault.removeprefix("0x"))
    if expires_after is not None:
        data += b"\x00" + expires_after.to_bytes(8, "big")
    return keccak(data)


def _encode_field(kind: str, value: Any) -> bytes:
    if kind == "string":
        return keccak(str(value).encode())
    if kind == "bytes32":
        raw = value if isinstance(value, bytes) else bytes.fromhex(str(value).removeprefix("0x"))
        return raw.rjust(32, b"\x00")
    if kind == "address":
        return bytes.fromhex(str(value).removeprefix("0x")).rjust(32, b"\x00")
    if kind == "bool":
        return (1 if value else 0).to_bytes(32, "big")
    if kind.startswith("uint"):
        return int(value).to_bytes(32, "big")
    raise ValueError(f"unsupported EIP-712 field type {kind}")


def typed_data_digest(
    domain: dict[str, Any], primary: str, fields: list[tuple[str, str]], message: dict[str, Any]
) -> bytes:
    """EIP-712 digest keccak(0x1901 || domainSeparator || hashStruct(message))."""
    domain_fields = [
        ("name", "string"),
        ("version", "string"),
        ("chainId", "uint256"),
        ("verifyingContract", "address"),
    ]

    def struct_hash(name: str, spec: list[tuple[str, str]], values: dict[str, Any]) -> bytes:
        signature = f"{name}({','.join(f'{t} {n}' for n, t in spec)})"
        return keccak(keccak(signature.encode()) + b"".join(_encode_field(t, values[n]) for n, t in spec))

    separator = struct_hash("EIP712Domain", domain_fields, domain)
    return keccak(b"\x19\x01" + separator + struct_hash(primary, fields, message))


def recover_signer(digest: bytes, signature: dict[str, Any]) -> str:
    """The address that signed `digest` with signature {r, s, v} (v 27/28); ValueError if it is malformed."""
    r = int(str(signature["r"]), 16).to_bytes(32, "big")
    s = int(str(signature["s"]), 16).to_bytes(32, "big")
    v = int(signature["v"])
    if v not in (27, 28):
        raise ValueError(f"bad v {v}")
    public = coincurve.PublicKey.from_signature_and_message(r + s + bytes([v - 27]), digest, hasher=None)
    return "0x" + keccak(public.format(compressed=False)[1:])[-20:].hex()


def l1_digest(action: dict[str, Any], nonce: int, vault: str | None, expires: int | None, testnet: bool) -> bytes:
    domain = {"name": "Exchange", "version": "1", "chainId": 1337, "verifyingContract": ZERO_ADDRESS}
    agent = {"source": "b" if testnet else "a", "connectionId": action_hash(action, nonce, vault, expires)}
    return typed_data_digest(domain, "Agent", [("source", "string"), ("connectionId", "bytes32")], agent)


USER_SIGNED: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "approveBuilderFee": (
        "HyperliquidTransaction:ApproveBuilderFee",
        [("hyperliquidChain", "string"), ("maxFeeRate", "string"), ("builder", "address"), ("nonce", "uint64")],
    ),
}


def hyperliquid_api_urls(base_url: str) -> dict[str, str]:
    """ccxt `urls['api']` of the hyperliquid client sending every request (public and private) to `base_url`."""
    base = base_url.rstrip("/")
    return {"public": base, "private": base}


# ----------------------------------------------------------------------------------------- numbers


def _dec(value: float, places: int) -> str:
    """The venue's decimal strings: at most `places` decimals, trailing zeros dropped, at least one ("1.0")."""
    text = f"{value:.{places}f}"
    if "." in text:
        text = text.rstrip("0")
        text = text + "0" if text.endswith(".") else text
    else:
        text += ".0"
    return "0.0" if text in ("-0.0", "-0") else text


def _decimals(text: str) -> int:
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def _valid_price(text: str, sz_decimals: int) -> bool:
    """At most 5 significant figures (integers always allowed) and at most 6 - szDecimals decimals."""
    try:
        value = float(text)
    except ValueError:
        return False
    if not math.isfinite(value) or value <= 0:
        return False
    if _decimals(text) > 6 - sz_decimals:
        return False
    if value == int(value):
        return True
    digits = text.replace("-", "").replace(".", "").lstrip("0").rstrip("0")
    return len(digits) <= 5


# ----------------------------------------------------------------------------------------- faults


@dataclass
class _PostFault:
    match: str | None
    times: int
    status: int | None  # None: lose the answer
    body: Any
    delay_s: float


class _Drop(Exception):
    """Close the connection without an answer."""


class _PerpsHandler(_Handler):
    def _handle(self) -> None:
        try:
            super()._handle()
        except _Drop:
            self.close_connection = True


# ----------------------------------------------------------------------------------------- the fake


class FakeHyperliquidPerps(FakeHyperliquid):
    """Hyperliquid perpetuals with one trading account (the wallet below) on a VenueBook."""

    name = "hyperliquid"
    PRIVATE_KEY = "0x" + hashlib.sha256(b"fake hyperliquid test wallet (never funded anywhere)").hexdigest()
    WALLET = address_of(PRIVATE_KEY)
    MAKER_BPS = 1.5
    TAKER_BPS = 4.5
    MIN_NOTIONAL = 10.0

    def _last_price(self, asset: str, simulated: float) -> float:
        return self.book.mark(asset)  # a price a test pins is the venue's mark for everyone, not only the matching

    def __init__(
        self,
        assets: list[str] | None = None,
        *,
        balance: float = 10_000.0,
        testnet: bool = True,
        on_event: Callable[[str], None] | None = None,
        check_nonce_time: bool = True,
        **kwargs: Any,
    ) -> None:
        """`testnet`: the network the signatures must be made for (ccxt's sandbox mode signs for testnet).
        `on_event`: called with one line per order placed, cancelled or filled (the standalone mode prints them).
        `check_nonce_time`: refuse nonces outside (now - 2 days, now + 1 day) of `now_ms`; turn it off for a fake
        whose clock is fixed away from the wall clock that ccxt's nonces come from (reuse is refused either way)."""
        super().__init__(assets, **kwargs)
        self.testnet = testnet
        self.check_nonce_time = check_nonce_time
        self.on_event = on_event
        self.book = VenueBook(
            balance=balance,
            maker_bps=self.MAKER_BPS,
            taker_bps=self.TAKER_BPS,
            min_notional=self.MIN_NOTIONAL,
            price_of=self._sim_price,
            now_ms=lambda: self.now_ms,
            max_leverage=lambda asset: float(bodies.spec(asset).max_leverage),
            lot=lambda asset: 10.0 ** -bodies.spec(asset).sz_decimals,
        )
        self._signers: dict[str, str] = {self.WALLET: self.WALLET}  # signer -> the user it acts for
        self._nonces: dict[str, list[int]] = {}
        self._post_faults: list[_PostFault] = []
        self._wire: dict[int, dict[str, Any]] = {}  # book order id -> what was sent (limit price, tif, grouping)
        self._fills_seen = 0
        self._state_lock = threading.Lock()

    def __enter__(self) -> Self:
        super().__enter__()
        assert self._server is not None
        self._server.RequestHandlerClass = _PerpsHandler
        return self

    # ------------------------------------------------------------------------------------- scripting

    def add_agent(self, private_key: str) -> str:
        """Approve an API wallet (agent) to sign for the wallet; its address."""
        agent = address_of(private_key)
        with self._state_lock:
            self._signers[agent] = self.WALLET
        return agent

    def lose_answer(self, match: str | None = None, *, times: int = 1, delay_s: float = 1.5) -> None:
        """The next `times` matching requests are processed, then their answer is withheld for `delay_s` (past the
        client's timeout) and the connection is closed: the "order accepted, answer lost" case."""
        with self._state_lock:
            self._post_faults.append(_PostFault(match, times, None, None, delay_s))

    def fail_after(self, match: str | None = None, *, status: int = 500, times: int = 1, body: Any = b"") -> None:
        """The next `times` matching requests are processed, then answered with `status` (and `body`)."""
        with self._state_lock:
            self._post_faults.append(_PostFault(match, times, status, body, 0.0))

    def rate_limit(
        self, match: str | None = None, *, times: int = 1, address_based: bool = False, retry_after_s: int | None = None
    ) -> None:
        """Refuse the next `times` matching requests for the rate limit, before processing them: HTTP 429 with a `null`
        body (the IP limit; ccxt RateLimitExceeded; the venue documents no Retry-After, give `retry_after_s` to send
        one), or with `address_based` the /exchange answer of the per-address action budget, `{"status": "err",
        "response": "Too many cumulative requests sent ..."}` (HTTP 200; ccxt RateLimitExceeded too)."""
        if address_based:
            self.fail(200, {"status": "err", "response": ADDRESS_RATE_LIMIT}, match=match, times=times)
        else:
            headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
            self.fail(429, b"null", match=match, times=times, headers=headers)

    # ------------------------------------------------------------------------------------- routing

    def _key(self, path: str, body: Any) -> str:
        if path == "/exchange" and isinstance(body, dict) and isinstance(body.get("action"), dict):
            return str(body["action"].get("type"))
        return super()._key(path, body)

    def _sim_price(self, asset: str) -> float:
        now = self.now_ms
        rows = self.candles(asset, "5m", now - 300_000, now)
        if not rows:
            raise VenueReject("unknown_symbol", f"no price for {asset}")
        return float(rows[-1][4])

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        with contextlib.suppress(VenueReject):  # no price for an asset (outside the simulated history)
            self._emit_fills(self.book.tick())
        try:
            if method == "POST" and path == "/exchange":
                answer = self._exchange(body)
            elif method == "POST" and path == "/info" and isinstance(body, dict) and body.get("type") in PRIVATE_INFO:
                answer = self._private_info(body)
            else:
                return super()._route(method, path, query, body)
        except (KeyError, ValueError, TypeError, IndexError, VenueReject):
            answer = UNDESERIALIZABLE
        fault = self._take_post_fault(self._key(path, body))
        if fault is None:
            return answer
        if fault.status is None:
            time.sleep(fault.delay_s)
            raise _Drop()
        return fault.status, fault.body, {}

    def _take_post_fault(self, key: str) -> _PostFault | None:
        with self._state_lock:
            fault = next((f for f in self._post_faults if f.match is None or key.endswith(f.match)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._post_faults.remove(fault)
            return fault

    # ------------------------------------------------------------------------------------- /exchange

    def _exchange(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("action"), dict):
            return UNDESERIALIZABLE
        action, nonce, signature = body["action"], body.get("nonce"), body.get("signature")
        if not isinstance(nonce, int) or not isinstance(signature, dict) or not {"r", "s", "v"} <= signature.keys():
            return UNDESERIALIZABLE
        kind = action.get("type")
        vault = body.get("vaultAddress")
        try:
            if kind in USER_SIGNED:
                primary, fields = USER_SIGNED[kind]
                chain = int(str(action["signatureChainId"]), 16)
                domain = {"name": "HyperliquidSignTransaction", "version": "1", "chainId": chain}
                domain["verifyingContract"] = ZERO_ADDRESS
                signer = recover_signer(typed_data_digest(domain, primary, fields, action), signature)
            else:
                expires = body.get("expiresAfter")
                signer = recover_signer(l1_digest(action, nonce, vault, expires, self.testnet), signature)
        except Exception:  # a malformed signature or action (coincurve raises its own errors)
            return UNDESERIALIZABLE
        with self._state_lock:
            user = self._signers.get(signer)
        if user is None or (kind in USER_SIGNED and signer != user):
            return self._err(f"User or API Wallet {signer} does not exist.")
        if vault is not None:
            return self._err("Vault or sub-account trading is not supported by this fake.")
        refused = self._use_nonce(signer, nonce)
        if refused is not None:
            return self._err(refused)
        handlers: dict[str, Callable[[dict[str, Any]], Answer]] = {
            "order": self._orders,
            "cancel": self._cancel,
            "cancelByCloid": self._cancel,
            "updateLeverage": self._update_leverage,
            "updateIsolatedMargin": lambda a: self._err("updateIsolatedMargin is not supported by this fake."),
            "setReferrer": lambda a: self._ok_default(),
            "approveBuilderFee": lambda a: self._ok_default(),
            "noop": lambda a: self._ok_default(),
        }
        if kind not in handlers:
            return UNDESERIALIZABLE
        try:
            return handlers[str(kind)](action)
        except (KeyError, ValueError, TypeError, IndexError):
            return UNDESERIALIZABLE

    def _use_nonce(self, signer: str, nonce: int) -> str | None:
        now = self.now_ms
        with self._state_lock:
            kept = self._nonces.setdefault(signer, [])
            if nonce in kept:
                return f"Invalid nonce: duplicate nonce {nonce}"
            if self.check_nonce_time and not now - NONCE_PAST_MS < nonce < now + NONCE_FUTURE_MS:
                return f"Invalid nonce: nonce {nonce} is too far from the current time {now}"
            if len(kept) >= NONCES_KEPT and nonce < kept[0]:
                return f"Invalid nonce: nonce {nonce} is lower than every one of the last {NONCES_KEPT} nonces"
            kept.append(nonce)
            kept.sort()
            del kept[:-NONCES_KEPT]
        return None

    @staticmethod
    def _err(message: str) -> Answer:
        return 200, {"status": "err", "response": message}, {}

    @staticmethod
    def _ok_default() -> Answer:
        return 200, {"status": "ok", "response": {"type": "default"}}, {}

    def _asset_at(self, index: Any) -> str:
        if not isinstance(index, int) or not 0 <= index < len(self.assets):
            raise VenueReject("unknown_symbol", f"asset {index}")
        return self.assets[index]

    def _orders(self, action: dict[str, Any]) -> Answer:
        orders, grouping = action["orders"], action.get("grouping", "na")
        if not isinstance(orders, list) or grouping not in ("na", "normalTpsl", "positionTpsl"):
            return UNDESERIALIZABLE
        for wire in orders:  # the whole request is refused before anything is placed if one order is malformed
            self._check_shape(wire)
        statuses: list[Any] = []
        with self.book.lock:
            parent: BookOrder | None = None
            parent_error: str | None = None
            for i, wire in enumerate(orders):
                child = grouping == "normalTpsl" and i > 0
                if child and parent_error is not None:
                    statuses.append({"error": parent_error})
                    continue
                if child and (parent is None or parent.filled <= 0):
                    statuses.append({"error": "TP/SL of a parent that did not fill at once: not supported by the fake"})
                    continue
                status, placed = self._place(wire, grouping)
                if grouping == "normalTpsl" and i == 0:
                    parent = placed
                    parent_error = status.get("error") if isinstance(status, dict) else None
                statuses.append(status)
        return 200, {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}, {}

    @staticmethod
    def _check_shape(wire: Any) -> None:
        """ValueError/KeyError/TypeError unless `wire` is an order the venue can deserialize."""
        if not isinstance(wire, dict) or not isinstance(wire["a"], int) or not isinstance(wire["b"], bool):
            raise TypeError("bad order")
        if not isinstance(wire["r"], bool) or not isinstance(wire["p"], str) or not isinstance(wire["s"], str):
            raise TypeError("bad order")
        float(wire["p"]), float(wire["s"])
        cloid = wire.get("c")
        if cloid is not None and not CLOID.match(str(cloid).lower()):
            raise ValueError(f"bad cloid {cloid}")
        kind = wire["t"]
        if "trigger" in kind:
            trigger = kind["trigger"]
            if not isinstance(trigger["isMarket"], bool) or trigger["tpsl"] not in ("tp", "sl"):
                raise ValueError("bad trigger")
            float(str(trigger["triggerPx"]))
        elif kind["limit"]["tif"] not in ("Gtc", "Ioc", "Alo"):
            raise ValueError("bad tif")

    def _place(self, wire: dict[str, Any], grouping: str) -> tuple[Any, BookOrder | None]:
        """Place one wire order; (its status entry, the book order or None if refused)."""
        a = wire["a"]
        try:
            asset = self._asset_at(a)
        except VenueReject as exc:
            return {"error": f"{ORDER_ERRORS[exc.kind]} asset={a}"}, None
        side: Side = "buy" if wire["b"] is True else "sell"
        px_text, sz_text, reduce_only = str(wire["p"]), str(wire["s"]), bool(wire["r"])
        cloid = str(wire["c"]).lower() if wire.get("c") is not None else None
        sz_decimals = bodies.spec(asset).sz_decimals
        size = float(sz_text)
        order_type = wire["t"]
        trigger = order_type.get("trigger")
        whole_position = grouping == "positionTpsl" and trigger is not None and size == 0
        if not whole_position:
            if size <= 0:
                return {"error": f"Order has zero size. asset={a}"}, None
            if _decimals(sz_text) > sz_decimals:
                return {"error": f"Order has invalid size. asset={a}"}, None
        if not _valid_price(px_text, sz_decimals):
            return {"error": f"{TICK} asset={a}"}, None
        price = float(px_text)
        tif: str | None = None
        grouped = grouping != "na" and trigger is not None
        try:
            if trigger is not None:
                trigger_text = str(trigger["triggerPx"])
                if not _valid_price(trigger_text, sz_decimals):
                    return {"error": f"{TICK} asset={a}"}, None
                kind: BookOrderType = "take_profit_market" if trigger["tpsl"] == "tp" else "stop_market"
                order = self.book.place(
                    asset,
                    side,
                    kind,
                    0.0 if whole_position else size,
                    client_id=cloid,
                    trigger=float(trigger_text),
                    reduce_only=reduce_only or whole_position,
                    close_position=whole_position,
                )
            else:
                tif = str(order_type["limit"]["tif"])
                if tif == "Alo":
                    mark = self.book.mark(asset)
                    if (side == "buy" and mark <= price) or (side == "sell" and mark >= price):
                        bbo = f"{_dec(mark, 6)}@{_dec(mark, 6)}"
                        return {
                            "error": f"Post only order would have immediately matched, bbo was {bbo}. asset={a}"
                        }, None
                book_type: BookOrderType = "market" if tif == "Ioc" else "limit"
                order = self.book.place(
                    asset, side, book_type, size, client_id=cloid, price=price, reduce_only=reduce_only
                )
        except VenueReject as exc:
            return {"error": f"{ORDER_ERRORS.get(exc.kind, exc.message)} asset={a}"}, None
        self._wire[order.id] = {"px": px_text, "tif": tif, "position_tpsl": grouping == "positionTpsl"}
        self._event(f"placed   {self._describe(order)}")
        self._emit_fills(self.book.fills())
        ids: dict[str, Any] = {"oid": order.id} | ({"cloid": cloid} if cloid is not None else {})
        if grouped:
            return "waitingForTrigger", order
        if order.filled > 0 and order.type in ("market", "limit") and (order.status != "open" or tif == "Ioc"):
            filled = {"totalSz": self._qty(asset, order.filled), "avgPx": self._px(order.avg_price or price)}
            return {"filled": filled | ids}, order
        if order.status == "expired":
            return {"error": f"{IOC_CANCEL} asset={a}"}, order
        return {"resting": ids}, order

    def _cancel(self, action: dict[str, Any]) -> Answer:
        statuses: list[Any] = []
        by_cloid = action["type"] == "cancelByCloid"
        with self.book.lock:
            for wire in action["cancels"]:
                a = wire["asset"] if by_cloid else wire["a"]
                try:
                    asset = self._asset_at(a)
                    if by_cloid:
                        target = self.book.order(client_id=str(wire["cloid"]).lower())
                    else:
                        target = self.book.order(order_id=int(wire["o"]))
                    if target is None or target.asset != asset or target.parent_id is not None:
                        raise VenueReject("unknown_order", MISSING_ORDER)
                    canceled = self.book.cancel(order_id=target.id)
                except VenueReject:
                    statuses.append({"error": f"{MISSING_ORDER} asset={a}"})
                    continue
                self._event(f"canceled {self._describe(canceled)}")
                statuses.append("success")
        return 200, {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}, {}

    def _update_leverage(self, action: dict[str, Any]) -> Answer:
        asset = self._asset_at(action["asset"])
        leverage, cross = action["leverage"], bool(action["isCross"])
        if not isinstance(leverage, int):
            return UNDESERIALIZABLE
        mode: Literal["cross", "isolated"] = "cross" if cross else "isolated"
        if not 1 <= leverage <= bodies.spec(asset).max_leverage:
            return self._err(ORDER_ERRORS["bad_leverage"])
        with self.book.lock:
            has_position = any(p.asset == asset for p in self.book.positions())
            if has_position and self.book.margin_mode(asset) != mode:
                return self._err("Cannot switch leverage type with open position.")
            try:
                self.book.set_leverage(asset, float(leverage))
            except VenueReject:
                return self._err(ORDER_ERRORS["bad_leverage"])
            self.book.set_margin_mode(asset, mode)
        return self._ok_default()

    # ------------------------------------------------------------------------------------- /info (private)

    def _private_info(self, body: dict[str, Any]) -> Answer:
        kind = body["type"]
        user = str(body.get("user", "")).lower()
        if not re.match(r"^0x[0-9a-f]{40}$", user):
            return UNDESERIALIZABLE
        mine = user == self.WALLET
        if kind == "userAbstraction":
            return 200, "default", {}
        if kind == "userRateLimit":
            return 200, {"cumVlm": "0.0", "nRequestsUsed": 0, "nRequestsCap": 10000, "nRequestsSurplus": 0}, {}
        if kind == "clearinghouseState":
            return 200, self._clearinghouse(mine), {}
        if kind == "orderStatus":
            return 200, self._order_status(body.get("oid")) if mine else {"status": "unknownOid"}, {}
        if not mine:
            return 200, [], {}
        with self.book.lock:
            if kind in ("openOrders", "frontendOpenOrders"):
                open_orders = [o for o in self.book.open_orders() if o.parent_id is None]
                rows = [self._frontend(o) if kind == "frontendOpenOrders" else self._basic(o) for o in open_orders]
                return 200, sorted(rows, key=lambda r: -int(r["oid"])), {}
            if kind == "historicalOrders":
                shown = [o for o in self.book.orders() if o.parent_id is None]
                rows = [{"order": self._frontend(o)} | self._status_of(o) for o in shown]
                return 200, sorted(rows, key=lambda r: -int(r["order"]["oid"]))[:2000], {}
            if kind in ("userFills", "userFillsByTime"):
                return 200, self._fills(kind, body), {}
            if kind == "userFunding":
                return 200, self._funding(body), {}
        return UNDESERIALIZABLE

    def _clearinghouse(self, mine: bool) -> dict[str, Any]:
        now = self.now_ms
        if not mine:
            zero = {"accountValue": "0.0", "totalNtlPos": "0.0", "totalRawUsd": "0.0", "totalMarginUsed": "0.0"}
            return {"marginSummary": zero, "crossMarginSummary": zero, "crossMaintenanceMarginUsed": "0.0"} | {
                "withdrawable": "0.0",
                "assetPositions": [],
                "time": now,
            }
        with self.book.lock:
            balance = self.book.balance()
            funding = self.book.funding()
            rows, ntl, raw, used = [], 0.0, 0.0, 0.0
            for p in self.book.positions():
                value = abs(p.size) * p.mark
                margin_used = p.margin + p.unrealized
                paid = [(f["time_ms"], -float(f["payment"])) for f in funding if f["asset"] == p.asset]
                mode = self.book.margin_mode(p.asset)
                leverage: dict[str, Any] = {"type": mode, "value": int(p.leverage)}
                if mode == "isolated":
                    leverage["rawUsd"] = self._usd(p.margin - p.size * p.entry_price)
                liq = p.liquidation_price
                position = {
                    "coin": p.asset,
                    "szi": self._qty(p.asset, p.size),
                    "leverage": leverage,
                    "entryPx": self._px(p.entry_price),
                    "positionValue": self._usd(value),
                    "unrealizedPnl": self._usd(p.unrealized),
                    "returnOnEquity": _dec(p.unrealized / p.margin if p.margin else 0.0, 8),
                    "liquidationPx": self._px(liq) if liq else None,
                    "marginUsed": self._usd(margin_used),
                    "maxLeverage": bodies.spec(p.asset).max_leverage,
                    "cumFunding": {
                        "allTime": self._usd(sum(x for _, x in paid)),
                        "sinceOpen": self._usd(sum(x for t, x in paid if t >= p.opened_ms)),
                        "sinceChange": self._usd(sum(x for t, x in paid if t >= p.opened_ms)),
                    },
                }
                rows.append({"type": "oneWay", "position": position})
                ntl += value
                raw += p.size * p.mark
                used += margin_used
            isolated = sum(p.margin for p in self.book.positions())
        account = balance["wallet"] + balance["unrealized"]
        summary = {
            "accountValue": self._usd(account),
            "totalNtlPos": self._usd(ntl),
            "totalRawUsd": self._usd(account - raw),
            "totalMarginUsed": self._usd(used),
        }
        cross_value = balance["wallet"] - isolated
        cross = {"accountValue": self._usd(cross_value), "totalNtlPos": "0.0", "totalRawUsd": self._usd(cross_value)}
        return {
            "marginSummary": summary,
            "crossMarginSummary": cross | {"totalMarginUsed": "0.0"},
            "crossMaintenanceMarginUsed": "0.0",
            "withdrawable": self._usd(max(0.0, balance["available"])),
            "assetPositions": rows,
            "time": now,
        }

    def _order_status(self, oid: Any) -> dict[str, Any]:
        with self.book.lock:
            if isinstance(oid, str) and oid.lower().startswith("0x"):
                order = self.book.order(client_id=oid.lower())
            elif isinstance(oid, int) or (isinstance(oid, str) and oid.isdigit()):
                order = self.book.order(order_id=int(oid))
            else:
                return {"status": "unknownOid"}
            if order is None or order.parent_id is not None:
                return {"status": "unknownOid"}
            return {"status": "order", "order": {"order": self._frontend(order)} | self._status_of(order)}

    def _status_of(self, o: BookOrder) -> dict[str, Any]:
        """{"status", "statusTimestamp"} as the venue names an order's state."""
        status: str = o.status
        stamp = o.updated_ms
        if o.status == "triggered":
            child = self.book.order(order_id=o.child_id) if o.child_id is not None else None
            if child is not None:
                stamp = child.updated_ms
                if child.status == "filled":
                    status = "filled"
                elif child.status == "rejected":
                    status = "marginCanceled"
                elif child.status == "expired":
                    status = "canceled" if child.filled > 0 else "reduceOnlyCanceled"
        elif o.status == "expired":
            status = "canceled" if o.filled > 0 else "iocCancelRejected"
        return {"status": status, "statusTimestamp": stamp}

    def _frontend(self, o: BookOrder) -> dict[str, Any]:
        """The venue's "frontend" order: sz is what is left (0 once filled), origSz what was asked (a whole-position
        TP/SL shows what it closed)."""
        wire = self._wire.get(o.id, {})
        total = o.quantity if o.quantity > 0 else o.filled
        remaining = 0.0 if self._status_of(o)["status"] == "filled" else max(0.0, total - o.filled)
        is_trigger = o.trigger is not None
        condition = "N/A"
        if is_trigger:
            assert o.trigger is not None
            below = (o.type == "stop_market") == (o.side == "sell")
            condition = f"Price {'below' if below else 'above'} {self._px(o.trigger)}"
        order_type = {"stop_market": "Stop Market", "take_profit_market": "Take Profit Market"}.get(o.type, "Limit")
        limit_px = wire.get("px") or self._px(o.price or o.trigger or 0.0)
        return {
            "coin": o.asset,
            "side": "B" if o.side == "buy" else "A",
            "limitPx": _dec(float(limit_px), 6),
            "sz": self._qty(o.asset, remaining),
            "oid": o.id,
            "timestamp": o.created_ms,
            "triggerCondition": condition,
            "isTrigger": is_trigger,
            "triggerPx": self._px(o.trigger) if o.trigger is not None else "0.0",
            "children": [],
            "isPositionTpsl": o.close_position,
            "reduceOnly": o.reduce_only,
            "orderType": order_type,
            "origSz": self._qty(o.asset, total),
            "tif": None if is_trigger else (wire.get("tif") or ("Ioc" if o.type == "market" else "Gtc")),
            "cloid": o.client_id,
        }

    def _basic(self, o: BookOrder) -> dict[str, Any]:
        f = self._frontend(o)
        keys = ("coin", "limitPx", "oid", "side", "sz", "timestamp", "origSz", "reduceOnly")
        return {k: f[k] for k in keys} | ({"cloid": o.client_id} if o.client_id else {})

    def _fills(self, kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        orders = {o.id: o for o in self.book.orders()}
        rows: list[tuple[BookFill, dict[str, Any]]] = []
        start: dict[str, float] = {}
        for f in sorted(self.book.fills(), key=lambda f: (f.time_ms, f.id)):
            before = start.get(f.asset, 0.0)
            signed = f.quantity if f.side == "buy" else -f.quantity
            after = before + signed
            start[f.asset] = 0.0 if abs(after) < 1e-12 else after
            order = orders.get(f.order_id)
            shown = orders.get(order.parent_id) if order is not None and order.parent_id is not None else order
            row: dict[str, Any] = {
                "coin": f.asset,
                "px": self._px(f.price),
                "sz": self._qty(f.asset, f.quantity),
                "side": "B" if f.side == "buy" else "A",
                "time": f.time_ms,
                "startPosition": self._qty(f.asset, before),
                "dir": self._direction(before, after),
                "closedPnl": self._usd(f.realized_pnl),
                "hash": "0x" + keccak(f"fill {f.id}".encode()).hex(),
                "oid": shown.id if shown is not None else f.order_id,
                "crossed": not f.maker,
                "fee": self._usd(f.fee),
                "tid": f.id,
                "feeToken": "USDC",
                "twapId": None,
            }
            if f.client_id is not None:
                row["cloid"] = f.client_id
            if f.liquidation:
                row["liquidation"] = {"liquidatedUser": self.WALLET, "markPx": self._px(f.price), "method": "market"}
            rows.append((f, row))
        if kind == "userFills":
            return [row for _, row in reversed(rows)][:2000]
        first = int(body["startTime"])
        last = int(body.get("endTime") or self.now_ms)
        return [row for f, row in rows if first <= f.time_ms <= last][:2000]

    @staticmethod
    def _direction(before: float, after: float) -> str:
        if before > 1e-12 and after < -1e-12:
            return "Long > Short"
        if before < -1e-12 and after > 1e-12:
            return "Short > Long"
        if abs(after) > abs(before):
            return "Open Long" if after > 0 else "Open Short"
        return "Close Long" if before > 0 else "Close Short"

    def _funding(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        first = int(body.get("startTime") or 0)
        last = int(body.get("endTime") or self.now_ms)
        return [
            {
                "time": int(f["time_ms"]),
                "hash": "0x" + "0" * 64,
                "delta": {
                    "type": "funding",
                    "coin": f["asset"],
                    "usdc": self._usd(float(f["payment"])),
                    "szi": self._qty(f["asset"], float(f["size"])),
                    "fundingRate": _dec(float(f["rate"]), 8),
                    "nSamples": None,
                },
            }
            for f in self.book.funding()
            if first <= int(f["time_ms"]) <= last
        ][:500]

    # ------------------------------------------------------------------------------------- formatting, events

    def _qty(self, asset: str, value: float) -> str:
        return _dec(value, bodies.spec(asset).sz_decimals)

    @staticmethod
    def _px(value: float) -> str:
        return _dec(value, 6)

    @staticmethod
    def _usd(value: float) -> str:
        return _dec(value, 6)

    def _describe(self, o: BookOrder) -> str:
        what = {"market": "IOC", "limit": "limit", "stop_market": "stop", "take_profit_market": "take-profit"}[o.type]
        size = "whole position" if o.close_position else self._qty(o.asset, o.quantity)
        at = (
            f" trigger {self._px(o.trigger)}"
            if o.trigger is not None
            else f" px {self._px(o.price)}"
            if o.price
            else ""
        )
        flags = " reduce-only" if o.reduce_only else ""
        return f"#{o.id} {o.side} {size} {o.asset} {what}{at}{flags} cloid={o.client_id} -> {o.status}"

    def _event(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)

    def _emit_fills(self, fills: Iterable[BookFill]) -> None:
        with self._state_lock:
            new = [f for f in fills if f.id > self._fills_seen]
            if new:
                self._fills_seen = max(f.id for f in new)
        for f in new:
            tag = " LIQUIDATION" if f.liquidation else ""
            line = f"filled   #{f.order_id} {f.side} {self._qty(f.asset, f.quantity)} {f.asset} at {self._px(f.price)}"
            self._event(f"{line} fee {f.fee:.4f} pnl {f.realized_pnl:.4f}{tag}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Hyperliquid perpetuals (testnet) for a dry run of live trading")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--balance", type=float, default=10_000.0, help="the account's USDC")
    parser.add_argument("--assets", default="BTC,ETH,SOL")
    parser.add_argument("--mainnet", action="store_true", help="expect signatures for mainnet (default: testnet)")
    add_open_by_hand_option(parser)
    args = parser.parse_args(argv)
    fake = FakeHyperliquidPerps(
        [a.strip().upper() for a in args.assets.split(",") if a.strip()],
        balance=args.balance,
        testnet=not args.mainnet,
        port=args.port,
        on_event=lambda line: print(line, flush=True),
    )
    with fake:
        print(f"fake Hyperliquid perps ({'mainnet' if args.mainnet else 'testnet'}) at {fake.base_url}", flush=True)
        print(f"wallet address: {fake.WALLET}", flush=True)
        print(f"private key:    {fake.PRIVATE_KEY}   (test-only, for this fake)", flush=True)
        if args.open_by_hand:
            open_by_hand(fake.book, args.open_by_hand)
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
                fake._emit_fills(fake.book.tick())  # stops fire between requests too
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
