"""The multi-process agent for real: `trading-agent scheduler` and `trading-agent worker` processes on the test's
PostgreSQL database and its job queue (procrastinate), checked from the outside.

- Two workers racing on one candle (each account's job queued three times, twice with no lock at all, so the two
  workers do run one account at the same moment): exactly one decision per account, every job ends well.
- A worker SIGKILLed while its decisions wait for the model: the scheduler queues its jobs again once its heartbeat
  stops, another worker decides them, and each candle is decided once, with no order sent twice.
- Workers killed (SIGKILL or SIGTERM) at random moments while the scheduler runs candle after candle, and started
  again: every candle of every account decided exactly once, and the database's records add up.
- `/health` and `/metrics` of an API process show the queue's depth and age and each worker's throughput.

PostgreSQL only (the queue lives there): these tests skip without TEST_POSTGRES_URL, and `.ci/run` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import build_agent
from app.core.config import ExplicitSettings
from app.core.timeframes import floor_time
from app.db.repositories.accounts import AccountRepository
from app.jobs.queue import DECIDE, ensure_schema, queue_app
from app.services.account.new_account import new_account
from tests.conftest import ADMIN_KEY
from tests.e2e.invariants import check_records, check_stopped_cleanly
from tests.e2e.process_env import agent_env
from tests.e2e.server import free_port
from tests.e2e.sql import rows, scalar
from tests.fakes.openrouter_server import FakeOpenRouter, chat_completion, hold_all

pytestmark = [pytest.mark.db, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

BIN = Path(sys.executable).parent / "trading-agent"
SEED = int(os.environ.get("KILL_TEST_SEED", "20261206"))
HANG_GUARD_S = 120  # a process that does not start, finish or stop within this is a failure, not a slow machine
# fast heartbeats, so that a killed worker's jobs go back to the queue after 2 s and its accounts' leases end after 3 s
FAST = {"WORKER_HEARTBEAT_S": "0.5", "WORKER_STALLED_S": "2", "ACCOUNT_LEASE_S": "3"}


class Process:
    """One `trading-agent` process on the test's database."""

    def __init__(
        self,
        args: list[str],
        database_url: str,
        workdir: Path,
        model: FakeOpenRouter | None,
        label: str,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        env = agent_env(database_url, workdir, model, LOG_LEVEL="INFO", DB_POOL_SIZE="4", **FAST, **(env_extra or {}))
        self.label = label
        self.log = (workdir / f"{label}-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(  # its own process group: `serve --workers N` spawns its workers into it
            [BIN, *args], env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return await self.wait()

    async def wait(self) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"{self.label} did not end within {HANG_GUARD_S} s:\n{self.output()[-3000:]}"
            ) from None


def worker(database_url: str, workdir: Path, name: str, model: FakeOpenRouter | None, concurrency: int) -> Process:
    return Process(["worker", "--name", name, "--concurrency", str(concurrency)], database_url, workdir, model, name)


def scheduler(database_url: str, workdir: Path, cycles: int) -> Process:
    return Process(["scheduler", "--cycles", str(cycles)], database_url, workdir, None, "scheduler")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts, with the processes it started (killed at the end, whatever happened: a uvicorn
    supervisor killed alone left its spawned workers running after the test)."""
    started: list[Process] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait()


@pytest.fixture
def slow_model() -> Iterator[FakeOpenRouter]:
    """OpenRouter over a real socket, holding every asset after 2 s (decisions wait for it: kills land there)."""
    with FakeOpenRouter() as fake:
        fake.reply(chat_completion(hold_all()), delay_s=2.0, times=1000)
        yield fake


async def _accounts(database_url: str, workdir: Path, count: int) -> list[int]:
    """The database migrated, with `count` paper accounts (the default one among them)."""
    settings = ExplicitSettings(
        database_url=database_url, admin_api_key=ADMIN_KEY, secret_key_file=str(workdir / "secret.key")
    )
    agent = await build_agent(settings)
    try:
        async with agent.sessions.begin() as session:
            repo = AccountRepository(session)
            now = datetime.now(UTC)
            for i in range(count - len(await repo.all())):
                await repo.add(new_account(f"paper-w{i}", now=now), reason="workers test", now=now)
            return [a.id for a in await repo.all()]
    finally:
        await agent.close()


async def _until(db: AsyncEngine, sql: str, what: str, *, watch: Sequence[Process] = ()) -> Any:
    """Until `sql` gives a true value (a hang guard, not a timing assertion); returns it."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        value = await scalar(db, sql)
        if value:
            return value
        for process in watch:
            assert process.alive(), f"{process.label} exited:\n{process.output()[-3000:]}"
        await asyncio.sleep(0.05)
    outputs = "\n".join(f"--- {p.label}\n{p.output()[-2000:]}" for p in watch)
    raise AssertionError(f"{what} within {HANG_GUARD_S} s\n{outputs}")


async def _decided_once(db: AsyncEngine) -> list[Any]:
    """(account, candle, loop decisions) of every candle the loop decided, its interrupted decisions aside."""
    return await rows(
        db,
        "SELECT account_id, cycle_time, count(*) FROM decisions WHERE trigger = 'loop' AND shadow_of IS NULL "
        "AND status <> 'interrupted' GROUP BY account_id, cycle_time ORDER BY account_id, cycle_time",
    )


@pytest.fixture
async def queue(database_url: str) -> AsyncIterator[Any]:
    """The job queue on the test's database (its tables installed, as the first scheduler or worker does)."""
    await ensure_schema(database_url)
    app = queue_app(database_url)
    async with app.open_async():
        yield app


async def test_two_workers_racing_on_one_candle_decide_each_account_once(
    database_url: str, db: AsyncEngine, tmp_path: Path, processes: list[Process], slow_model: FakeOpenRouter
) -> None:
    accounts = await _accounts(database_url, tmp_path, 4)
    processes += [worker(database_url, tmp_path, f"w{i}", slow_model, concurrency=6) for i in (1, 2)]
    await _until(db, "SELECT count(*) = 2 FROM worker_stats", "both workers up", watch=processes)
    candle = floor_time(datetime.now(UTC), "5m")
    app = queue_app(database_url)
    async with app.open_async():
        for copy in range(3):  # the scheduler's way (the account as the lock), then twice with no lock at all
            jobs = [
                app.configure_task(DECIDE, lock=f"account:{a}" if copy == 0 else None).make_new_job(
                    account_id=a, cycle_time=candle.isoformat(), enqueued_at=datetime.now(UTC).isoformat()
                )
                for a in accounts
            ]
            await app.job_manager.batch_defer_jobs_async(jobs)
    await _until(
        db,
        "SELECT count(*) = 0 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
        "jobs done",
        watch=processes,
    )
    assert await rows(db, "SELECT status, count(*) FROM procrastinate_jobs GROUP BY status") == [("succeeded", 12)]
    assert await _decided_once(db) == [(a, candle, 1) for a in accounts]
    assert await scalar(db, "SELECT count(*) FROM decisions") == len(accounts), "a second decision was stored"
    # the race was real: both workers ran jobs, and copies of one account's job ran while another copy did
    ran = await rows(db, "SELECT name, jobs FROM worker_stats ORDER BY name")
    assert [name for name, jobs in ran if jobs] == ["w1", "w2"], ran
    assert len(slow_model.chat_requests) == len(accounts), "one model call per account: the copies found the decision"
    await check_records(db)
    for process in processes:
        assert await process.stop(signal.SIGTERM) == 0, process.output()[-3000:]


async def test_a_worker_killed_mid_job_is_replaced_and_each_candle_decided_once(
    database_url: str, db: AsyncEngine, tmp_path: Path, processes: list[Process], slow_model: FakeOpenRouter
) -> None:
    accounts = await _accounts(database_url, tmp_path, 3)
    first = worker(database_url, tmp_path, "first", slow_model, concurrency=3)
    processes.append(first)
    await _until(db, "SELECT count(*) FROM worker_stats", "the first worker up", watch=processes)
    processes.append(boss := scheduler(database_url, tmp_path, cycles=2))
    # every account's decision waits for the model in the first worker: kill it there
    await _until(
        db, "SELECT count(*) = 3 FROM decisions WHERE status = 'pending'", "decisions in flight", watch=processes
    )
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    processes.append(worker(database_url, tmp_path, "second", slow_model, concurrency=3))
    assert await boss.wait() == 0, boss.output()[-3000:]

    killed = await rows(db, "SELECT account_id, status, error FROM decisions WHERE id <= 3 ORDER BY account_id")
    assert [(a, s) for a, s, _ in killed] == [(a, "interrupted") for a in accounts]
    assert all("stopped before it completed" in (error or "") for _, _, error in killed)
    decided = await _decided_once(db)
    assert [(a, n) for a, _, n in decided] == [(a, 1) for a in accounts for _ in range(2)], decided
    assert len({t for _, t, _ in decided}) == 2, "two candles"
    assert await scalar(db, "SELECT count(*) FROM decisions WHERE status IN ('pending', 'error')") == 0
    assert await rows(db, "SELECT DISTINCT status FROM procrastinate_jobs") == [("succeeded",)]
    await check_records(db)


ROUNDS = 6  # kills per test run (seeded moments and signals)


async def test_killing_workers_at_random_moments_loses_no_candle_and_decides_none_twice(
    database_url: str, db: AsyncEngine, tmp_path: Path, processes: list[Process]
) -> None:
    """The offline baseline model (it trades): 3 accounts, 2 workers, 12 candles; each round a random worker gets a
    random signal at a random moment and is started again."""
    rng = random.Random(SEED)
    accounts = await _accounts(database_url, tmp_path, 3)
    workers = {name: worker(database_url, tmp_path, name, None, concurrency=2) for name in ("a", "b")}
    processes += workers.values()
    await _until(db, "SELECT count(*) = 2 FROM worker_stats", "both workers up", watch=processes)
    boss = scheduler(database_url, tmp_path, cycles=12)
    processes.append(boss)
    kills = {signal.SIGKILL: 0, signal.SIGTERM: 0}
    for round_no in range(ROUNDS):
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        if not boss.alive():
            break
        name = rng.choice(sorted(workers))
        sig = signal.SIGKILL if round_no % 2 == 0 else signal.SIGTERM
        code = await workers[name].stop(sig)
        where = f"seed {SEED}, round {round_no}, worker {name}, {sig.name}"
        # SIGTERM: a clean exit (0), or the signal's own when it came before the worker had started taking jobs
        wanted = (-signal.SIGKILL,) if sig == signal.SIGKILL else (0, -signal.SIGTERM)
        assert code in wanted, f"{where}: exit {code}\n{workers[name].output()[-3000:]}"
        if sig == signal.SIGTERM:
            assert "Traceback" not in workers[name].output(), f"{where}:\n{workers[name].output()[-3000:]}"
        kills[sig] += 1
        workers[name] = worker(database_url, tmp_path, name, None, concurrency=2)
        processes.append(workers[name])
    assert await boss.wait() == 0, boss.output()[-3000:]
    for process in workers.values():
        assert await process.stop(signal.SIGTERM) == 0, process.output()[-3000:]

    decided = await _decided_once(db)
    candles = sorted({t for _, t, _ in decided})
    assert len(candles) == 12, f"seed {SEED}: candles decided {candles}"
    assert decided == [(a, t, 1) for a in accounts for t in candles], f"seed {SEED}: {decided}"
    assert await scalar(db, "SELECT count(*) FROM decisions WHERE status = 'pending'") == 0
    await check_records(db)
    assert await check_stopped_cleanly(db) >= 1, "the venue's margin was compared with the database"
    assert kills[signal.SIGKILL] >= 1 and kills[signal.SIGTERM] >= 1, f"seed {SEED}: kills {kills}"
    entries = await scalar(db, "SELECT count(*) FROM orders WHERE kind = 'entry' AND status = 'filled'")
    print(f"seed {SEED}: kills {kills}, {len(candles)} candles x {len(accounts)} accounts, {entries} entries filled")


async def test_health_and_metrics_show_the_queue_and_each_worker(
    database_url: str, db: AsyncEngine, tmp_path: Path, processes: list[Process], queue: Any
) -> None:
    accounts = await _accounts(database_url, tmp_path, 2)
    candle = floor_time(datetime.now(UTC), "5m")
    jobs = [
        queue.configure_task(DECIDE, lock=f"account:{a}").make_new_job(
            account_id=a, cycle_time=candle.isoformat(), enqueued_at="2026-01-01T00:00:00+00:00"
        )
        for a in accounts
    ]
    await queue.job_manager.batch_defer_jobs_async(jobs)
    port = free_port()
    api = Process(
        ["serve", "--port", str(port), "--workers", "2"],
        database_url,
        tmp_path,
        None,
        "api",
        {"API_MUTATIONS_PER_MINUTE": "6"},
    )
    processes.append(api)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        health = await _get_when_up(client, api, "/health")
        # two jobs wait since New Year, and no worker is alive
        assert health["queue"]["waiting"] == 2 and health["queue"]["workers"] == []
        assert health["queue"]["oldest_job_age_s"] > 86_400
        assert health["status"] == "degraded"
        assert any("no worker is alive" in r for r in health["reasons"]), health["reasons"]
        assert any("job queue behind" in r for r in health["reasons"]), health["reasons"]

        processes.append(worker(database_url, tmp_path, "counted", None, concurrency=2))
        await _until(db, "SELECT decisions = 2 FROM worker_stats", "both jobs done and counted", watch=processes)
        health = (await client.get("/health")).json()
        assert health["queue"]["waiting"] == 0 and "job queue" not in " ".join(health["reasons"])
        (seen,) = health["queue"]["workers"]
        assert (seen["name"], seen["alive"], seen["decisions"], seen["jobs"]) == ("counted", True, 2, 2)
        assert seen["cpu_s"] > 0
        metrics = (await client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})).text
        assert "agent_queue_jobs_waiting 0.0" in metrics
        assert 'agent_worker_decisions{worker="counted"} 2.0' in metrics
        assert 'agent_worker_alive{worker="counted"} 1.0' in metrics
        assert "agent_worker_decisions_per_second" in metrics

        # two API processes behind the port share one limit of changes per key (API_MUTATIONS_PER_MINUTE=6)
        statuses = [
            (await client.post(f"/api/v1/accounts/{accounts[0]}/pause", headers={"X-API-Key": ADMIN_KEY})).status_code
            for _ in range(7)
        ]
        assert statuses == [200] * 6 + [429]


async def _get_when_up(client: httpx.AsyncClient, api: Process, path: str) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        assert api.alive(), api.output()[-3000:]
        try:
            return (await client.get(path)).json()
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"the API did not answer within {HANG_GUARD_S} s:\n{api.output()[-3000:]}")
