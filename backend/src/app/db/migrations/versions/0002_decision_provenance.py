"""decision provenance in its own table

A decision's context snapshot (about 28 kB) and prompt (about 8 kB) were most of its row. Every list of
decisions walked past them: SQLite reads a row's overflow pages in order up to the last column asked for, so a
page of 50 decisions cost 2.6 times what it does once they live apart (0.70 against 0.27 ms, a synthetic
test). They are read one decision at a time (what the model saw), never in lists.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 01:00:00
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_MOVED = ("context_snapshot", "prompt")


def _can_drop_columns() -> bool:
    """SQLite drops a column (rewriting the rows without it) from 3.35 on; older ones keep it, emptied."""
    return op.get_bind().dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35)


def upgrade() -> None:
    op.create_table(
        "decision_provenance",
        sa.Column("decision_id", sa.Integer(), nullable=False),
        sa.Column("context_snapshot", sa.JSON(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_decision_provenance_decision_id_decisions")
        ),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_decision_provenance")),
    )
    op.execute(
        "INSERT INTO decision_provenance (decision_id, context_snapshot, prompt) "
        "SELECT id, context_snapshot, prompt FROM decisions WHERE context_snapshot IS NOT NULL OR prompt IS NOT NULL"
    )
    if _can_drop_columns():
        for column in _MOVED:
            op.drop_column("decisions", column)
    else:
        op.execute("UPDATE decisions SET context_snapshot = NULL, prompt = NULL")


def downgrade() -> None:
    if _can_drop_columns():
        op.add_column("decisions", sa.Column("context_snapshot", sa.JSON(), nullable=True))
        op.add_column("decisions", sa.Column("prompt", sa.Text(), nullable=True))
    for column in _MOVED:
        op.execute(
            f"UPDATE decisions SET {column} = (SELECT p.{column} FROM decision_provenance p "
            "WHERE p.decision_id = decisions.id)"
        )
    op.drop_table("decision_provenance")
