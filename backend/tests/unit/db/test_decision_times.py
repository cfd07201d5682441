"""History times are written as pydantic writes the `DecisionResult`'s datetimes, whatever form the row holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter

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
        (datetime(2025, 12, 1, 0, 5, 7, tzinfo=UTC), datetime(2025, 12, 1, 0, 5, 7, tzinfo=UTC)),  # PostgreSQL
        (
            datetime(2025, 12, 1, 3, 5, 7, 5, tzinfo=timezone(timedelta(hours=3))),
            datetime(2025, 12, 1, 0, 5, 7, 5, tzinfo=UTC),
        ),
    ],
)
def test_a_stored_time_reads_as_pydantic_writes_it(stored: str | datetime, meant: datetime) -> None:
    assert _time(stored) == as_pydantic.dump_python(meant, mode="json")
