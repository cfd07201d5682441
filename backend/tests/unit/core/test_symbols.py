"""Asset names: every way users and venues spell a perpetual comes back as its base asset."""

from __future__ import annotations

import pytest

from app.core.symbols import normalise_asset


@pytest.mark.parametrize(
    ("symbol", "asset"),
    [
        ("BTC", "BTC"),
        ("btc", "BTC"),
        ("  eth ", "ETH"),
        ("BTCUSDT", "BTC"),  # Binance
        ("ethusdc", "ETH"),
        ("SOLUSD", "SOL"),
        ("ETHBUSD", "ETH"),  # not ETHB
        ("BTC/USDT:USDT", "BTC"),  # ccxt
        ("BTC/USDT", "BTC"),
        ("sol/usdc:usdc", "SOL"),
        ("BTC-PERP", "BTC"),  # FTX style
        ("BTCPERP", "BTC"),
        ("ETH_USDT", "ETH"),
        ("1000PEPEUSDT", "1000PEPE"),  # digits are part of the name
    ],
)
def test_normalises_to_the_base_asset(symbol: str, asset: str) -> None:
    assert normalise_asset(symbol) == asset


@pytest.mark.parametrize("junk", ["", "   ", "/USDT", "-PERP", "BTC USDT", "BTC!", "BTC.P", "ÄBC", "X" * 21, "€"])
def test_refuses_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="not an asset symbol"):
        normalise_asset(junk)
