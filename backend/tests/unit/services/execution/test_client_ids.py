"""Client order ids (`execution/client_ids.py`): what they look like, what is read back from them, and the venues'
limits (Binance: at most 36 characters of `[.A-Z:/a-z0-9_-]`; Hyperliquid hashes the id into its cloid).

The budget, worked out: `a{account}-{origin}-{asset}-{leg}{n}` with a watchdog's or a halt's origin (`w`/`h` and a
13-digit epoch-milliseconds time) and a 3-character leg (`sl3`, a stop's last of `STOP_ATTEMPTS` tries; `inc`) leaves
36 - 21 = 15 characters for the account id and the asset together: a 6-digit account id and a 9-character asset fit;
past that the asset is written shorter (its first letters and 4 hex digits of its hash), so no order goes unsent for
its id; an account id longer than the database's 10 digits may raise ValueError.
"""

from __future__ import annotations

import re
from typing import get_args

import pytest

from app.services.exchange.base import FillReason
from app.services.execution import client_ids
from app.services.execution.client_ids import (
    LEGS,
    MAX_LENGTH,
    account_of,
    client_order_id,
    decision_of,
    leg_for,
    reason_of,
)
from app.services.execution.executor import STOP_ATTEMPTS

BINANCE_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")  # newClientOrderId, as Binance documents it
MS_2026 = 1_772_452_800_000  # 2026-03-02 12:00 UTC in epoch milliseconds: 13 digits until the year 2286
MS_LAST_13_DIGITS = 9_999_999_999_999
# every leg once, and the two-letter legs numbered up to the stop's last try (`sl3`): at most 3 characters
LEGS_AS_PLACED = [(leg, 1) for leg in LEGS] + [
    (leg, n) for leg in LEGS if len(leg) == 2 for n in range(2, STOP_ATTEMPTS + 1)
]
MAX_ACCOUNT_6_DIGITS = 999_999
MAX_DECISION_ID = 2_147_483_647  # the largest id the database hands out (MAX_DB_ID)


def every_origin(decision_id: int = MAX_DECISION_ID, ms: int = MS_LAST_13_DIGITS) -> list[str]:
    return [f"d{decision_id}", f"w{ms}", f"h{ms}"]


def test_the_documented_examples_are_what_the_function_builds() -> None:
    assert client_order_id(3, "d1207", "BTC", "en") == "a3-d1207-BTC-en"
    assert client_order_id(3, "d1207", "BTC", "sl") == "a3-d1207-BTC-sl"
    assert client_order_id(3, "d1207", "BTC", "sl", 2) == "a3-d1207-BTC-sl2"
    assert client_order_id(3, "w1772452800000", "ETH", "sl") == "a3-w1772452800000-ETH-sl"
    assert client_order_id(3, f"h{MS_2026}", "ETH", "cl") == "a3-h1772452800000-ETH-cl"
    for example in re.findall(r"a\d+-[dwh]\d+-[A-Z]+-[a-z]+\d*", client_ids.__doc__ or ""):
        assert reason_of(example) is not None and BINANCE_CLIENT_ID.match(example), example


@pytest.mark.parametrize("reason", [r for r in get_args(FillReason) if r != "liquidation"])
def test_every_reason_we_place_orders_for_is_read_back_from_its_id(reason: FillReason) -> None:
    for repeat in (1, 2, STOP_ATTEMPTS):
        cid = client_order_id(1207, "d55", "ETH", leg_for(reason), repeat)
        assert reason_of(cid) == reason
        assert account_of(cid) == 1207
        assert decision_of(cid) == 55


def test_a_liquidation_is_never_an_order_of_ours() -> None:
    with pytest.raises(KeyError):
        leg_for("liquidation")


def test_only_a_decisions_id_names_a_decision() -> None:
    assert decision_of(f"a3-w{MS_2026}-BTC-sl") is None
    assert decision_of(f"a3-h{MS_2026}-BTC-cl") is None
    assert account_of(f"a3-w{MS_2026}-BTC-sl") == 3 and reason_of(f"a3-h{MS_2026}-BTC-cl") == "close"


@pytest.mark.parametrize(
    "foreign",
    [
        "autoclose-1772452800000123",  # a Binance liquidation
        "adl_autoclose-1772452800000123",
        "web_AbCdEf0123",  # placed by hand in the venue's web page
        "x-1234",
        "a3-x1-BTC-sl",  # no such origin
        "aX-d1-BTC-sl",
        "a3-d1-BTC/USDT-sl",
        "",
    ],
)
def test_an_id_that_is_not_ours_names_no_reason_account_or_decision(foreign: str) -> None:
    assert (reason_of(foreign), account_of(foreign), decision_of(foreign)) == (None, None, None)


