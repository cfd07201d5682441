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
OrderType = Literal["market", "stop_market", "take_profit_market"]
OrderStatus = Literal["open", "filled", "canceled", "rejected"]
FillReason = Literal["entry", "increase", "decrease", "close", "stop_loss", "take_profit", "liquidation"]


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
    """Account money on the venue. `equity = wallet_balance + unrealized_pnl`."""

    wallet_balance: float  # initial + realized - fees (+/- funding)
    unrealized_pnl: float
    margin_used: float
    available: float  # what a new order may commit
    realized_pnl: float
    fees_paid: float
    funding_paid: float = 0.0

    @property
    def equity(self) -> float:
        return self.wallet_balance + self.unrealized_pnl


@dataclass(frozen=True)
class FeeProfile:
    """Per-venue simulation parameters (basis points)."""

    venue: str
    maker_bps: float
    taker_bps: float
    funding_interval_hours: int
    min_notional: float
    maintenance_margin_rate: float = 0.004
    slippage_bps: float = 1.0
    max_leverage: dict[str, float] = field(default_factory=dict)


FEE_PROFILES: dict[str, FeeProfile] = {
    "binanceusdm": FeeProfile("binanceusdm", maker_bps=2.0, taker_bps=5.0, funding_interval_hours=8, min_notional=5.0),
    "hyperliquid": FeeProfile("hyperliquid", maker_bps=1.5, taker_bps=4.5, funding_interval_hours=1, min_notional=10.0),
}


class Exchange(Protocol):
    """Balances, positions and orders on one venue account."""

    name: str
    is_simulated: bool

    async def set_leverage(self, symbol: str, leverage: float) -> float: ...

    async def place_order(self, request: OrderRequest) -> Order: ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> Order: ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> Order | None: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]: ...

    async def fetch_positions(self) -> list[Position]: ...

    async def fetch_balance(self) -> Balance: ...

    async def fetch_fills(self, since: datetime | None = None) -> list[Fill]: ...
