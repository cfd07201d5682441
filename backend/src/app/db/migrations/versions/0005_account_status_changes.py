"""account status changes: the account's history of pause, resume, reduce and halt, with the reason given

The reason sent with `POST /accounts/{id}/pause|resume|reduce|halt` was thrown away. Each change is kept here
(from and to, the reason, the key's prefix, the request id of its audit entry, the wall-clock time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 07:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_status_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("key_prefix", sa.String(length=16), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_status_changes_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_status_changes")),
    )
    op.create_index(
        op.f("ix_account_status_changes_account_id"), "account_status_changes", ["account_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_account_status_changes_account_id"), table_name="account_status_changes")
    op.drop_table("account_status_changes")
