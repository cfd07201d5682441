"""The JSON bodies of the fake venues (`exchange_servers`), in the real APIs' shapes.

Binance USD-M: `GET /fapi/v1/exchangeInfo` (filters PRICE_FILTER tickSize, LOT_SIZE stepSize, MIN_NOTIONAL
notional), `/ticker/24hr`, `/premiumIndex`, `/openInterest`; numbers as strings, times as epoch ms.
Hyperliquid: `POST /info` `meta` (szDecimals, maxLeverage) and the asset contexts of `metaAndAssetCtxs`.
`Snapshot` is the live state a body is built from (already rounded to what the venue would show).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Fmt = Callable[[str, float], str]  # (asset, value) -> the venue's string


@dataclass(frozen=True)
class Spec:
    """One listed perpetual: Binance filters and Hyperliquid metadata."""

    tick: str  # Binance PRICE_FILTER tickSize
    step: str  # Binance LOT_SIZE stepSize
    min_notional: str  # Binance MIN_NOTIONAL notional
    sz_decimals: int  # Hyperliquid szDecimals
    max_leverage: int  # Hyperliquid maxLeverage


SPECS: dict[str, Spec] = {
    "BTC": Spec("0.10", "0.001", "100", 5, 40),
    "ETH": Spec("0.01", "0.001", "20", 4, 25),
    "SOL": Spec("0.0100", "0.01", "5", 2, 20),
}
OTHER = Spec("0.001", "0.1", "5", 1, 10)


def spec(asset: str) -> Spec:
    return SPECS.get(asset, OTHER)


def decimals(step: str) -> int:
    return len(step.split(".")[1]) if "." in step else 0


def fmt(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def binance_exchange_info(assets: list[str], now: int) -> dict[str, Any]:
    symbols = []
    for asset in assets:
        s = spec(asset)
        price_filter = {"filterType": "PRICE_FILTER", "minPrice": s.tick, "maxPrice": "4529764", "tickSize": s.tick}
        symbols.append(
            {"symbol": f"{asset}USDT", "pair": f"{asset}USDT", "contractType": "PERPETUAL", "status": "TRADING"}
            | {"deliveryDate": 4133404800000, "onboardDate": 1569398400000, "underlyingType": "COIN"}
            | {"maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "triggerProtect": "0.0500"}
            | {"baseAsset": asset, "quoteAsset": "USDT", "marginAsset": "USDT", "baseAssetPrecision": 8}
            | {"pricePrecision": decimals(s.tick), "quantityPrecision": decimals(s.step), "quotePrecision": 8}
            | {
                "filters": [
                    price_filter,
                    {"filterType": "LOT_SIZE", "stepSize": s.step, "maxQty": "1000", "minQty": s.step},
                    {"filterType": "MARKET_LOT_SIZE", "stepSize": s.step, "maxQty": "120", "minQty": s.step},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": s.min_notional},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            }
        )
    limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}]
    return {"timezone": "UTC", "serverTime": now, "rateLimits": limits, "exchangeFilters": [], "symbols": symbols}


def binance_ticker(asset: str, snap: dict[str, float], now: int, price: Fmt, size: Fmt) -> dict[str, Any]:
    last, open_ = snap["last"], snap["open"]
    return {
        "symbol": f"{asset}USDT",
        "priceChange": price(asset, last - open_),
        "priceChangePercent": f"{snap['pct']:.3f}",
        "weightedAvgPrice": price(asset, snap["quote_volume"] / max(snap["base_volume"], 1e-12)),
        "lastPrice": price(asset, last),
        "lastQty": size(asset, 0.5),
        "openPrice": price(asset, open_),
        "highPrice": price(asset, max(last, open_) * 1.01),
        "lowPrice": price(asset, min(last, open_) * 0.99),
        "volume": size(asset, snap["base_volume"]),
        "quoteVolume": f"{snap['quote_volume']:.2f}",
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": 6_000_000_000,
        "lastId": 6_002_000_000,
        "count": 2_000_001,
    }


def binance_premium_index(
    asset: str, snap: dict[str, float], now: int, next_funding: int, price: Fmt
) -> dict[str, Any]:
    return {
        "symbol": f"{asset}USDT",
        "markPrice": price(asset, snap["last"]),
        "indexPrice": price(asset, snap["last"] * 0.9999),
        "estimatedSettlePrice": price(asset, snap["last"]),
        "lastFundingRate": f"{snap['next_funding']:.8f}",  # the rate accruing for the next settlement
        "interestRate": "0.00010000",
        "nextFundingTime": next_funding,
        "time": now,
    }


def hyperliquid_meta(assets: list[str]) -> dict[str, Any]:
    universe = [
        {"szDecimals": spec(a).sz_decimals, "name": a, "maxLeverage": spec(a).max_leverage, "marginTableId": 50 + i}
        for i, a in enumerate(assets)
    ]
    return {"universe": universe, "marginTables": [], "collateralToken": 0}


def hyperliquid_asset_ctx(asset: str, snap: dict[str, float], price: Fmt, size: Fmt) -> dict[str, Any]:
    last = snap["last"]
    return {
        "funding": f"{snap['next_funding'] / 8:.8f}",  # hourly: the 8 h rate / 8
        "openInterest": size(asset, snap["open_interest"]),
        "prevDayPx": price(asset, snap["open"]),
        "dayNtlVlm": f"{snap['quote_volume']:.2f}",
        "premium": "0.0001",
        "oraclePx": price(asset, last),
        "markPx": price(asset, last),
        "midPx": price(asset, last),
        "impactPxs": [price(asset, last * 0.99995), price(asset, last * 1.00005)],
        "dayBaseVlm": size(asset, snap["base_volume"]),
    }
