"""A `DecisionModel` that answers with seeded random decisions, valid and invalid alike, to exercise the
validator, the executor and the venue far more than the cautious baseline does."""

from __future__ import annotations

import random

from app.schemas.trading_decision import AssetDecision, OrderAdjustment, PositionAdjustment, TradingDecision
from app.services.llm.providers.base import ModelRequest, ModelResponse, TokenUsage


def answer(request: ModelRequest, decision: TradingDecision, *, served_by: str) -> ModelResponse:
    """A test model's well-formed answer carrying `decision`."""
    return ModelResponse(
        raw_text=decision.model_dump_json(),
        decision=decision,
        model_requested=request.model,
        model_served=served_by,
        provider="test",
        latency_ms=1.0,
        usage=TokenUsage(prompt_tokens=100, completion_tokens=50, total_tokens=150, cost_usd=0.0001),
        finish_reason="stop",
    )


class ScriptedModel:
    name = "test/scripted-random"
    is_simulated = True

    def __init__(self, seed: int = 1, invalid_rate: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.invalid_rate = invalid_rate
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        return answer(request, self._decide(request), served_by=self.name)

    def _decide(self, request: ModelRequest) -> TradingDecision:
        rng = self.rng
        positions = {p.symbol: p for p in request.context.account_state.open_positions}
        decisions: list[AssetDecision] = []
        for asset in request.symbols:
            data = request.context.market_data.assets[asset]
            price = data.current_price
            position = positions.get(asset)
            invalid = rng.random() < self.invalid_rate
            base = {
                "asset": asset,
                "exit_plan": "scripted",
                "rationale": "scripted",
                "confidence": 50.0,
                "risk_level": "medium",
                "allocation_usd": 0.0,
            }
            if position is None:
                roll = rng.random()
                if roll < 0.4:
                    side = rng.choice(["buy", "sell"])
                    sign = 1 if side == "buy" else -1
                    distance = price * rng.uniform(0.003, 0.014)  # within the conservative widest stop (1.5%)
                    sl = price - sign * distance * (-1 if invalid else 1)
                    tp = price + sign * distance * rng.uniform(3.0, 4.0)  # at least the strategy's 3R
                    decisions.append(
                        AssetDecision(
                            **{
                                **base,
                                "action": side,
                                "allocation_usd": rng.uniform(50, 3000),
                                "sl_price": sl,
                                "tp_price": tp,
                            }
                        )
                    )
                elif roll < 0.45:
                    decisions.append(AssetDecision(**{**base, "action": "close_position"}))  # no position: rejected
                else:
                    decisions.append(AssetDecision(**{**base, "action": "hold"}))
                continue
            is_long = position.side == "long"
            sign = 1 if is_long else -1
            roll = rng.random()
            if roll < 0.25:
                decisions.append(AssetDecision(**{**base, "action": "close_position"}))
            elif roll < 0.45:
                new_sl = price - sign * price * rng.uniform(0.003, 0.02) * (-1 if invalid else 1)
                decisions.append(
                    AssetDecision(
                        **{
                            **base,
                            "action": "adjust_orders",
                            "order_adjustment": OrderAdjustment(adjust_sl=True, new_sl_price=new_sl),
                        }
                    )
                )
            elif roll < 0.6:
                kind = rng.choice(["increase", "decrease"])
                decisions.append(
                    AssetDecision(
                        **{
                            **base,
                            "action": "adjust_position",
                            "position_adjustment": PositionAdjustment(
                                adjustment_type=kind,
                                adjustment_amount_usd=rng.uniform(20, 500),
                                adjustment_percentage=None,
                            ),
                        }
                    )
                )
            elif roll < 0.65:
                decisions.append(
                    AssetDecision(
                        **{
                            **base,
                            "action": "buy" if is_long else "sell",
                            "allocation_usd": 100.0,
                            "sl_price": price * (1 - sign * 0.01),
                        }
                    )
                )
            else:
                decisions.append(AssetDecision(**{**base, "action": "hold"}))
        if rng.random() < 0.1 and decisions:
            decisions.pop(rng.randrange(len(decisions)))  # the model forgets an asset
        total = sum(d.allocation_usd for d in decisions if d.action in ("buy", "sell"))
        if rng.random() < 0.1:
            total *= 1.5  # a wrong total
        return TradingDecision(
            decisions=decisions,
            portfolio_rationale="scripted",
            total_allocation_usd=total,
            portfolio_risk_level="medium",
        )
