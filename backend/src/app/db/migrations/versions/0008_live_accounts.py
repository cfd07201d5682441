"""live accounts: the venue network (testnet or mainnet) an account trades on

`accounts.network` is `testnet` or `mainnet` for a live account and null for a paper one. Existing accounts are
paper accounts (this version refused live ones), so they stay null.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases: SQLite's batch mode would copy and drop `accounts`, which every trading
    # table refers to
    op.add_column("accounts", sa.Column("network", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "network")  # SQLite 3.35+ drops a column in place
