"""alert senders: who sends a pending alert, and until when, across processes

- `alerts.sending_by`, `alerts.sending_until`: the process sending a `pending` alert claims it until a time (wall
  clock) and renews the claim while the send runs. Another process sends it again only once the claim has ended (its
  sender was killed), never while its sender is alive. Rows from before have no claim: whoever resends first takes
  them.
- `ix_alerts_pending`: the pending alerts by the end of their claim (the few rows a resender looks at, among all the
  delivered ones).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PENDING = "delivery = 'pending'"


def upgrade() -> None:
    op.add_column("alerts", sa.Column("sending_by", sa.String(length=120), nullable=True))
    op.add_column("alerts", sa.Column("sending_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_alerts_pending",
        "alerts",
        ["sending_until"],
        unique=False,
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_alerts_pending", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("sending_until")
        batch.drop_column("sending_by")
