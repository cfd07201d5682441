"""LLM settings changed at run time: the default model switched through the API, the OpenRouter key rotated

`POST /api/v1/decisions/models/switch` (default model) held its choice in memory only: a restart lost it. An
OpenRouter key set through the API or the CLI is kept here too, encrypted with the agent's SecretBox (never in
clear). One row per setting (`default_model`, `openrouter_api_key`); `detail` says what a value was set against
(the configured LLM_MODEL and endpoint for a model, the key's fingerprint for a key).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_llm_settings")),
    )


def downgrade() -> None:
    op.drop_table("llm_settings")
