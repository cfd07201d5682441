"""The commands a new user types, run as real processes on a fresh SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.server import free_port

BIN = Path(sys.executable).parent / "trading-agent"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OPENROUTER_API_KEY", "ASSETS")}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
            "LOG_LEVEL": "WARNING",
            "ADMIN_API_KEY": ADMIN_KEY,
            "COLUMNS": "200",  # rich wraps at 80 columns without a terminal
            **extra,
        }
    )
    return env


def test_db_upgrade_then_decide_once_prints_decision_validation_and_orders(tmp_path: Path) -> None:
    env = _env(tmp_path)
    upgrade = subprocess.run([BIN, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database at revision" in upgrade.stdout

    once = subprocess.run([BIN, "decide", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    out = once.stdout
    for needle in ("SIMULATED", "market", "venue", "model", "decision 1", "decision and validation", "BTC", "orders"):
        assert needle in out, f"{needle!r} missing from:\n{out}"

    as_json = subprocess.run(
        [BIN, "decide", "--once", "--json", "--symbols", "ETH"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert result["id"] == 2 and result["symbols"] == ["ETH"]


def test_a_mainnet_confirmation_that_does_not_say_it_is_refused(tmp_path: Path) -> None:
    """Real money needs LIVE_MAINNET_CONFIRM word for word: anything else stops the start with the reason."""
    env = _env(tmp_path, TRADING_MODE="live", LIVE_MAINNET_CONFIRM="yes")
    run = subprocess.run([BIN, "decide", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "LIVE_MAINNET_CONFIRM must be exactly 'real-money'" in run.stdout + run.stderr


def test_run_serves_decisions_from_a_fresh_start(tmp_path: Path) -> None:
    """`make run`'s promise: the API is up and the history shows decisions soon after start."""
    port = free_port()
    env = _env(tmp_path, API_PORT=str(port))
    proc = subprocess.Popen(
        [BIN, "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60  # a hang guard, not a performance assertion
        decisions: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(decisions) < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/decisions/history",
                    params={"account_id": 1},
                    headers={"X-API-Key": ADMIN_KEY},
                )
                if response.status_code == 200:
                    decisions = response.json()
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert len(decisions) >= 2, "no decisions from the running loop"
        assert all(d["trigger"] == "loop" for d in decisions)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["loop"]["running"] and health["loop"]["cycles"] >= 2
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert "what is real and what is simulated" in output
    assert "DATABASE_URL" in output  # the database part says where its setting came from
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop.
    assert proc.returncode in (0, -15), output[-2000:]
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["decide", "--help"], ["db", "upgrade", "--help"]])
def test_help_works(command: list[str], tmp_path: Path) -> None:
    run = subprocess.run([BIN, *command], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Usage" in run.stdout


def test_decide_once_uses_the_openrouter_compatible_server_it_is_pointed_at(tmp_path: Path) -> None:
    import sqlite3

    from tests.fakes.openrouter_server import FakeOpenRouter, chat_completion, hold_all

    key = "sk-or-v1-cli-test-abcdef0123456789"
    with FakeOpenRouter() as fake:
        fake.reply(chat_completion(hold_all(), model="openai/gpt-5", provider="OpenAI", cost=0.0123), padding="\n\n  ")
        env = _env(tmp_path, OPENROUTER_API_KEY=key, OPENROUTER_BASE_URL=fake.base_url, LLM_MODEL="openai/gpt-5")
        run = subprocess.run(
            [BIN, "decide", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert len(fake.chat_requests) == 1
        assert fake.chat_requests[0].headers.get("authorization") == f"Bearer {key}"
    out = run.stdout
    assert "openrouter: openai/gpt-5" in out and "OPENROUTER_BASE_URL" in out
    assert "tokens 1550" in out and "cost $0.0123" in out
    assert key not in out + run.stderr
    with sqlite3.connect(tmp_path / "agent.db") as db:
        model, tokens, cost, latency = db.execute(
            "select model_served, total_tokens, cost_usd, latency_ms from decisions"
        ).fetchone()
    assert (model, tokens, cost) == ("openai/gpt-5", 1550, 0.0123) and latency > 0


def test_the_offline_agent_starts_without_importing_ccxt() -> None:
    """ccxt (190k objects, 0.8 s to import) is for live market data and `data download` only: the CLI, the app
    and the agent's wiring start without it."""
    probe = "import sys, app.cli, app.main, app.bootstrap; print('ccxt' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
