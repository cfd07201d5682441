"""decision outcomes and A/B experiments

Nothing recorded whether a decision turned out right. `decision_outcomes` keeps, per asset decision and horizon,
what followed (return of the direction it left, excursions, stop or target first); `decision_trade_outcomes` the
realized PnL (fees and funding) of each position a decision opened. `experiments`, `experiment_variants` and
`experiment_assignments` hold A/B experiments. `decisions` gains each asset's price and position as the decision
saw them (`asset_state`), and the experiment, variant and (for a shadow decision) the executed decision it
shadows: plain integer columns, since SQLite adds a column with a foreign key only by rebuilding the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("decisions", sa.Column("asset_state", sa.JSON(), nullable=True))
    op.add_column("decisions", sa.Column("experiment_id", sa.Integer(), nullable=True))
    op.add_column("decisions", sa.Column("variant_id", sa.Integer(), nullable=True))
    op.add_column("decisions", sa.Column("shadow_of", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_decisions_shadow_of"), "decisions", ["shadow_of"], unique=False)
    op.create_index(op.f("ix_decisions_variant_id"), "decisions", ["variant_id"], unique=False)

    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignment", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=False),
        sa.Column("confidence_level", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("accounts", sa.JSON(), nullable=False),
        sa.Column("owner_account_id", sa.Integer(), nullable=True),
        sa.Column("expected_daily_cost_usd", sa.Float(), nullable=False),
        sa.Column("started_cycle", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("stopped_at", _TIME, nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_account_id"], ["accounts.id"], name=op.f("fk_experiments_owner_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_table(
        "experiment_variants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_control", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("prompt_version", sa.String(length=32), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("daily_budget_usd", sa.Float(), nullable=True),
        sa.Column("expected_daily_cost_usd", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=op.f("fk_experiment_variants_experiment_id_experiments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_variants")),
        sa.UniqueConstraint("experiment_id", "name", name="uq_experiment_variants_name"),
    )
    op.create_index(
        op.f("ix_experiment_variants_experiment_id"), "experiment_variants", ["experiment_id"], unique=False
    )
    op.create_table(
        "experiment_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=op.f("fk_experiment_assignments_experiment_id_experiments")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_experiment_assignments_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["experiment_variants.id"],
            name=op.f("fk_experiment_assignments_variant_id_experiment_variants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_assignments")),
        sa.UniqueConstraint("experiment_id", "account_id", name="uq_experiment_assignments_key"),
    )
    op.create_index(
        op.f("ix_experiment_assignments_account_id"), "experiment_assignments", ["account_id"], unique=False
    )

    op.create_table(
        "decision_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("asset", sa.String(length=32), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("cycle_time", _TIME, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("variant_id", sa.Integer(), nullable=True),
        sa.Column("is_shadow", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("entry_price", sa.Float(), nullable=False),
        sa.Column("stop_price", sa.Float(), nullable=True),
        sa.Column("target_price", sa.Float(), nullable=True),
        sa.Column("exit_price", sa.Float(), nullable=False),
        sa.Column("market_return", sa.Float(), nullable=False),
        sa.Column("direction_return", sa.Float(), nullable=False),
        sa.Column("max_adverse", sa.Float(), nullable=True),
        sa.Column("max_favourable", sa.Float(), nullable=True),
        sa.Column("first_hit", sa.String(length=8), nullable=True),
        sa.Column("first_hit_at", _TIME, nullable=True),
        sa.Column("hit", sa.Boolean(), nullable=True),
        sa.Column("evaluated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_decision_outcomes_decision_id_decisions")
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_decision_outcomes_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_outcomes")),
        sa.UniqueConstraint("decision_id", "asset", "horizon", name="uq_decision_outcomes_key"),
    )
    op.create_index(
        "ix_decision_outcomes_account_cycle", "decision_outcomes", ["account_id", "cycle_time"], unique=False
    )
    op.create_index(
        "ix_decision_outcomes_experiment", "decision_outcomes", ["experiment_id", "variant_id"], unique=False
    )
    op.create_table(
        "decision_trade_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("position_id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("asset", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("variant_id", sa.Integer(), nullable=True),
        sa.Column("realized_pnl", sa.Float(), nullable=False),
        sa.Column("fees", sa.Float(), nullable=False),
        sa.Column("funding", sa.Float(), nullable=False),
        sa.Column("net_pnl", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("exit_reason", sa.String(length=16), nullable=True),
        sa.Column("opened_at", _TIME, nullable=False),
        sa.Column("closed_at", _TIME, nullable=False),
        sa.Column("evaluated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["position_id"], ["positions.id"], name=op.f("fk_decision_trade_outcomes_position_id_positions")
        ),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_decision_trade_outcomes_decision_id_decisions")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_decision_trade_outcomes_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_trade_outcomes")),
        sa.UniqueConstraint("position_id", name=op.f("uq_decision_trade_outcomes_position_id")),
    )
    op.create_index(
        op.f("ix_decision_trade_outcomes_decision_id"), "decision_trade_outcomes", ["decision_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_decision_trade_outcomes_decision_id"), table_name="decision_trade_outcomes")
    op.drop_table("decision_trade_outcomes")
    op.drop_index("ix_decision_outcomes_experiment", table_name="decision_outcomes")
    op.drop_index("ix_decision_outcomes_account_cycle", table_name="decision_outcomes")
    op.drop_table("decision_outcomes")
    op.drop_index(op.f("ix_experiment_assignments_account_id"), table_name="experiment_assignments")
    op.drop_table("experiment_assignments")
    op.drop_index(op.f("ix_experiment_variants_experiment_id"), table_name="experiment_variants")
    op.drop_table("experiment_variants")
    op.drop_table("experiments")
    op.drop_index(op.f("ix_decisions_variant_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_shadow_of"), table_name="decisions")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch rebuild of `decisions` would break the foreign keys
    # that point at it.
    for column in ("shadow_of", "variant_id", "experiment_id", "asset_state"):
        op.drop_column("decisions", column)
