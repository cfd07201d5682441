"""Live market data from a venue through ccxt: the `MarketDataSource` for Binance USD-M and Hyperliquid.

Assets map to the venue's linear perpetual (`BTC` -> `BTC/USDT:USDT` on binanceusdm, `BTC/USDC:USDC` on
hyperliquid), checked against the venue's loaded markets. Candles are fetched in windows of at most one page
(`startTime`/`endTime`/`limit`), so every window is answered the same way whether the venue pages from the
start or from the end, and only candles closed by `until` are returned. Funding, open interest and the 24 h
ticker are the venue's live figures when `at` is now; for an `at` in the past funding comes from the funding
history, the ticker is rebuilt from 1 h candles and open interest is unknown (None). Funding times are rounded
to the whole second (Binance reports settlements a few ms late).

Reads are retried with exponential backoff on network errors, timeouts, 429/418 (honouring `Retry-After`)
and 5xx; after the last attempt a `TemporaryError` says what failed and why. Each retry is logged as a warning,
except while the venue is out (a read ran out of attempts and none has succeeded since): then at debug level,
since whoever got the `TemporaryError` has said so. Client errors (4xx) are not
retried. ccxt's own rate limiter (`enableRateLimit`) spaces the requests by their weight.
Point ccxt at another host (a fake, a proxy) with `api_overrides` (see `local_api_urls`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import ccxt.async_support as ccxt
import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from app.core.clock import Clock, WallClock
from app.core.errors import ConfigurationError, TemporaryError, TradingAgentError
from app.core.timeframes import timeframe_seconds
from app.services.market_data.base import CandleSeries, FundingRate, MarketRules, Ticker24h, UnknownSymbolError

log = logging.getLogger(__name__)

ExchangeId = Literal["binanceusdm", "hyperliquid"]
LIVE_WINDOW = timedelta(minutes=5)  # an `at` this close to the clock's now asks for the live figures
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_MS = 3_600_000
# ccxt maps 400/403/404/405/410/451 to ExchangeNotAvailable, a NetworkError: they are not worth retrying.
_CLIENT_ERRORS = {
    "400": ccxt.BadRequest,
    "403": ccxt.PermissionDenied,  # Binance: WAF limit violated
    "404": ccxt.BadRequest,
    "405": ccxt.BadRequest,
    "410": ccxt.BadRequest,
    "451": ccxt.PermissionDenied,  # Binance: restricted location
}


@dataclass(frozen=True)
class Venue:
    settle: str  # settlement (and quote) currency of the linear perpetuals
    candle_page: int  # candles per request
    funding_page: int  # funding settlements per request
    min_notional: dict[str, float]  # offline defaults when the market does not say
    max_leverage: dict[str, float]
    api_paths: dict[str, str]  # ccxt `urls['api']` entries used for public reads -> path below a base URL


VENUES: dict[str, Venue] = {
    "binanceusdm": Venue(
        settle="USDT",
        candle_page=1000,  # the API takes 1500, ccxt caps at 1000
        funding_page=1000,
        min_notional={"BTC": 100.0, "*": 5.0},
        max_leverage={"BTC": 125.0, "ETH": 100.0, "SOL": 75.0, "*": 20.0},  # lowest tier; brackets need keys
        api_paths={"fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3"}
        | {"fapiData": "/futures/data"},
    ),
    "hyperliquid": Venue(
        settle="USDC",
        candle_page=5000,  # the most a candleSnapshot answers (the venue keeps only the latest 5000)
        funding_page=500,
        min_notional={"*": 10.0},
        max_leverage={"BTC": 40.0, "ETH": 25.0, "SOL": 20.0, "*": 10.0},
        api_paths={"public": ""},
    ),
}


class VenueRequestError(TradingAgentError):
    """The venue refused a read (a client error, not retried)."""


def local_api_urls(exchange_id: str, base_url: str) -> dict[str, str]:
    """`api_overrides` that send every public read of `exchange_id` to `base_url` (e.g. a fake server)."""
    return {key: base_url.rstrip("/") + path for key, path in _venue(exchange_id).api_paths.items()}


def _venue(exchange_id: str) -> Venue:
    if exchange_id not in VENUES:
        raise ConfigurationError(f"unknown market data venue {exchange_id!r}: use one of {', '.join(VENUES)}")
    return VENUES[exchange_id]


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return _UNIX_EPOCH + timedelta(milliseconds=ms)


def _series(symbol: str, timeframe: str, rows: list[list[float]]) -> CandleSeries:
    table = np.array([r[1:6] for r in rows], dtype=np.float64).reshape(len(rows), 5)
    return CandleSeries(
        symbol,
        timeframe,
        np.array([int(r[0]) for r in rows], dtype=np.int64),
        *(np.ascontiguousarray(table[:, i]) for i in range(5)),
    )


def _retryable(exc: BaseException) -> bool:
    """Network errors, timeouts, 429/418, 5xx and unreadable answers (ccxt's OperationFailed family)."""
    return isinstance(exc, ccxt.OperationFailed)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class CcxtMarketData:
    """A `MarketDataSource` over a ccxt exchange (public endpoints only; no keys needed)."""

    is_simulated = False

    def __init__(
        self,
        exchange_id: ExchangeId,
        assets: list[str],
        *,
        exchange: ccxt.Exchange | None = None,
        api_overrides: dict[str, str] | None = None,
        timeout_ms: int = 10_000,
        clock: Clock | None = None,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        rate_limit_ms: float | None = None,
    ) -> None:
        self.venue = _venue(exchange_id)
        self.name: str = exchange_id
        self.assets = list(dict.fromkeys(a.strip().upper() for a in assets if a.strip()))
        self.clock: Clock = clock or WallClock()
        self.attempts = max(1, attempts)
        self.backoff_s, self.max_backoff_s, self.max_retry_after_s = backoff_s, max_backoff_s, max_retry_after_s
        if exchange is None:
            config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
            if rate_limit_ms is not None:
                config["rateLimit"] = rate_limit_ms
            if exchange_id == "hyperliquid":  # perpetuals only: no spot or builder-deployed (HIP-3) markets
                config["options"] = {"fetchMarkets": {"types": ["swap"]}}
            exchange = getattr(ccxt, exchange_id)(config)
            if exchange_id == "hyperliquid":
                exchange.has["fetchCurrencies"] = False  # spot tokens: not needed for perpetuals
        self.exchange = exchange
        self.exchange.urls["api"].update(api_overrides or {})
        self.exchange.httpExceptions = {**self.exchange.httpExceptions, **_CLIENT_ERRORS}
        self.failing = False  # the last read ran out of attempts: the venue is out until a read succeeds

    # ------------------------------------------------------------------------------------ markets

    async def load(self) -> None:
        """Load the venue's markets and check that every configured asset is listed."""
        markets = await self._markets()
        missing = [a for a in self.assets if self.market_symbol(a) not in markets]
        if missing:
            raise UnknownSymbolError(
                f"{self.name} lists no perpetual for {', '.join(missing)}; it lists {self._listed(markets)}"
            )

    def market_symbol(self, asset: str) -> str:
        """The venue's symbol of an asset's linear perpetual (`BTC` -> `BTC/USDT:USDT`)."""
        settle = self.venue.settle
        return f"{asset.strip().upper()}/{settle}:{settle}"

    async def _markets(self) -> dict[str, Any]:
        if not self.exchange.markets:
            await self._call("load markets", self.exchange.load_markets)
        markets: dict[str, Any] = self.exchange.markets
        return markets

    def _listed(self, markets: dict[str, Any], most: int = 30) -> str:
        bases = sorted(
            {str(m["base"]) for m in markets.values() if m.get("swap") and m.get("settle") == self.venue.settle}
        )
        return ", ".join(bases[:most]) + (f" and {len(bases) - most} more" if len(bases) > most else "")

    async def _market(self, symbol: str) -> tuple[str, dict[str, Any]]:
        asset = symbol.strip().upper().split("/")[0]
        markets = await self._markets()
        market = markets.get(self.market_symbol(asset))
        if market is None or not market.get("swap"):
            raise UnknownSymbolError(
                f"unknown symbol {symbol!r}: {self.name} has no {self.market_symbol(asset)} perpetual;"
                f" it lists {self._listed(markets)}"
            )
        return asset, market

    async def market_rules(self, symbol: str) -> MarketRules:
        """Tick, lot, minimum notional and maximum leverage (offline defaults where the venue is silent)."""
        asset, market = await self._market(symbol)
        precision, limits = market.get("precision") or {}, market.get("limits") or {}
        tick, lot = _number(precision.get("price")), _number(precision.get("amount"))
        if tick is None or lot is None:
            raise VenueRequestError(f"{self.name}: {market['symbol']} has no price or amount precision")
        if self.exchange.precisionMode != ccxt.TICK_SIZE:  # precision given as decimal places
            tick, lot = 10.0**-tick, 10.0**-lot
        notional = _number((limits.get("cost") or {}).get("min"))
        leverage = _number((limits.get("leverage") or {}).get("max"))
        defaults_n, defaults_l = self.venue.min_notional, self.venue.max_leverage
        return MarketRules(
            symbol=asset,
            market_symbol=market["symbol"],
            tick_size=tick,
            lot_size=lot,
            min_notional=notional if notional else defaults_n.get(asset, defaults_n["*"]),
            max_leverage=leverage if leverage else defaults_l.get(asset, defaults_l["*"]),
        )

    # ------------------------------------------------------------------------------------ candles

    def _timeframe_ms(self, timeframe: str) -> int:
        if timeframe not in (self.exchange.timeframes or {}):
            listed = ", ".join(self.exchange.timeframes or {})
            raise ValueError(f"{self.name} has no {timeframe!r} candles; it offers {listed}")
        return timeframe_seconds(timeframe) * 1000

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """The last `limit` candles closed by `until` (and by the clock's now), oldest first; fewer where the
        venue has none."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        asset, market = await self._market(symbol)
        tf_ms = self._timeframe_ms(timeframe)
        until_ms = min(_ms(until), _ms(self.clock.now()))  # nothing has closed after now
        end = until_ms // tf_ms * tf_ms
        rows: list[list[float]] = []
        if limit:
            async for page in self._pages(asset, market, timeframe, end - (limit + 1) * tf_ms, until_ms):
                rows.extend(page)
        return _series(asset, timeframe, rows[-limit:] if limit else [])

    async def fetch_candles_range(
        self,
        symbol: str,
        timeframe: str,
        start: datetime,
        end: datetime,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncIterator[CandleSeries]:
        """Every candle opening at or after `start` and closed by `end`, one series per page, oldest first;
        `progress(n)` is called with the number of candles of each page."""
        asset, market = await self._market(symbol)
        self._timeframe_ms(timeframe)
        async for page in self._pages(asset, market, timeframe, _ms(start), min(_ms(end), _ms(self.clock.now()))):
            if progress is not None:
                progress(len(page))
            yield _series(asset, timeframe, page)

    async def _pages(
        self, asset: str, market: dict[str, Any], timeframe: str, start_ms: int, until_ms: int
    ) -> AsyncIterator[list[list[float]]]:
        """Closed candles with open time in [start_ms, until_ms - tf], window by window."""
        tf_ms = timeframe_seconds(timeframe) * 1000
        page = self.venue.candle_page
        since = -(-start_ms // tf_ms) * tf_ms
        while since + tf_ms <= until_ms:
            stop = min(since + page * tf_ms, until_ms)
            raw = await self._call(
                f"{timeframe} candles of {asset} from {_dt(since):%Y-%m-%d %H:%M}",
                self.exchange.fetch_ohlcv,
                market["symbol"],
                timeframe,
                since,
                page,
                {"until": stop - 1},
            )
            kept = {
                int(r[0]): [int(r[0]), *(float(v) for v in r[1:6])]
                for r in raw or []
                if since <= int(r[0]) < stop and int(r[0]) + tf_ms <= until_ms and None not in r[1:6]
            }
            yield [kept[t] for t in sorted(kept)]
            since = stop

    # ------------------------------------------------------------------------------------ funding

    async def fetch_funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        """Live: the venue's current rate (the one accruing for the next settlement, at its time).
        In the past: the last settlement at or before `at`."""
        asset, market = await self._market(symbol)
        if self._is_live(at):
            raw = await self._call(f"funding rate of {asset}", self.exchange.fetch_funding_rate, market["symbol"])
            rate = _number(raw.get("fundingRate"))
            when = raw.get("fundingTimestamp") or raw.get("timestamp") or _ms(at)
            return FundingRate(int(when), rate) if rate is not None else None
        history = await self.fetch_funding_history(symbol, at - timedelta(days=1), at)
        return history[-1] if history else None

    async def fetch_funding_history(self, symbol: str, start: datetime, end: datetime) -> list[FundingRate]:
        """Every funding settlement in [start, end], oldest first, times rounded to the whole second."""
        asset, market = await self._market(symbol)
        start_ms, end_ms = _ms(start), _ms(end)
        found: dict[int, float] = {}
        since = start_ms
        while since <= end_ms:
            raw = await self._call(
                f"funding history of {asset} from {_dt(since):%Y-%m-%d %H:%M}",
                self.exchange.fetch_funding_rate_history,
                market["symbol"],
                since,
                self.venue.funding_page,
                {"until": end_ms},
            )
            times = []
            for entry in raw or []:
                when, rate = entry.get("timestamp"), _number(entry.get("fundingRate"))
                if when is not None and rate is not None and since <= int(when) <= end_ms:
                    times.append(int(when))
                    found[(int(when) + 500) // 1000 * 1000] = rate
            if not times:
                break
            since = max(times) + 1
        return [FundingRate(t, found[t]) for t in sorted(found)]

    # ------------------------------------------------------------------------------------ live figures

    def _is_live(self, at: datetime) -> bool:
        return _ms(at) >= _ms(self.clock.now() - LIVE_WINDOW)

    async def fetch_open_interest(self, symbol: str, at: datetime) -> float | None:
        """Open interest in base units now (None for a past `at` or where the venue has none)."""
        asset, market = await self._market(symbol)
        if not self._is_live(at) or not self.exchange.has.get("fetchOpenInterest"):
            return None
        raw = await self._call(f"open interest of {asset}", self.exchange.fetch_open_interest, market["symbol"])
        return _number((raw or {}).get("openInterestAmount"))

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        """The venue's 24 h ticker now; for a past `at`, rebuilt from the 24 hourly candles closed by then."""
        asset, market = await self._market(symbol)
        if not self._is_live(at):
            return await self._ticker_from_candles(asset, at)
        raw = await self._call(f"24 h ticker of {asset}", self.exchange.fetch_ticker, market["symbol"])
        info = raw.get("info") or {}
        last = _number(raw.get("last")) or _number(raw.get("close"))
        if last is None:
            raise VenueRequestError(f"{self.name}: the {market['symbol']} ticker has no last price")
        pct = _number(raw.get("percentage"))
        reference = _number(raw.get("open")) or _number(raw.get("previousClose"))
        if pct is None:
            pct = (last / reference - 1.0) * 100.0 if reference else 0.0
        quote = _number(raw.get("quoteVolume"))
        base = _number(raw.get("baseVolume")) or _number(info.get("dayBaseVlm"))
        if base is None:
            base = quote / last if quote is not None else 0.0
        return Ticker24h(asset, last, pct, base, quote if quote is not None else base * last)

    async def _ticker_from_candles(self, asset: str, at: datetime) -> Ticker24h:
        hourly = await self.fetch_candles(asset, "1h", limit=24, until=at)
        if len(hourly) == 0:
            raise ValueError(f"{self.name}: no {asset} hourly candle has closed by {at}")
        last = float(hourly.close[-1])
        return Ticker24h(
            asset,
            last,
            (last / float(hourly.open[0]) - 1.0) * 100.0,
            float(np.sum(hourly.volume)),
            float(np.sum(hourly.volume * hourly.close)),
        )

    async def close(self) -> None:
        """Close ccxt's HTTP session (the source owns the exchange, even one passed in)."""
        await self.exchange.close()

    # ------------------------------------------------------------------------------------ retries

    def _wait(self, state: RetryCallState) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):  # 429 / 418
            headers = self.exchange.last_response_headers or {}
            retry_after = next((_number(v) for k, v in headers.items() if k.lower() == "retry-after"), None)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        log.log(
            logging.DEBUG if self.failing else logging.WARNING,  # during an outage its caller has said so once
            "%s: attempt %d of %d failed (%s: %s); retrying in %.2f s",
            self.name,
            state.attempt_number,
            self.attempts,
            type(error).__name__,
            error,
            pause,
        )

    async def _call(self, what: str, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run one ccxt read with retries; translate ccxt's errors into the agent's."""
        result: Any = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=self._wait,
                retry=retry_if_exception(_retryable),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    result = await func(*args)
        except ccxt.BadSymbol as exc:
            self.failing = False
            raise UnknownSymbolError(f"{self.name}: {what}: the venue does not know the symbol ({exc})") from exc
        except ccxt.OperationFailed as exc:
            self.failing = True
            tries = f"{self.attempts} attempt{'s' if self.attempts > 1 else ''}"
            raise TemporaryError(f"{self.name}: {what} failed after {tries}: {type(exc).__name__}: {exc}") from exc
        except ccxt.BaseError as exc:
            self.failing = False  # the venue answered (with a refusal)
            raise VenueRequestError(f"{self.name}: {what} was refused: {type(exc).__name__}: {exc}") from exc
        self.failing = False
        return result
