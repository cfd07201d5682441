"""workers: decision cycles as jobs, many processes on one database

- `decisions`: a (account, candle) is decided by the loop at most once. A partial unique index on
  (account_id, cycle_time) over the loop's executed decisions (`trigger = 'loop'`, not a shadow, not `interrupted`:
  an interrupted candle may be decided again). Rows an older version stored twice for one candle (a restart after a
  strategy switch inside the candle) keep their content; all but the first are relabelled `loop-repeat`.
- `account_leases`: which process holds an account now (deciding it or sending its orders), until when (wall clock),
  and how many times it was taken (`version`): the per-account locks across processes; a lease of a killed process
  ends at `until`.
- `rate_buckets`: leaky buckets shared by every process (per-key API changes, forced refreshes, model requests).
- `llm_slots`: the model calls in flight, across processes (the global concurrency cap), each leased until a time.
- `worker_stats`: each worker process's counters and heartbeat, for `/metrics` and `/health`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)
_LOOP_CYCLE = "trigger = 'loop' AND shadow_of IS NULL AND status <> 'interrupted'"


def upgrade() -> None:
    op.execute(
        "UPDATE decisions SET trigger = 'loop-repeat' WHERE id IN ("
        " SELECT d.id FROM decisions d WHERE d.trigger = 'loop' AND d.shadow_of IS NULL AND d.status <> 'interrupted'"
        " AND EXISTS (SELECT 1 FROM decisions e WHERE e.account_id = d.account_id AND e.cycle_time = d.cycle_time"
        " AND e.trigger = 'loop' AND e.shadow_of IS NULL AND e.status <> 'interrupted' AND e.id < d.id))"
    )
    op.create_index(
        "uq_decisions_loop_cycle",
        "decisions",
        ["account_id", "cycle_time"],
        unique=True,
        postgresql_where=sa.text(_LOOP_CYCLE),
        sqlite_where=sa.text(_LOOP_CYCLE),
    )
    op.create_table(
        "account_leases",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("until", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "purpose", name=op.f("pk_account_leases")),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "llm_slots",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=True),
        sa.Column("until", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_llm_slots")),
    )
    op.create_table(
        "worker_stats",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=120), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.Column("stopped_at", _TIME, nullable=True),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("cpu_s", sa.Float(), nullable=False),
        sa.Column("decisions_per_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_stats")),
    )


def downgrade() -> None:
    op.drop_table("worker_stats")
    op.drop_table("llm_slots")
    op.drop_table("rate_buckets")
    op.drop_table("account_leases")
    op.drop_index("uq_decisions_loop_cycle", table_name="decisions")
    op.execute("UPDATE decisions SET trigger = 'loop' WHERE trigger = 'loop-repeat'")
