"""Seeded market simulator: the offline `MarketDataSource`.

Every base candle is a pure function of (seed, asset, candle index since the simulation epoch). Candles are
generated lazily in fixed-size blocks, each drawn from its own numpy generator seeded with
(seed, asset key, block index); the model state (log price, log-volatility, funding premium, open interest)
carries from one block to the next, so the tape extends seamlessly and is bit-identical whatever order or
range it is asked in. Higher timeframes are aggregated from base candles on Unix-epoch-aligned boundaries.

The model: log-volatility AR(1) (volatility clustering) with an intraday seasonality, Student-t shocks
(fat tails), Poisson jumps in both directions that also lift volatility, Brownian-bridge highs and lows,
volume rising with volatility and |return|, and a mean-reverting funding premium driven by returns,
settled every 8 h with the venues' clamp.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.signal import lfilter

from app.core.timeframes import timeframe_seconds
from app.services.market_data.base import (
    CandleSeries,
    FloatArray,
    FundingRate,
    MarketRules,
    Ticker24h,
    UnknownSymbolError,
)

BLOCK_SIZE = 4096
FUNDING_INTERVAL_MS = 8 * 3_600_000
FUNDING_INTEREST = 0.0001  # per 8 h
FUNDING_CLAMP = 0.0005
FUNDING_CAP = 0.0075
_DAY_MS = 86_400_000
_YEAR_S = 365 * 86_400
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T_DF = 5.0  # Student-t degrees of freedom of the diffusive shocks
_VOL_HALF_LIFE_S = 12 * 3600  # log-volatility AR(1)
_VOL_STD = 0.5  # stationary std of log-volatility
_JUMPS_PER_DAY = 0.5
_JUMP_SIZE = 0.24  # Laplace scale of a jump, in daily standard deviations
_JUMP_VOL_KICK = 0.5  # log-volatility added by a jump
_PREMIUM_MEAN = 0.00005  # per 8 h; a touch under the interest, as on the venues
_PREMIUM_TAU_S = 86_400
_OI_TAU_S = 3 * 86_400
_COLUMNS = ("open", "high", "low", "close", "volume", "premium", "oi")

# asset: (start price, annual vol, quote volume per day, open interest USD, tick, lot, max leverage)
_KNOWN_ASSETS: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "BTC": (100_000.0, 0.55, 20e9, 8e9, 0.1, 0.001, 125.0),
    "ETH": (3_500.0, 0.75, 10e9, 5e9, 0.01, 0.001, 100.0),
    "SOL": (180.0, 0.85, 3e9, 1.5e9, 0.01, 0.1, 75.0),
}


def _ms(moment: datetime) -> int:
    """Exact epoch milliseconds of a datetime (naive read as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class _Profile:
    key: int
    price: float
    annual_vol: float
    quote_volume_per_day: float
    open_interest_usd: float
    tick_size: float
    lot_size: float
    max_leverage: float


def _profile(asset: str) -> _Profile:
    digest = hashlib.blake2b(asset.encode(), digest_size=16).digest()
    key = int.from_bytes(digest[:8], "little")
    f = [int.from_bytes(digest[8 + 2 * i : 10 + 2 * i], "little") / 65535 for i in range(4)]
    if asset in _KNOWN_ASSETS:
        return _Profile(key, *_KNOWN_ASSETS[asset])
    price = 100.0 * 5.0 ** (2 * f[0] - 1)  # 20 .. 500
    digits = math.floor(math.log10(price))
    return _Profile(
        key=key,
        price=price,
        annual_vol=0.7 + 0.5 * f[1],
        quote_volume_per_day=3e8 * (0.3 + f[2]),
        open_interest_usd=1.5e8 * (0.3 + f[3]),
        tick_size=10.0 ** (digits - 4),
        lot_size=10.0 ** (-digits),
        max_leverage=20.0,
    )


@dataclass(slots=True)
class _State:
    log_price: float
    close: float
    log_vol: float = 0.0
    premium_dev: float = 0.0
    oi_dev: float = 0.0


def _ar1(shocks: FloatArray, phi: float, previous: float) -> FloatArray:
    """x[t] = phi * x[t-1] + shocks[t], starting from x[-1] = previous."""
    out, _ = lfilter([1.0], [1.0, -phi], shocks, zi=[phi * previous])
    return np.asarray(out, dtype=np.float64)


class _Tape:
    """The generated base candles of one asset, extended block by block."""

    def __init__(self, asset: str, seed: int, base_s: int, epoch_s: int) -> None:
        self.asset = asset
        self.profile = profile = _profile(asset)
        self.length = 0
        self._seed = seed % 2**64
        self._base_s = base_s
        self._epoch_s = epoch_s
        self._state = _State(log_price=math.log(profile.price), close=profile.price)
        self._data = {name: np.empty(0, dtype=np.float64) for name in _COLUMNS}

    def column(self, name: str) -> FloatArray:
        return self._data[name][: self.length]

    def ensure(self, count: int) -> None:
        """Generate base candles until at least `count` exist."""
        if count <= self.length:
            return
        blocks = -(-(count - self.length) // BLOCK_SIZE)
        capacity = self._data["close"].shape[0]
        if capacity < self.length + blocks * BLOCK_SIZE:
            new_capacity = max(2 * capacity, self.length + blocks * BLOCK_SIZE)
            for name, old in self._data.items():
                grown = np.empty(new_capacity, dtype=np.float64)
                grown[: self.length] = old[: self.length]
                self._data[name] = grown
        for _ in range(blocks):
            block = self._block(self.length // BLOCK_SIZE)
            for name in _COLUMNS:
                self._data[name][self.length : self.length + BLOCK_SIZE] = block[name]
            self.length += BLOCK_SIZE

    def _block(self, index: int) -> dict[str, FloatArray]:
        p, st, n, base_s = self.profile, self._state, BLOCK_SIZE, self._base_s
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self._seed, p.key, index])))
        eta = rng.standard_normal(n)
        shocks = rng.standard_t(_T_DF, n) * math.sqrt((_T_DF - 2) / _T_DF)
        jump_rate = _JUMPS_PER_DAY * base_s / 86_400
        jumped = rng.poisson(jump_rate, n) > 0
        sigma_base = p.annual_vol * math.sqrt(base_s / _YEAR_S)
        jump_scale = _JUMP_SIZE * p.annual_vol / math.sqrt(365)
        jumps = rng.laplace(0.0, jump_scale, n) * jumped
        u_high, u_low = 1.0 - rng.random(n), 1.0 - rng.random(n)
        volume_noise, premium_noise, oi_noise = (rng.standard_normal(n) for _ in range(3))

        seconds = self._epoch_s + (np.arange(n, dtype=np.int64) + index * n) * base_s
        day_phase = (seconds % 86_400) / 86_400 - 15 / 24  # busiest around 15:00 UTC
        season = 1.0 + 0.25 * np.cos(2 * np.pi * day_phase)

        phi_v = 0.5 ** (base_s / _VOL_HALF_LIFE_S)
        log_vol = _ar1(_VOL_STD * math.sqrt(1 - phi_v**2) * eta + _JUMP_VOL_KICK * jumped, phi_v, st.log_vol)
        # Keep the average variance at sigma_base**2: remove what jumps and their volatility kicks add.
        kick_mean = _JUMP_VOL_KICK * jump_rate / (1 - phi_v)
        diffusive = sigma_base * math.sqrt(max(0.1, 1 - 2 * jump_rate * (jump_scale / sigma_base) ** 2))
        sigma = diffusive * season * np.exp(log_vol - kick_mean - _VOL_STD**2)
        returns = sigma * shocks - 0.5 * sigma**2 + jumps
        log_price = st.log_price + np.cumsum(returns)
        close = np.exp(log_price)
        open_ = np.empty(n)
        open_[0] = st.close
        open_[1:] = close[:-1]
        # Extremes of a Brownian bridge from 0 to the bar's log return with the bar's variance.
        variance = sigma**2
        up = 0.5 * (returns + np.sqrt(returns**2 - 2 * variance * np.log(u_high)))
        down = 0.5 * (returns - np.sqrt(returns**2 - 2 * variance * np.log(u_low)))
        high = np.maximum(open_ * np.exp(up), np.maximum(open_, close))
        low = np.minimum(open_ * np.exp(down), np.minimum(open_, close))

        scale = sigma_base * season
        activity = 0.2 + 0.4 * sigma / scale + 0.6 * np.abs(returns) / scale
        quote = p.quote_volume_per_day * base_s / 86_400 * season * activity
        volume = quote * np.exp(0.3 * volume_noise - 0.045) / close

        phi_p = math.exp(-base_s / _PREMIUM_TAU_S)
        premium_std = 0.00025 * p.annual_vol / 0.55
        step = premium_std * math.sqrt(1 - phi_p**2)
        premium_dev = _ar1(step * (returns / sigma_base + premium_noise), phi_p, st.premium_dev)
        phi_o = math.exp(-base_s / _OI_TAU_S)
        oi_dev = _ar1(0.15 * math.sqrt(1 - phi_o**2) * oi_noise, phi_o, st.oi_dev)

        self._state = _State(
            float(log_price[-1]),
            float(close[-1]),
            float(log_vol[-1]),
            float(premium_dev[-1]),
            float(oi_dev[-1]),
        )
        return {
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "premium": _PREMIUM_MEAN + premium_dev,
            "oi": p.open_interest_usd / p.price * np.exp(oi_dev),
        }


