"""Client order ids: derived from (account, origin, asset, leg), so a repeat is recognised by the venue (a duplicate
client id is refused there) and by us (the order is looked up by its id, never sent again).

    a{account}-{origin}-{asset}-{leg}   e.g. a3-d1207-BTC-en, a3-d1207-BTC-sl2, a3-w1772452800000-ETH-sl

`origin` is what caused the order: `d{decision id}` (a decision's execution), `w{check time, epoch milliseconds}`
(the protective-stop watchdog) or `h{halt time, epoch milliseconds}` (the kill switch). `leg` names the order's
role, with a number when a role repeats within one origin (the second stop of a decision is `sl2`). Binance allows
36 characters of `[.A-Z:/a-z0-9_-]`; Hyperliquid takes a 128-bit hex `cloid`, derived from this id by the live
adapter. An id over 36 characters raises ValueError (for every venue): with a `w`/`h` origin (13 digits) and a
3-character leg (`sl3`, `inc`), the account id and the asset share 15 characters (6 digits leave 9 for the asset).
"""

from __future__ import annotations

import re

from app.services.exchange.base import FillReason

MAX_LENGTH = 36
LEGS: dict[str, FillReason] = {
    "en": "entry",
    "inc": "increase",
    "dec": "decrease",
    "cl": "close",
    "sl": "stop_loss",
    "tp": "take_profit",
}
_LEG_OF: dict[FillReason, str] = {reason: leg for leg, reason in LEGS.items()}
_PATTERN = re.compile(r"^a(?P<account>\d+)-(?P<origin>[dwh]\d+)-(?P<asset>[A-Za-z0-9]+)-(?P<leg>[a-z]+)(?P<n>\d*)$")


def leg_for(reason: FillReason) -> str:
    """The leg name of an order placed for `reason` (a liquidation is never placed by us)."""
    return _LEG_OF[reason]


def client_order_id(account_id: int, origin: str, asset: str, leg: str, repeat: int = 1) -> str:
    """The id of the `repeat`-th order of role `leg` for `asset` from `origin` (`d12`, `w1772452800`, `h1772452800`)."""
    cid = f"a{account_id}-{origin}-{asset}-{leg}{repeat if repeat > 1 else ''}"
    if len(cid) > MAX_LENGTH or not _PATTERN.match(cid):
        raise ValueError(f"client order id {cid!r} is not valid (at most {MAX_LENGTH} characters)")
    return cid


def reason_of(client_id: str) -> FillReason | None:
    """The role an order of ours was placed for, from its id; None for an id that is not ours (placed by hand)."""
    match = _PATTERN.match(client_id)
    if match is None:
        return None
    return LEGS.get(match["leg"])


def account_of(client_id: str) -> int | None:
    """The account an id of ours belongs to; None for an id that is not ours."""
    match = _PATTERN.match(client_id)
    return int(match["account"]) if match else None


def decision_of(client_id: str) -> int | None:
    """The decision an order of ours was placed for; None for the watchdog's, a halt's, or an id not ours."""
    match = _PATTERN.match(client_id)
    if match is None or not match["origin"].startswith("d"):
        return None
    return int(match["origin"][1:])
