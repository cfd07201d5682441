"""strict JSON in each decision's stored decisions and validation

History pages write a decision's stored JSON (the executed decision, the model's decision, the validation)
out as it is stored, unparsed. Rows written before the JSON columns were written by orjson may hold `NaN` or
`Infinity`, which the standard library wrote and which are not JSON (a client's parser refuses the whole page).
Looking for them on every read took a sixth of a history request's CPU; they are rewritten here once instead,
as every row since is written: NaN and infinities as null. Only SQLite can hold them (PostgreSQL's JSON types
refuse them). Text that does not parse is left as it is.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import json

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("final_decision", "parsed_decision", "validation_result")
_BATCH = 500


def _strict(text: str | None) -> str | None:
    """The same JSON with NaN and infinities as null (orjson writes them so), or the text as it was."""
    if text is None:
        return None
    try:
        return orjson.dumps(json.loads(text)).decode()
    except (ValueError, TypeError):  # not JSON; or what orjson cannot write (an integer past 64 bits, a lone
        return text  # surrogate): left as it was


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # GLOB is case-sensitive (LIKE is not): "financial" is not a suspect.
    suspect = " OR ".join(f"{c} GLOB '*NaN*' OR {c} GLOB '*Infinity*'" for c in _COLUMNS)
    select = sa.text(
        f"SELECT id, {', '.join(_COLUMNS)} FROM decisions WHERE id > :after AND ({suspect}) ORDER BY id LIMIT {_BATCH}"
    )
    update = sa.text(f"UPDATE decisions SET {', '.join(f'{c} = :{c}' for c in _COLUMNS)} WHERE id = :id")
    after = 0
    while rows := bind.execute(select, {"after": after}).all():
        bind.execute(
            update, [{"id": r[0], **{c: _strict(v) for c, v in zip(_COLUMNS, r[1:], strict=True)}} for r in rows]
        )
        after = rows[-1][0]


def downgrade() -> None:
    """Nothing to undo: null was always how these values were read."""
