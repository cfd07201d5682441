"""Asset names. We name assets by their base (`BTC`); users and APIs also say `BTCUSDT`, `BTC/USDT:USDT`,
`BTC-PERP` or `btc`, which all mean the same perpetual."""

from __future__ import annotations

import re

_QUOTES = ("USDT", "USDC", "BUSD", "USD")  # longest match first: ETHBUSD is ETH, not ETHB
_VALID = re.compile(r"^[A-Z0-9]{1,20}$")
# What the API accepts as a symbol (OpenAPI `pattern`): every string it matches names an asset (the base, then
# optionally a quote after `/`, `-` or `_`, then optionally a settlement after `:`). Whether this agent trades
# that asset is another question (404 when it does not).
SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,20}(?:[/_-][A-Za-z0-9]{1,20})?(?::[A-Za-z0-9]{1,20})?$"


def normalise_asset(symbol: str) -> str:
    """Return the base asset of a symbol, e.g. `BTCUSDT` -> `BTC`. Raises ValueError when it is not one."""
    text = symbol.strip().upper()
    text = text.split(":")[0]
    for sep in ("/", "-", "_"):
        if sep in text:
            text = text.split(sep)[0]
            break
    else:
        for quote in _QUOTES:
            if text.endswith(quote) and len(text) > len(quote):
                text = text[: -len(quote)]
                break
    if text.endswith("PERP") and len(text) > 4:
        text = text[:-4]
    if not _VALID.match(text):
        raise ValueError(f"not an asset symbol: {symbol!r} (expected e.g. BTC, BTCUSDT or BTC/USDT:USDT)")
    return text
