"""History times are written as pydantic writes the `DecisionResult`'s datetimes, whatever form the row holds;
migration 0003 makes the stored decision JSON strict, or leaves what it cannot read as it was."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import TypeAdapter

import app.db
from app.db.repositories.decisions import _time

as_pydantic = TypeAdapter(datetime)


@pytest.mark.parametrize(
    ("stored", "meant"),
    [
        ("2025-12-01 00:05:00.000000", datetime(2025, 12, 1, 0, 5, tzinfo=UTC)),  # SQLite, as SQLAlchemy stores it
        ("2025-12-01 23:59:59.120000", datetime(2025, 12, 1, 23, 59, 59, 120000, tzinfo=UTC)),
        ("2025-12-01 00:05:00.000001", datetime(2025, 12, 1, 0, 5, 0, 1, tzinfo=UTC)),
        ("2025-12-01 00:05:00", datetime(2025, 12, 1, 0, 5, tzinfo=UTC)),  # written by hand or by SQL
        ("2025-12-01T02:05:00+02:00", datetime(2025, 12, 1, 0, 5, tzinfo=UTC)),
        ("2025-12-01 02:05:00.123+02", datetime(2025, 12, 1, 0, 5, 0, 123000, tzinfo=UTC)),  # 26 long, not ours
        ("2025-12-01 00:05:00.12345Z", datetime(2025, 12, 1, 0, 5, 0, 123450, tzinfo=UTC)),
        (datetime(2025, 12, 1, 0, 5, 7, tzinfo=UTC), datetime(2025, 12, 1, 0, 5, 7, tzinfo=UTC)),  # PostgreSQL
        (
            datetime(2025, 12, 1, 3, 5, 7, 5, tzinfo=timezone(timedelta(hours=3))),
            datetime(2025, 12, 1, 0, 5, 7, 5, tzinfo=UTC),
        ),
    ],
)
def test_a_stored_time_reads_as_pydantic_writes_it(stored: str | datetime, meant: datetime) -> None:
    assert _time(stored) == as_pydantic.dump_python(meant, mode="json")


def _migration_0003() -> ModuleType:
    path = Path(app.db.__file__).parent / "migrations" / "versions" / "0003_strict_decision_json.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BIG = '{"big": 123456789012345678901234567890, "x": NaN}'  # orjson cannot write the integer
LONE = '{"lone": "\\ud83d", "x": NaN}'  # nor a lone surrogate


@pytest.mark.parametrize(
    ("stored", "strict"),
    [
        ('{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN stays"}', '{"a":null,"b":[null,null],"c":"NaN stays"}'),
        ("not JSON with NaN", "not JSON with NaN"),  # left as it was
        (BIG, BIG),
        (LONE, LONE),
        (None, None),
    ],
)
def test_migration_0003_makes_stored_json_strict_or_leaves_it(stored: str | None, strict: str | None) -> None:
    assert _migration_0003()._strict(stored) == strict
