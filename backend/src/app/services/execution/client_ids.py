"""Client order ids: derived from (account, origin, asset, leg), so a repeat is recognised by the venue (a duplicate
client id is refused there) and by us (the order is looked up by its id, never sent again).

    a{account}-{origin}-{asset}-{leg}   e.g. a3-d1207-BTC-en, a3-d1207-BTC-sl2, a3-w1772452800000-ETH-sl

`origin` is what caused the order: `d{decision id}` (a decision's execution), `w{check time, epoch milliseconds}`
(the protective-stop watchdog) or `h{halt time, epoch milliseconds}` (the kill switch). `leg` names the order's
role, with a number when a role repeats within one origin (the second stop of a decision is `sl2`). Binance allows
36 characters of `[.A-Z:/a-z0-9_-]`; Hyperliquid takes a 128-bit hex `cloid`, derived from this id by the live
adapter. With a `w`/`h` origin (13 digits) and a 3-character leg (`sl3`, `inc`), the account id and the asset share
15 characters: an id that would be longer (a long asset name on a large account id) carries the asset's first
letters and 4 hex digits of its hash instead (`a1234567-h1772452800000-1000C27a3-cl` for 1000CHEEMS), for every
venue, so an order is never refused, or left unsent, for its id. Account ids up to 10 digits (the database's) always
fit; a longer one may not: ValueError.
"""

from __future__ import annotations

import hashlib
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
_SHORT_ASSET = 4  # the shortest an asset is written in an id: 4 hex digits of its hash
_PATTERN = re.compile(r"^a(?P<account>\d+)-(?P<origin>[dwh]\d+)-(?P<asset>[A-Za-z0-9]+)-(?P<leg>[a-z]+)(?P<n>\d*)$")


def leg_for(reason: FillReason) -> str:
    """The leg name of an order placed for `reason` (a liquidation is never placed by us)."""
    return _LEG_OF[reason]


def client_order_id(account_id: int, origin: str, asset: str, leg: str, repeat: int = 1) -> str:
    """The id of the `repeat`-th order of role `leg` for `asset` from `origin` (`d12`, `w1772452800`, `h1772452800`)."""
    cid = f"a{account_id}-{origin}-{asset}-{leg}{repeat if repeat > 1 else ''}"
    if not _PATTERN.match(cid):
        raise ValueError(f"client order id {cid!r} is not valid")
    over = len(cid) - MAX_LENGTH
    if over > 0:
        room = len(asset) - over  # what the asset may take: its first letters and 4 hex digits of its hash
        if room < _SHORT_ASSET:
            raise ValueError(f"client order id {cid!r} is over {MAX_LENGTH} characters even with the asset shortened")
        digest = hashlib.sha256(asset.encode()).hexdigest()[:4]
        cid = f"a{account_id}-{origin}-{asset[: room - 4]}{digest}-{leg}{repeat if repeat > 1 else ''}"
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
