"""Kill the real agent at random moments, again and again, and check what it left behind.

`trading-agent run` runs as a subprocess on the accelerated clock (a 5m candle every 0.1 s) with the simulator
and the paper venue, on the test's database; in some rounds with the offline baseline model (it trades), in the
others with an OpenRouter-compatible fake over a real socket that takes 1 s to answer (so that most kills land
while a decision waits for its model). Each round it is killed with SIGKILL
or SIGTERM at a random moment, and the database is checked: no duplicate ids, every order's fills add up to
what it says was filled, every open position has an open stop covering it, no decision left pending (after a
SIGTERM at once; after a SIGKILL once the next start has marked the orphans), no failed decision, and after a
graceful stop the money adds up (the last equity snapshot, taken from the venue, equals the ledger of fills and
funding) and the venue's margin equals the database's open positions.

The moments come from a seeded generator (KILL_TEST_SEED, printed on failure) so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN_KEY
from tests.e2e.invariants import check_records, check_stopped_cleanly
from tests.e2e.process_env import agent_env
from tests.e2e.server import free_port
from tests.e2e.sql import rows, scalar
from tests.fakes.openrouter_server import FakeOpenRouter, chat_completion, hold_all
from tests.fakes.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.db

BIN = Path(sys.executable).parent / "trading-agent"
SEED = int(os.environ.get("KILL_TEST_SEED", "20261206"))
KILL, TERM = signal.SIGKILL, signal.SIGTERM
# (model, signal) of each round: both signals with both models; the moment of each is the seed's choice.
ROUNDS = [("baseline", KILL), ("slow", KILL), ("baseline", TERM), ("slow", KILL), ("slow", TERM), ("baseline", KILL)]
SLOW_ANSWER_S = 1.0
HANG_GUARD_S = 90  # a process that does not start or stop within this is a failure, not a slow machine
FILLED_ENTRIES = "SELECT count(*) FROM orders WHERE kind = 'entry' AND status = 'filled'"


class Agent:
    """One `trading-agent run` process on the test's database."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        model: FakeOpenRouter | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        env = agent_env(database_url, workdir, model, API_PORT=str(self.port), **(env_extra or {}))
        self.log = (workdir / f"agent-{self.port}.log").open("w+")
        self.proc = subprocess.Popen([BIN, "run"], env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    async def wait_for_cycles(self, cycles: int) -> None:
        """Until /health reports `cycles` loop cycles done by this process."""
        deadline = time.monotonic() + HANG_GUARD_S
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"the agent exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
                try:
                    health = (await client.get(f"{self.base_url}/health")).json()
                    if health["loop"]["cycles"] >= cycles:
                        return
                except (httpx.TransportError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"no {cycles} cycles within {HANG_GUARD_S} s:\n{self.output()[-3000:]}")

    async def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        try:
            code = await asyncio.to_thread(self.proc.wait, HANG_GUARD_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.flush()
        return code


async def _wait_for_row(db: AsyncEngine, agent: Agent, sql: str, what: str) -> None:
    """Until `sql` counts a row (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if await scalar(db, sql):
            return
        assert agent.proc.poll() is None, agent.output()[-3000:]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {HANG_GUARD_S} s")


@pytest.fixture
def slow_model() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter() as fake:
        fake.reply(chat_completion(hold_all()), delay_s=SLOW_ANSWER_S, times=1000)
        yield fake


async def test_killing_the_agent_at_random_moments_loses_nothing(
    database_url: str, db: AsyncEngine, tmp_path: Path, slow_model: FakeOpenRouter
) -> None:
    rng = random.Random(SEED)
    started_after = 0  # the newest decision id before the current process started
    compared = 0  # margin comparisons made after graceful stops
    for round_no, (model, sig) in enumerate(ROUNDS):
        agent = Agent(database_url, tmp_path, slow_model if model == "slow" else None)
        where = f"seed {SEED}, round {round_no}, {model} model, {sig.name}"
        try:
            await agent.wait_for_cycles(1)
            # The start marked what the previous process left pending (its first cycle is done, too).
            left = await rows(db, f"SELECT id FROM decisions WHERE status = 'pending' AND id <= {started_after}")
            assert not left, f"{where}: decisions of an earlier run still pending after the start: {left}"
            if round_no == 0:  # the later rounds restart an account that has traded
                await _wait_for_row(db, agent, FILLED_ENTRIES, "the baseline model made no trade")
            await asyncio.sleep(rng.uniform(0.1, 2.5))
            if round_no == 1:  # one kill for sure while a decision waits for its model (the others: anywhere)
                await _wait_for_row(
                    db,
                    agent,
                    "SELECT count(*) FROM decisions WHERE status = 'pending'",
                    "no decision waited for its model",
                )
            code = await agent.stop(sig)
        except BaseException:
            print(f"{where}; the agent's output:\n{agent.output()[-4000:]}")
            raise
        output = agent.output()
        if sig == signal.SIGTERM:
            # uvicorn stops gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop.
            assert code in (0, -signal.SIGTERM), f"{where}: exit {code}\n{output[-3000:]}"
            assert "Traceback" not in output, f"{where}:\n{output[-4000:]}"
            compared += await check_stopped_cleanly(db)
        else:
            assert code == -signal.SIGKILL
        await check_records(db)
        started_after = await scalar(db, "SELECT coalesce(max(id), 0) FROM decisions")

    # A last start marks the last run's orphans and trades on; a last graceful stop leaves everything settled.
    agent = Agent(database_url, tmp_path)
    await agent.wait_for_cycles(3)
    assert await agent.stop(signal.SIGTERM) in (0, -signal.SIGTERM), agent.output()[-3000:]
    await check_records(db)
    compared += await check_stopped_cleanly(db)
    assert compared >= 3, "the venue's margin was compared with the database after every graceful stop"
    interrupted = await scalar(db, "SELECT count(*) FROM decisions WHERE status = 'interrupted'")
    decided = await scalar(db, "SELECT count(*) FROM decisions WHERE status NOT IN ('interrupted', 'pending')")
    entries = await scalar(db, FILLED_ENTRIES)
    print(f"seed {SEED}: {decided} decisions, {interrupted} interrupted, {entries} entries filled")
    assert decided >= 10, "the agent hardly ran: the test proved little"
    assert entries >= 1, "the agent never traded: the test proved little"
    assert interrupted >= 1, "no kill landed while a decision waited for its model: the test proved little"


async def test_an_alert_whose_send_a_kill_cut_short_is_sent_again_after_the_restart(
    db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """The agent is killed (SIGKILL) while a halt's alert is on its way to a webhook that has not answered: the
    stored alert says `pending`; the next `run` sends it again, and it is stored once."""
    async with webhook_receiver() as receiver:
        receiver.hold()  # the first send never gets its answer
        alerts = {"ALERT_URLS": receiver.url()}
        agent = Agent(database_url, tmp_path, env_extra=alerts)
        try:
            await agent.wait_for_cycles(1)
            async with httpx.AsyncClient(base_url=agent.base_url, headers={"X-API-Key": ADMIN_KEY}) as client:
                assert (await client.post("/api/v1/accounts/1/halt", json={"reason": "kill test"})).status_code == 200
            async with asyncio.timeout(HANG_GUARD_S):
                await receiver.arrived.wait()  # the send is in flight
            assert await agent.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            if agent.proc.poll() is None:
                agent.proc.kill()
        halts = "SELECT delivery FROM alerts WHERE kind = 'account_halted'"
        assert await rows(db, halts) == [("pending",)]
        receiver.release()
        restarted = Agent(database_url, tmp_path, env_extra=alerts)
        try:
            delivered = "SELECT count(*) FROM alerts WHERE kind = 'account_halted' AND delivery = 'delivered'"
            await _wait_for_row(db, restarted, delivered, "the alert sent again")
        finally:
            assert await restarted.stop(signal.SIGTERM) in (0, -signal.SIGTERM), restarted.output()[-3000:]
    assert await rows(db, halts) == [("delivered",)]
    assert any("halted" in r.raw for r in receiver.received), "the receiver got the halt's alert"
