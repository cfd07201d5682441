"""`trading-agent data import DIR` through Typer's test runner on a temporary SQLite database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.commands.data import data_app

runner = CliRunner()
HEADER = "timestamp_ms,open,high,low,close,volume"
T0_MS = 1_741_248_000_000  # 2025-03-06 08:00 UTC
M5 = 300_000


def write(path: Path, lines: list[str], header: str = HEADER) -> None:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "market"
    folder.mkdir()
    write(
        folder / "BTC_USDT-5m.csv",
        [f"{T0_MS + i * M5},{100 + i},{102 + i},{99 + i},{101 + i},{i + 1}" for i in range(48)],
    )
    write(folder / "ETH_USDT-5m.csv", [f"{T0_MS + i * M5},{10 + i},{12 + i},{9 + i},{11 + i},1.5" for i in range(24)])
    write(folder / "BTC_USDT-mark-8h.csv", [f"{T0_MS},1,1,1,1,0"])
    funding = [f"{T0_MS + 1},0.0001", f"{T0_MS + 8 * 3_600_000 + 3},0.0002"]
    write(folder / "BTC_USDT-funding.csv", funding, header="timestamp_ms,funding_rate")
    return folder


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "db" / "trading.db"
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("COLUMNS", "200")  # the summary table on one line per row
    return path


def counts(path: Path) -> dict[tuple[str, str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT source, symbol, timeframe, count(*) FROM candles GROUP BY 1, 2, 3").fetchall()
        funding = conn.execute("SELECT source, symbol, count(*) FROM funding_rates GROUP BY 1, 2").fetchall()
    return {(s, a, tf): n for s, a, tf, n in rows} | {(s, a, "funding"): n for s, a, n in funding}


def table_row(output: str, asset: str, timeframe: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.split()[:2] == [asset, timeframe])


def test_import_and_reimport_are_idempotent(csv_dir: Path, database: Path) -> None:
    first = runner.invoke(data_app, ["import", str(csv_dir)])
    assert first.exit_code == 0, first.output
    expected = {("replay", "BTC", "5m"): 48, ("replay", "ETH", "5m"): 24, ("replay", "BTC", "funding"): 2}
    assert counts(database) == expected
    assert table_row(first.stdout, "BTC", "5m") == [
        "BTC",
        "5m",
        "48",
        "48",
        "2025-03-06",
        "08:00",
        "2025-03-06",
        "11:55",
        "0",
    ]
    assert table_row(first.stdout, "BTC", "funding")[:4] == ["BTC", "funding", "2", "2"]

    second = runner.invoke(data_app, ["import", str(csv_dir)])
    assert second.exit_code == 0, second.output
    assert counts(database) == expected
    assert table_row(second.stdout, "BTC", "5m")[2:4] == ["48", "0"]
    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT funding_time FROM funding_rates ORDER BY funding_time").fetchall()
    assert [t[:19] for (t,) in stored] == ["2025-03-06 08:00:00", "2025-03-06 16:00:00"]  # the ms jitter is gone


def test_assets_timeframes_and_source(csv_dir: Path, database: Path) -> None:
    result = runner.invoke(
        data_app, ["import", str(csv_dir), "--source", "binanceusdm", "--assets", "btc", "--timeframes", "15m,1h"]
    )
    assert result.exit_code == 0, result.output
    assert counts(database) == {
        ("binanceusdm", "BTC", "15m"): 16,
        ("binanceusdm", "BTC", "1h"): 4,
        ("binanceusdm", "BTC", "funding"): 2,
    }
    assert table_row(result.stdout, "BTC", "1h")[2:4] == ["4", "4"]
    assert "imported as 'binanceusdm'" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--assets", "SOL"], "no CSV files for SOL"),
        (["--timeframes", "7m"], "no BTC 7m candles"),
        (["--timeframes", "5x"], "not a timeframe"),
    ],
)
def test_bad_options_exit_2(csv_dir: Path, database: Path, args: list[str], message: str) -> None:
    result = runner.invoke(data_app, ["import", str(csv_dir), *args])
    assert result.exit_code == 2 and message in result.output
    assert not database.exists()  # nothing touched before the files are known to be good


def test_missing_folder_and_bad_csv_exit_2(tmp_path: Path, csv_dir: Path, database: Path) -> None:
    missing = runner.invoke(data_app, ["import", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output
    lines = (csv_dir / "ETH_USDT-5m.csv").read_text().splitlines()
    lines[5] = f"{T0_MS + 4 * M5},14,16,15.5,15,1.5"  # low above the open and the close
    (csv_dir / "ETH_USDT-5m.csv").write_text("\n".join(lines) + "\n")
    bad = runner.invoke(data_app, ["import", str(csv_dir)])
    assert bad.exit_code == 2
    assert "ETH_USDT-5m.csv: line 6: OHLC violation" in " ".join(bad.output.split())
    assert not database.exists()


def test_summary_counts_gaps_in_the_files(csv_dir: Path, database: Path) -> None:
    lines = (csv_dir / "ETH_USDT-5m.csv").read_text().splitlines()
    del lines[10:13]  # three candles missing in one hole
    (csv_dir / "ETH_USDT-5m.csv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(data_app, ["import", str(csv_dir), "--assets", "ETH"])
    assert result.exit_code == 0, result.output
    assert (
        table_row(result.stdout, "ETH", "5m")[2:4] == ["21", "21"] and table_row(result.stdout, "ETH", "5m")[-1] == "1"
    )
