"""What an alert is about: its kind, its subject (the two are the dedup key), and the words a trader reads.

Code where something happens builds an `AlertEvent` and hands it to an `AlertSink` (the `AlertCenter` in the agent);
it never waits for the alert to be stored or sent. Keeping the event and the sink here, with no dependency, lets any
layer raise an alert without importing the delivery (apprise, the database).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

Severity = Literal["critical", "warning", "info"]


class AlertKind(StrEnum):
    ACCOUNT_HALTED = "account_halted"  # status -> halted (by the API or by a rule); subject: account
    ACCOUNT_PAUSED = "account_paused"  # status -> paused
    DAILY_LOSS_LIMIT = "daily_loss_limit"  # risk rules: the day's loss reached max_daily_loss
    STOP_FAILED = "stop_failed_position_closed"  # executor, watchdog: no stop could be placed, position closed
    CIRCUIT_OPEN = "model_circuit_open"  # circuit breaker: a model's circuit opened
    CIRCUIT_CLOSED = "model_circuit_closed"  # ... and closed again
    BUDGET_SPENT = "llm_budget_spent"  # decision engine: the account's daily LLM budget is spent
    MARKET_STALE = "market_data_stale"  # the market does not answer
    LOOP_BEHIND = "loop_behind"  # trading loop: a late cycle, candles skipped
    RECONCILIATION = "reconciliation_mismatch"  # a position adopted from the venue, an account not reconcilable
    ORDER_REJECTED = "order_rejected"  # the venue refused an order (paper or live)


# Agent-wide kinds: they concern every account, so every API key sees them.
AGENT_WIDE = frozenset(
    {AlertKind.CIRCUIT_OPEN, AlertKind.CIRCUIT_CLOSED, AlertKind.MARKET_STALE, AlertKind.LOOP_BEHIND}
)


@dataclass(frozen=True)
class AlertEvent:
    kind: AlertKind
    subject: str  # what it is about, the dedup key with kind: "account 3", "account 3 BTC", "model x/y"
    title: str  # one line
    message: str  # the reason, plain text, no secrets
    severity: Severity = "warning"
    account_id: int | None = None


class AlertSink(Protocol):
    """Where events go. `emit` never raises and never waits."""

    def emit(self, event: AlertEvent) -> None: ...


class NoAlerts:
    """The sink of parts built without an alert center (tests, backtests): events are dropped."""

    def emit(self, event: AlertEvent) -> None:
        """Nobody listens."""


NO_ALERTS: AlertSink = NoAlerts()


class RecordingAlerts:
    """A sink that keeps the events in memory, in order (tests; a backtest's report could read them)."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def emit(self, event: AlertEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[AlertKind]:
        return [e.kind for e in self.events]


# ----------------------------------------------------------------------------------- the events, worded once
def _account(account_id: int, asset: str | None = None) -> str:
    return f"account {account_id}" + (f" {asset}" if asset else "")


def account_status(account_id: int, status: str, *, by: str, reason: str | None) -> AlertEvent:
    """The account was paused or halted (`by`: the key prefix or the rule that did it)."""
    halted = status == "HALTED"
    what = "halted: no decisions and no new orders" if halted else "paused: no decisions until resumed"
    return AlertEvent(
        kind=AlertKind.ACCOUNT_HALTED if halted else AlertKind.ACCOUNT_PAUSED,
        subject=_account(account_id),
        title=f"Account {account_id} {status.lower()}",
        message=f"Account {account_id} {what}; by {by}. Reason: {reason or 'none given'}",
        severity="critical" if halted else "warning",
        account_id=account_id,
    )


def _on_account(
    kind: AlertKind, account_id: int, title: str, why: str, severity: Severity, asset: str | None = None
) -> AlertEvent:
    """An event about one account (and one of its assets): its subject and title name them the same way."""
    where = f"Account {account_id}" + (f" {asset}" if asset else "")
    return AlertEvent(kind, _account(account_id, asset), f"{where}: {title}", why, severity, account_id)


def daily_loss_limit(account_id: int, why: str) -> AlertEvent:
    return _on_account(AlertKind.DAILY_LOSS_LIMIT, account_id, "daily loss limit reached", why, "critical")


def stop_failed(account_id: int, asset: str, why: str) -> AlertEvent:
    title = "no stop could be placed, position closed"
    return _on_account(AlertKind.STOP_FAILED, account_id, title, why, "critical", asset)


def circuit(model: str, opened: bool, detail: str) -> AlertEvent:
    return AlertEvent(
        AlertKind.CIRCUIT_OPEN if opened else AlertKind.CIRCUIT_CLOSED,
        f"model {model}",
        f"Model {model}: circuit {'opened' if opened else 'closed'}",
        detail,
        "warning" if opened else "info",
    )


def budget_spent(account_id: int, note: str) -> AlertEvent:
    return _on_account(AlertKind.BUDGET_SPENT, account_id, "LLM budget spent", note, "warning")


def market_stale(market: str, why: str) -> AlertEvent:
    return AlertEvent(AlertKind.MARKET_STALE, f"market {market}", f"Market {market}: no market data", why, "critical")


def asset_stale(market: str, asset: str, why: str) -> AlertEvent:
    """One asset's candles are stale while the market answers (the context lists it; the model is told)."""
    return AlertEvent(AlertKind.MARKET_STALE, f"market {market} {asset}", f"Market {market}: {asset} data stale", why)


def loop_behind(why: str) -> AlertEvent:
    return AlertEvent(AlertKind.LOOP_BEHIND, "loop", "Trading loop behind: candles skipped", why, "warning")


def reconciliation(account_id: int, why: str, asset: str | None = None) -> AlertEvent:
    title = "the venue does not match the agent"
    return _on_account(AlertKind.RECONCILIATION, account_id, title, why, "critical", asset)


def order_rejected(account_id: int, asset: str, why: str) -> AlertEvent:
    return _on_account(AlertKind.ORDER_REJECTED, account_id, "order rejected by the venue", why, "warning", asset)
