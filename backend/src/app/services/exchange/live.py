"""`LiveExchange`: the `Exchange` port on a real venue account, Binance USD-M or Hyperliquid, through ccxt (async).

Symbols are our assets (`BTC`); the adapter maps them to the venue's linear perpetual (`BTC/USDT:USDT`,
`BTC/USDC:USDC`). `start()` loads the markets and their rules, syncs the clock (Binance) and checks the
credentials (Binance: a signed account read; Hyperliquid: the account state and a signed `noop` action, which
only uses up a nonce); `close()` closes ccxt's session. `set_leverage` (isolated margin, then the leverage) is
the caller's to call before an asset's first entry in each run: the adapter never changes them by itself.
`testnet` is Hyperliquid's testnet (ccxt sandbox mode) or Binance's demo trading; `api_url` sends every request,
public and private, to another host (a fake venue or a proxy).

Orders
- Quantities are rounded down to the lot, prices and triggers to the venue's precision (Hyperliquid: 5
  significant figures, at most 6 - szDecimals decimals). A quantity that rounds to 0, or a non-reduce-only
  order below the minimum notional (at its limit price, trigger, or the mark for a market order), comes back
  rejected without being sent.
- `stop_market` / `take_profit_market` are always reduce-only: Binance algo `STOP_MARKET` /
  `TAKE_PROFIT_MARKET` (`/fapi/v1/algoOrder`, `workingType=MARK_PRICE`), Hyperliquid trigger orders
  (`isMarket`, `tpsl` sl / tp) whose limit price is the trigger worsened by `MARKET_SLIPPAGE`. Hyperliquid
  market orders are IOC limits at the mark worsened by `MARKET_SLIPPAGE` (the venue has no true market order).
- Client ids: Binance takes ours as they are (`newClientOrderId` / `clientAlgoId`); Hyperliquid takes a
  128-bit hex `cloid`: the first 16 bytes of sha256(our id). Cloids seen on the venue map back to our ids
  for ids placed by this adapter or given to `register_client_ids` (the database's ids, after a restart);
  an unknown cloid stays as it is.

Outcome policy (see `base.py`)
- A definitive refusal -> `Order(status="rejected", reject_reason=...)` with a clear reason, never raised.
- A duplicate client id refusal -> the existing order (it is ours) is looked up and returned.
- An ambiguous outcome (timeout, network error, 5xx, an unreadable answer) -> the order is looked up by client
  id `lookup_attempts` times (backoff `lookup_backoff_s`, doubling); found: returned; not found:
  `OutcomeUnknownError("outcome unknown for <id> ...")` (an ExchangeUnavailableError). Never sent again.
- 429 / 418 (or a venue code meaning it): `RateLimitedError("... rate limited: retry after N s")` (an
  ExchangeUnavailableError with `retry_after_s`; nothing was processed),
  and no request at all goes to the venue until the wait has passed (wall clock; `Retry-After` when given,
  else `DEFAULT_RATE_LIMIT_WAIT_S`), from any adapter of the same venue, network and host (the venues limit per
  IP: the block is module-wide, `reset_rate_limits()` clears it).
- A market order accepted but answered as not matched yet (Binance `NEW`, executedQty 0) is looked up by client
  id the same way until it is no longer open, so the fill comes back with it.
- Timestamp drift (Binance -1021): the time difference is re-synced; a read is retried once, an order comes
  back rejected with that reason (the venue refused it; nothing was created).
- Reads that fail: `ExchangeUnavailableError` (temporary) or `ExchangeError` (refused: e.g. credentials).

Fills: the venue's trades (Binance `userTrades` per asset, Hyperliquid `userFills`), ids = the venue's trade id
(Binance's are unique per symbol only: `"{ASSET}-{id}"`, e.g. `BTC-5000002`; Hyperliquid's `tid` as it is).
Reason: a liquidation -> "liquidation"; our id -> its leg (`client_ids.reason_of`); another id of a stop /
take-profit order -> stop_loss / take_profit; otherwise from the position walk (entry, increase, decrease,
close). The adapter reads the whole fill history the venue gives (Binance: the last 7 days) once, then only
what is new. Binance answers orders and fills per symbol: the adapter reads those of its assets and of every other
asset in which the account holds a position or placed an order (a position opened by hand in another coin is
protected and mirrored like the others).

Positions: the venue's (one-way, isolated), `opened_at` the first fill of the current position when the fill
history shows it, else now; `realized_pnl` from the fills since then. Balance: wallet, unrealized, margin used
and available are the venue's; `realized_pnl` and `fees_paid` are the totals of the fills the venue returns
(see above), funding totals of its funding history. `revision` is None (reconciliation reads everything).
Secrets never appear in errors, logs or reprs: error texts are scrubbed (`live_errors.scrub`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import ccxt.async_support as ccxt

from app.core.clock import Clock, WallClock
from app.services.exchange.base import (
    Balance,
    ExchangeError,
    ExchangeUnavailableError,
    Fill,
    FillReason,
    FundingPayment,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    PositionSide,
)
from app.services.exchange.live_errors import (
    Classified,
    OutcomeUnknownError,
    RateLimitedError,
    classify,
    scrub_ccxt_logs,
)
from app.services.execution.client_ids import reason_of
from app.services.market_data.base import MarketRules
from app.services.market_data.ccxt_source import VENUES

__all__ = [
    "LiveExchange",
    "OutcomeUnknownError",
    "RateLimitedError",
    "VenueCredentials",
    "cloid_for",
    "reset_rate_limits",
    "round_down",
]
log = logging.getLogger(__name__)

VenueId = Literal["binanceusdm", "hyperliquid"]
Network = Literal["testnet", "mainnet"]
MARKET_SLIPPAGE = 0.05  # Hyperliquid: a market order is an IOC limit this far beyond the mark (ccxt's default)
DEFAULT_RATE_LIMIT_WAIT_S = 10.0  # a 429 / 418 without Retry-After
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONDITIONAL: tuple[OrderType, ...] = ("stop_market", "take_profit_market")
_BINANCE_TYPES: dict[str, OrderType] = {
    "MARKET": "market",
    "LIMIT": "limit",
    "STOP_MARKET": "stop_market",
    "TAKE_PROFIT_MARKET": "take_profit_market",
}
# ccxt maps these statuses to ExchangeNotAvailable (a NetworkError); they are refusals, not outages
_CLIENT_ERRORS = {
    "400": ccxt.BadRequest,
    "401": ccxt.AuthenticationError,
    "403": ccxt.PermissionDenied,
    "404": ccxt.BadRequest,
    "405": ccxt.BadRequest,
    "410": ccxt.BadRequest,
    "451": ccxt.PermissionDenied,
}


@dataclass(frozen=True, repr=False)
class VenueCredentials:
    """Binance: API key and secret. Hyperliquid: the wallet address (0x...) and the (API wallet's) private key."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"VenueCredentials(api_key={_mask(self.api_key)}, api_secret=***)"

    __str__ = __repr__


def _mask(value: str) -> str:
    return f"{value[:4]}***" if len(value) > 8 else "***"


# A rate limit silences every adapter of the venue's host, not one account's: Binance limits per IP (and a 429
# ignored escalates to a 418 ban). Key: (venue, network, the base URL: api_url or the venue's default).
_BLOCKS: dict[tuple[str, str, str], datetime] = {}


def reset_rate_limits() -> None:
    """Forget every rate-limit block (tests: no block leaks from one test into the next)."""
    _BLOCKS.clear()


_SINCE_WINDOW_MS = 6 * 86_400_000
# Reads whose answers are kept until the adapter's next write or `refresh()` (at most READ_CACHE_S): one cycle reads
# the positions, open orders, fills, balance and funding from its reconciliation, execution, stop watchdog and mirror,
# and each of these would otherwise ask the venue again, against its request weight limit.
_CACHED_READS = frozenset({"open orders", "positions", "balance", "account", "account state", "funding history"})
READ_CACHE_S = 5.0
HL_FUNDING_PAGE = 500  # Hyperliquid userFunding: at most this many payments per answer, oldest first
HL_FUNDING_WINDOW_MS = (
    7 * 86_400_000
)  # the first funding read goes this far back  # under Binance's 7-day userTrades window


def _hl_ref(client_order_id: str) -> tuple[str, dict[str, Any]]:
    """How to name an order to Hyperliquid: ours by the cloid derived from our id; a cloid we do not know as it is;
    an order placed without a cloid (by hand) by its venue order id (the id we list it under)."""
    if client_order_id.isdigit():
        return client_order_id, {}
    if client_order_id.startswith("0x") and len(client_order_id) == 34:
        return "", {"clientOrderId": client_order_id}
    return "", {"clientOrderId": cloid_for(client_order_id)}


def cloid_for(client_order_id: str) -> str:
    """Hyperliquid's 128-bit `cloid` for one of our client ids: 0x + the first 16 bytes of sha256, in hex."""
    return "0x" + hashlib.sha256(client_order_id.encode()).digest()[:16].hex()


def _num(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _nz(value: Any) -> float | None:
    """A number, None for missing or zero (venues send "0" for 'not set')."""
    number = _num(value)
    return number if number else None


def _dt(ms: Any) -> datetime:
    number = _num(ms)
    return _EPOCH + timedelta(milliseconds=int(number)) if number is not None else _EPOCH


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def round_down(quantity: float, step: float) -> float:
    """`quantity` rounded down to a whole number of `step`s (decimal arithmetic: 0.3 / 0.1 is 3)."""
    if step <= 0:
        return quantity
    q, s = Decimal(repr(quantity)), Decimal(repr(step))
    return float((q // s) * s)


class _VenueError(Exception):
    """A ccxt error, classified and scrubbed (internal: never leaves the adapter)."""

    def __init__(self, what: str, classified: Classified) -> None:
        super().__init__(f"{what}: {classified.reason}")
        self.what = what
        self.classified = classified


@dataclass(slots=True)
class _Trade:
    """One fill as the venue reported it."""

    id: str
    order_id: str
    asset: str
    side: OrderSide
    quantity: float
    price: float
    fee: float
    realized_pnl: float
    maker: bool
    time_ms: int
    liquidation: bool
    client_id: str | None


@dataclass(slots=True)
class _Run:
    """The current position of one asset as the fill history shows it."""

    size: float = 0.0  # signed
    opened_ms: int | None = None
    realized: float = 0.0
    fills: list[Fill] = field(default_factory=list)


class LiveExchange:
    """The `Exchange` port on a Binance USD-M or Hyperliquid account (see the module docstring)."""

    is_simulated = False

    def __init__(
        self,
        venue: VenueId,
        credentials: VenueCredentials,
        *,
        network: Network,
        assets: list[str],
        api_url: str | None = None,
        timeout_ms: int = 10_000,
        lookup_attempts: int = 4,
        lookup_backoff_s: float = 0.5,
        wall_clock: Clock | None = None,
        leverage_default: float = 1.0,
        rate_limit_ms: float | None = None,
    ) -> None:
        """`leverage_default`: the leverage reported for a position when the venue does not say it.
        `rate_limit_ms`: ccxt's spacing of requests per unit of weight (default: the venue's; tests on a fake
        lower it)."""
        if venue not in ("binanceusdm", "hyperliquid"):
            raise ValueError(f"unknown venue {venue!r}: use binanceusdm or hyperliquid")
        if network not in ("testnet", "mainnet"):
            raise ValueError(f"unknown network {network!r}: use testnet or mainnet")
        self.name: str = venue
        self.venue: VenueId = venue
        self.network: Network = network
        self.assets = list(dict.fromkeys(a.strip().upper() for a in assets if a.strip()))
        # Binance reads orders and fills per asset: these assets, then any other one holding a position or an order
        # of ours (a position opened by hand in another coin), for as long as the adapter lives
        self._watched: dict[str, None] = dict.fromkeys(self.assets)
        self._trades_read_assets: set[str] = set()
        self._settle = VENUES[venue].settle
        self._clock: Clock = wall_clock or WallClock()
        self._lookup_attempts = max(1, lookup_attempts)
        self._lookup_backoff_s = max(0.0, lookup_backoff_s)
        self._leverage_default = max(1.0, leverage_default)
        self._secrets = tuple(
            s for s in (credentials.api_secret, credentials.api_key if venue == "binanceusdm" else "") if s
        )
        self._wallet = credentials.api_key
        scrub_ccxt_logs((*self._secrets, credentials.api_key))
        self._ex: Any = _build_client(venue, credentials, network, api_url, timeout_ms, rate_limit_ms)
        self._rules: dict[str, MarketRules] = {}
        self._cloids: dict[str, str] = {}  # Hyperliquid cloid -> our client id
        self._known_ids: dict[str, None] = {}  # our ids, in the order we learnt them
        self._types: dict[str, OrderType] = {}  # client id -> order type, where known
        self._order_cid: dict[str, str] = {}  # venue order id -> client id
        self._trades: dict[str, _Trade] = {}
        self._trades_read = False
        self._trades_high_ms = 0
        self._hl_funding: dict[tuple[str, int], FundingPayment] = {}  # Hyperliquid payments seen, by (asset, time)
        self._hl_funding_high_ms: int | None = None
        self._margin_set: set[str] = set()
        self._epoch = 0  # moves on at every write and `refresh()`: answers read before are not used again
        self._answers: dict[tuple[str, str], tuple[int, datetime, Any]] = {}
        self._trades_epoch, self._trades_until = -1, _EPOCH  # the fills were read in this epoch, kept until then
        self._leverage: dict[str, float] = {}
        self._block_key = (venue, network, (api_url or "").rstrip("/") or "default")

    def __repr__(self) -> str:
        return f"LiveExchange({self.venue}, {self.network}, assets={self.assets}, key={_mask(self._wallet)})"

    @property
    def revision(self) -> int | None:
        return None

    def refresh(self) -> None:
        """Forget the answers kept for this moment: the next reads ask the venue (the engine calls it at a cycle's
        reconciliation, at its execution and at a halt; every write does it too)."""
        self._epoch += 1
        self._answers.clear()

    @property
    def client_ids(self) -> list[str]:
        """Our client ids this adapter knows (placed by it or registered)."""
        return list(self._known_ids)

    def register_client_ids(self, ids: Iterable[str]) -> None:
        """Make orders and fills with these ids (e.g. from the database, after a restart) map back to them."""
        for cid in ids:
            self._remember(cid)

    # ---- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the markets and their rules, sync the time (Binance), check the credentials with an account read."""
        await self._read("load markets", self._ex.load_markets)
        missing = [a for a in self.assets if self._market_symbol(a) not in (self._ex.markets or {})]
        if missing:
            raise ExchangeError(f"{self.name} lists no perpetual for {', '.join(missing)}")
        if self.venue == "binanceusdm":
            await self._sync_time()
        for asset in self.assets:
            await self.market_rules(asset)
        try:
            await self._account()
            if self.venue == "hyperliquid":
                await self._check_signer()
        except ExchangeError as exc:
            raise ExchangeError(f"{self.name} ({self.network}) refused the credentials: {exc}") from None

    async def _check_signer(self) -> None:
        """Hyperliquid reads are unsigned: sign a `noop` action (it only uses up a nonce) to learn whether the
        venue knows the key as the wallet or one of its API wallets."""
        action = {"type": "noop"}
        nonce = self._ex.incrementing_nonce()
        signed = {"action": action, "nonce": nonce, "signature": self._ex.sign_l1_action(action, nonce)}
        try:
            await self._request("signed check", self._ex.privatePostExchange, signed)
        except _VenueError as exc:
            if exc.classified.kind == "ambiguous":
                raise ExchangeUnavailableError(f"{self.name}: {exc}") from None
            raise ExchangeError(f"{self.name}: {exc}") from None

    async def close(self) -> None:
        await self._ex.close()

    # ---- rules and leverage ------------------------------------------------------------------------------

    async def market_rules(self, symbol: str) -> MarketRules:
        """Tick, lot, minimum notional and maximum leverage of one asset (Binance: its leverage brackets)."""
        asset = symbol.strip().upper()
        if asset in self._rules:
            return self._rules[asset]
        market = await self._market(asset)
        precision, limits = market.get("precision") or {}, market.get("limits") or {}
        tick, lot = _num(precision.get("price")), _num(precision.get("amount"))
        if tick is None or lot is None:
            raise ExchangeError(f"{self.name}: {market['symbol']} has no price or amount precision")
        if self._ex.precisionMode != ccxt.TICK_SIZE:
            tick, lot = 10.0**-tick, 10.0**-lot
        defaults = VENUES[self.venue]
        notional = _nz((limits.get("cost") or {}).get("min")) or defaults.min_notional.get(
            asset, defaults.min_notional["*"]
        )
        leverage = _nz((limits.get("leverage") or {}).get("max"))
        if self.venue == "binanceusdm":
            leverage = await self._binance_max_leverage(market["symbol"]) or leverage
        rules = MarketRules(
            symbol=asset,
            market_symbol=market["symbol"],
            tick_size=tick,
            lot_size=lot,
            min_notional=notional,
            max_leverage=leverage or defaults.max_leverage.get(asset, defaults.max_leverage["*"]),
        )
        self._rules[asset] = rules
        return rules

    async def _binance_max_leverage(self, market_symbol: str) -> float | None:
        try:
            tiers = await self._read("leverage brackets", self._ex.fetch_leverage_tiers, [market_symbol])
        except (ExchangeError, _VenueError) as exc:
            log.warning(
                "%s: leverage brackets of %s unreadable (%s); using the market's limit", self.name, market_symbol, exc
            )
            return None
        levels = [_num(t.get("maxLeverage")) for t in (tiers or {}).get(market_symbol) or []]
        found = [x for x in levels if x]
        return max(found) if found else None

    async def set_leverage(self, symbol: str, leverage: float) -> float:
        """Isolated margin (set once per symbol), then `leverage` clamped to 1..the venue's maximum (whole
        numbers); return what the venue set."""
        asset = symbol.strip().upper()
        if asset not in self._ex_markets_assets():
            raise ExchangeError(f"unknown symbol {symbol} on {self.name}")
        rules = await self.market_rules(asset)
        wanted = max(1, min(math.floor(leverage), math.floor(rules.max_leverage)))
        market_symbol = rules.market_symbol
        try:
            if self.venue == "binanceusdm":
                if asset not in self._margin_set:
                    try:
                        await self._request("set isolated margin", self._ex.set_margin_mode, "isolated", market_symbol)
                    except _VenueError as exc:
                        if exc.classified.code != "-4046" and "no need to change" not in str(exc).lower():
                            raise
                    self._margin_set.add(asset)
                answer = await self._request("set leverage", self._ex.set_leverage, wanted, market_symbol)
                set_to = _num((answer or {}).get("leverage")) or float(wanted)
            else:
                await self._request(
                    "set leverage", self._ex.set_leverage, wanted, market_symbol, {"marginMode": "isolated"}
                )
                self._margin_set.add(asset)
                set_to = float(wanted)
        except _VenueError as exc:
            if exc.classified.kind == "ambiguous":
                raise ExchangeUnavailableError(f"{self.name}: {exc}") from None
            raise ExchangeError(f"{self.name}: {asset}: {exc}") from None
        self._leverage[asset] = set_to
        return set_to

    # ---- orders -------------------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> Order:
        """Send one order (see the module docstring for rounding and the outcome policy)."""
        cid, asset = request.client_order_id, request.symbol.strip().upper()
        if asset not in self._ex_markets_assets():
            return self._rejected(request, request.quantity, f"unknown symbol {request.symbol} on {self.name}")
        rules = await self.market_rules(asset)
        self._watched.setdefault(asset)
        quantity = round_down(request.quantity, rules.lot_size)
        if quantity <= 0:
            return self._rejected(
                request,
                request.quantity,
                f"quantity {request.quantity:g} rounds to 0 at the lot size {rules.lot_size:g}",
            )
        conditional = request.type in _CONDITIONAL
        if request.type == "limit" and request.price is None:
            return self._rejected(request, quantity, "a limit order needs a price")
        if conditional and request.trigger_price is None:
            return self._rejected(request, quantity, "a stop or take-profit order needs a trigger price")
        price = self._price(rules, request.price) if request.type == "limit" else None
        trigger = self._price(rules, request.trigger_price) if conditional else None
        reduce_only = request.reduce_only or conditional
        self._remember(cid)
        self._types[cid] = request.type
        mark: float | None = None
        if request.type == "market" and (self.venue == "hyperliquid" or not reduce_only):
            mark = await self._mark(rules)
        reference = price if price is not None else trigger if trigger is not None else mark
        if not reduce_only and reference is not None and quantity * reference < rules.min_notional:
            return self._rejected(
                request,
                quantity,
                f"below the minimum notional of {rules.min_notional:g} {self._settle}"
                f" ({quantity:g} x {reference:g} = {quantity * reference:.2f})",
            )
        args = self._order_args(request, rules.market_symbol, quantity, price, trigger, mark, reduce_only)
        try:
            created = await self._request(f"create order {cid}", self._ex.create_order, *args)
        except _VenueError as exc:
            kind = exc.classified.kind
            if kind == "duplicate":
                existing = await self.fetch_order(asset, cid)
                if existing is None:
                    raise ExchangeUnavailableError(
                        f"{self.name}: {cid} was refused as a duplicate client id but cannot be found"
                    ) from None
                return existing
            if kind == "ambiguous":
                return await self._resolve(request, exc.classified.reason)
            if kind == "clock":
                await self._sync_time()
            return self._rejected(request, quantity, exc.classified.reason)
        try:
            return await self._created(request, asset, quantity, price, trigger, reduce_only, created)
        except (ExchangeUnavailableError, ExchangeError):
            raise
        except Exception as exc:  # the venue took it, its answer is not what we expect: ask the venue
            log.warning("%s: unreadable answer to %s (%s); looking it up", self.name, cid, type(exc).__name__)
            return await self._resolve(request, f"unreadable answer ({type(exc).__name__})")

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order:
        """Cancel an open order; ExchangeError if it is unknown or no longer open."""
        asset = symbol.strip().upper()
        current = await self.fetch_order(asset, client_order_id)
        if current is None:
            raise ExchangeError(f"unknown order {client_order_id} on {symbol}")
        if current.status != "open":
            raise ExchangeError(f"order {client_order_id} is {current.status}, not open")
        market_symbol = self._market_symbol(asset)
        if self.venue == "binanceusdm":
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if current.type in _CONDITIONAL:
                params["trigger"] = True
            venue_id = ""
        else:
            venue_id, params = _hl_ref(client_order_id)
        try:
            await self._request(f"cancel {client_order_id}", self._ex.cancel_order, venue_id, market_symbol, params)
        except _VenueError as exc:
            if exc.classified.kind == "ambiguous":
                raise ExchangeUnavailableError(f"{self.name}: {exc}; look the order up") from None
            after = await self.fetch_order(asset, client_order_id)
            status = after.status if after is not None else "unknown"
            raise ExchangeError(
                f"order {client_order_id} could not be canceled ({status}): {exc.classified.reason}"
            ) from None
        after = await self.fetch_order(asset, client_order_id)
        if after is None:
            raise ExchangeUnavailableError(f"{self.name}: {client_order_id} canceled but no longer found")
        if after.status == "open":  # the venue answers before its book moved: say what was asked
            after.status = "canceled"
        return after

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order | None:
        """The order with this client id on `symbol`, or None."""
        asset = symbol.strip().upper()
        if asset not in self._ex_markets_assets():
            return None
        market_symbol = self._market_symbol(asset)
        if self.venue == "hyperliquid":
            venue_id, params = _hl_ref(client_order_id)
            try:
                raw = await self._read(
                    f"order {client_order_id}", self._ex.fetch_order, venue_id, market_symbol, params
                )
            except _VenueError:
                return None
            order = await self._hl_order(raw.get("info") or {}, client_order_id)
        else:  # a plain order or a conditional one (the algo service): ask where it is likeliest first
            order, refusals = None, []
            for algo in self._binance_kinds(client_order_id):
                query: dict[str, Any] = {"clientOrderId": client_order_id} | ({"trigger": True} if algo else {})
                try:
                    raw = await self._read(f"order {client_order_id}", self._ex.fetch_order, "", market_symbol, query)
                except _VenueError:
                    continue  # not there
                except ExchangeError as exc:  # refused (e.g. an unknown id answered with another code)
                    refusals.append(exc)
                    continue
                order = await self._binance_order(raw.get("info") or {})
                break
            if order is None and len(refusals) == 2:
                raise refusals[0]
        if order is None or order.symbol != asset:
            return None
        return order

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (limits and untriggered stops / take-profits), oldest first, optionally of one asset."""
        asset = symbol.strip().upper() if symbol is not None else None
        if asset is not None and asset not in self._ex_markets_assets():
            return []
        market_symbol = self._market_symbol(asset) if asset is not None else None
        orders: list[Order] = []
        if self.venue == "binanceusdm":
            # asked per asset: Binance weighs a symbol's open orders 1, every symbol's 40 (ccxt waits accordingly)
            symbols = [market_symbol] if market_symbol is not None else [self._market_symbol(a) for a in self._watched]
            for each in symbols:
                for params in ({}, {"trigger": True}):
                    raw = await self._read("open orders", self._ex.fetch_open_orders, each, None, None, params)
                    for item in raw or []:
                        orders.append(await self._binance_order(item.get("info") or {}))
        else:
            raw = await self._read("open orders", self._ex.fetch_open_orders, market_symbol)
            for item in raw or []:
                info = item.get("info") or {}
                orders.append(await self._hl_order({"order": info, "status": "open"}, None))
        mine = [o for o in orders if o.status == "open" and (asset is None or o.symbol == asset)]
        return sorted(mine, key=lambda o: (o.created_at, _sortable(o.venue_order_id)))

    # ---- account -------------------------------------------------------------------------------------------

    async def fetch_positions(self) -> list[Position]:
        """The venue's open positions, with `opened_at` and `realized_pnl` from the fill history."""
        runs = await self._runs()
        positions: list[Position] = []
        if self.venue == "binanceusdm":
            raw = await self._read("positions", self._ex.fetch_positions)
            for item in raw or []:
                position = self._binance_position(item, runs)
                if position is not None:
                    positions.append(position)
            if any(p.symbol not in self._watched for p in positions):  # its orders and fills are read from now on
                self._watched.update(dict.fromkeys(p.symbol for p in positions))
                runs = await self._runs()  # with the new asset's fills: its position's start and PnL
                positions = [p for p in (self._binance_position(item, runs) for item in raw or []) if p is not None]
        else:
            state = await self._account()
            for item in state.get("assetPositions") or []:
                position = self._hl_position(item.get("position") or {}, runs)
                if position is not None:
                    positions.append(position)
        return sorted(positions, key=lambda p: p.symbol)

    async def fetch_balance(self) -> Balance:
        """Wallet, unrealized, margin used and available from the venue; realized PnL and fees from its fills;
        funding from its funding history."""
        runs = await self._runs()
        fills = [f for run in runs.values() for f in run.fills]
        funding = await self.fetch_funding_payments()
        paid = sum(-p.amount for p in funding if p.amount < 0)
        received = sum(p.amount for p in funding if p.amount > 0)
        realized = math.fsum(f.realized_pnl for f in fills)
        fees = math.fsum(f.fee for f in fills)
        if self.venue == "binanceusdm":
            raw = await self._read("balance", self._ex.fetch_balance)
            info = raw.get("info") or {}
            return Balance(
                wallet_balance=_num(info.get("totalWalletBalance")) or 0.0,
                unrealized_pnl=_num(info.get("totalUnrealizedProfit")) or 0.0,
                margin_used=_num(info.get("totalInitialMargin")) or 0.0,
                available=_num(info.get("availableBalance")) or 0.0,
                realized_pnl=realized,
                fees_paid=fees,
                funding_paid=paid,
                funding_received=received,
            )
        state = await self._account()
        summary = state.get("marginSummary") or {}
        unrealized = math.fsum(
            _num((p.get("position") or {}).get("unrealizedPnl")) or 0.0 for p in state.get("assetPositions") or []
        )
        wallet = (_num(summary.get("accountValue")) or 0.0) - unrealized
        available = _num(state.get("withdrawable")) or 0.0
        return Balance(  # totalMarginUsed counts isolated positions' unrealized PnL: margin is what is not free
            wallet_balance=wallet,
            unrealized_pnl=unrealized,
            margin_used=max(0.0, wallet - available),
            available=available,
            realized_pnl=realized,
            fees_paid=fees,
            funding_paid=paid,
            funding_received=received,
        )

    async def fetch_fills(self, since: datetime | None = None) -> list[Fill]:
        """Fills with timestamp >= `since` (all the venue returns when None), in the order they happened."""
        runs = await self._runs()
        fills = sorted(
            (f for run in runs.values() for f in run.fills), key=lambda f: (f.timestamp, _sortable(f.fill_id))
        )
        return [f for f in fills if since is None or f.timestamp >= since]

    async def fetch_funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        """Funding settlements of the account's positions (Binance gives no rate, size or mark: 0 there), oldest first.
        Binance: its last 7 days (from `since` when given: 7 days from it). Hyperliquid: every payment this adapter
        has seen, read from the newest one seen (the first time: from `HL_FUNDING_WINDOW_MS` ago), page by page
        (userFunding answers at most `HL_FUNDING_PAGE` payments, oldest first); `since` filters them."""
        since_ms = _ms(since) if since is not None else None
        if self.venue == "binanceusdm":  # without a start: the last 7 days (a start gives 7 days from it)
            raw = await self._read("funding history", self._ex.fetch_funding_history, None, since_ms, 1000)
            payments = [self._funding_payment(item) for item in raw or []]
        else:
            await self._sync_hl_funding()
            payments = [p for p in self._hl_funding.values() if since_ms is None or _ms(p.funding_time) >= since_ms]
        return sorted(payments, key=lambda p: p.funding_time)

    async def _sync_hl_funding(self) -> None:
        start = self._hl_funding_high_ms
        if start is None:
            start = int(self._clock.now().timestamp() * 1000) - HL_FUNDING_WINDOW_MS
        while True:
            page = list(await self._read("funding history", self._ex.fetch_funding_history, None, start) or [])
            newest = start
            for item in page:
                payment = self._funding_payment(item)
                moment = _ms(payment.funding_time)
                self._hl_funding[(payment.symbol, moment)] = payment  # a page starts at the last one: seen again
                newest = max(newest, moment)
            if page:
                self._hl_funding_high_ms = max(self._hl_funding_high_ms or 0, newest)
            if len(page) < HL_FUNDING_PAGE:
                return
            start = newest if newest > start else start + 1  # the next page starts at this page's newest

    def _funding_payment(self, item: dict[str, Any]) -> FundingPayment:
        asset = str(item.get("symbol") or "").split("/")[0]
        amount = _num(item.get("amount")) or 0.0
        info = item.get("info") or {}
        delta = info.get("delta") or {}
        size = _num(delta.get("szi")) or 0.0
        rate = _num(delta.get("fundingRate")) or 0.0
        mark = abs(amount / (size * rate)) if size and rate else 0.0
        side: PositionSide = "long" if size > 0 or (not size and amount < 0 and rate >= 0) else "short"
        return FundingPayment(
            symbol=asset,
            funding_time=_dt(item.get("timestamp")),
            rate=rate,
            position_side=side,
            position_size=abs(size),
            mark_price=mark,
            amount=amount,
        )

    # ---- internals: requests --------------------------------------------------------------------------

    def _check_block(self) -> None:
        """Refuse while any adapter of this venue and host is rate limited (the block is shared: `_BLOCKS`)."""
        until = _BLOCKS.get(self._block_key)
        if until is None:
            return
        left = (until - self._clock.now()).total_seconds()
        if left > 0:
            raise RateLimitedError(
                f"{self.name}: rate limited: retry after {math.ceil(left)} s (no request sent meanwhile)", left
            )
        if _BLOCKS.get(self._block_key) == until:
            del _BLOCKS[self._block_key]

    def _block(self) -> float:
        headers = self._ex.last_response_headers or {}
        wait = next((_num(v) for k, v in headers.items() if str(k).lower() == "retry-after"), None)
        wait = wait if wait is not None and wait > 0 else DEFAULT_RATE_LIMIT_WAIT_S
        until = self._clock.now() + timedelta(seconds=wait)
        current = _BLOCKS.get(self._block_key)
        _BLOCKS[self._block_key] = until if current is None else max(current, until)
        return wait

    async def _request(self, what: str, func: Callable[..., Awaitable[Any]], *args: Any, read: bool = False) -> Any:
        """One call to the venue: refused while rate limited; ccxt errors become `_VenueError`s (a rate limit
        becomes ExchangeUnavailableError and blocks further requests). Anything but a read forgets the kept answers,
        whatever its outcome: the venue may have changed."""
        self._check_block()
        try:
            return await func(*args)
        except Exception as exc:  # ccxt's errors, and anything unexpected in its parsing: the outcome is unknown
            classified = classify(exc, self.venue, notional=self._notional_text(args), secrets=self._secrets)
            if classified.kind == "rate_limited":
                wait = self._block()
                raise RateLimitedError(
                    f"{self.name}: {what}: {classified.reason}: retry after {math.ceil(wait)} s", wait
                ) from None
            raise _VenueError(what, classified) from None
        finally:
            if not read:
                self.refresh()

    async def _read(self, what: str, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """A read: retried once after a clock re-sync; not-found stays a `_VenueError` (callers decide);
        ambiguous -> ExchangeUnavailableError; other refusals -> ExchangeError. The answers of `_CACHED_READS` are
        kept (see `refresh`); one read while a write was under way is not."""
        key = (what, repr(args)) if what in _CACHED_READS else None
        if key is not None and (kept := self._answers.get(key)) is not None:
            epoch, until, answer = kept
            if epoch == self._epoch and self._clock.now() < until:
                return answer
        epoch = self._epoch
        for attempt in (1, 2):
            try:
                answer = await self._request(what, func, *args, read=True)
                if key is not None and epoch == self._epoch:
                    self._answers[key] = (epoch, self._clock.now() + timedelta(seconds=READ_CACHE_S), answer)
                return answer
            except _VenueError as exc:
                kind = exc.classified.kind
                if kind == "clock" and attempt == 1:
                    await self._sync_time()
                    continue
                if kind in ("not_found", "duplicate"):
                    raise
                if kind == "ambiguous":
                    raise ExchangeUnavailableError(f"{self.name}: {exc}") from None
                raise ExchangeError(f"{self.name}: {exc}") from None
        raise AssertionError("unreachable")

    async def _sync_time(self) -> None:
        if self.venue != "binanceusdm":
            return
        try:
            await self._request("time sync", self._ex.load_time_difference)
        except _VenueError as exc:
            log.warning("%s: time sync failed: %s", self.name, exc)

    def _notional_text(self, args: tuple[Any, ...]) -> str:
        market_symbol = next((a for a in args if isinstance(a, str) and "/" in a), None)
        asset = market_symbol.split("/")[0] if market_symbol else None
        rules = self._rules.get(asset or "")
        return f"{rules.min_notional:g} {self._settle}" if rules else f"the venue's minimum ({self._settle})"

    async def _resolve(self, request: OrderRequest, why: str) -> Order:
        """The create's outcome is unknown: look the order up by client id; never send it again."""
        cid = request.client_order_id
        for attempt in range(self._lookup_attempts):
            await asyncio.sleep(self._lookup_backoff_s * 2**attempt)
            try:
                found = await self.fetch_order(request.symbol, cid)
            except (ExchangeUnavailableError, ExchangeError) as exc:
                log.warning("%s: lookup %d of %s failed: %s", self.name, attempt + 1, cid, exc)
                continue
            if found is not None:
                log.info("%s: %s found by client id after an unknown outcome (%s)", self.name, cid, why)
                return found
        raise OutcomeUnknownError(
            f"{self.name}: outcome unknown for {cid} ({why}); not found in {self._lookup_attempts} lookups by"
            " client id; it is never sent again; the reconciler looks it up by client id",
            cid,
        )

    # ---- internals: markets ----------------------------------------------------------------------------

    def _market_symbol(self, asset: str) -> str:
        return f"{asset}/{self._settle}:{self._settle}"

    def _ex_markets_assets(self) -> set[str]:
        markets = self._ex.markets or {}
        suffix = f"/{self._settle}:{self._settle}"
        return {s[: -len(suffix)] for s, m in markets.items() if s.endswith(suffix) and m.get("swap")}

    async def _market(self, asset: str) -> dict[str, Any]:
        if not self._ex.markets:
            await self._read("load markets", self._ex.load_markets)
        market = (self._ex.markets or {}).get(self._market_symbol(asset))
        if market is None:
            raise ExchangeError(f"unknown symbol {asset} on {self.name}")
        return cast(dict[str, Any], market)

    def _price(self, rules: MarketRules, price: float | None) -> float | None:
        if price is None:
            return None
        return float(self._ex.price_to_precision(rules.market_symbol, price))

    async def _mark(self, rules: MarketRules) -> float:
        if self.venue == "binanceusdm":
            raw = await self._read(f"mark price of {rules.symbol}", self._ex.fetch_mark_price, rules.market_symbol)
            info = raw.get("info") or {}
            mark = _nz(info.get("markPrice")) or _nz(raw.get("markPrice")) or _nz(raw.get("last"))
        else:
            raw = await self._read(f"mark price of {rules.symbol}", self._ex.fetch_ticker, rules.market_symbol)
            info = raw.get("info") or {}
            mark = _nz(info.get("markPx")) or _nz(raw.get("markPrice")) or _nz(raw.get("last"))
        if mark is None:
            raise ExchangeUnavailableError(f"{self.name}: no mark price for {rules.symbol}")
        return mark

    # ---- internals: orders -----------------------------------------------------------------------------

    def _remember(self, cid: str) -> None:
        self._known_ids[cid] = None
        if self.venue == "hyperliquid":
            self._cloids[cloid_for(cid)] = cid

    def _our_id(self, venue_id: str | None) -> str | None:
        if not venue_id:
            return None
        return self._cloids.get(venue_id.lower(), venue_id) if self.venue == "hyperliquid" else venue_id

    def _binance_kinds(self, cid: str) -> list[bool]:
        """Which endpoints to ask for an order (True: algo / conditional), likeliest first."""
        known = self._types.get(cid)
        if known is not None:
            return [known in _CONDITIONAL]
        likely_conditional = reason_of(cid) in ("stop_loss", "take_profit")
        return [True, False] if likely_conditional else [False, True]

    def _order_args(
        self,
        request: OrderRequest,
        market_symbol: str,
        quantity: float,
        price: float | None,
        trigger: float | None,
        mark: float | None,
        reduce_only: bool,
    ) -> tuple[Any, ...]:
        side, kind = request.side, request.type
        params: dict[str, Any] = {}
        if reduce_only:
            params["reduceOnly"] = True
        if self.venue == "binanceusdm":
            params["clientOrderId"] = request.client_order_id
            if kind == "limit":
                return (market_symbol, "limit", side, quantity, price, params | {"timeInForce": "GTC"})
            if kind in _CONDITIONAL:
                key = "stopLossPrice" if kind == "stop_market" else "takeProfitPrice"
                params |= {key: trigger, "workingType": "MARK_PRICE"}
            return (market_symbol, "market", side, quantity, None, params)
        params["clientOrderId"] = cloid_for(request.client_order_id)
        if kind == "limit":
            return (market_symbol, "limit", side, quantity, price, params)
        params["slippage"] = str(MARKET_SLIPPAGE)
        if kind in _CONDITIONAL:
            key = "stopLossPrice" if kind == "stop_market" else "takeProfitPrice"
            return (market_symbol, "market", side, quantity, trigger, params | {key: trigger})
        return (market_symbol, "market", side, quantity, mark, params)

    def _reason(self, cid: str, kind: OrderType, reduce_only: bool) -> FillReason:
        ours = reason_of(cid)
        if ours is not None:
            return ours
        if kind == "stop_market":
            return "stop_loss"
        if kind == "take_profit_market":
            return "take_profit"
        return "close" if reduce_only else "entry"

    def _rejected(self, request: OrderRequest, quantity: float, reason: str) -> Order:
        now = self._clock.now()
        return Order(
            client_order_id=request.client_order_id,
            venue_order_id="",
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            quantity=quantity,
            status="rejected",
            created_at=now,
            updated_at=now,
            trigger_price=request.trigger_price,
            reduce_only=request.reduce_only,
            reason=request.reason,
            reject_reason=reason,
            price=request.price,
        )

    async def _created(
        self,
        request: OrderRequest,
        asset: str,
        quantity: float,
        price: float | None,
        trigger: float | None,
        reduce_only: bool,
        created: Any,
    ) -> Order:
        """The Order of a create the venue accepted."""
        info = (created or {}).get("info") or {}
        if self.venue == "binanceusdm" and info:
            order = await self._binance_order(info)
            if request.type == "market" and order.status == "open":  # answered before it matched: ask again
                order = await self._settled(request, asset, order)
            order.reason = request.reason
            return order
        venue_id = str((created or {}).get("id") or "")
        filled_info = info.get("filled") if isinstance(info, dict) else None
        if not venue_id:  # an answer without the order id: ask for it
            found = await self._resolve(request, "accepted without an order id")
            return found
        self._order_cid[venue_id] = request.client_order_id
        now = self._clock.now()
        order = Order(
            client_order_id=request.client_order_id,
            venue_order_id=venue_id,
            symbol=asset,
            side=request.side,
            type=request.type,
            quantity=quantity,
            status="open",
            created_at=now,
            updated_at=now,
            trigger_price=trigger,
            reduce_only=reduce_only,
            reason=request.reason,
            price=price,
        )
        if isinstance(filled_info, dict):
            order.filled_quantity = _num(filled_info.get("totalSz")) or 0.0
            order.avg_fill_price = _nz(filled_info.get("avgPx"))
            order.status = "filled" if order.filled_quantity > 0 else "canceled"
        elif request.type == "market":  # an IOC that did not fill at once is gone: ask what happened
            return await self.fetch_order(asset, request.client_order_id) or order
        return order

    async def _settled(self, request: OrderRequest, asset: str, order: Order) -> Order:
        """A market order the venue answered as not matched yet (Binance `NEW`, executedQty 0): look it up by client
        id `lookup_attempts` times (backoff `lookup_backoff_s`, doubling) until it is no longer open; else as it was."""
        for attempt in range(self._lookup_attempts):
            await asyncio.sleep(self._lookup_backoff_s * 2**attempt)
            try:
                found = await self.fetch_order(asset, request.client_order_id)
            except (ExchangeUnavailableError, ExchangeError) as exc:
                log.warning("%s: lookup %d of %s failed: %s", self.name, attempt + 1, request.client_order_id, exc)
                if isinstance(exc, RateLimitedError):
                    break  # nothing may be sent now: the executor reconciles it later
                continue
            if found is not None:
                order = found
                if found.status != "open":
                    break
        return order

    async def _binance_order(self, info: dict[str, Any]) -> Order:
        """An Order from Binance's order or algo-order JSON (a triggered algo order: its actual order's fill)."""
        is_algo = "algoId" in info
        cid = str((info.get("clientAlgoId") if is_algo else info.get("clientOrderId")) or "")
        venue_id = str((info.get("algoId") if is_algo else info.get("orderId")) or "")
        raw_type = str((info.get("orderType") if is_algo else info.get("origType") or info.get("type")) or "").upper()
        kind = _BINANCE_TYPES.get(raw_type, "market")
        raw_status = str((info.get("algoStatus") if is_algo else info.get("status")) or "").upper()
        quantity = _num(info.get("quantity") if is_algo else info.get("origQty")) or 0.0
        filled = _num(info.get("executedQty")) or 0.0
        average = _nz(info.get("avgPrice"))
        updated = info.get("updateTime") or info.get("createTime") or info.get("time")
        status: OrderStatus
        if is_algo and raw_status in ("TRIGGERED", "FINISHED", "TRIGGERING"):
            child_id = str(info.get("actualOrderId") or "")
            child = await self._binance_child(info.get("symbol"), child_id) if child_id not in ("", "0") else None
            if child_id not in ("", "0"):
                self._order_cid[child_id] = cid
            if child is None:
                status = "open" if raw_status == "TRIGGERING" else "filled"
                average = average or _nz(info.get("actualPrice"))
                filled = quantity if status == "filled" else 0.0
            else:
                filled = _num(child.get("executedQty")) or 0.0
                average = _nz(child.get("avgPrice"))
                child_status = str(child.get("status") or "").upper()
                status = _binance_status(child_status, filled)
                updated = child.get("updateTime") or updated
        else:
            status = _binance_status(raw_status, filled)
        if venue_id and not is_algo:
            self._order_cid[venue_id] = cid
        self._types.setdefault(cid, kind)
        reduce_only = bool(info.get("reduceOnly")) or bool(info.get("closePosition"))
        created = info.get("createTime") if is_algo else info.get("time") or info.get("updateTime")
        market_id = str(info.get("symbol") or "")
        return Order(
            client_order_id=cid,
            venue_order_id=venue_id,
            symbol=self._asset_of_market_id(market_id),
            side="sell" if str(info.get("side")).upper() == "SELL" else "buy",
            type=kind,
            quantity=quantity,
            status=status,
            created_at=_dt(created or updated),
            updated_at=_dt(updated or created),
            trigger_price=_nz(info.get("triggerPrice") if is_algo else info.get("stopPrice")),
            reduce_only=reduce_only,
            reason=self._reason(cid, kind, reduce_only),
            filled_quantity=filled,
            avg_fill_price=average if filled > 0 else None,
            price=_nz(info.get("price")) if kind == "limit" else None,
        )

    async def _binance_child(self, market_id: Any, order_id: str) -> dict[str, Any] | None:
        asset = self._asset_of_market_id(str(market_id or ""))
        try:
            raw = await self._read("triggered order", self._ex.fetch_order, order_id, self._market_symbol(asset))
        except _VenueError:
            return None
        return cast(dict[str, Any], raw.get("info") or {})

    def _asset_of_market_id(self, market_id: str) -> str:
        market = (self._ex.markets_by_id or {}).get(market_id)
        if market:
            first = market[0] if isinstance(market, list) else market
            return str(first.get("base") or market_id)
        return market_id.removesuffix(self._settle)

    async def _hl_order(self, info: dict[str, Any], cid: str | None) -> Order:
        """An Order from Hyperliquid's orderStatus (`{"order": {...}, "status": ...}`)."""
        entry = info.get("order") or {}
        raw_status = str(info.get("status") or "open")
        cloid = entry.get("cloid")
        venue_id = str(entry.get("oid") or "")
        our = self._our_id(str(cloid)) if cloid else self._order_cid.get(venue_id)
        cid = our or cid or venue_id
        raw_type = str(entry.get("orderType") or "").lower()
        tif = str(entry.get("tif") or "").lower()
        kind: OrderType
        if "take profit" in raw_type:
            kind = "take_profit_market"
        elif "stop" in raw_type:
            kind = "stop_market"
        elif raw_type == "market" or tif in ("ioc", "frontendmarket"):
            kind = "market"
        else:
            kind = "limit"
        quantity = _num(entry.get("origSz")) or _num(entry.get("sz")) or 0.0
        remaining = _num(entry.get("sz"))
        filled = max(0.0, quantity - remaining) if remaining is not None else 0.0
        average: float | None = None
        status: OrderStatus
        fills = await self._order_fills(venue_id) if raw_status != "open" or filled > 0 else []
        if raw_status in ("open", "triggered"):
            status = "open"
            if raw_status == "triggered" and fills:  # fired: its market order has filled
                filled = math.fsum(t.quantity for t in fills)
                status = "filled"
        elif raw_status == "filled":
            status = "filled"
            filled = filled or quantity
        elif raw_status.endswith("Rejected") or raw_status == "rejected":
            status = "rejected"
        else:  # every kind of canceled
            status = "filled" if filled > 0 else "canceled"
        if filled > 0 and fills:
            average = math.fsum(t.price * t.quantity for t in fills) / math.fsum(t.quantity for t in fills)
        if venue_id:
            self._order_cid[venue_id] = cid
        self._types.setdefault(cid, kind)
        reduce_only = bool(entry.get("reduceOnly"))
        return Order(
            client_order_id=cid,
            venue_order_id=venue_id,
            symbol=str(entry.get("coin") or ""),
            side="sell" if entry.get("side") == "A" else "buy",
            type=kind,
            quantity=quantity,
            status=status,
            created_at=_dt(entry.get("timestamp")),
            updated_at=_dt(info.get("statusTimestamp") or entry.get("timestamp")),
            trigger_price=_nz(entry.get("triggerPx")) if kind in _CONDITIONAL else None,
            reduce_only=reduce_only,
            reason=self._reason(cid, kind, reduce_only),
            filled_quantity=filled,
            avg_fill_price=average,
            price=_nz(entry.get("limitPx")) if kind == "limit" else None,
        )

    async def _order_fills(self, venue_id: str) -> list[_Trade]:
        await self._sync_trades()
        return [t for t in self._trades.values() if t.order_id == venue_id]

    # ---- internals: fills and positions ------------------------------------------------------------------

    async def _sync_trades(self) -> None:
        """Read the venue's fills: all it gives the first time, then from the latest one seen; once per moment (see
        `refresh`)."""
        if self._trades_epoch == self._epoch and self._clock.now() < self._trades_until:
            return
        epoch = self._epoch
        # From the newest fill seen; from the venue's default window (Binance: the last 7 days) when none was seen yet
        # or the newest is older than the window a `since` may open (Binance reads 7 days from it: newer fills would
        # be missed).
        fresh = self._clock.now().timestamp() * 1000 - self._trades_high_ms < _SINCE_WINDOW_MS
        since = self._trades_high_ms if self._trades_read and self._trades_high_ms and fresh else None
        if self.venue == "binanceusdm":
            raw: list[Any] = []
            for asset in list(self._watched):
                symbol = self._market_symbol(asset)
                first = asset not in self._trades_read_assets  # an asset watched since the last read: all it has
                read = await self._read(
                    f"fills of {asset}", self._ex.fetch_my_trades, symbol, None if first else since, 1000
                )
                raw.extend(read or [])
                self._trades_read_assets.add(asset)
        else:
            raw = list(await self._read("fills", self._ex.fetch_my_trades, None, since) or [])
        for item in raw:
            trade = await self._trade(item)
            if trade is not None:
                self._trades[trade.id] = trade
                self._trades_high_ms = max(self._trades_high_ms, trade.time_ms)
        self._trades_read = True
        if epoch == self._epoch:
            self._trades_epoch, self._trades_until = epoch, self._clock.now() + timedelta(seconds=READ_CACHE_S)

    async def _trade(self, item: dict[str, Any]) -> _Trade | None:
        info = item.get("info") or {}
        trade_id = str(item.get("id") or info.get("tid") or info.get("id") or "")
        if not trade_id:
            return None
        order_id = str(item.get("order") or info.get("oid") or info.get("orderId") or "")
        asset = str(item.get("symbol") or "").split("/")[0]
        if self.venue == "binanceusdm":  # Binance trade ids are unique per symbol only (Hyperliquid's tid: global)
            trade_id = f"{asset}-{trade_id}"
        liquidation = False
        if self.venue == "hyperliquid":
            cloid = info.get("cloid")
            cid = self._our_id(str(cloid)) if cloid else self._order_cid.get(order_id)
            liquidation = bool(info.get("liquidation"))
            realized = _num(info.get("closedPnl")) or 0.0
        else:
            cid = self._order_cid.get(order_id) or await self._binance_client_id(item.get("symbol"), order_id)
            realized = _num(info.get("realizedPnl")) or 0.0
            liquidation = bool(cid) and str(cid).startswith(("autoclose-", "adl_autoclose"))
        fee = _num((item.get("fee") or {}).get("cost")) or 0.0
        return _Trade(
            id=trade_id,
            order_id=order_id,
            asset=asset,
            side="sell" if item.get("side") == "sell" else "buy",
            quantity=_num(item.get("amount")) or 0.0,
            price=_num(item.get("price")) or 0.0,
            fee=fee,
            realized_pnl=realized,
            maker=item.get("takerOrMaker") == "maker",
            time_ms=int(_num(item.get("timestamp")) or 0),
            liquidation=liquidation,
            client_id=cid,
        )

    async def _binance_client_id(self, market_symbol: Any, order_id: str) -> str | None:
        """The client id of a Binance order known only by its id (a fill of an order this run did not see)."""
        if not order_id or not market_symbol:
            return None
        try:
            raw = await self._read(f"order {order_id}", self._ex.fetch_order, order_id, market_symbol)
        except _VenueError:
            return None
        info = raw.get("info") or {}
        cid = info.get("clientOrderId")
        if cid:
            self._order_cid[order_id] = str(cid)
            kind = _BINANCE_TYPES.get(str(info.get("origType") or info.get("type") or "").upper())
            if kind is not None:
                self._types.setdefault(str(cid), kind)
        return str(cid) if cid else None

    async def _runs(self) -> dict[str, _Run]:
        """Walk the fill history per asset: each fill's reason, and the current position's start and PnL."""
        await self._sync_trades()
        runs: dict[str, _Run] = {}
        for trade in sorted(self._trades.values(), key=lambda t: (t.time_ms, _sortable(t.id))):
            run = runs.setdefault(trade.asset, _Run())
            signed = trade.quantity if trade.side == "buy" else -trade.quantity
            before, after = run.size, run.size + signed
            step = self._rules[trade.asset].lot_size if trade.asset in self._rules else 1e-12
            if abs(after) < step / 2:
                after = 0.0
            cid = trade.client_id
            reason: FillReason
            if trade.liquidation:
                reason = "liquidation"
            elif cid and reason_of(cid) is not None:
                reason = cast(FillReason, reason_of(cid))
            elif cid and self._types.get(cid) == "stop_market":
                reason = "stop_loss"
            elif cid and self._types.get(cid) == "take_profit_market":
                reason = "take_profit"
            elif before == 0:
                reason = "entry"
            elif abs(after) > abs(before) and before * after > 0:
                reason = "increase"
            elif after == 0:
                reason = "close"
            else:
                reason = "decrease"
            if before == 0 or before * after < 0:
                run.opened_ms, run.realized = trade.time_ms, 0.0
            run.realized += trade.realized_pnl
            run.size = after
            if after == 0:
                run.opened_ms = None
            run.fills.append(
                Fill(
                    fill_id=trade.id,
                    client_order_id=cid or f"venue-{trade.order_id}",
                    symbol=trade.asset,
                    side=trade.side,
                    quantity=trade.quantity,
                    price=trade.price,
                    fee=trade.fee,
                    realized_pnl=trade.realized_pnl,
                    liquidity="maker" if trade.maker else "taker",
                    reason=reason,
                    timestamp=_dt(trade.time_ms),
                )
            )
        return runs

    def _opened(self, asset: str, runs: dict[str, _Run]) -> tuple[datetime, float]:
        run = runs.get(asset)
        if run is None or run.opened_ms is None:
            return self._clock.now(), 0.0
        return _dt(run.opened_ms), run.realized

    def _binance_position(self, item: dict[str, Any], runs: dict[str, _Run]) -> Position | None:
        info = item.get("info") or {}
        amount = _num(info.get("positionAmt")) or _num(item.get("contracts")) or 0.0
        if item.get("side") == "short" and amount > 0:
            amount = -amount
        if not amount:
            return None
        asset = str(item.get("symbol") or "").split("/")[0]
        size = abs(amount)
        entry = _num(info.get("entryPrice")) or _num(item.get("entryPrice")) or 0.0
        mark = _nz(info.get("markPrice")) or _num(item.get("markPrice")) or entry
        initial = _nz(info.get("initialMargin")) or _nz(info.get("positionInitialMargin"))
        margin = _nz(info.get("isolatedWallet")) or _nz(info.get("isolatedMargin")) or initial or 0.0
        notional = abs(_num(info.get("notional")) or size * mark)
        leverage = _nz(info.get("leverage")) or _nz(item.get("leverage"))
        if leverage is None:
            leverage = round(notional / initial, 2) if initial else self._leverage.get(asset, self._leverage_default)
        opened, realized = self._opened(asset, runs)
        return Position(
            symbol=asset,
            side="long" if amount > 0 else "short",
            size=size,
            entry_price=entry,
            leverage=leverage,
            margin=margin,
            liquidation_price=_nz(info.get("liquidationPrice")),
            opened_at=opened,
            mark_price=mark,
            realized_pnl=realized,
        )

    def _hl_position(self, raw: dict[str, Any], runs: dict[str, _Run]) -> Position | None:
        signed = _num(raw.get("szi")) or 0.0
        if not signed:
            return None
        asset = str(raw.get("coin") or "")
        size = abs(signed)
        direction = 1.0 if signed > 0 else -1.0
        entry = _num(raw.get("entryPx")) or 0.0
        unrealized = _num(raw.get("unrealizedPnl"))
        value = _num(raw.get("positionValue"))
        # the mark that gives the venue's unrealized PnL exactly (positionValue = size x mark otherwise)
        mark = entry + unrealized / (direction * size) if unrealized is not None else (value or 0.0) / size
        leverage_info = raw.get("leverage") or {}
        leverage = _nz(leverage_info.get("value")) or self._leverage.get(asset, self._leverage_default)
        margin = (_num(raw.get("marginUsed")) or 0.0) - (unrealized or 0.0)  # marginUsed includes unrealized PnL
        opened, realized = self._opened(asset, runs)
        return Position(
            symbol=asset,
            side="long" if signed > 0 else "short",
            size=size,
            entry_price=entry,
            leverage=leverage,
            margin=margin,
            liquidation_price=_nz(raw.get("liquidationPx")),
            opened_at=opened,
            mark_price=mark,
            realized_pnl=realized,
        )

    async def _account(self) -> dict[str, Any]:
        """Binance: the account (a signed read). Hyperliquid: clearinghouseState of the wallet."""
        if self.venue == "binanceusdm":
            return cast(dict[str, Any], await self._read("account", self._ex.fetch_balance))
        answer = await self._read(
            "account state", self._ex.publicPostInfo, {"type": "clearinghouseState", "user": self._wallet}
        )
        if not isinstance(answer, dict):
            raise ExchangeError(f"{self.name}: unreadable account state for {_mask(self._wallet)}")
        return answer


def _binance_status(raw: str, filled: float) -> OrderStatus:
    if raw in ("NEW", "PARTIALLY_FILLED", "ACCEPTED", "TRIGGERING"):
        return "open"
    if raw in ("FILLED", "TRIGGERED", "FINISHED"):
        return "filled"
    if raw == "REJECTED":
        return "rejected"
    return "filled" if filled > 0 else "canceled"  # CANCELED, EXPIRED, EXPIRED_IN_MATCH


def _sortable(value: str) -> tuple[int, str]:
    """Ids in numeric order: `123`, or a Binance fill id `BTC-123` (by its number, then the asset)."""
    head, _, tail = value.rpartition("-")
    if tail.isdigit():
        return int(tail), head
    return (int(value), "") if value.isdigit() else (0, value)


class _Hyperliquid(ccxt.hyperliquid):
    """ccxt's Hyperliquid client without its first-order extras: it would approve ccxt's builder fee and set
    ccxt's referrer with the account's key (`initialize_client`). Balances are read from clearinghouseState."""

    async def initialize_client(self) -> bool:
        return True


def _build_client(
    venue: VenueId,
    credentials: VenueCredentials,
    network: Network,
    api_url: str | None,
    timeout_ms: int,
    rate_limit_ms: float | None,
) -> Any:
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    client: Any
    if venue == "binanceusdm":
        config |= {"apiKey": credentials.api_key, "secret": credentials.api_secret}
        config["options"] = {"warnOnFetchOpenOrdersWithoutSymbol": False, "fetchCurrencies": False}
        client = ccxt.binanceusdm(config)
        if network == "testnet":
            client.enable_demo_trading(True)
    else:
        config |= {"walletAddress": credentials.api_key, "privateKey": credentials.api_secret}
        config["options"] = {
            "fetchMarkets": {"types": ["swap"]},
            "builderFee": False,
            "refSet": True,
            "enableUnifiedMargin": False,
        }
        client = _Hyperliquid(config)
        client.has["fetchCurrencies"] = False
        if network == "testnet":
            client.set_sandbox_mode(True)
    if api_url is not None:
        base = api_url.rstrip("/")
        for key, url in list(client.urls["api"].items()):
            if isinstance(url, str):
                client.urls["api"][key] = base + urlsplit(url.replace("{hostname}", "host")).path
    client.httpExceptions = {**client.httpExceptions, **_CLIENT_ERRORS}
    return client