class MarketSimulator:
    """Seeded, deterministic perpetual-futures market for offline runs, tests and backtests."""

    name = "simulated"
    is_simulated = True

    def __init__(
        self,
        assets: list[str],
        base_timeframe: str = "5m",
        seed: int = 7,
        epoch: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    ) -> None:
        if not assets:
            raise ValueError("the simulator needs at least one asset")
        self.assets = list(dict.fromkeys(a.strip().upper() for a in assets))
        self.base_timeframe = base_timeframe
        self.seed = seed
        self._base_ms = timeframe_seconds(base_timeframe) * 1000
        self._epoch_ms = -(-_ms(epoch) // self._base_ms) * self._base_ms  # first base boundary at or after
        self._tapes = {a: _Tape(a, seed, self._base_ms // 1000, self._epoch_ms // 1000) for a in self.assets}

    @property
    def epoch(self) -> datetime:
        """Open time of the first simulated candle."""
        return _UNIX_EPOCH + timedelta(milliseconds=self._epoch_ms)

    # ------------------------------------------------------------------------------------ sync API

    def candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """Return the last `limit` candles closed by `until`, oldest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        tape, tf_ms = self._tape(symbol), self._timeframe_ms(timeframe)
        last = _ms(until) // tf_ms - 1
        return self._series(tape, timeframe, tf_ms, max(self._first_k(tf_ms), last - limit + 1), last)

    def candles_between(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> CandleSeries:
        """Return every candle that opens at or after `start` and closes at or before `end`."""
        tape, tf_ms = self._tape(symbol), self._timeframe_ms(timeframe)
        first = max(self._first_k(tf_ms), -(-_ms(start) // tf_ms))
        return self._series(tape, timeframe, tf_ms, first, _ms(end) // tf_ms - 1)

    def funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        """Return the rate settled at the last 8 h boundary at or before `at` (None before any data)."""
        tape = self._tape(symbol)
        settlement = _ms(at) // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
        start = max(0, -(-(settlement - FUNDING_INTERVAL_MS - self._epoch_ms) // self._base_ms))
        stop = (settlement - self._epoch_ms) // self._base_ms
        if stop <= start:
            return None
        tape.ensure(stop)
        premium = float(np.mean(tape.column("premium")[start:stop]))
        rate = premium + min(max(FUNDING_INTEREST - premium, -FUNDING_CLAMP), FUNDING_CLAMP)
        return FundingRate(settlement, min(max(rate, -FUNDING_CAP), FUNDING_CAP))

    def funding_history(self, symbol: str, start: datetime, end: datetime) -> list[FundingRate]:
        """Return every funding settlement in [start, end], oldest first."""
        first = -(-_ms(start) // FUNDING_INTERVAL_MS) * FUNDING_INTERVAL_MS
        rates = []
        for settlement in range(first, _ms(end) + 1, FUNDING_INTERVAL_MS):
            rate = self.funding_rate(symbol, _UNIX_EPOCH + timedelta(milliseconds=settlement))
            if rate is not None:
                rates.append(rate)
        return rates

    def open_interest(self, symbol: str, at: datetime) -> float | None:
        """Return the open interest in base units at the last base candle closed by `at`."""
        tape = self._tape(symbol)
        last = self._last_closed(at)
        if last < 0:
            return None
        tape.ensure(last + 1)
        return float(tape.column("oi")[last])

    def ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        """Summarise the base candles closed by `at` over the last 24 h."""
        tape = self._tape(symbol)
        last = self._last_closed(at)
        if last < 0:
            raise ValueError(f"no {tape.asset} candle has closed by {at}; the simulation starts {self.epoch}")
        first = max(0, last - max(1, _DAY_MS // self._base_ms) + 1)
        tape.ensure(last + 1)
        close = tape.column("close")[first : last + 1]
        volume = tape.column("volume")[first : last + 1]
        reference = float(tape.column("open")[first])
        return Ticker24h(
            symbol=tape.asset,
            last_price=float(close[-1]),
            price_change_pct=(float(close[-1]) / reference - 1.0) * 100.0,
            base_volume=float(np.sum(volume)),
            quote_volume=float(np.sum(close * volume)),
        )

    def rules(self, symbol: str) -> MarketRules:
        """Return the offline market rules of an asset (Binance USD-M style)."""
        asset = self._asset(symbol)
        p = self._tapes[asset].profile
        return MarketRules(asset, f"{asset}/USDT:USDT", p.tick_size, p.lot_size, 5.0, p.max_leverage)

    # ------------------------------------------------------------------------------- MarketDataSource

    async def fetch_candles(self, symbol: str, timeframe: str, *, limit: int, until: datetime) -> CandleSeries:
        """Return the last `limit` candles closed by `until`, oldest first."""
        return self.candles(symbol, timeframe, limit=limit, until=until)

    async def fetch_funding_rate(self, symbol: str, at: datetime) -> FundingRate | None:
        """Return the last funding settlement at or before `at`."""
        return self.funding_rate(symbol, at)

    async def fetch_open_interest(self, symbol: str, at: datetime) -> float | None:
        """Return the open interest in base units at `at`."""
        return self.open_interest(symbol, at)

    async def fetch_ticker_24h(self, symbol: str, at: datetime) -> Ticker24h:
        """Return the 24 h ticker as of `at`."""
        return self.ticker_24h(symbol, at)

    async def market_rules(self, symbol: str) -> MarketRules:
        """Return the market rules of an asset."""
        return self.rules(symbol)

    async def close(self) -> None:
        """Release nothing: the simulator holds no connections."""

    # ---------------------------------------------------------------------------------------- helpers

    def _asset(self, symbol: str) -> str:
        asset = symbol.strip().upper()
        if asset not in self._tapes:
            known = ", ".join(self.assets)
            raise UnknownSymbolError(f"unknown symbol {symbol!r}: the simulator lists {known}")
        return asset

    def _tape(self, symbol: str) -> _Tape:
        return self._tapes[self._asset(symbol)]

    def _timeframe_ms(self, timeframe: str) -> int:
        tf_ms = timeframe_seconds(timeframe) * 1000
        if tf_ms % self._base_ms:
            raise ValueError(f"timeframe {timeframe!r} is not a multiple of the base timeframe {self.base_timeframe!r}")
        return tf_ms

    def _first_k(self, tf_ms: int) -> int:
        """Index (open time / tf) of the first candle lying wholly after the epoch."""
        return -(-self._epoch_ms // tf_ms)

    def _last_closed(self, at: datetime) -> int:
        """Index of the newest base candle closed by `at` (negative when none)."""
        return (_ms(at) - self._epoch_ms) // self._base_ms - 1

    def _series(self, tape: _Tape, timeframe: str, tf_ms: int, first: int, last: int) -> CandleSeries:
        count = max(0, last - first + 1)
        per = tf_ms // self._base_ms
        start = (first * tf_ms - self._epoch_ms) // self._base_ms
        stop = start + count * per
        tape.ensure(stop)
        cols = {name: tape.column(name)[start:stop].reshape(count, per) for name in _COLUMNS[:5]}
        return CandleSeries(
            symbol=tape.asset,
            timeframe=timeframe,
            open_time_ms=(np.arange(first, first + count, dtype=np.int64) * tf_ms).astype(np.int64),
            open=cols["open"][:, 0].copy(),
            high=cols["high"].max(axis=1),
            low=cols["low"].min(axis=1),
            close=cols["close"][:, -1].copy(),
            volume=cols["volume"].sum(axis=1),
        )