def test_an_id_of_our_shape_with_an_unknown_leg_names_no_reason() -> None:
    assert reason_of("a3-d1-BTC-zz") is None and account_of("a3-d1-BTC-zz") == 3


@pytest.mark.parametrize("origin", every_origin())
@pytest.mark.parametrize("asset", ["BTC", "1000PEPE", "1000FLOKI"])
def test_six_digit_accounts_and_nine_character_assets_fit_the_binance_limit_for_every_leg_and_repeat(
    origin: str, asset: str
) -> None:
    for leg, repeat in LEGS_AS_PLACED:
        cid = client_order_id(MAX_ACCOUNT_6_DIGITS, origin, asset, leg, repeat)
        assert len(cid) <= MAX_LENGTH == 36 and BINANCE_CLIENT_ID.match(cid), cid
        assert account_of(cid) == MAX_ACCOUNT_6_DIGITS and reason_of(cid) == LEGS[leg]


@pytest.mark.parametrize("account_id", [1, 42, 9_999, MAX_ACCOUNT_6_DIGITS, 1_000_000, MAX_DECISION_ID])
@pytest.mark.parametrize("origin", [*every_origin(), "d1", f"w{MS_2026}"])
@pytest.mark.parametrize("asset", ["BTC", "1000CHEEMS", "BROCCOLI714", "A" * 20])
def test_an_id_is_never_longer_than_the_limit_a_long_asset_is_written_shorter(
    account_id: int, origin: str, asset: str
) -> None:
    ids = set()
    for leg in LEGS:
        for repeat in (1, STOP_ATTEMPTS):
            full = f"a{account_id}-{origin}-{asset}-{leg}{repeat if repeat > 1 else ''}"
            cid = client_order_id(account_id, origin, asset, leg, repeat)
            assert BINANCE_CLIENT_ID.match(cid), cid
            assert cid == full or (len(full) > MAX_LENGTH and len(cid) == MAX_LENGTH), (full, cid)
            assert (account_of(cid), reason_of(cid)) == (account_id, LEGS[leg])
            assert decision_of(cid) == (int(origin[1:]) if origin.startswith("d") else None)
            ids.add(cid)
    assert len(ids) == 2 * len(LEGS)  # every order of the origin still has an id of its own


def test_long_assets_written_shorter_keep_distinct_ids() -> None:
    """Two long assets sharing their first letters get different ids (the hash part tells them apart)."""
    origin = f"h{MS_2026}"
    first = client_order_id(MAX_DECISION_ID, origin, "1000CHEEMS", "cl")
    second = client_order_id(MAX_DECISION_ID, origin, "1000CATS", "cl")
    assert first != second and len(first) == len(second) == MAX_LENGTH
    assert first == client_order_id(MAX_DECISION_ID, origin, "1000CHEEMS", "cl")  # and the same one every time


def test_the_first_character_over_the_limit_shortens_the_asset() -> None:
    fits = client_order_id(7, f"w{MS_2026}", "A" * 14, "sl", STOP_ATTEMPTS)  # 36 characters exactly
    assert fits == f"a7-w{MS_2026}-{'A' * 14}-sl3"
    longer = client_order_id(7, f"w{MS_2026}", "A" * 15, "sl", STOP_ATTEMPTS)
    assert len(longer) == 36 and longer.startswith(f"a7-w{MS_2026}-{'A' * 10}") and longer != fits
    with pytest.raises(ValueError, match="over 36 characters even with the asset shortened"):
        client_order_id(1_234_567_890_123, f"w{MS_2026}", "A" * 14, "sl", STOP_ATTEMPTS)


@pytest.mark.parametrize(
    ("account_id", "origin", "asset", "leg"),
    [
        (3, "d12", "BTC/USDT", "sl"),  # not a bare asset name: `/` would end the asset in a parse
        (3, "d12", "xyz:TSLA", "sl"),
        (3, "d12", "BTC-PERP", "sl"),
        (3, "d12", "", "sl"),
        (3, "x12", "BTC", "sl"),  # no such origin
        (3, "d", "BTC", "sl"),
        (3, "d12", "BTC", "SL"),
        (-3, "d12", "BTC", "sl"),
    ],
)
def test_an_id_that_could_not_be_read_back_is_refused(account_id: int, origin: str, asset: str, leg: str) -> None:
    with pytest.raises(ValueError):
        client_order_id(account_id, origin, asset, leg)
