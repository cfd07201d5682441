"""The `Exchange` port that the paper venue and the live adapter both implement.

Outcome policy for commands: a definitive rejection comes back as an `Order` with status `rejected` and a
reason; an ambiguous outcome (timeout, 5xx) raises `ExchangeUnavailableError` and must be resolved by
querying the venue by client order id, never by sending the order again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from app.core.errors import TemporaryError, TradingAgentError

OrderSide = Literal["buy", "sell"]
PositionSide = Literal["long", "short"]
OrderType = Literal["market", "limit", "stop_market", "take_profit_market"]
OrderStatus = Literal["open", "filled", "canceled", "rejected"]
FillReason = Literal["entry", "increase", "decrease", "close", "stop_loss", "take_profit", "liquidation"]
LiquidationFormula = Literal["binance", "hyperliquid"]


class ExchangeError(TradingAgentError):
    """A venue said no to something that is not an order (unknown order id, bad leverage...)."""


class ExchangeUnavailableError(TemporaryError):
    """The venue could not be reached or answered ambiguously; order state must be queried."""


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: float
    trigger_price: float | None = None
    reduce_only: bool = False
    reason: FillReason = "entry"
    price: float | None = None  # limit price (type "limit" only)


@dataclass(slots=True)
class Order:
    client_order_id: str
    venue_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: float
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    trigger_price: float | None = None
    reduce_only: bool = False
    reason: FillReason = "entry"
    filled_quantity: float = 0.0
    avg_fill_price: float | None = None
    reject_reason: str | None = None
    price: float | None = None  # limit price, rounded to the tick (type "limit" only)


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: float
    price: float
    fee: float
    realized_pnl: float  # gross of fees; fees are reported separately
    liquidity: Literal["maker", "taker"]
    reason: FillReason
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One funding settlement of one position: `amount` > 0 was received, < 0 was paid."""

    symbol: str
    funding_time: datetime
    rate: float  # fraction per funding interval; positive: longs pay shorts
    position_side: PositionSide
    position_size: float  # base units, positive
    mark_price: float
    amount: float  # signed, USD: -direction * size * mark * rate


@dataclass(slots=True)
class Position:
    symbol: str
    side: PositionSide
    size: float  # base units, positive
    entry_price: float
    leverage: float
    margin: float  # isolated margin committed (USD)
    liquidation_price: float | None
    opened_at: datetime
    mark_price: float = 0.0
    realized_pnl: float = 0.0  # realized so far on this position (partial closes), gross of fees

    @property
    def unrealized_pnl(self) -> float:
        direction = 1.0 if self.side == "long" else -1.0
        return direction * (self.mark_price - self.entry_price) * self.size

    @property
    def notional(self) -> float:
        return self.size * self.mark_price


@dataclass(frozen=True, slots=True)
class Balance:
    """Account money on the venue. `equity = wallet_balance + unrealized_pnl`.

    `wallet_balance = initial + realized_pnl - fees_paid - funding_paid + funding_received`; both funding
    totals are >= 0 (paid and received are kept apart).
    """

    wallet_balance: float
    unrealized_pnl: float
    margin_used: float  # position margin plus margin reserved by resting orders
    available: float  # what a new order may commit
    realized_pnl: float
    fees_paid: float
    funding_paid: float = 0.0
    funding_received: float = 0.0

    @property
    def equity(self) -> float:
        return self.wallet_balance + self.unrealized_pnl


@dataclass(frozen=True)
class FeeProfile:
    """Per-venue simulation parameters (basis points).

    Liquidation: `liquidation_formula` picks the venue's isolated-margin formula; the maintenance margin rate
    it uses comes from `maintenance_rate(max_leverage)`: Binance's flat lowest-bracket rate, or
    Hyperliquid's l = 1 / (2 * max leverage of the asset).
    Taker slippage: `slippage_bps + impact_bps_per_pct_volume * (order notional / last candle quote volume
    * 100)`, capped at `max_slippage_bps`; `slippage_bps` alone while no candle volume is known.
    """

    venue: str
    maker_bps: float
    taker_bps: float
    funding_interval_hours: int
    min_notional: float
    maintenance_margin_rate: float = 0.004
    slippage_bps: float = 1.0
    max_leverage: dict[str, float] = field(default_factory=dict)
    liquidation_formula: LiquidationFormula = "binance"
    impact_bps_per_pct_volume: float = 2.0
    max_slippage_bps: float = 100.0

    def maintenance_rate(self, max_leverage: float) -> float:
        """Return the maintenance margin rate of an asset whose maximum leverage is `max_leverage`."""
        if self.liquidation_formula == "hyperliquid" and max_leverage > 0:
            return 1.0 / (2.0 * max_leverage)
        return self.maintenance_margin_rate


FEE_PROFILES: dict[str, FeeProfile] = {
    "binanceusdm": FeeProfile("binanceusdm", maker_bps=2.0, taker_bps=5.0, funding_interval_hours=8, min_notional=5.0),
    "hyperliquid": FeeProfile(
        "hyperliquid",
        maker_bps=1.5,
        taker_bps=4.5,
        funding_interval_hours=1,
        min_notional=10.0,
        maintenance_margin_rate=1.0 / 80.0,  # BTC's l = 1 / (2 * 40); per asset see `maintenance_rate`
        max_leverage={"BTC": 40.0, "ETH": 25.0, "SOL": 20.0},
        liquidation_formula="hyperliquid",
    ),
}


class Exchange(Protocol):
    """Balances, positions and orders on one venue account."""

    name: str
    is_simulated: bool

    @property
    def revision(self) -> int | None:
        """A number that changes whenever orders, fills, positions or funding payments change; None when
        the venue cannot tell (every reconciliation then reads everything)."""
        ...

    def refresh(self) -> None:
        """Read the venue anew from now on. A live adapter keeps the answers of its reads (positions, orders, fills,
        balance, funding) until its next write or this call, so one cycle does not ask the venue the same thing many
        times; call it where a new moment begins (a cycle's reconciliation, its execution after the model's answer,
        a halt). The paper venue keeps nothing."""
        ...

    async def set_leverage(self, symbol: str, leverage: float) -> float: ...

    async def place_order(self, request: OrderRequest) -> Order: ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order: ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order | None: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]: ...

    async def fetch_positions(self) -> list[Position]: ...

    async def fetch_balance(self) -> Balance: ...

    async def fetch_fills(self, since: datetime | None = None) -> list[Fill]: ...

    async def fetch_funding_payments(self, since: datetime | None = None) -> list[FundingPayment]: ...
