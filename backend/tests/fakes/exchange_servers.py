"""Fake Binance USD-M and Hyperliquid public APIs: real HTTP servers on 127.0.0.1 (ephemeral port) in a thread.

The data comes from the seeded `MarketSimulator` (5m base candles), served in the venues' own JSON shapes
(Binance: klines as arrays of strings, filters in exchangeInfo; Hyperliquid: `POST /info` with a `type`;
the larger bodies are built in `exchange_bodies`). Binance honours `startTime`/`endTime`/`limit` (first
`limit` from `startTime`, else the last `limit` up to `endTime`); Hyperliquid's candleSnapshot answers at
most 5000 candles from `startTime` and keeps only the latest `history_limit`.
The server's clock is `now_ms` (fixed when given, else the wall clock): the candle that is still forming at
`now_ms` is served too, as the real venues do. Faults are scripted (`fail(...)`): a status, body, headers
(`Retry-After`) and a delay, matched on the path (Binance) or the info `type` (Hyperliquid); a `slow(...)`
answer is the normal body after a delay. Every request is recorded.

    with FakeBinance(now_ms=...) as venue:
        source = CcxtMarketData("binanceusdm", ["BTC"], api_overrides=local_api_urls("binanceusdm", venue.base_url))
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.core.timeframes import from_ms, timeframe_seconds
from app.services.market_data.simulator import FUNDING_INTERVAL_MS, MarketSimulator
from tests.fakes import exchange_bodies as bodies

HOUR_MS = 3_600_000
Answer = tuple[int, Any, dict[str, str]]


@dataclass
class Fault:
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    match: str | None = None  # Binance: a path ending; Hyperliquid: the info type; None: any request
    times: int = 1
    passthrough: bool = False  # after the delay, answer normally (a slow answer)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    received_at: float
    status: int = 0  # 0 until answered


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart: without it each answer waits ~40 ms

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        venue = self.server.venue
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, payload, headers = venue._dispatch(self.command, parts.path, query, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, venue: FakeVenue, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.venue = venue


class FakeVenue:
    """Shared machinery: lifecycle, clock, simulator, faults and the request log."""

    name = "venue"

    def __init__(
        self,
        assets: list[str] | None = None,
        *,
        now_ms: int | None = None,
        history_days: int = 120,
        seed: int = 11,
        port: int = 0,
    ) -> None:
        """`port`: 0 for any free one; a given port lets a test point a client at a venue that is down (nothing
        listens there yet) and then bring it up."""
        self.assets = [a.upper() for a in (assets or ["BTC", "ETH", "SOL"])]
        self.port = port
        self._fixed_now = now_ms
        start = (now_ms if now_ms is not None else int(time.time() * 1000)) - history_days * 86_400_000
        epoch = from_ms(start - start % 86_400_000)
        self.sim = MarketSimulator(self.assets, base_timeframe="5m", seed=seed, epoch=epoch)
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        self._server = _Server(self, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"fake {self.name} is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def now_ms(self) -> int:
        return self._fixed_now if self._fixed_now is not None else int(time.time() * 1000)

    # ------------------------------------------------------------------------------------- scripting

    def fail(self, status: int = 500, body: Any = None, *, match: str | None = None, times: int = 1, **kw: Any) -> None:
        with self._lock:
            self._faults.append(Fault(status, body, match=match, times=times, **kw))

    def slow(self, delay_s: float, *, match: str | None = None, times: int = 1) -> None:
        with self._lock:
            self._faults.append(Fault(200, None, delay_s=delay_s, match=match, times=times, passthrough=True))

    def matching(self, key: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if self._key(r.path, r.json).endswith(key)]

    # ------------------------------------------------------------------------------------- data

    def candles(self, asset: str, timeframe: str, first_open: int, last_open: int) -> list[list[float]]:
        """[open time, o, h, l, c, v] of every candle opening in [first_open, last_open] as served (rounded)."""
        tf = timeframe_seconds(timeframe) * 1000
        first_open = max(-(-first_open // tf) * tf, -(-int(self.sim.epoch.timestamp() * 1000) // tf) * tf)
        last_open = min(last_open, self.now_ms) // tf * tf
        if last_open < first_open:
            return []
        with self._lock:
            s = self.sim.candles_between(asset, timeframe, from_ms(first_open), from_ms(last_open + tf))
        return [
            [
                int(s.open_time_ms[i]),
                *(float(self._price(asset, p)) for p in row),
                float(self._size(asset, s.volume[i])),
            ]
            for i, row in enumerate(zip(s.open, s.high, s.low, s.close, strict=True))
        ]

    def funding_settlements(self, asset: str, start_ms: int, end_ms: int, interval_ms: int) -> list[tuple[int, float]]:
        """(settlement time, rate per interval) from the simulator's 8 h rates (hourly: the 8 h rate / 8)."""
        out = []
        first = -(-start_ms // interval_ms) * interval_ms
        with self._lock:
            for t in range(first, min(end_ms, self.now_ms) + 1, interval_ms):
                rate = self.sim.funding_rate(asset, from_ms(t))
                if rate is not None:
                    out.append((t, round(rate.rate * interval_ms / FUNDING_INTERVAL_MS, 8)))
        return out

    def snapshot(self, asset: str) -> dict[str, float]:
        """Live figures as of `now_ms`: last, open 24 h ago, volumes, open interest, current and next funding."""
        now = from_ms(self.now_ms)
        with self._lock:
            ticker = self.sim.ticker_24h(asset, now)
            oi = self.sim.open_interest(asset, now) or 0.0
            nxt = self.sim.funding_rate(asset, now + timedelta(milliseconds=FUNDING_INTERVAL_MS))
        last = float(self._price(asset, self._last_price(asset, ticker.last_price)))
        open_ = float(self._price(asset, ticker.last_price / (1 + ticker.price_change_pct / 100)))
        return {
            "last": last,
            "open": open_,
            "pct": round((last / open_ - 1) * 100, 3),
            "base_volume": float(self._size(asset, ticker.base_volume)),
            "quote_volume": round(ticker.quote_volume, 2),
            "open_interest": float(self._size(asset, oi)),
            "next_funding": round(nxt.rate if nxt else 0.0, 8),
        }

    # ------------------------------------------------------------------------------------- internals

    def _last_price(self, asset: str, simulated: float) -> float:
        """The price "now" in the public figures: the simulator's (a trading fake's book may say otherwise)."""
        return simulated

    def _price(self, asset: str, value: float) -> str:
        raise NotImplementedError

    def _size(self, asset: str, value: float) -> str:
        raise NotImplementedError

    def _key(self, path: str, body: Any) -> str:
        return path

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        key = self._key(path, body)
        record = Recorded(method, path, query, body, time.monotonic())
        with self._lock:
            self.requests.append(record)
            fault = next((f for f in self._faults if f.match is None or key.endswith(f.match)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and not fault.passthrough:
            answer: Answer = (fault.status, fault.body if fault.body is not None else {}, fault.headers)
        else:
            try:
                answer = self._route(method, path, query, body)
            except (KeyError, ValueError, TypeError) as exc:
                answer = (400, {"code": -1102, "msg": f"bad request: {exc}"}, {})
        record.status = answer[0]
        return answer


class FakeBinance(FakeVenue):
    """`/fapi/v1/*` of Binance USD-M futures (public market data only)."""

    name = "binanceusdm"

    def _asset(self, market_id: str) -> str:
        asset = market_id.removesuffix("USDT")
        if not market_id.endswith("USDT") or asset not in self.assets:
            raise LookupError(market_id)
        return asset

    def _price(self, asset: str, value: float) -> str:
        tick = bodies.spec(asset).tick
        return bodies.fmt(round(value / float(tick)) * float(tick), bodies.decimals(tick))

    def _size(self, asset: str, value: float) -> str:
        return bodies.fmt(value, bodies.decimals(bodies.spec(asset).step))

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        now = self.now_ms
        if path == "/fapi/v1/time":
            return 200, {"serverTime": now}, {}
        if path == "/fapi/v1/exchangeInfo":
            return 200, bodies.binance_exchange_info(self.assets, now), {}
        handlers = {
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/fundingRate": self._funding,
            "/fapi/v1/premiumIndex": self._premium,
            "/fapi/v1/openInterest": self._open_interest,
            "/fapi/v1/ticker/24hr": self._ticker,
        }
        if path not in handlers:
            return 404, b"", {}
        try:
            asset = self._asset(query["symbol"])
        except LookupError:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, {}
        return 200, handlers[path](asset, query, now), {}

    @staticmethod
    def _window(query: dict[str, str], tf: int, now: int, default: int, cap: int) -> tuple[int, int]:
        limit = min(int(query.get("limit", default)), cap)
        end = min(int(query.get("endTime", now)), now)
        if "startTime" in query:
            first = -(-int(query["startTime"]) // tf) * tf
            return first, min(end // tf * tf, first + (limit - 1) * tf)
        return end // tf * tf - (limit - 1) * tf, end // tf * tf

    def _klines(self, asset: str, query: dict[str, str], now: int) -> list[list[Any]]:
        tf = timeframe_seconds(query["interval"]) * 1000
        first, last = self._window(query, tf, now, 500, 1500)
        rows = []
        for t, o, h, low, c, v in self.candles(asset, query["interval"], first, last):
            quote = bodies.fmt(v * c, 4)
            p, s = self._price, self._size
            rows.append([t, p(asset, o), p(asset, h), p(asset, low), p(asset, c), s(asset, v), t + tf - 1, quote])
            rows[-1] += [int(v * 40) + 1, s(asset, v / 2), bodies.fmt(v * c / 2, 4), "0"]
        return rows

    def _funding(self, asset: str, query: dict[str, str], now: int) -> list[dict[str, Any]]:
        first, last = self._window(query, FUNDING_INTERVAL_MS, now, 100, 1000)
        mark = self._price(asset, self.snapshot(asset)["last"])
        jitter = [0, 1, 0, 3, 17, 0, 2]  # Binance reports settlements a few ms late now and then
        return [
            {"symbol": f"{asset}USDT", "fundingTime": t + jitter[(t // FUNDING_INTERVAL_MS) % 7]}
            | {"fundingRate": f"{r:.8f}", "markPrice": mark}
            for t, r in self.funding_settlements(asset, first, last, FUNDING_INTERVAL_MS)
        ]

    def _premium(self, asset: str, query: dict[str, str], now: int) -> dict[str, Any]:
        next_funding = (now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        return bodies.binance_premium_index(asset, self.snapshot(asset), now, next_funding, self._price)

    def _open_interest(self, asset: str, query: dict[str, str], now: int) -> dict[str, Any]:
        oi = self._size(asset, self.snapshot(asset)["open_interest"])
        return {"symbol": f"{asset}USDT", "openInterest": oi, "time": now}

    def _ticker(self, asset: str, query: dict[str, str], now: int) -> dict[str, Any]:
        return bodies.binance_ticker(asset, self.snapshot(asset), now, self._price, self._size)


class FakeHyperliquid(FakeVenue):
    """`POST /info` of Hyperliquid (public info types only)."""

    name = "hyperliquid"

    def __init__(self, *args: Any, history_limit: int = 5000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history_limit = history_limit  # the venue keeps only the most recent 5000 candles per interval

    def _sz(self, asset: str) -> int:
        return bodies.spec(asset).sz_decimals

    def _price(self, asset: str, value: float) -> str:
        decimals = max(0, min(6 - self._sz(asset), 4 - math.floor(math.log10(abs(value) or 1.0))))
        return bodies.fmt(round(value, decimals), decimals)

    def _size(self, asset: str, value: float) -> str:
        return bodies.fmt(value, self._sz(asset))

    def _key(self, path: str, body: Any) -> str:
        return str(body.get("type")) if path == "/info" and isinstance(body, dict) else path

    def _ctx(self, asset: str) -> dict[str, Any]:
        return bodies.hyperliquid_asset_ctx(asset, self.snapshot(asset), self._price, self._size)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        if method != "POST" or path != "/info" or not isinstance(body, dict):
            return 422, b"Failed to deserialize the JSON body into the target type", {}
        kind = body.get("type")
        if kind == "meta":
            return 200, bodies.hyperliquid_meta(self.assets), {}
        if kind == "metaAndAssetCtxs":
            return 200, [bodies.hyperliquid_meta(self.assets), [self._ctx(a) for a in self.assets]], {}
        if kind in ("spotMeta", "spotMetaAndAssetCtxs"):  # no spot pairs listed, only the USDC token
            token = {"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0, "isCanonical": True}
            spot_meta = {"universe": [], "tokens": [token]}
            return 200, spot_meta if kind == "spotMeta" else [spot_meta, []], {}
        if kind == "allMids":
            return 200, {a: self._price(a, self.snapshot(a)["last"]) for a in self.assets}, {}
        if kind == "perpDexs":
            return 200, [None], {}
        if kind == "candleSnapshot":
            return 200, self._candles(body["req"]), {}
        if kind == "fundingHistory":
            if body["coin"] not in self.assets:
                return 500, b"null", {}
            end = int(body.get("endTime") or self.now_ms)
            rows = self.funding_settlements(body["coin"], int(body["startTime"]), end, HOUR_MS)[:500]
            return (
                200,
                [
                    {"coin": body["coin"], "fundingRate": f"{r:.8f}", "premium": "0.0001", "time": t + 31}
                    for t, r in rows
                ],
                {},
            )
        return 422, b"Failed to deserialize the JSON body into the target type", {}

    def _candles(self, req: dict[str, Any]) -> Any:
        asset, interval = req["coin"], req["interval"]
        if asset not in self.assets:
            return []
        tf = timeframe_seconds(interval) * 1000
        oldest = (self.now_ms // tf - self.history_limit + 1) * tf
        first = max(int(req["startTime"]), oldest)
        last = min(int(req.get("endTime") or self.now_ms), first + 4999 * tf)
        p, s = self._price, self._size
        return [
            {"t": t, "T": t + tf - 1, "s": asset, "i": interval, "o": p(asset, o), "c": p(asset, c)}
            | {"h": p(asset, h), "l": p(asset, low), "v": s(asset, v), "n": int(v * 10) + 1}
            for t, o, h, low, c, v in self.candles(asset, interval, first, last)
        ]


def at(moment: datetime) -> int:
    """Epoch ms of an aware datetime (for `now_ms`)."""
    return int(moment.astimezone(UTC).timestamp() * 1000)


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    with FakeBinance() as venue:
        yield venue


@pytest.fixture
def fake_hyperliquid() -> Iterator[FakeHyperliquid]:
    with FakeHyperliquid() as venue:
        yield venue
