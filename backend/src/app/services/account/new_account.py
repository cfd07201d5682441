"""A new account's row: the venue's fees, a quarter of the balance per position unless said otherwise."""

from __future__ import annotations

from datetime import datetime

from app.db.models import Account
from app.services.exchange.base import FEE_PROFILES

DEFAULT_MAX_LEVERAGE = 5.0
DEFAULT_POSITION_SHARE = 0.25  # of the initial balance, as margin per position


def new_account(
    name: str,
    *,
    now: datetime,
    venue: str = "binanceusdm",
    strategy_id: str = "conservative",
    initial_balance: float = 10_000.0,
    mode: str = "paper",
    network: str | None = None,
    model: str | None = None,
    max_position_size: float | None = None,
    max_leverage: float = DEFAULT_MAX_LEVERAGE,
    daily_llm_budget_usd: float | None = None,
) -> Account:
    """An ACTIVE account, not yet stored (`AccountRepository.add` stores it with its first strategy)."""
    profile = FEE_PROFILES[venue]
    return Account(
        name=name,
        mode=mode,
        venue=venue,
        network=(network or "testnet") if mode == "live" else None,
        status="ACTIVE",
        model=model,
        strategy_id=strategy_id,
        initial_balance=initial_balance,
        max_position_size=max_position_size or initial_balance * DEFAULT_POSITION_SHARE,
        max_leverage=max_leverage,
        maker_fee_bps=profile.maker_bps,
        taker_fee_bps=profile.taker_bps,
        daily_llm_budget_usd=daily_llm_budget_usd,
        created_at=now,
        updated_at=now,
    )
