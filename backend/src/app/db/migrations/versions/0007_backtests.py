"""backtests, arenas and the model answer cache

`backtest_runs` keeps each backtest or arena (settings, data and code fingerprints, progress, figures, equity);
`backtest_records` its decisions, orders, fills and funding in order; `model_answers` the answers models gave to
backtest prompts, keyed by model, prompt and parameters, so a rerun makes no model call.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backtest_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("data_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("trade_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("cycles_total", sa.Integer(), nullable=False),
        sa.Column("cycles_done", sa.Integer(), nullable=False),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=True),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("equity", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["backtest_runs.id"], name=op.f("fk_backtest_runs_parent_id_backtest_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_runs")),
    )
    op.create_index(op.f("ix_backtest_runs_parent_id"), "backtest_runs", ["parent_id"], unique=False)
    op.create_table(
        "backtest_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("asset", sa.String(length=32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["backtest_runs.id"], name=op.f("fk_backtest_records_run_id_backtest_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_records")),
    )
    op.create_index("ix_backtest_records_run_kind", "backtest_records", ["run_id", "kind", "seq"], unique=False)
    op.create_table(
        "model_answers",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_model_answers")),
    )


def downgrade() -> None:
    op.drop_table("model_answers")
    op.drop_index("ix_backtest_records_run_kind", table_name="backtest_records")
    op.drop_table("backtest_records")
    op.drop_index(op.f("ix_backtest_runs_parent_id"), table_name="backtest_runs")
    op.drop_table("backtest_runs")
