"""Fake Binance USD-M futures with the private (signed) endpoints ccxt's `binanceusdm` calls, on a `VenueBook`.

Everything the public fake (`FakeBinance`) serves still works; on top of it, the signed endpoints: account and
balance (`/fapi/v3/account`, `/fapi/v2|v3/balance`), positions (`/fapi/v3/positionRisk`, `/fapi/v2/positionRisk`),
leverage, margin type, leverage brackets, symbol config, position mode, orders (`/fapi/v1/order`, `openOrders`,
`allOrders`, `allOpenOrders`), conditional orders on the algo service (`/fapi/v1/algoOrder`, `openAlgoOrders`,
`allAlgoOrders`, `algoOpenOrders`: ccxt 4.5.90 sends STOP_MARKET / TAKE_PROFIT_MARKET there), trades
(`userTrades`), income (`FUNDING_FEE`, `REALIZED_PNL`, `COMMISSION`), liquidations (`forceOrders`), commission
rate, and the two `sapi` reads ccxt's `load_markets` makes when it has keys (`capital/config/getall`,
`margin/allPairs`).

Requests are checked as Binance does: `X-MBX-APIKEY` (-2014 missing / -2015 unknown), `timestamp` within
`recvWindow` of the fake's clock and not more than 1 s ahead (-1021), HMAC-SHA256 of the query string plus the
body with the secret (-1022). Refusals carry Binance's codes and texts (-2019 margin, -4164 notional, -2022
reduce-only, -2021 would trigger, -4116 duplicate client id, -4015 invalid client id, -2013 / -2011 unknown order,
-4028 leverage, -1121 symbol, -1111 precision, -4003 quantity, -1102 missing parameter, -4120 a conditional type
on the plain endpoint). Every answer carries `X-MBX-USED-WEIGHT-1M`.

The clock runs: `now_ms` is the wall clock, or the given `now_ms` plus the time elapsed since the fake was made
(ccxt's signed timestamps have to stay within the window), shifted by `skew_clock(ms)`. The book's price is the
simulator's last close at `now_ms` (the forming 5m candle) unless a test pins it with `fake.book.set_price`;
`book.tick()` runs at every request, so stops fire on the next request after the price crosses them.

Faults, beyond `fail` / `slow` (before processing; `match` is a path ending, optionally "METHOD path"):
- `lose_answer(match, times=1)`: the request is processed (an order is created), then the answer is withheld
  until the client gives up (its timeout) and the connection is dropped.
- `fail_after(match, status=503, body=..., times=1)`: processed, then answered with that status and body.

    with FakeBinanceFutures() as fake:
        exchange = ccxt.binanceusdm({"apiKey": fake.API_KEY, "secret": fake.API_SECRET})
        use_fake(exchange, fake.base_url)

Standalone (the README's dry run), from backend/: `python -m tests.fakes.binance_trading --port 9100`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from tests.fakes import exchange_bodies as bodies
from tests.fakes.exchange_servers import Answer, FakeBinance, Recorded, _Handler, _Server
from tests.fakes.venue_book import BookFill, BookOrder, VenueBook, VenueReject, add_open_by_hand_option, open_by_hand

DAY_MS = 86_400_000
CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = {"STOP_MARKET": "stop_market", "TAKE_PROFIT_MARKET": "take_profit_market"}
# ccxt `urls['api']` entries -> their path below the host
API_PATHS = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}
WEIGHTS = {
    "/fapi/v3/account": 5,
    "/fapi/v2/account": 5,
    "/fapi/v3/positionRisk": 5,
    "/fapi/v2/positionRisk": 5,
    "/fapi/v1/allOrders": 5,
    "/fapi/v1/allAlgoOrders": 5,
    "/fapi/v1/userTrades": 5,
    "/fapi/v1/income": 30,
    "/fapi/v1/symbolConfig": 5,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/klines": 5,
}


def binance_api_urls(base_url: str) -> dict[str, str]:
    """Every ccxt `urls['api']` entry of binance/binanceusdm, public and private, pointed at `base_url`."""
    base = base_url.rstrip("/")
    return {key: base + path for key, path in API_PATHS.items()}


def use_fake(exchange: Any, base_url: str) -> None:
    """Point a ccxt binanceusdm client at the fake and map its error codes as ccxt does for fapi.binance.com.

    ccxt picks the USD-M error table (-2019 InsufficientFunds, -4164/-2022/-4116 InvalidOrder, -2021
    OrderImmediatelyFillable, ...) by the URL's host (`https://fapi.binance.com/`, `https://demo-fapi...`); on any
    other host only the common table applies and those codes surface as a bare ExchangeError. This restores the
    USD-M table for URLs under `base_url`/fapi/."""
    exchange.urls["api"] = {**exchange.urls["api"], **binance_api_urls(base_url)}
    fapi = base_url.rstrip("/") + "/fapi/"
    by_host = exchange.get_exceptions_by_url

    def by_url(url: str | None, exact_or_broad: str) -> dict[str, Any]:
        if url is not None and url.startswith(fapi):
            return dict(exchange.exceptions.get("linear", {}).get(exact_or_broad, {}))
        return dict(by_host(url, exact_or_broad))

    exchange.get_exceptions_by_url = by_url


class ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclass
class PostFault:
    match: str | None
    times: int
    status: int = 503
    body: Any = None
    lose: bool = False


REJECTS: dict[str, tuple[int, str]] = {
    "insufficient_margin": (-2019, "Margin is insufficient."),
    "reduce_only": (-2022, "ReduceOnly Order is rejected."),
    "would_trigger_immediately": (-2021, "Order would immediately trigger."),
    "duplicate_client_id": (-4116, "ClientOrderId is duplicated."),
    "unknown_order": (-2013, "Order does not exist."),
    "bad_quantity": (-4003, "Quantity less than or equal to zero."),
    "unknown_symbol": (-1121, "Invalid symbol."),
}


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() == "true"


def _fmt(value: float, places: int = 8) -> str:
    return f"{value:.{places}f}"


class _PrivateHandler(_Handler):
    """Reads the form body and the raw query (signatures), applies the answer-side faults, adds the weight header."""

    server: _PrivateServer

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        venue = self.server.venue
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if raw and "json" not in (self.headers.get("Content-Type") or ""):
            params |= dict(parse_qsl(raw, keep_blank_values=True))
        venue._tls.request = (self.command, parts.query, raw, self.headers.get("X-MBX-APIKEY"))
        try:
            status, payload, headers = venue._dispatch(self.command, parts.path, params, None)
        finally:
            venue._tls.request = None
        fault = venue._take_post_fault(self.command, parts.path)
        if fault is not None and fault.lose:
            self._hold_then_drop(venue)
            return
        if fault is not None:
            status, payload, headers = fault.status, fault.body if fault.body is not None else {}, {}
        headers = {**headers, "X-MBX-USED-WEIGHT-1M": str(venue._used_weight(parts.path))}
        data = payload if isinstance(payload, bytes) else venue._json(payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _hold_then_drop(self, venue: FakeBinanceFutures) -> None:
        """Say nothing until the client hangs up (its timeout) or `hold_s` passes, then drop the connection."""
        deadline = time.monotonic() + venue.hold_s
        sock = self.connection
        while time.monotonic() < deadline and not venue._closing.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break
                except OSError:
                    break
        self.close_connection = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _PrivateServer(_Server):
    venue: FakeBinanceFutures

    def __init__(self, venue: FakeBinanceFutures, port: int = 0) -> None:
        super(_Server, self).__init__(("127.0.0.1", port), _PrivateHandler)
        self.venue = venue


class FakeBinanceFutures(FakeBinance):
    """Binance USD-M futures, public and private, for one account whose orders live in `self.book`."""

    name = "binanceusdm"
    API_KEY = "fakeBinanceTestKey0000000000000000000000000000000000000000000000"  # test-only
    API_SECRET = "fakeBinanceTestSecret00000000000000000000000000000000000000000"  # test-only
    MAX_LEVERAGE: ClassVar[dict[str, int]] = {"BTC": 125, "ETH": 100, "SOL": 75}
    MAINTENANCE_RATE = 0.004

    def _last_price(self, asset: str, simulated: float) -> float:
        return self.book.mark(asset)  # a price a test pins is the venue's mark for everyone, not only the matching

    def __init__(
        self,
        assets: list[str] | None = None,
        *,
        balance: float = 10_000.0,
        maker_bps: float = 2.0,
        taker_bps: float = 5.0,
        hold_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(assets, **kwargs)
        self._t0 = time.monotonic()
        self._skew_ms = 0
        self.hold_s = hold_s  # lose_answer: the longest an answer is withheld
        self.maker_bps, self.taker_bps = maker_bps, taker_bps
        self.book = VenueBook(
            balance=balance,
            maker_bps=maker_bps,
            taker_bps=taker_bps,
            min_notional=0.0,  # per symbol (exchangeInfo MIN_NOTIONAL), checked here before the book
            price_of=self.price_of,
            now_ms=lambda: self.now_ms,
            max_leverage=self.max_leverage,
            maintenance_rate=self.MAINTENANCE_RATE,
            lot=lambda asset: float(bodies.spec(asset).step),
        )
        self.on_event: Callable[[str], None] | None = None  # one line per order placed / cancelled / filled
        self._tls = threading.local()
        self._post: list[PostFault] = []
        self._user_cancelled: set[int] = set()
        self._weight: dict[int, int] = {}
        self._fills_seen = 0
        self._closing = threading.Event()

    # ------------------------------------------------------------------------------------- lifecycle, clock

    def __enter__(self) -> FakeBinanceFutures:
        self._closing.clear()
        self._server = _PrivateServer(self, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
        super().__exit__(*exc)

    @property
    def now_ms(self) -> int:
        if self._fixed_now is None:
            return int(time.time() * 1000) + self._skew_ms
        return self._fixed_now + int((time.monotonic() - self._t0) * 1000) + self._skew_ms

    def skew_clock(self, ms: int) -> None:
        """Move the server's clock by `ms` (a client that synced its time difference before now drifts: -1021)."""
        self._skew_ms += ms

    def price_of(self, asset: str) -> float:
        """The simulator's last close at `now_ms` (the forming 5m candle), rounded to the tick."""
        now = self.now_ms
        rows = self.candles(asset, "5m", now - 600_000, now)
        return float(rows[-1][4])

    def max_leverage(self, asset: str) -> float:
        return float(self.MAX_LEVERAGE.get(asset, 20))

    # ------------------------------------------------------------------------------------- faults

    def fail(self, status: int = 500, body: Any = None, *, match: str | None = None, times: int = 1, **kw: Any) -> None:
        """As `FakeVenue.fail`; a 429 / 418 gets Binance's -1003 body and a `Retry-After` unless given."""
        if status in (429, 418):
            headers = dict(kw.pop("headers", None) or {})
            headers.setdefault("Retry-After", "60" if status == 429 else "120")
            kw["headers"] = headers
            if body is None and status == 429:
                body = {"code": -1003, "msg": "Too many requests; current limit of IP is 2400 requests per minute."}
            elif body is None:
                body = {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned until {self.now_ms + 120_000}.",
                }
        super().fail(status, body, match=match, times=times, **kw)

    def lose_answer(self, match: str | None = None, *, times: int = 1) -> None:
        """Process the next `times` matching requests, then withhold the answer until the client gives up."""
        with self._lock:
            self._post.append(PostFault(match, times, lose=True))

    def fail_after(self, match: str | None = None, *, status: int = 503, body: Any = None, times: int = 1) -> None:
        """Process the next `times` matching requests, then answer `status` with `body` (default: Binance's -1007
        "execution status unknown"; `body=b""` for a bare 5xx)."""
        if body is None:
            body = {
                "code": -1007,
                "msg": "Timeout waiting for response from backend server. "
                "Send status unknown; execution status unknown.",
            }
        with self._lock:
            self._post.append(PostFault(match, times, status=status, body=body))

    def matching(self, key: str) -> list[Recorded]:
        """Recorded requests whose "METHOD path" ends with `key` (a path ending, or "POST /fapi/v1/order")."""
        with self._lock:
            return [r for r in self.requests if f"{r.method} {r.path}".endswith(key)]

    def _take_post_fault(self, method: str, path: str) -> PostFault | None:
        key = f"{method} {path}"
        with self._lock:
            fault = next((f for f in self._post if f.match is None or key.endswith(f.match)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._post.remove(fault)
        return fault

    def _key(self, path: str, body: Any) -> str:
        request = getattr(self._tls, "request", None)
        return f"{request[0]} {path}" if request else path

    def _used_weight(self, path: str) -> int:
        minute = self.now_ms // 60_000
        with self._lock:
            self._weight = {minute: self._weight.get(minute, 0) + WEIGHTS.get(path, 1)}
            return self._weight[minute]

    @staticmethod
    def _json(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    # ------------------------------------------------------------------------------------- routing

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        handler = self._handlers().get((method, path))
        if handler is None:
            with self.book.lock:
                self._tick()
            return super()._route(method, path, query, body)
        try:
            self._authenticate(query)
            with self.book.lock:
                self._tick()
                answer = handler(query)
                self._report_fills()
            return 200, answer, {}
        except ApiError as exc:
            return exc.status, {"code": exc.code, "msg": exc.msg}, {}
        except VenueReject as exc:
            code, msg = self._reject(exc)
            return 400, {"code": code, "msg": msg}, {}

    def _handlers(self) -> dict[tuple[str, str], Callable[[dict[str, str]], Any]]:
        return {
            ("GET", "/fapi/v3/account"): self._account,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v2/balance"): self._balance,
            ("GET", "/fapi/v3/balance"): self._balance,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk_v3,
            ("GET", "/fapi/v2/positionRisk"): self._position_risk_v2,
            ("POST", "/fapi/v1/leverage"): self._set_leverage,
            ("POST", "/fapi/v1/marginType"): self._set_margin_type,
            ("GET", "/fapi/v1/leverageBracket"): self._leverage_bracket,
            ("GET", "/fapi/v1/symbolConfig"): self._symbol_config,
            ("GET", "/fapi/v1/positionSide/dual"): lambda q: {"dualSidePosition": False},
            ("POST", "/fapi/v1/positionSide/dual"): self._set_position_mode,
            ("GET", "/fapi/v1/commissionRate"): self._commission_rate,
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._query_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("GET", "/fapi/v1/allOrders"): self._all_orders,
            ("DELETE", "/fapi/v1/allOpenOrders"): self._cancel_all,
            ("POST", "/fapi/v1/algoOrder"): self._new_algo,
            ("GET", "/fapi/v1/algoOrder"): self._query_algo,
            ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo,
            ("GET", "/fapi/v1/openAlgoOrders"): self._open_algos,
            ("GET", "/fapi/v1/allAlgoOrders"): self._all_algos,
            ("DELETE", "/fapi/v1/algoOpenOrders"): self._cancel_all_algos,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("GET", "/fapi/v1/income"): self._income,
            ("GET", "/fapi/v1/forceOrders"): self._force_orders,
            ("GET", "/sapi/v1/capital/config/getall"): self._coins,
            ("GET", "/sapi/v1/margin/allPairs"): lambda q: [],
        }

    def _authenticate(self, params: dict[str, str]) -> None:
        _, raw_query, raw_body, api_key = self._tls.request
        if not api_key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(api_key, self.API_KEY):
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if "timestamp" not in params:
            raise ApiError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        try:
            stamp, window = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
        except ValueError as exc:
            raise ApiError(-1102, "Illegal characters found in parameter 'timestamp'.") from exc
        if window > 60_000:
            raise ApiError(-1131, "recvWindow must be less than 60000")
        now = self.now_ms
        if stamp >= now + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - stamp > window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
        signed, signature = "", None
        for part_string in (raw_query, raw_body):
            kept = []
            for part in part_string.split("&") if part_string else []:
                if part.startswith("signature="):
                    signature = part.removeprefix("signature=")
                else:
                    kept.append(part)
            signed += "&".join(kept)
        expected = hmac.new(self.API_SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(signature.lower(), expected):
            raise ApiError(-1022, "Signature for this request is not valid.")

    def _tick(self) -> None:
        self.book.tick()
        self._report_fills()

    def _report_fills(self) -> None:
        fills = self.book.fills()
        for f in fills[self._fills_seen :]:
            tag = " LIQUIDATION" if f.liquidation else ""
            self._event(f"filled{tag} {f.side.upper()} {f.quantity:g} {f.asset} @ {f.price:g} order {f.order_id}")
        self._fills_seen = len(fills)

    def _event(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)

    @staticmethod
    def _reject(exc: VenueReject) -> tuple[int, str]:
        if exc.kind == "min_notional":
            return -4164, exc.message
        if exc.kind == "bad_leverage":
            return -4028, exc.message
        return REJECTS.get(exc.kind, (-1000, exc.message))

    # ------------------------------------------------------------------------------------- parameters

    @staticmethod
    def _required(params: dict[str, str], name: str) -> str:
        value = params.get(name)
        if value is None or value == "":
            raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return value

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        market_id = params.get("symbol")
        if not market_id:
            if required:
                self._required(params, "symbol")
            return None
        try:
            return self._asset(market_id)
        except LookupError as exc:
            raise ApiError(-1121, "Invalid symbol.") from exc

    def _quantity(self, asset: str, text: str) -> float:
        try:
            quantity = float(text)
        except ValueError as exc:
            raise ApiError(-1102, "Illegal characters found in parameter 'quantity'.") from exc
        if quantity <= 0:
            raise ApiError(-4003, "Quantity less than or equal to zero.")
        step = float(bodies.spec(asset).step)
        if abs(quantity / step - round(quantity / step)) > 1e-6:
            raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
        return quantity

    def _price_param(self, asset: str, params: dict[str, str], name: str) -> float:
        try:
            price = float(self._required(params, name))
        except ValueError as exc:
            raise ApiError(-1102, f"Illegal characters found in parameter '{name}'.") from exc
        if price <= 0:
            raise ApiError(-4001, "Price less than 0.")
        tick = float(bodies.spec(asset).tick)
        if abs(price / tick - round(price / tick)) > 1e-6:
            raise ApiError(-4014, "Price not increased by tick size.")
        return price

    def _client_id(self, params: dict[str, str], name: str) -> str:
        cid = params.get(name)
        if cid is None:
            return f"fakeauto{secrets.token_hex(7)}"
        if not CLIENT_ID.match(cid):
            raise ApiError(-4015, "Client order id is not valid.")
        return cid

    def _check_notional(self, asset: str, quantity: float, price: float) -> None:
        minimum = float(bodies.spec(asset).min_notional)
        if quantity * price < minimum - 1e-9:
            raise ApiError(
                -4164, f"Order's notional must be no smaller than {minimum:g} (unless you choose reduce only)."
            )

    @staticmethod
    def _span(params: dict[str, str], default_span: int, now: int) -> tuple[int, int]:
        start = int(params["startTime"]) if "startTime" in params else None
        end = int(params["endTime"]) if "endTime" in params else None
        if start is None and end is None:
            return now - default_span, now
        if start is None:
            assert end is not None
            return end - default_span, end
        return start, end if end is not None else start + default_span

    # ------------------------------------------------------------------------------------- bodies

    def _p(self, asset: str, value: float | None) -> str:
        return "0" if value is None else self._price(asset, value)

    def _q(self, asset: str, value: float) -> str:
        return self._size(asset, value)

    def _is_algo(self, order: BookOrder) -> bool:
        return order.type in ("stop_market", "take_profit_market")

    def _plain_status(self, order: BookOrder) -> str:
        if order.status == "open":
            return "PARTIALLY_FILLED" if order.filled > 0 else "NEW"
        return {"filled": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED"}.get(order.status, "REJECTED")

    def _algo_status(self, order: BookOrder) -> str:
        if order.status == "open":
            return "NEW"
        if order.status == "triggered":
            child = self.book.order(order_id=order.child_id) if order.child_id is not None else None
            return "REJECTED" if child is not None and child.status == "rejected" else "FINISHED"
        if order.status == "canceled":
            return "CANCELED" if order.id in self._user_cancelled else "EXPIRED"
        return "EXPIRED"

    def _client_of(self, order: BookOrder) -> str:
        if order.client_id is not None:
            return order.client_id
        return f"autoclose-{order.created_ms}{order.id % 1000:03d}"  # Binance's liquidation orders

    def _order_body(self, order: BookOrder, *, with_time: bool = True) -> dict[str, Any]:
        a = order.asset
        orig_type = "LIMIT" if order.type == "limit" else "MARKET"
        if order.parent_id is not None:
            parent = self.book.order(order_id=order.parent_id)
            if parent is not None:
                orig_type = parent.type.upper()
        filled = order.filled
        avg = order.avg_price or 0.0
        body: dict[str, Any] = {
            "orderId": order.id,
            "symbol": f"{a}USDT",
            "status": self._plain_status(order),
            "clientOrderId": self._client_of(order),
            "price": self._p(a, order.price if order.type == "limit" else 0.0),
            "avgPrice": _fmt(avg, 5) if filled else "0.00",
            "origQty": self._q(a, order.quantity),
            "executedQty": self._q(a, filled),
            "cumQty": self._q(a, filled),
            "cumQuote": _fmt(filled * avg, 5),
            "timeInForce": "IOC" if order.ioc or order.client_id is None else "GTC",
            "type": "LIMIT" if order.type == "limit" else "MARKET",
            "reduceOnly": order.reduce_only,
            "closePosition": False,
            "side": order.side.upper(),
            "positionSide": "BOTH",
            "stopPrice": "0.00",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": orig_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "updateTime": order.updated_ms,
        }
        if with_time:
            body["time"] = order.created_ms
        return body

    def _algo_body(self, order: BookOrder) -> dict[str, Any]:
        a = order.asset
        status = self._algo_status(order)
        return {
            "algoId": order.id,
            "clientAlgoId": order.client_id,
            "algoType": "CONDITIONAL",
            "orderType": order.type.upper(),
            "symbol": f"{a}USDT",
            "side": order.side.upper(),
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": self._q(a, order.quantity),
            "algoStatus": status,
            "actualOrderId": str(order.child_id) if order.child_id is not None else "",
            "actualPrice": _fmt(order.avg_price or 0.0, 5),
            "triggerPrice": self._p(a, order.trigger),
            "price": "0.00",
            "icebergQuantity": None,
            "tpTriggerPrice": "0.00",
            "tpPrice": "0.00",
            "slTriggerPrice": "0.00",
            "slPrice": "0.00",
            "tpOrderType": "",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": order.close_position,
            "priceProtect": False,
            "reduceOnly": order.reduce_only,
            "createTime": order.created_ms,
            "updateTime": order.updated_ms,
            "triggerTime": order.updated_ms if order.status == "triggered" else 0,
            "goodTillDate": 0,
        }

    # ------------------------------------------------------------------------------------- account

    def _assets_in(self, params: dict[str, str]) -> list[str]:
        asset = self._symbol(params, required=False)
        return [asset] if asset is not None else list(self.assets)

    def _account(self, params: dict[str, str]) -> dict[str, Any]:
        bal = self.book.balance()
        positions = self.book.positions()
        margin_balance = bal["wallet"] + bal["unrealized"]
        maint = sum(abs(p.size) * p.mark * self.MAINTENANCE_RATE for p in positions)
        position_margin = sum(p.margin for p in positions)
        order_margin = bal["margin_used"] - position_margin
        now = self.now_ms
        usdt = {
            "asset": "USDT",
            "walletBalance": _fmt(bal["wallet"]),
            "unrealizedProfit": _fmt(bal["unrealized"]),
            "marginBalance": _fmt(margin_balance),
            "maintMargin": _fmt(maint),
            "initialMargin": _fmt(bal["margin_used"]),
            "positionInitialMargin": _fmt(position_margin),
            "openOrderInitialMargin": _fmt(order_margin),
            "crossWalletBalance": _fmt(bal["wallet"] - position_margin),
            "crossUnPnl": "0.00000000",
            "availableBalance": _fmt(bal["available"]),
            "maxWithdrawAmount": _fmt(max(0.0, bal["available"])),
            "updateTime": now,
        }
        return {
            "totalInitialMargin": _fmt(bal["margin_used"]),
            "totalMaintMargin": _fmt(maint),
            "totalWalletBalance": _fmt(bal["wallet"]),
            "totalUnrealizedProfit": _fmt(bal["unrealized"]),
            "totalMarginBalance": _fmt(margin_balance),
            "totalPositionInitialMargin": _fmt(position_margin),
            "totalOpenOrderInitialMargin": _fmt(order_margin),
            "totalCrossWalletBalance": _fmt(bal["wallet"] - position_margin),
            "totalCrossUnPnl": "0.00000000",
            "availableBalance": _fmt(bal["available"]),
            "maxWithdrawAmount": _fmt(max(0.0, bal["available"])),
            "assets": [usdt],
            "positions": [
                {
                    "symbol": f"{p.asset}USDT",
                    "positionSide": "BOTH",
                    "positionAmt": self._q(p.asset, p.size),
                    "unrealizedProfit": _fmt(p.unrealized),
                    "isolatedMargin": _fmt(p.margin + p.unrealized),
                    "notional": _fmt(p.size * p.mark),
                    "isolatedWallet": _fmt(p.margin),
                    "initialMargin": _fmt(p.margin),
                    "maintMargin": _fmt(abs(p.size) * p.mark * self.MAINTENANCE_RATE),
                    "updateTime": now,
                }
                for p in positions
            ],
        }

    def _balance(self, params: dict[str, str]) -> list[dict[str, Any]]:
        bal = self.book.balance()
        return [
            {
                "accountAlias": "SgsR",
                "asset": "USDT",
                "balance": _fmt(bal["wallet"]),
                "crossWalletBalance": _fmt(bal["wallet"]),
                "crossUnPnl": _fmt(bal["unrealized"]),
                "availableBalance": _fmt(bal["available"]),
                "maxWithdrawAmount": _fmt(max(0.0, bal["available"])),
                "marginAvailable": True,
                "updateTime": self.now_ms,
            }
        ]

    def _position_row(self, asset: str) -> dict[str, Any]:
        position = next((p for p in self.book.positions() if p.asset == asset), None)
        isolated = self.book.margin_mode(asset) == "isolated"
        mark = self.book.mark(asset)
        open_margin = sum(
            (o.quantity - o.filled) * (o.price or 0.0) / self.book.leverage(asset)
            for o in self.book.open_orders(asset)
            if o.type == "limit" and not o.reduce_only
        )
        if position is None:
            size = entry = unrealized = margin = 0.0
            liquidation: float | None = 0.0
            updated = 0
        else:
            size, entry, unrealized, margin = position.size, position.entry_price, position.unrealized, position.margin
            liquidation, updated = position.liquidation_price, self.now_ms
        fee = abs(size) * entry * self.taker_bps / 10_000
        breakeven = entry + (fee / size if size else 0.0)
        return {
            "symbol": f"{asset}USDT",
            "positionSide": "BOTH",
            "positionAmt": self._q(asset, size),
            "entryPrice": _fmt(entry, 8) if size else "0.0",
            "breakEvenPrice": _fmt(breakeven, 8) if size else "0.0",
            "markPrice": _fmt(mark, 8),
            "unRealizedProfit": _fmt(unrealized),
            "liquidationPrice": _fmt(liquidation or 0.0, 8),
            "isolatedMargin": _fmt(margin + unrealized) if isolated and size else "0",
            "notional": _fmt(size * mark),
            "marginAsset": "USDT",
            "isolatedWallet": _fmt(margin) if isolated and size else "0",
            "initialMargin": _fmt(margin + open_margin),
            "maintMargin": _fmt(abs(size) * mark * self.MAINTENANCE_RATE),
            "positionInitialMargin": _fmt(margin),
            "openOrderInitialMargin": _fmt(open_margin),
            "adl": 1 if size else 0,
            "bidNotional": "0",
            "askNotional": "0",
            "updateTime": updated,
        }

    def _position_risk_v3(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """v3: only symbols with a position or open orders."""
        held = {p.asset for p in self.book.positions()} | {o.asset for o in self.book.open_orders()}
        return [self._position_row(a) for a in self._assets_in(params) if a in held]

    def _position_risk_v2(self, params: dict[str, str]) -> list[dict[str, Any]]:
        rows = []
        for asset in self._assets_in(params):
            row = self._position_row(asset)
            row |= {
                "leverage": str(int(self.book.leverage(asset))),
                "marginType": self.book.margin_mode(asset),
                "isAutoAddMargin": "false",
                "maxNotionalValue": _fmt(self._bracket_cap(asset, self.book.leverage(asset)), 0),
            }
            for key in ("marginAsset", "initialMargin", "maintMargin", "positionInitialMargin"):
                row.pop(key)
            for key in ("openOrderInitialMargin", "adl", "bidNotional", "askNotional"):
                row.pop(key)
            rows.append(row)
        return rows

    def _brackets(self, asset: str) -> list[dict[str, Any]]:
        top = int(self.max_leverage(asset))
        ladder = [(top, 50_000, 0.004), (max(1, top * 4 // 5), 250_000, 0.005), (max(1, top * 2 // 5), 3_000_000, 0.01)]
        ladder += [(max(1, top // 6), 20_000_000, 0.025), (max(1, top // 12), 50_000_000, 0.05), (1, 10**9, 0.5)]
        out, floor, cum, previous = [], 0, 0.0, ladder[0][2]
        for i, (leverage, cap, mmr) in enumerate(ladder):
            cum += floor * (mmr - previous)
            out.append(
                {"bracket": i + 1, "initialLeverage": leverage, "notionalCap": cap, "notionalFloor": floor}
                | {"maintMarginRatio": mmr, "cum": round(cum, 4)}
            )
            floor, previous = cap, mmr
        return out

    def _bracket_cap(self, asset: str, leverage: float) -> float:
        caps = [b["notionalCap"] for b in self._brackets(asset) if b["initialLeverage"] >= leverage]
        return float(caps[-1]) if caps else 0.0

    def _leverage_bracket(self, params: dict[str, str]) -> Any:
        rows = [
            {"symbol": f"{a}USDT", "notionalCoef": 1.0, "brackets": self._brackets(a)} for a in self._assets_in(params)
        ]
        return rows[0] if "symbol" in params else rows

    def _symbol_config(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "symbol": f"{a}USDT",
                "marginType": "ISOLATED" if self.book.margin_mode(a) == "isolated" else "CROSSED",
                "isAutoAddMargin": False,
                "leverage": int(self.book.leverage(a)),
                "maxNotionalValue": _fmt(self._bracket_cap(a, self.book.leverage(a)), 0),
            }
            for a in self._assets_in(params)
        ]

    def _commission_rate(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        return {
            "symbol": f"{asset}USDT",
            "makerCommissionRate": f"{self.maker_bps / 10_000:.6f}",
            "takerCommissionRate": f"{self.taker_bps / 10_000:.6f}",
        }

    def _set_leverage(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        assert asset is not None
        text = self._required(params, "leverage")
        try:
            leverage = int(text)
        except ValueError as exc:
            raise ApiError(-4028, f"Leverage {text} is not valid") from exc
        if leverage < 1 or leverage > self.max_leverage(asset):
            raise ApiError(-4028, f"Leverage {leverage} is not valid")
        self.book.set_leverage(asset, leverage)
        cap = _fmt(self._bracket_cap(asset, leverage), 0)
        return {"leverage": leverage, "maxNotionalValue": cap, "symbol": f"{asset}USDT"}

    def _set_margin_type(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        assert asset is not None
        wanted = self._required(params, "marginType").upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise ApiError(-4044, "The margin type is invalid.")
        mode = "isolated" if wanted == "ISOLATED" else "cross"
        if self.book.margin_mode(asset) == mode:
            raise ApiError(-4046, "No need to change margin type.")
        if any(p.asset == asset for p in self.book.positions()):
            raise ApiError(-4048, "Margin type cannot be changed if there exists position.")
        if self.book.open_orders(asset):
            raise ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
        self.book.set_margin_mode(asset, mode)  # type: ignore[arg-type]
        return {"code": 200, "msg": "success"}

    def _set_position_mode(self, params: dict[str, str]) -> dict[str, Any]:
        if _flag(params, "dualSidePosition"):
            raise ApiError(-4068, "Position side cannot be changed if there exists position.")  # hedge mode: not here
        raise ApiError(-4059, "No need to change position side.")

    def _coins(self, params: dict[str, str]) -> list[dict[str, Any]]:
        coins = ["USDT", *self.assets]
        return [
            {"coin": c, "depositAllEnable": True, "withdrawAllEnable": True, "name": c, "free": "0", "locked": "0"}
            | {"freeze": "0", "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0"}
            | {"isLegalMoney": False, "trading": True, "networkList": []}
            for c in coins
        ]

    # ------------------------------------------------------------------------------------- orders

    def _new_order(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        assert asset is not None
        side = self._required(params, "side").upper()
        kind = self._required(params, "type").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        if kind in CONDITIONAL_TYPES or kind in ("STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
            raise ApiError(
                -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
            )
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(-1116, "Invalid orderType.")
        quantity = self._quantity(asset, self._required(params, "quantity"))
        client_id = self._client_id(params, "newClientOrderId")
        reduce_only = _flag(params, "reduceOnly")
        tif = params.get("timeInForce", "GTC").upper()
        price = self._price_param(asset, params, "price") if kind == "LIMIT" else None
        mark = self.book.mark(asset)
        if kind == "LIMIT" and tif == "GTX":
            assert price is not None
            if (side == "BUY" and mark <= price) or (side == "SELL" and mark >= price):
                raise ApiError(
                    -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
                )
        if not reduce_only:
            self._check_notional(asset, quantity, price if price is not None else mark)
        order = self.book.place(
            asset,
            "buy" if side == "BUY" else "sell",
            "market" if kind == "MARKET" else "limit",
            quantity,
            client_id=client_id,
            price=price,
            reduce_only=reduce_only,
            ioc=kind == "LIMIT" and tif in ("IOC", "FOK"),
        )
        self._event(f"placed {kind} {side} {quantity:g} {asset} id {order.id} client {client_id} -> {order.status}")
        return self._order_body(order, with_time=False)

    def _new_algo(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        assert asset is not None
        if self._required(params, "algoType").upper() != "CONDITIONAL":
            raise ApiError(-1116, "Invalid algoType.")
        side = self._required(params, "side").upper()
        kind = self._required(params, "type").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        if kind not in CONDITIONAL_TYPES:
            raise ApiError(-1116, "Invalid orderType.")  # STOP / TAKE_PROFIT limits are not simulated
        close_position = _flag(params, "closePosition")
        reduce_only = _flag(params, "reduceOnly")
        if close_position and "quantity" in params:
            raise ApiError(-1106, "Parameter 'quantity' sent when not required.")
        if close_position and "reduceOnly" in params:
            raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        quantity = 0.0 if close_position else self._quantity(asset, self._required(params, "quantity"))
        trigger = self._price_param(asset, params, "triggerPrice")
        client_id = self._client_id(params, "clientAlgoId")
        if not (reduce_only or close_position):
            self._check_notional(asset, quantity, trigger)
        order = self.book.place(
            asset,
            "buy" if side == "BUY" else "sell",
            "stop_market" if kind == "STOP_MARKET" else "take_profit_market",
            quantity,
            client_id=client_id,
            trigger=trigger,
            reduce_only=reduce_only,
            close_position=close_position,
        )
        size = "close-position" if close_position else f"{quantity:g}"
        self._event(f"placed {kind} {side} {size} {asset} trigger {trigger:g} algo {order.id} client {client_id}")
        return self._algo_body(order)

    def _find_plain(self, params: dict[str, str], asset: str | None) -> BookOrder | None:
        order_id, client_id = params.get("orderId"), params.get("origClientOrderId")
        if order_id is None and client_id is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for order in self.book.orders():
            if self._is_algo(order) or (asset is not None and order.asset != asset):
                continue
            if order_id is not None and str(order.id) == order_id:
                return order
            if order_id is None and self._client_of(order) == client_id:
                return order
        return None

    def _find_algo(self, params: dict[str, str]) -> BookOrder | None:
        algo_id, client_id = params.get("algoId"), params.get("clientAlgoId")
        if algo_id is None and client_id is None:
            raise ApiError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
        for order in self.book.orders():
            if not self._is_algo(order):
                continue
            if algo_id is not None and str(order.id) == algo_id:
                return order
            if algo_id is None and order.client_id == client_id:
                return order
        return None

    def _query_order(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._find_plain(params, self._symbol(params))
        if order is None:
            raise ApiError(-2013, "Order does not exist.")
        return self._order_body(order)

    def _cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._find_plain(params, self._symbol(params))
        if order is None or order.status != "open":
            raise ApiError(-2011, "Unknown order sent.")
        canceled = self.book.cancel(order_id=order.id)
        self._event(f"cancelled {order.type.upper()} id {order.id} client {order.client_id}")
        return self._order_body(canceled, with_time=False)

    def _query_algo(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._find_algo(params)
        if order is None:
            raise ApiError(-2013, "Order does not exist.")
        return self._algo_body(order)

    def _cancel_algo(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._find_algo(params)
        if order is None or order.status != "open":
            raise ApiError(-2011, "Unknown order sent.")
        self._user_cancelled.add(order.id)
        self.book.cancel(order_id=order.id)
        self._event(f"cancelled {order.type.upper()} algo {order.id} client {order.client_id}")
        return {"algoId": order.id, "clientAlgoId": order.client_id, "code": "200", "msg": "success"}

    def _open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._symbol(params, required=False)
        return [self._order_body(o) for o in self.book.open_orders(asset) if not self._is_algo(o)]

    def _open_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._symbol(params, required=False)
        return [self._algo_body(o) for o in self.book.open_orders(asset) if self._is_algo(o)]

    def _history(self, params: dict[str, str], algo: bool) -> list[BookOrder]:
        asset = self._symbol(params)
        rows = [o for o in self.book.orders() if o.asset == asset and self._is_algo(o) == algo]
        if "startTime" in params:
            rows = [o for o in rows if o.created_ms >= int(params["startTime"])]
        if "endTime" in params:
            rows = [o for o in rows if o.created_ms <= int(params["endTime"])]
        id_key = "algoId" if algo else "orderId"
        if id_key in params:
            rows = [o for o in rows if o.id >= int(params[id_key])]
        limit = min(int(params.get("limit", "500")), 1000)
        return rows[:limit] if id_key in params else rows[-limit:]

    def _all_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return [self._order_body(o) for o in self._history(params, algo=False)]

    def _all_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return [self._algo_body(o) for o in self._history(params, algo=True)]

    def _cancel_all(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        for order in self.book.open_orders(asset):
            if not self._is_algo(order):
                self.book.cancel(order_id=order.id)
                self._event(f"cancelled {order.type.upper()} id {order.id} client {order.client_id}")
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _cancel_all_algos(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._symbol(params)
        for order in self.book.open_orders(asset):
            if self._is_algo(order):
                self._user_cancelled.add(order.id)
                self.book.cancel(order_id=order.id)
                self._event(f"cancelled {order.type.upper()} algo {order.id} client {order.client_id}")
        return {"code": 200, "msg": "success"}

    # ------------------------------------------------------------------------------------- history

    def _trade_row(self, f: BookFill) -> dict[str, Any]:
        a = f.asset
        return {
            "symbol": f"{a}USDT",
            "id": f.id,
            "orderId": f.order_id,
            "side": f.side.upper(),
            "price": self._p(a, f.price) if not f.liquidation else _fmt(f.price, 8),
            "qty": self._q(a, f.quantity),
            "realizedPnl": _fmt(f.realized_pnl),
            "marginAsset": "USDT",
            "quoteQty": _fmt(f.quantity * f.price, 5),
            "commission": _fmt(f.fee),
            "commissionAsset": "USDT",
            "time": f.time_ms,
            "positionSide": "BOTH",
            "maker": f.maker,
            "buyer": f.side == "buy",
        }

    def _user_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._symbol(params)
        fills = [f for f in self.book.fills() if f.asset == asset]
        if "orderId" in params:
            fills = [f for f in fills if str(f.order_id) == params["orderId"]]
        elif "fromId" in params:
            fills = [f for f in fills if f.id >= int(params["fromId"])]
        else:
            start, end = self._span(params, 7 * DAY_MS, self.now_ms)
            if end - start > 7 * DAY_MS:
                raise ApiError(-4166, "Search window is restricted to recent 7 days only.")
            fills = [f for f in fills if start <= f.time_ms <= end]
        limit = min(int(params.get("limit", "500")), 1000)
        rows = fills[:limit] if "startTime" in params or "fromId" in params else fills[-limit:]
        return [self._trade_row(f) for f in rows]

    def _income(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._symbol(params, required=False)
        wanted = params.get("incomeType")
        start, end = self._span(params, 7 * DAY_MS, self.now_ms)
        rows: list[dict[str, Any]] = []
        for row in self.book.funding():
            rows.append(
                {"symbol": f"{row['asset']}USDT", "incomeType": "FUNDING_FEE", "income": _fmt(row["payment"])}
                | {"asset": "USDT", "info": "FUNDING_FEE", "time": row["time_ms"], "tradeId": ""}
                | {"tranId": 9_000_000_000 + len(rows), "_asset": row["asset"]}
            )
        for f in self.book.fills():
            common = {"symbol": f"{f.asset}USDT", "asset": "USDT", "time": f.time_ms, "tradeId": str(f.id)}
            if f.realized_pnl:
                rows.append(
                    common
                    | {"incomeType": "REALIZED_PNL", "income": _fmt(f.realized_pnl), "info": "REALIZED_PNL"}
                    | {"tranId": 8_000_000_000 + f.id, "_asset": f.asset}
                )
            rows.append(
                common
                | {"incomeType": "COMMISSION", "income": _fmt(-f.fee), "info": "COMMISSION"}
                | {"tranId": 7_000_000_000 + f.id, "_asset": f.asset}
            )
        rows = [
            r
            for r in rows
            if (asset is None or r["_asset"] == asset)
            and (wanted is None or r["incomeType"] == wanted)
            and start <= r["time"] <= end
        ]
        rows.sort(key=lambda r: (r["time"], r["tranId"]))
        limit = min(int(params.get("limit", "100")), 1000)
        rows = rows[:limit]
        for r in rows:
            r.pop("_asset")
        return rows

    def _force_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._symbol(params, required=False)
        liquidated = {f.order_id for f in self.book.fills() if f.liquidation}
        return [
            self._order_body(o) | {"type": "LIMIT", "origType": "LIMIT", "timeInForce": "IOC"}
            for o in self.book.orders()
            if o.id in liquidated and asset in (None, o.asset)
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Binance USD-M futures (public and private) for dry runs")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--balance", type=float, default=10_000.0)
    parser.add_argument("--assets", default="BTC,ETH,SOL")
    add_open_by_hand_option(parser)
    args = parser.parse_args(argv)
    fake = FakeBinanceFutures(args.assets.split(","), balance=args.balance, port=args.port)
    fake.on_event = lambda line: print(time.strftime("%H:%M:%S"), line, flush=True)
    with fake:
        print(f"fake Binance USD-M futures at {fake.base_url}", flush=True)
        print(f"api key:    {fake.API_KEY}", flush=True)
        print(f"api secret: {fake.API_SECRET}   (test-only credentials of this fake)", flush=True)
        if args.open_by_hand:
            open_by_hand(fake.book, args.open_by_hand)
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
                with fake.book.lock:  # stops fire between requests too
                    fake._tick()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
