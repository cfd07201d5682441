"""Decision validation and business rules: the model proposes, this code disposes.

Every asset gets a verdict (accepted, adjusted with reasons, rejected with reasons). A rejected asset falls
back to the conservative action, hold (protective orders stay), marked as a fallback; the model's own
answer is kept beside it. Nothing here throws the model's answer away or raises on a bad decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.symbols import normalise_asset
from app.schemas.trading_decision import (
    AccountContext,
    AssetDecision,
    PositionAdjustment,
    PositionSummary,
    TradingContext,
    TradingDecision,
)
from app.schemas.validation import AssetVerdict, RiskState, RiskValidationResult, ValidationResult
from app.services.llm.risk_rules import check_entry, check_increase, check_stop_change, exposure_block

NEW_MONEY_ACTIONS = ("buy", "sell")
ALLOCATION_TOLERANCE_USD = 0.01


def fallback_hold(asset: str, why: str, position: PositionSummary | None = None) -> AssetDecision:
    """The conservative action: do nothing new, keep any protective orders in place."""
    plan = position.exit_plan if position is not None and position.exit_plan else "Keep protective orders as they are."
    return AssetDecision(
        asset=asset,
        action="hold",
        allocation_usd=0.0,
        exit_plan=plan,
        rationale=f"Fallback to hold: {why}",
        confidence=0.0,
        risk_level="low",
    )


@dataclass
class _Draft:
    """A verdict being built."""

    asset: str
    original: AssetDecision | None
    final: AssetDecision
    reasons: list[str] = field(default_factory=list)
    adjusted: bool = False
    rejected: bool = False

    def reject(self, reason: str, position: PositionSummary | None) -> None:
        self.rejected = True
        self.reasons.append(reason)
        self.final = fallback_hold(self.asset, reason, position)

    def adjust(self, reason: str, **changes: object) -> None:
        self.adjusted = True
        self.reasons.append(reason)
        self.final = self.final.model_copy(update=changes)

    def verdict(self) -> AssetVerdict:
        status = "rejected" if self.rejected else "adjusted" if self.adjusted else "accepted"
        return AssetVerdict(
            asset=self.asset,
            status=status,
            reasons=self.reasons,
            original=self.original,
            final=self.final,
            is_fallback=self.rejected or self.original is None,
        )


def _side_errors(*, is_long: bool, price: float, sl: float | None, tp: float | None, what: str) -> list[str]:
    """Stops sit on the losing side of the price, targets on the winning side."""
    errors = []
    if sl is not None and (sl >= price if is_long else sl <= price):
        errors.append(
            f"{what} stop-loss {sl:g} is on the wrong side of the price {price:g} "
            f"(must be {'below' if is_long else 'above'} it for a {'long' if is_long else 'short'})"
        )
    if tp is not None and (tp <= price if is_long else tp >= price):
        errors.append(
            f"{what} take-profit {tp:g} is on the wrong side of the price {price:g} "
            f"(must be {'above' if is_long else 'below'} it for a {'long' if is_long else 'short'})"
        )
    return errors


class DecisionValidator:
    """Schema-level and business-rule checks of a `TradingDecision` against its `TradingContext`."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {"accepted": 0, "adjusted": 0, "rejected": 0}

    async def validate_decision(
        self, decision: TradingDecision, context: TradingContext, risk_state: RiskState | None = None
    ) -> ValidationResult:
        """Per-asset verdicts for `decision`, plus the decision that may execute. `risk_state` (the day's PnL,
        recent trades, limits) enables the daily-loss, cooldown and reduce-only rules."""
        result = self.validate(decision, context, risk_state)
        for verdict in result.verdicts:
            self._counts[verdict.status] += 1
        return result

    async def apply_risk_checks(
        self, decision: TradingDecision, account_context: AccountContext
    ) -> RiskValidationResult:
        """Account-level limits: per-asset allocation cap and total allocation within the available balance."""
        drafts = [_Draft(d.asset, d, d) for d in decision.decisions]
        errors = self._apply_allocation_limits(drafts, account_context)
        verdicts = [d.verdict() for d in drafts]
        return RiskValidationResult(
            passed=not any(v.status == "rejected" for v in verdicts), verdicts=verdicts, errors=errors
        )

    async def get_validation_metrics(self) -> dict[str, int]:
        return dict(self._counts)

    # ---------------------------------------------------------------------------------------------- core
    def validate(
        self, decision: TradingDecision, context: TradingContext, risk_state: RiskState | None = None
    ) -> ValidationResult:
        positions = {p.symbol: p for p in context.account_state.open_positions}
        drafts: dict[str, _Draft] = {}
        errors: list[str] = []
        dropped = 0  # decisions the answer gave that cannot be acted on: the answer is not valid as given
        for item in decision.decisions:
            try:
                asset = normalise_asset(item.asset)
            except ValueError as exc:
                errors.append(f"dropped a decision: {exc}")
                dropped += 1
                continue
            if asset not in context.symbols:
                errors.append(f"dropped the decision for {item.asset}: not one of the assets {context.symbols}")
                dropped += 1
                continue
            if asset in drafts:
                errors.append(f"dropped a second decision for {asset}: one decision per asset")
                dropped += 1
                continue
            draft = _Draft(asset, item, item.model_copy(update={"asset": asset}))
            drafts[asset] = draft
            self._check_asset(draft, context, positions.get(asset), risk_state)

        for asset in context.symbols:
            if asset not in drafts:
                draft = _Draft(asset, None, fallback_hold(asset, "the model gave no decision", positions.get(asset)))
                draft.reasons.append("no decision from the model for this asset")
                drafts[asset] = draft

        ordered = [drafts[a] for a in context.symbols]
        self._limit_positions(ordered, context)
        errors.extend(self._apply_allocation_limits(ordered, context.account_state))
        total = round(sum(d.final.allocation_usd for d in ordered if d.final.action in NEW_MONEY_ACTIONS), 2)
        proposed = sum(d.allocation_usd for d in decision.decisions if d.action in NEW_MONEY_ACTIONS)
        if abs(proposed - decision.total_allocation_usd) > ALLOCATION_TOLERANCE_USD:
            errors.append(
                f"total_allocation_usd {decision.total_allocation_usd:g} does not equal the sum of the buy/sell "
                f"allocations {proposed:g}; the executable total is {total:g}"
            )
        verdicts = [d.verdict() for d in ordered]
        final = TradingDecision(
            decisions=[v.final for v in verdicts],
            portfolio_rationale=decision.portfolio_rationale,
            total_allocation_usd=total,
            portfolio_risk_level=decision.portfolio_risk_level,
            timestamp=decision.timestamp,
        )
        return ValidationResult(
            is_valid=not dropped and not any(v.status == "rejected" for v in verdicts),
            verdicts=verdicts,
            errors=errors,
            final_decision=final,
        )

    @staticmethod
    def _limit_positions(drafts: list[_Draft], context: TradingContext) -> None:
        """At most the strategy's `max_positions` open at once: the most confident entries go first."""
        limit = context.account_state.active_strategy.max_positions
        open_now = len(context.account_state.open_positions)
        entries = [d for d in drafts if not d.rejected and d.final.action in NEW_MONEY_ACTIONS]
        entries.sort(key=lambda d: -d.final.confidence)
        for index, draft in enumerate(entries):
            if open_now + index >= limit:
                draft.reject(
                    f"the strategy allows {limit} open positions; {open_now} open and "
                    f"{index} more confident entries come first",
                    None,
                )

    def _check_asset(
        self, draft: _Draft, context: TradingContext, position: PositionSummary | None, state: RiskState | None
    ) -> None:
        item = draft.final
        market = context.market_data.assets.get(draft.asset)
        if item.action == "hold":
            if item.allocation_usd:
                draft.adjust("hold commits no money; allocation set to 0", allocation_usd=0.0)
            return
        if market is None:
            if item.action == "close_position" and position is not None:
                return  # closing reduces risk; the venue closes at its own mark without our price
            draft.reject(f"no usable market data for {draft.asset} this cycle", position)
            return
        price = market.current_price
        if item.action in NEW_MONEY_ACTIONS:
            is_long = item.action == "buy"
            if position is not None:
                same = (position.side == "long") == is_long
                draft.reject(
                    f"a {position.side} position is already open; use adjust_position"
                    if same
                    else f"a {position.side} position is open; close it before opening the other side",
                    position,
                )
                return
            if item.allocation_usd <= 0:
                draft.reject(f"{item.action} needs a positive allocation_usd", position)
                return
            if item.sl_price is None:
                draft.reject("a new position needs a protective stop-loss (sl_price)", position)
                return
            problems = _side_errors(is_long=is_long, price=price, sl=item.sl_price, tp=item.tp_price, what="the")
            if problems:
                draft.reject("; ".join(problems), position)
                return
            strategy = context.account_state.active_strategy
            block = exposure_block(draft.asset, strategy, state)
            if block is not None:
                draft.reject(block, position)
                return
            check = check_entry(
                asset=draft.asset,
                is_long=is_long,
                allocation=item.allocation_usd,
                sl=item.sl_price,
                tp=item.tp_price,
                market=market,
                account=context.account_state,
                strategy=strategy,
                state=state,
            )
            if check.reject is not None:
                draft.reject(check.reject, position)
            elif check.changes:
                draft.adjust("; ".join(check.reasons), **check.changes)
            return
        if position is None:
            draft.reject(f"{item.action} needs an open position in {draft.asset}, and there is none", position)
            return
        is_long = position.side == "long"
        if item.allocation_usd:
            draft.adjust(f"{item.action} commits no new allocation; allocation set to 0", allocation_usd=0.0)
        if item.action == "adjust_orders":
            adj = item.order_adjustment
            if adj is None:
                draft.reject("adjust_orders needs order_adjustment", position)
                return
            if adj.cancel_sl and adj.new_sl_price is None:
                draft.reject("cancelling the stop-loss would leave the position unprotected", position)
                return
            problems = _side_errors(
                is_long=is_long,
                price=price,
                sl=adj.new_sl_price if adj.adjust_sl or adj.new_sl_price else None,
                tp=adj.new_tp_price if adj.adjust_tp or adj.new_tp_price else None,
                what="the new",
            )
            if adj.adjust_sl and adj.new_sl_price is None:
                problems.append("adjust_sl is set but new_sl_price is missing")
            if adj.adjust_tp and adj.new_tp_price is None and not adj.cancel_tp:
                problems.append("adjust_tp is set but new_tp_price is missing")
            if problems:
                draft.reject("; ".join(problems), position)
                return
            if adj.new_sl_price is not None:
                self._check_stop(draft, context, position, price, adj.new_sl_price, "order_adjustment")
        elif item.action == "adjust_position":
            padj = item.position_adjustment
            if padj is None:
                draft.reject("adjust_position needs position_adjustment", position)
                return
            problems = _side_errors(
                is_long=is_long, price=price, sl=padj.new_sl_price, tp=padj.new_tp_price, what="the new"
            )
            if problems:
                draft.reject("; ".join(problems), position)
                return
            if padj.new_sl_price is not None:
                self._check_stop(draft, context, position, price, padj.new_sl_price, "position_adjustment")
                if draft.rejected:
                    return
            if padj.adjustment_type == "increase":
                block = exposure_block(draft.asset, context.account_state.active_strategy, state)
                if block is not None:
                    draft.reject(block, position)
                    return
                current = draft.final.position_adjustment  # with the stop `_check_stop` may have tightened
                assert current is not None
                self._cap_increase(draft, context.account_state, position, current)
                grown = draft.final.position_adjustment
                if draft.rejected or grown is None:
                    return
                check = check_increase(
                    asset=draft.asset,
                    position=position,
                    amount=grown.adjustment_amount_usd,
                    sl=grown.new_sl_price if grown.new_sl_price is not None else position.stop_loss,
                    market=market,
                    account=context.account_state,
                    strategy=context.account_state.active_strategy,
                    state=state,
                )
                if check.reject is not None:
                    draft.reject(check.reject, position)
                elif check.changes:
                    draft.adjust("; ".join(check.reasons), position_adjustment=grown.model_copy(update=check.changes))

    @staticmethod
    def _check_stop(
        draft: _Draft, context: TradingContext, position: PositionSummary, price: float, sl: float, field_name: str
    ) -> None:
        """A stop moved on an open position: within the strategy's widest stop and inside liquidation."""
        check = check_stop_change(
            asset=draft.asset,
            is_long=position.side == "long",
            price=price,
            sl=sl,
            liquidation=position.liquidation_price,
            strategy=context.account_state.active_strategy,
        )
        if check.reject is not None:
            draft.reject(check.reject, position)
        elif check.changes:
            current = getattr(draft.final, field_name)
            draft.adjust("; ".join(check.reasons), **{field_name: current.model_copy(update=check.changes)})

    @staticmethod
    def _cap_increase(
        draft: _Draft, account: AccountContext, position: PositionSummary, padj: PositionAdjustment
    ) -> None:
        """An increase adds margin to the position: the position as a whole stays within `max_position_size`."""
        room = round(account.max_position_size - position.margin_usd - 0.005, 2)  # floored to the cent
        if room <= 0:
            draft.reject(
                f"the {draft.asset} position already uses {position.margin_usd:.2f} USD of margin, the account's "
                f"max position size is {account.max_position_size:g} USD; it cannot be increased",
                position,
            )
        elif padj.adjustment_amount_usd > room:
            draft.adjust(
                f"increase of {padj.adjustment_amount_usd:g} USD would take the position above the account's max "
                f"position size {account.max_position_size:g} USD; reduced to {room:g} USD",
                position_adjustment=padj.model_copy(update={"adjustment_amount_usd": room}),
            )

    def _apply_allocation_limits(self, drafts: list[_Draft], account: AccountContext) -> list[str]:
        """Clamp each new position to `max_position_size`, then scale all of them to the available balance
        (margin plus the entry's taker fee)."""
        errors: list[str] = []
        leverage = account.active_strategy.risk_parameters.max_leverage
        fee_rate = account.taker_fee_bps / 10_000.0
        entries = [d for d in drafts if not d.rejected and d.final.action in NEW_MONEY_ACTIONS]
        for draft in entries:
            if account.max_position_size <= 0:
                draft.reject(
                    f"the account's max position size is {account.max_position_size:g} USD: no new positions", None
                )
            elif draft.final.allocation_usd > account.max_position_size:
                draft.adjust(
                    f"allocation {draft.final.allocation_usd:g} USD above the account's max position size "
                    f"{account.max_position_size:g} USD; clamped",
                    allocation_usd=account.max_position_size,
                )
        entries = [d for d in entries if not d.rejected]
        needed = sum(d.final.allocation_usd * (1 + leverage * fee_rate) for d in entries)
        available = max(0.0, account.available_balance)
        if needed > available + ALLOCATION_TOLERANCE_USD:
            scale = available / needed if needed else 0.0
            errors.append(
                f"new allocations need {needed:.2f} USD with fees but {available:.2f} USD is available; "
                f"scaled by {scale:.4f}"
            )
            for draft in entries:
                new_allocation = round(draft.final.allocation_usd * scale - 0.005, 2)
                if new_allocation <= 0:
                    draft.reject("no available balance left for this position", None)
                else:
                    draft.adjust(
                        f"allocation scaled from {draft.final.allocation_usd:g} to {new_allocation:g} USD to fit "
                        f"the available balance",
                        allocation_usd=new_allocation,
                    )
        return errors
