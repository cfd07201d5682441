"""alerts: what went wrong or needs a trader, once per kind, subject and quiet period

`alerts` keeps each alert (kind, subject, severity, title, message, the account it concerns if any), when it began
and last repeated (wall clock), how many repeats the quiet period absorbed, and what became of its delivery.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("first_at", _TIME, nullable=False),
        sa.Column("last_at", _TIME, nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("delivery", sa.Text(), nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_account_id"), "alerts", ["account_id"], unique=False)
    op.create_index("ix_alerts_kind_subject_first", "alerts", ["kind", "subject", "first_at"], unique=False)
    op.create_index("ix_alerts_first_at", "alerts", ["first_at"], unique=False)


def downgrade() -> None:
    op.drop_table("alerts")
