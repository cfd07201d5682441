"""Prometheus metrics: decisions, rejections by reason, model latency/tokens/cost, orders, equity, late cycles,
and decision outcomes (hits, returns and the calibration of confidence, per model and horizon)."""

from __future__ import annotations

import re
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from app.schemas.decision_result import DecisionResult

_NUMBERS = re.compile(r"[-+]?\d[\d.,eE+-]*")


def reason_class(reason: str) -> str:
    """A low-cardinality label for a rejection reason: the text before the first colon, without numbers."""
    head = reason.split(":")[0].split(";")[0]
    return _NUMBERS.sub("N", head).strip()[:60] or "other"


class WorkerFigures(Protocol):
    name: str
    alive: bool
    decisions_per_s: float
    decisions: int
    cpu_s: float


class AgentMetrics:
    """One registry per agent (tests build many agents; the global registry would collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "trading_decisions_total", "Decisions stored, by status", ["status"], registry=self.registry
        )
        self.rejections = Counter(
            "trading_rejections_total", "Asset decisions rejected, by reason", ["reason"], registry=self.registry
        )
        self.llm_latency = Histogram(
            "llm_latency_seconds",
            "Model answer time (all attempts)",
            ["model"],
            buckets=(0.05, 0.25, 1, 2.5, 5, 10, 20, 40, 80, 160),
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "llm_tokens_total", "Tokens by model and kind", ["model", "kind"], registry=self.registry
        )
        self.llm_cost = Counter("llm_cost_usd_total", "Model cost in USD", ["model"], registry=self.registry)
        self.orders = Counter(
            "trading_orders_total", "Orders by kind and status", ["kind", "status"], registry=self.registry
        )
        self.equity = Gauge("account_equity_usd", "Account equity", ["account_id"], registry=self.registry)
        self.late_cycles = Counter(
            "trading_loop_late_cycles_total",
            "Cycles that started after the next candle had closed (wall clock): candles were skipped",
            registry=self.registry,
        )
        self.candles_skipped = Counter(
            "trading_loop_candles_skipped_total",
            "Closed candles the loop made no decision on because the cycle before ran late (wall clock)",
            registry=self.registry,
        )
        # Decision outcomes, labelled by model, horizon (candles of INTERVAL) and whether the decision was an
        # experiment's shadow (decided, never executed): every mean and rate a dashboard needs is a ratio of these
        # (mean return = _sum / _count, Brier score = brier _sum / _count).
        self.outcomes = Counter(
            "decision_outcomes_total",
            "Asset decision outcomes measured, by result: hit (the direction gained), miss, flat (no exposure)",
            ["model", "horizon", "shadow", "result"],
            registry=self.registry,
        )
        self.outcome_return = Summary(
            "decision_outcome_return",
            "Return of the direction each asset decision left, from its price to the horizon's close",
            ["model", "horizon", "shadow"],
            registry=self.registry,
        )
        self.outcome_brier = Summary(
            "decision_outcome_brier",
            "(confidence / 100 - hit)^2 of each outcome with a direction and the model's confidence",
            ["model", "horizon", "shadow"],
            registry=self.registry,
        )
        self.trade_outcome_pnl = Summary(
            "decision_trade_net_pnl_usd",
            "Net PnL (fees and funding included) of each closed position, by the model of the decision that opened it",
            ["model"],
            registry=self.registry,
        )

        # Multi-process mode (scheduler and workers on PostgreSQL): read from the database at each scrape, so every API
        # server shows the same figures
        self.queue_waiting = Gauge("agent_queue_jobs_waiting", "Jobs queued, not started", registry=self.registry)
        self.queue_running = Gauge("agent_queue_jobs_running", "Jobs a worker runs now", registry=self.registry)
        self.queue_failed = Gauge("agent_queue_jobs_failed", "Jobs that ended in failure", registry=self.registry)
        self.queue_oldest = Gauge(
            "agent_queue_oldest_job_age_seconds", "How long the oldest waiting job has waited", registry=self.registry
        )
        self.worker_alive = Gauge("agent_worker_alive", "1 while the worker beats", ["worker"], registry=self.registry)
        self.worker_rate = Gauge(
            "agent_worker_decisions_per_second",
            "Decisions per second over the worker's last heartbeat interval",
            ["worker"],
            registry=self.registry,
        )
        self.worker_decisions = Gauge(
            "agent_worker_decisions", "Decisions since the worker started", ["worker"], registry=self.registry
        )
        self.worker_cpu = Gauge(
            "agent_worker_cpu_seconds", "The worker process's CPU time so far", ["worker"], registry=self.registry
        )

    def observe_queue(
        self, *, waiting: int, running: int, failed: int, oldest_age_s: float, workers: list[WorkerFigures]
    ) -> None:
        """The queue and its workers as they are now (workers no longer listed disappear from the metrics)."""
        self.queue_waiting.set(waiting)
        self.queue_running.set(running)
        self.queue_failed.set(failed)
        self.queue_oldest.set(oldest_age_s)
        for gauge in (self.worker_alive, self.worker_rate, self.worker_decisions, self.worker_cpu):
            gauge.clear()
        for worker in workers:
            self.worker_alive.labels(worker.name).set(1 if worker.alive else 0)
            self.worker_rate.labels(worker.name).set(worker.decisions_per_s)
            self.worker_decisions.labels(worker.name).set(worker.decisions)
            self.worker_cpu.labels(worker.name).set(worker.cpu_s)

    def observe_outcome(
        self,
        *,
        model: str | None,
        horizon: int,
        direction_return: float,
        hit: bool | None,
        confidence: float | None,
        shadow: bool = False,
    ) -> None:
        """Count one new outcome row (called once per row written, never for a row already stored)."""
        labels = (model or "unknown", str(horizon), "true" if shadow else "false")
        self.outcomes.labels(*labels, "flat" if hit is None else "hit" if hit else "miss").inc()
        self.outcome_return.labels(*labels).observe(direction_return)
        if hit is not None and confidence is not None:
            self.outcome_brier.labels(*labels).observe((confidence / 100.0 - float(hit)) ** 2)

    def observe_trade_outcome(self, *, model: str | None, net_pnl: float) -> None:
        """Count one new trade outcome row."""
        self.trade_outcome_pnl.labels(model or "unknown").observe(net_pnl)

    def observe(self, result: DecisionResult, equity: float | None = None) -> None:
        self.decisions.labels(result.status).inc()
        shadow = result.status == "shadow"  # an experiment's variant, never executed: not the agent's rejections
        for verdict in result.validation.verdicts if result.validation and not shadow else []:
            if verdict.status == "rejected":
                self.rejections.labels(reason_class(verdict.reasons[0] if verdict.reasons else "other")).inc()
        model = result.model_served or result.model_requested or "unknown"
        if result.latency_ms is not None:
            self.llm_latency.labels(model).observe(result.latency_ms / 1000)
        if result.usage.prompt_tokens:
            self.llm_tokens.labels(model, "prompt").inc(result.usage.prompt_tokens)
        if result.usage.completion_tokens:
            self.llm_tokens.labels(model, "completion").inc(result.usage.completion_tokens)
        if result.usage.cost_usd:
            self.llm_cost.labels(model).inc(result.usage.cost_usd)
        for order in result.orders:
            self.orders.labels(order.kind, order.status).inc()
        if equity is not None:
            self.equity.labels(str(result.account_id)).set(equity)
