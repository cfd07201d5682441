"""`trading-agent arena` as a user types it, offline (the rule baseline with two strategies) on simulated history
and a fresh SQLite file: the windows chosen before the runs, the leaderboard printed, the arena and its entrants'
backtests stored; a period too short for one window is refused before anything runs or is stored."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from itertools import pairwise
from pathlib import Path

import pytest

from tests.e2e.test_cli import BIN, _env

CAP = ("--max-cost", "0.05")
ENTRANTS = ("baseline · conservative", "baseline · aggressive")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, "arena", *args], env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )


def _rows(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "agent.db") as db:
        return db.execute(query).fetchall()


def test_arena_of_two_strategies_prints_the_leaderboard_and_stores_the_arena(tmp_path: Path) -> None:
    done = run(
        tmp_path,
        *("--models", "baseline", "--strategies", "conservative,aggressive"),
        *("--windows", "3", "--window-days", "3", "--data", "simulated"),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "windows, chosen from BTC's 1h closes before any entrant runs:" in out, out
    table = out[out.index("2 entrants on 3 windows;") :]  # the leaderboard, after the runs
    header = next(line for line in table.splitlines() if line.startswith("rank"))
    for column in ("entrant", "return", "Sharpe", "max drawdown", "vs buy-and-hold", "vs baseline", "cost USD"):
        assert column in header, header
    rows = {label: next(line for line in table.splitlines() if f" {label} " in f" {line} ") for label in ENTRANTS}
    assert "(baseline)" in rows["baseline · conservative"]
    assert all(line.rstrip().endswith("0%") for line in rows.values())  # no error, no fallback

    ((arena_id, status, config_text, summary_text, total, cycles, fingerprint),) = _rows(
        tmp_path,
        "select id, status, config, summary, cycles_total, cycles_done, data_fingerprint from backtest_runs "
        "where kind = 'arena'",
    )
    assert status == "done" and total == cycles == 2 * 3 * 72 and len(fingerprint) == 64
    config, summary = json.loads(config_text), json.loads(summary_text)
    assert [e["label"] for e in config["entrants"]] == list(ENTRANTS) and config["baseline"] == ENTRANTS[0]
    windows = config["windows"]
    assert len(windows) == 3 and {w["regime"] for w in windows} == {"up", "down", "sideways"}
    assert all(a["end"] < b["start"] for a, b in pairwise(windows))
    standings = summary["leaderboard"]["standings"]
    assert sorted(s["label"] for s in standings) == sorted(ENTRANTS)
    assert all(s["windows"] == 3 and s["cost_usd"] == 0.0 for s in standings)
    assert summary["windows_complete"] == [0, 1, 2]

    children = _rows(
        tmp_path, f"select label, status, config from backtest_runs where parent_id = {arena_id} order by id"
    )
    assert len(children) == 6 and {status for _, status, _ in children} == {"done"}
    for index, window in enumerate(windows):  # every entrant ran on exactly the chosen window
        for label in ENTRANTS:
            (child,) = [json.loads(c) for name, _, c in children if name == f"{label} · window {index + 1}"]
            assert (child["start"], child["end"]) == (window["start"], window["end"])
    assert f"arena run {arena_id}: 3 of 3 windows" in out


def test_a_period_too_short_for_a_window_is_refused_before_anything_runs(tmp_path: Path) -> None:
    refused = run(
        tmp_path,
        *("--models", "baseline", "--windows", "2", "--window-days", "30", "--data", "simulated"),
        *("--from", "2020-02-01", "--to", "2020-02-20"),
    )
    assert refused.returncode == 2, refused.stdout
    assert "no window of 30 days" in refused.stderr, refused.stderr
    assert _rows(tmp_path, "select count(*) from backtest_runs") == [(0,)]


def test_a_model_entrant_pays_once_and_a_rerun_asks_no_model(tmp_path: Path) -> None:
    from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, hold_all, model_entry

    model = "test/holder"
    arena = ("--models", model, "--windows", "2", "--window-days", "1", "--data", "simulated")
    with FakeOpenRouter(models=[model_entry(model, ["response_format", "temperature"])]) as fake:
        fake.responder = lambda body: Scripted(200, chat_completion(hold_all(), model=body["model"], cost=0.001))
        env = _env(tmp_path, OPENROUTER_API_KEY="sk-or-v1-arena-test-0123456789", OPENROUTER_BASE_URL=fake.base_url)

        def arena_run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BIN, "arena", *arena], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
            )

        first = arena_run()
        assert first.returncode == 0, first.stderr + first.stdout
        asked = len(fake.chat_requests)
        assert asked == 2 * 24  # one answer per cycle of each window
        again = arena_run()
        assert again.returncode == 0, again.stderr + again.stdout
        assert len(fake.chat_requests) == asked  # every answer came from the cache

    costs = [
        {s["label"]: s["cost_usd"] for s in json.loads(summary)["leaderboard"]["standings"]}
        for (summary,) in _rows(tmp_path, "select summary from backtest_runs where kind = 'arena' order by id")
    ]
    label = f"{model} · conservative"
    assert costs[0][label] == pytest.approx(0.048) and costs[1][label] == 0.0
    assert costs[0]["baseline · conservative"] == 0.0
    ((first_summary,),) = _rows(tmp_path, "select summary from backtest_runs where kind = 'arena' order by id limit 1")
    holder = next(s for s in json.loads(first_summary)["leaderboard"]["standings"] if s["label"] == label)
    assert holder["total_return"]["value"] == 0.0  # it held: the balance never moved


def test_an_arena_past_its_cost_cap_stops_with_the_reason(tmp_path: Path) -> None:
    from tests.fakes.openrouter_server import FakeOpenRouter, model_entry

    model = "test/pricey"
    with FakeOpenRouter(models=[model_entry(model, ["response_format"], prompt_per_m=1000.0)]) as fake:
        env = _env(tmp_path, OPENROUTER_API_KEY="sk-or-v1-arena-test-0123456789", OPENROUTER_BASE_URL=fake.base_url)
        stopped = subprocess.run(
            [BIN, "arena", "--models", model, "--windows", "1", "--window-days", "1", "--data", "simulated", *CAP],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert not fake.chat_requests  # refused before any model call
    assert stopped.returncode == 1, stopped.stderr + stopped.stdout
    assert "arena stopped: test/pricey · conservative on window 1: estimated model cost" in stopped.stdout
    ((status, error),) = _rows(tmp_path, "select status, error from backtest_runs where kind = 'arena'")
    assert status == "stopped" and "above --max-cost" in error
