"""The README's "Dry run against the fakes" (## Live trading), followed as written, each step a real process or a
real HTTP call: the standalone fake Binance USD-M with a position opened by hand, `trading-agent run` with the
README's environment, then the README's API calls (create the account, store the fake's credentials, ask for a
decision, list the positions, halt). The fake's printed lines must show what the README shows: the position adopted
and given a STOP_MARKET, then the halt's MARKET close filled.

Two departures, both to run beside other tests: the ports are free ones instead of 9100 and 8000 (`--port` for the
fake, API_PORT for the agent), and the agent runs in a temporary directory instead of `backend/`, so its default
database (`./data/`, SQLite) and secret key file are the test's, not the checkout's. SQLite only: the README's dry
run uses the default database.

The README's expected output needs the model to hold the adopted position. The default (baseline) model closes it
when the trend is down at that moment (the fake's prices follow the wall clock), so the first test adds a model that
holds (a fake OpenRouter) and checks the README's lines; the second runs the README's environment word for word and
checks whichever of the two outcomes the baseline chose."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from app.core.config import Settings
from tests.e2e.process_env import stop_process
from tests.e2e.server import free_port
from tests.fakes.openrouter_server import FakeOpenRouter, Scripted, chat_completion, hold_all

BACKEND = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "trading-agent"
KEY = "dry-run-admin-key-0123456789"  # the README's
HANG_GUARD_S = 180  # a hang guard, not a performance assertion

# the README's expected output of the fake, as patterns (times, ids and prices vary)
OPENED = re.compile(r"^\d\d:\d\d:\d\d filled BUY 0\.01 BTC @ (?P<price>[\d.]+) order (?P<id>\d+)$")
STOP = re.compile(
    r"^\d\d:\d\d:\d\d placed STOP_MARKET SELL 0\.01 BTC trigger (?P<trigger>[\d.]+) algo (?P<id>\d+) "
    r"client a2-d(?P<decision>\d+)-BTC-sl$"
)
CLOSE = re.compile(
    r"^\d\d:\d\d:\d\d placed MARKET SELL 0\.01 BTC id (?P<id>\d+) client (?P<client>a2-h\d+-BTC-cl) -> filled$"
)
CLOSED = "filled SELL 0.01 BTC @ {price} order {id}"


class Lines:
    """A process's output, line by line, read as it comes."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, found: Callable[[list[str]], bool], what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while not found(list(self.lines)):
            assert time.monotonic() < deadline, f"{what}: not printed:\n" + "\n".join(self.lines)
            time.sleep(0.2)


