"""Performance and risk figures from trades, the equity curve and asset returns (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from app.schemas.trading_decision import PerformanceMetrics, RiskMetrics

MIN_RETURNS_FOR_STATS = 10
RETURN_NOISE = 1e-12  # a standard deviation of returns at or below this is float rounding


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest peak-to-trough fall as a fraction of the peak (0 when the curve never falls)."""
    if len(equity) < 2:
        return 0.0
    curve = np.asarray(equity, dtype=float)
    peaks = np.maximum.accumulate(curve)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = np.where(peaks > 0, (peaks - curve) / peaks, 0.0)
    return float(drops.max())


def _returns(equity: Sequence[float]) -> np.ndarray:
    curve = np.asarray(equity, dtype=float)
    if curve.size < 2:
        return np.empty(0)
    prev = curve[:-1]
    valid = prev > 0
    return (curve[1:][valid] - prev[valid]) / prev[valid]


def sharpe_ratio(equity: Sequence[float], periods_per_year: float) -> float:
    """Annualised Sharpe ratio of the equity curve's period returns (risk-free rate 0)."""
    returns = _returns(equity)
    if returns.size < MIN_RETURNS_FOR_STATS:
        return 0.0
    std = float(returns.std(ddof=1))
    # equal returns (a flat or steadily compounding curve) leave float noise, not volatility: no ratio
    if not math.isfinite(std) or std <= RETURN_NOISE * max(1.0, abs(float(returns.mean()))):
        return 0.0
    return float(returns.mean() / std * math.sqrt(periods_per_year))


def performance_metrics(
    net_trade_pnls: Sequence[float], equity: Sequence[float], total_pnl: float, periods_per_year: float
) -> PerformanceMetrics:
    """Win rate and average win/loss over closed trades (net of fees); drawdown and Sharpe from equity."""
    wins = [p for p in net_trade_pnls if p > 0]
    losses = [p for p in net_trade_pnls if p <= 0]
    return PerformanceMetrics(
        total_pnl=total_pnl,
        win_rate=len(wins) / len(net_trade_pnls) if net_trade_pnls else 0.0,
        avg_win=sum(wins) / len(wins) if wins else 0.0,
        avg_loss=sum(losses) / len(losses) if losses else 0.0,
        max_drawdown=max_drawdown(equity),
        sharpe_ratio=sharpe_ratio(equity, periods_per_year),
    )


def risk_metrics(
    equity: Sequence[float], notionals: dict[str, float], asset_returns: Mapping[str, Sequence[float] | np.ndarray]
) -> RiskMetrics:
    """VaR(95%) from the equity curve's returns, drawdown, correlation of held assets, concentration."""
    returns = _returns(equity)
    var_95 = max(0.0, -float(np.percentile(returns, 5))) if returns.size >= MIN_RETURNS_FOR_STATS else 0.0
    gross = sum(abs(v) for v in notionals.values())
    concentration = max(abs(v) for v in notionals.values()) / gross if gross > 0 else 0.0
    held = [s for s in notionals if len(asset_returns.get(s, ())) >= MIN_RETURNS_FOR_STATS]
    correlation = 0.0
    if len(held) >= 2:
        length = min(len(asset_returns[s]) for s in held)
        matrix = np.vstack([np.asarray(asset_returns[s][-length:], dtype=float) for s in held])
        matrix = matrix[matrix.std(axis=1) > 0]  # a flat series correlates with nothing; it must not hide the rest
        if matrix.shape[0] >= 2:
            corr = np.corrcoef(matrix)
            upper = corr[np.triu_indices(matrix.shape[0], k=1)]
            correlation = float(np.mean(np.abs(upper)))
    return RiskMetrics(
        var_95=var_95,
        max_drawdown=max_drawdown(equity),
        correlation_risk=correlation,
        concentration_risk=concentration,
    )