@contextlib.contextmanager
def _process(args: list[str], *, cwd: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        yield proc, Lines(proc.stdout)
    finally:
        stop_process(proc)


def _fresh_env(**readme: str) -> dict[str, str]:
    """The caller's environment without any of the agent's settings (a fresh shell), plus the README's."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update({"COLUMNS": "250", **readme})
    return env


@dataclass
class DryRun:
    """What the dry run showed: the fake's timestamped lines and the agent's answers."""

    lines: list[str]
    btc_action: str  # what decision 2 did with the adopted BTC position
    decision_id: int
    held: list[dict[str, Any]]  # the open positions after the decision
    halted: httpx.Response
    after: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    history: list[dict[str, Any]]
    agent_printed: str
    api_secret: str
    others: list[str]  # the other assets decision 2 acted on (the baseline may open ETH or SOL on the fake's trend)


def _dry_run(tmp_path: Path, **model: str) -> DryRun:
    """The README's dry run, step by step; `model`: settings added to the README's environment (none: as written)."""
    fake_port, api_port = free_port(), free_port()
    fake_cmd = [sys.executable, "-m", "tests.fakes.binance_trading", "--port", str(fake_port), "--open-by-hand"]
    with _process([*fake_cmd, "BTC:0.01"], cwd=BACKEND, env=_fresh_env()) as (_fake, fake_out):
        fake_out.wait_for(lambda lines: any(line.startswith("Ctrl-C to stop") for line in lines), "the fake's start")
        printed = "\n".join(fake_out.lines)
        key_found = re.search(r"^api key:\s+(\S+)$", printed, re.M)
        secret_found = re.search(r"^api secret:\s+(\S+)\s", printed, re.M)
        assert key_found and secret_found, printed
        api_key, api_secret = key_found[1], secret_found[1]
        assert "opened by hand, no stop: buy 0.01 BTC" in printed

        env = _fresh_env(
            TRADING_MODE="live",
            MARKET_SOURCE="binanceusdm",
            VENUE_API_URL=f"http://127.0.0.1:{fake_port}",
            ADMIN_API_KEY=KEY,
            API_PORT=str(api_port),
            **model,
        )
        with _process([str(BIN), "run"], cwd=tmp_path, env=env) as (agent, agent_out):
            base = f"http://127.0.0.1:{api_port}"
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                assert agent.poll() is None, "\n".join(agent_out.lines)
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/health", timeout=10).status_code == 200:
                        break
                assert time.monotonic() < deadline, "\n".join(agent_out.lines)
                time.sleep(0.3)

            with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as api:
                created = api.post(
                    "/api/v1/accounts", json={"name": "binance-demo", "mode": "live", "venue": "binanceusdm"}
                )
                assert created.status_code == 201, created.text
                assert created.json()["id"] == 2, created.json()  # the README's next calls name account 2
                assert (created.json()["mode"], created.json()["network"]) == ("live", "testnet")
                stored = api.put("/api/v1/accounts/2/credentials", json={"api_key": api_key, "api_secret": api_secret})
                assert stored.status_code == 204, stored.text
                decided = api.post("/api/v1/decisions/generate", json={"account_id": 2, "force_refresh": True})
                assert decided.status_code == 200, decided.text
                body = decided.json()
                assert body["status"] in ("executed", "no_action", "partial"), decided.text
                if body["status"] == "partial":  # only the stop watchdog's note: the adopted position got its stop
                    assert all("had no stop; one was placed" in e for e in body["execution_errors"]), decided.text
                [btc] = [d for d in decided.json()["decision"]["decisions"] if d["asset"] == "BTC"]
                positions = api.get("/api/v1/accounts/2/positions")
                assert positions.status_code == 200, positions.text
                held = [p for p in positions.json() if p["status"] == "open"]
                fake_out.wait_for(lambda lines: any(" client a2-d" in line for line in lines), "decision 2's order")
                halted = api.post("/api/v1/accounts/2/halt")  # as the README's curl: no body
                after = api.get("/api/v1/accounts/2/positions").json()
                orders = api.get("/api/v1/accounts/2/orders").json()
                history = api.get("/api/v1/decisions/history", params={"account_id": 2}).json()
        if held and halted.status_code == 200:
            fake_out.wait_for(lambda lines: any(CLOSE.match(line) for line in lines), "the halt's close")
        time.sleep(0.5)  # the fake prints each fill right after its order: let the last line arrive
        lines = [line for line in fake_out.lines if re.match(r"^\d\d:\d\d:\d\d ", line)]
    return DryRun(
        lines,
        btc["action"],
        decided.json()["id"],
        held,
        halted,
        after,
        orders,
        history,
        "\n".join(agent_out.lines),
        api_secret,
        [d["asset"] for d in body["decision"]["decisions"] if d["asset"] != "BTC" and d["action"] != "hold"],
    )


def _assert_adopted_stopped_then_closed_by_the_halt(run: DryRun) -> None:
    """The README's expected output: the position opened by hand adopted and given a STOP_MARKET, then the halt's
    MARKET close filled; nothing else placed, nothing left open."""
    lines = run.lines
    [held] = run.held
    assert (held["symbol"], held["side"], held["size"]) == ("BTC", "long", 0.01), held
    assert held["stop_loss"] is not None and held["stop_loss"] < held["entry_price"], held
    assert run.halted.status_code == 200, run.halted.text
    assert run.halted.json()["status"] == "HALTED"

    [opened] = [(i, m) for i, line in enumerate(lines) if (m := OPENED.match(line))]
    [stop] = [(i, m) for i, line in enumerate(lines) if (m := STOP.match(line))]
    [close] = [(i, m) for i, line in enumerate(lines) if (m := CLOSE.match(line))]
    filled = CLOSED.format(price=r"[\d.]+", id=close[1]["id"])
    [closed] = [i for i, line in enumerate(lines) if re.search(rf" {filled}$", line)]
    assert opened[0] < stop[0] < close[0] <= closed, "\n".join(lines)
    assert float(stop[1]["trigger"]) == held["stop_loss"] < float(opened[1]["price"])
    assert int(stop[1]["decision"]) in {d["id"] for d in run.history}, "the stop is not one of account 2's decisions"
    # no other order of ours was placed; the halt leaves no position and no open order (the fake's book drops a
    # reduce-only stop whose position is gone by itself, so it prints no cancel line for it)
    assert len([line for line in lines if " placed " in line]) == 2, "\n".join(lines)
    assert not [p for p in run.after if p["status"] == "open"], run.after
    assert {o["client_order_id"]: o["status"] for o in run.orders} == {
        f"a2-d{stop[1]['decision']}-BTC-sl": "canceled",
        close[1]["client"]: "filled",
    }, run.orders
    assert run.api_secret not in run.agent_printed, "the venue secret was printed by the agent"


def _assert_every_entry_stopped_and_the_halt_flattened(run: DryRun) -> None:
    """Whatever decision 2 did: every entry of it was followed by its STOP_MARKET, the adopted BTC got a stop unless the
    decision closed it, and the halt left no position and no open order."""
    lines = run.lines
    placed = [line for line in lines if " placed " in line]
    for asset in run.others:
        opened = rf" placed MARKET (BUY|SELL) [\d.]+ {asset} .*-{asset}-en -> filled$"
        entry = [i for i, line in enumerate(lines) if re.search(opened, line)]
        stop = [i for i, line in enumerate(lines) if re.search(rf" placed STOP_MARKET (BUY|SELL) .*-{asset}-sl$", line)]
        assert len(entry) == len(stop) == 1 and entry[0] < stop[0], "\n".join(placed)
    btc = "-BTC-sl$" if run.btc_action == "hold" else "-BTC-cl -> filled$"
    assert any(re.search(btc, line) for line in placed), "\n".join(placed)
    assert run.halted.status_code == 200, run.halted.text
    assert not [p for p in run.after if p["status"] == "open"], run.after
    assert not [o for o in run.orders if o["status"] == "open"], run.orders
    assert run.api_secret not in run.agent_printed, "the venue secret was printed by the agent"


def test_the_readme_dry_run_adopts_the_position_stops_it_and_the_halt_closes_it(tmp_path: Path) -> None:
    """The README's steps with a model that holds (a fake OpenRouter): the README's expected output, line by line."""
    with FakeOpenRouter() as model:
        model.responder = lambda _body: Scripted(200, chat_completion(hold_all(), model="openai/gpt-5"))
        run = _dry_run(
            tmp_path,
            OPENROUTER_API_KEY="sk-or-v1-dry-run-test-0123456789abcdef",
            OPENROUTER_BASE_URL=model.base_url,
            LLM_MODEL="openai/gpt-5",
        )
    assert run.btc_action == "hold"
    _assert_adopted_stopped_then_closed_by_the_halt(run)


def test_the_readme_dry_run_as_written_ends_flat_whatever_the_baseline_decides(tmp_path: Path) -> None:
    """The README's environment word for word (the baseline model). With a position the baseline holds it or, when the
    market trends down at that moment, closes it: then the fake shows decision 2's MARKET close, not a stop, and the
    halt has nothing left to close."""
    run = _dry_run(tmp_path)
    if run.others:  # the baseline also traded other assets: each entry protected, and the halt leaves nothing
        _assert_every_entry_stopped_and_the_halt_flattened(run)
        return
    if run.btc_action == "hold":
        _assert_adopted_stopped_then_closed_by_the_halt(run)
        return
    assert run.btc_action == "close_position", run.btc_action  # with a position, the baseline holds or closes
    assert run.held == [] and not [p for p in run.after if p["status"] == "open"]
    assert run.halted.status_code == 200, run.halted.text
    decision_close = re.compile(
        rf"^\d\d:\d\d:\d\d placed MARKET SELL 0\.01 BTC id (?P<id>\d+) client a2-d{run.decision_id}-BTC-cl -> filled$"
    )
    [close] = [m for line in run.lines if (m := decision_close.match(line))]
    assert any(line.endswith(f" order {close['id']}") and " filled SELL 0.01 BTC @ " in line for line in run.lines)
    assert len([line for line in run.lines if " placed " in line]) == 1, "\n".join(run.lines)
    assert run.api_secret not in run.agent_printed, "the venue secret was printed by the agent"
