"""Issue 18, measured (never asserted): one 5-minute cycle of 10,000 paper accounts decided by 1, 2 and 4 worker
processes on PostgreSQL, every model call answered by a fake OpenRouter after 1 s.

For each number of workers, from scratch:

* a fresh database `bench_workers_<pid>_<workers>` on PostgreSQL (BENCH_POSTGRES_URL, default
  postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards (`--keep-db` keeps it). It is made the way a
  first start makes one (`build_agent`: migrations, built-in strategies, the default account, an admin key), then
  the other accounts are inserted in one statement through SQLAlchemy core, with the values `new_account` gives
  (ACTIVE, paper, the default strategy, the venue's fees) and each its first strategy assignment, as
  `AccountRepository.add` stores them. Every account starts flat with its initial balance;
* the real programs as separate processes, with the settings a deployment would use (environment only, run in an
  empty folder so no `.env` is read): `trading-agent worker --concurrency C` (one per worker), then
  `trading-agent scheduler --cycles 1`. The scheduler first queues a start-up `check` job per account (venue
  reconciled, stops checked) and waits for them, then queues one `decide` job per account for the current candle
  and exits once they are done. SIM_SPEED is 0.01 (a 5m candle every 8 h), so no second candle closes during a
  run. The workers are started first and measured once they are up (a row in `worker_stats`): their start-up
  (imports, wiring) is not in the figures, nor are the start-up checks (timed apart); the first candle's cold caches
  (candle store filled, market context built once per process) are;
* a fake OpenRouter (benchmarks/slow_openrouter.py, its own process) answering every chat completion after 1.0 s
  with a valid decision in OpenRouter's JSON shape; the answer holds every asset, so no order is placed: the
  figures are the cost of deciding, not of trading (a decision that trades adds the executor's orders and the
  stops to each job).

Measured, per run:

* cycle wall time: from the first `decide` job queued (procrastinate's `deferred` event) to the last one done
  (its `succeeded` or `failed` event), both stamped by PostgreSQL; also from the scheduler's start (adds its own
  start-up and the start-up checks of every account);
* decisions per second over the cycle; a decision counts once it is stored with its outcome (not `pending`);
* CPU per decision: the workers' user + system time (/proc/<pid>/stat, children included) over the window (from
  when the bench sees the first `decide` job, polling every 0.1 s, until it counts every decision of the candle
  stored, polling every 0.5 s) divided by the decisions; the same for the PostgreSQL backends serving the bench's
  database (each backend's /proc time, sampled every poll; the bench's own connection left out), the scheduler and
  the fake; the whole machine's busy time from /proc/stat (what is left is other load on the machine, which the
  figures do not control);
* failures: decisions stored with status `error`, jobs `failed` in procrastinate_jobs, and jobs not done when the
  run ended (`--timeout`);
* speed-ups: the 1-worker cycle wall time over the 2- and 4-worker ones.

Figures are printed as a table and written as JSON (`--json`, default data/bench_workers.json, which git ignores).
Without PostgreSQL the benchmark says so and exits 0 (make bench goes on).

The in-flight model calls: each worker runs C jobs at once (`--concurrency`, default 100), the same C for every
worker count (adding a worker adds its C, as a deployment scales out). 10,000 decisions in 300 s with 1 s calls
need at least 34 calls in flight; C=100 on one worker allows 100 decisions/s before the model's latency limits it,
so a slower cycle is the worker's own CPU (or the database), which is what the speed-up tests. LLM_MAX_CONCURRENCY
and LLM_REQUESTS_PER_MINUTE are set far above that, so neither cap is the limit. DB_POOL_SIZE (`--db-pool-size`,
per process) is chosen so every process fits in PostgreSQL's 100 connections.

At 10,000 accounts a whole run takes about 45 minutes on the 2-core machine (three databases, each with its
start-up checks and its cycle); `--accounts 200` takes about a minute.

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_workers.py [--accounts 200] [--workers 1,2])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy import insert, literal, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bootstrap import build_agent
from app.core.config import ExplicitSettings
from app.db import models
from app.db.session import create_engine
from app.services.account.new_account import new_account
from app.services.llm.strategy_manager import DEFAULT_STRATEGY_ID

BACKEND = Path(__file__).resolve().parents[1]
BIN = BACKEND / ".venv" / "bin"
AGENT = BIN / "trading-agent" if (BIN / "trading-agent").exists() else Path(sys.executable).with_name("trading-agent")
FAKE_SERVER = Path(__file__).resolve().with_name("slow_openrouter.py")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
TICKS = os.sysconf("SC_CLK_TCK")
MODEL = "openai/gpt-5"
DECIDE, CHECK = "decide", "check"  # the queue's task names (app.jobs.queue)
CONNECTION_BUDGET = 80  # of PostgreSQL's 100 connections, for one run's processes
QUEUE_CONNECTIONS = 5  # per process, procrastinate's own (its pool of 4, the worker's LISTEN), besides SQLAlchemy's
SCHEDULER_POOL = 3  # the scheduler's DB_POOL_SIZE: it queues in batches and polls, a few connections are plenty
DONE = ("pending", "interrupted")  # decision statuses that are not (yet) a decision


# ------------------------------------------------------------------------------------------- process CPU


def proc_cpu(pid: int, *, children: bool = True) -> float | None:
    """User + system CPU seconds of a live process (with its waited-for children), None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; utime is the 14th field of the line
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat's first line)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS, sum(values[:8]) / TICKS


class BackendCPU:
    """The CPU of the PostgreSQL backends serving one database: each backend's own time, sampled on every poll;
    a backend seen first after the baseline counts from 0 (connections opened during the run), one that ended
    keeps its last sample."""

    def __init__(self, own_pid: int) -> None:
        self.own_pid = own_pid  # the bench's own connection: its polling is not the agent's cost
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.baseline_taken = False
        self.most_connections = 0  # backends of the database at once, the bench's own included

    async def sample(self, conn: asyncpg.Connection, database: str) -> None:
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        self.most_connections = max(self.most_connections, len(pids))
        for row in pids:
            if row["pid"] == self.own_pid:
                continue
            cpu = proc_cpu(row["pid"], children=False)
            if cpu is None:
                continue
            if row["pid"] not in self.start:
                self.start[row["pid"]] = cpu if not self.baseline_taken else 0.0
            self.last[row["pid"]] = cpu

    def baseline(self) -> None:
        self.start = dict(self.last)
        self.baseline_taken = True

    @property
    def used(self) -> float:
        return sum(self.last[pid] - start for pid, start in self.start.items())


# ------------------------------------------------------------------------------------------- database


def database_url(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


async def create_database(base: str, name: str) -> None:
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(base: str, name: str) -> None:
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def seed(url: str, accounts: int, secret_key: str, folder: Path) -> float:
    """Migrate and fill the database as a first start does, then add accounts up to `accounts`; seconds taken."""
    started = time.perf_counter()
    settings = ExplicitSettings(database_url=url, secret_key=secret_key, secret_key_file=str(folder / "secret.key"))
    agent = await build_agent(settings)  # migrations, built-in strategies, the default account, an admin key
    await agent.close()
    engine = create_engine(settings.database_url)
    try:
        now = datetime.now(UTC)
        columns = [c.key for c in models.Account.__table__.columns if c.key != "id"]
        rows = []
        for i in range(2, accounts + 1):
            account = new_account(f"bench-{i:06d}", now=now, strategy_id=DEFAULT_STRATEGY_ID)
            rows.append({key: getattr(account, key) for key in columns})
        async with engine.begin() as conn:
            if rows:
                await conn.execute(insert(models.Account), rows)
            assigned = select(models.StrategyAssignment.account_id)
            await conn.execute(
                insert(models.StrategyAssignment).from_select(
                    ["account_id", "strategy_id", "reason", "assigned_at"],
                    select(
                        models.Account.id,
                        models.Account.strategy_id,
                        literal("benchmark account"),
                        models.Account.created_at,
                    ).where(models.Account.id.not_in(assigned)),
                )
            )
            total = (await conn.exec_driver_sql("SELECT count(*) FROM accounts WHERE status = 'ACTIVE'")).scalar()
        if total != accounts:
            raise RuntimeError(f"seeded {total} active accounts, wanted {accounts}")
    finally:
        await engine.dispose()
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    cpu_last: float = 0.0

    def sample(self) -> None:
        cpu = proc_cpu(self.popen.pid)
        if cpu is not None:
            self.cpu_last = cpu

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], folder: Path) -> Proc:
    log = folder / f"{name}.log"
    handle = log.open("wb")
    # its own process group: stopping it never touches anything this benchmark did not start
    popen = subprocess.Popen(argv, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Proc(name, popen, log)


def stop(procs: list[Proc], grace_s: float = 60.0) -> None:
    """SIGTERM (a worker finishes its running jobs), SIGKILL after `grace_s`: only the processes started here."""
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


class FakeOpenRouterProcess:
    """benchmarks/slow_openrouter.py in its own process; `stats()` reads its counters."""

    def __init__(self, delay_s: float, folder: Path) -> None:
        port_file = folder / "fake.port"
        self.proc = spawn(
            "fake-openrouter",
            [sys.executable, str(FAKE_SERVER), "--delay", str(delay_s), "--port-file", str(port_file)],
            dict(os.environ),
            folder,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.proc.popen.poll() is not None:
                raise RuntimeError(f"the fake OpenRouter did not start:\n{self.proc.tail()}")
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{port_file.read_text()}/api/v1"
        while True:  # the port is bound before uvicorn listens
            try:
                self.stats()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/bench-stats", timeout=5) as answer:
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def close(self) -> None:
        stop([self.proc], grace_s=5)


# ------------------------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    workers: int
    concurrency_per_worker: int
    accounts: int
    database: str
    seed_s: float
    cycle_time: str | None = None
    decided: int = 0
    later_cycles: int = 0  # candles the scheduler queued after the measured one (none expected with --cycles 1)
    decision_errors: int = 0
    decision_statuses: dict[str, int] = field(default_factory=dict)
    job_statuses: dict[str, int] = field(default_factory=dict)
    cycle_wall_s: float | None = None  # first job queued -> last job done
    wall_from_scheduler_start_s: float | None = None  # scheduler started -> every decision stored
    decisions_per_s: float | None = None
    worker_cpu_s: float = 0.0
    worker_cpu_ms_per_decision: float | None = None
    worker_cpu_utilisation: list[float] = field(default_factory=list)  # per worker: CPU s / wall s of the cycle
    worker_stats_rows: list[dict[str, Any]] = field(default_factory=list)
    postgres_cpu_s: float = 0.0
    postgres_cpu_ms_per_decision: float | None = None
    most_connections: int = 0
    db_pool_size: int = 0
    scheduler_cpu_s: float = 0.0
    scheduler_cpu_total_s: float = 0.0  # its whole life: start-up, the start-up checks, the cycle
    queued_after_scheduler_start_s: float | None = None  # its start-up and the accounts' start-up checks
    startup_checks_s: float | None = None  # first check job queued -> last one done
    fake_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0  # this process: polling the counts and the backends' CPU
    machine_busy_s: float = 0.0
    machine_capacity_s: float = 0.0
    other_cpu_s: float = 0.0
    model_calls: int = 0
    max_calls_in_flight: int = 0
    job_seconds_median: float | None = None
    job_seconds_p95: float | None = None
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)


def pool_size(args: argparse.Namespace, workers: int) -> int:
    """DB_POOL_SIZE of each worker: given, or what keeps the workers (each up to twice its pool, SQLAlchemy's overflow,
    plus the queue's own connections) within CONNECTION_BUDGET of PostgreSQL's 100 beside the scheduler's small pool;
    the rest is left to other users of the server."""
    if args.db_pool_size:
        return int(args.db_pool_size)
    per_worker = (CONNECTION_BUDGET - 2 * SCHEDULER_POOL - QUEUE_CONNECTIONS) // workers
    return max(2, min(15, (per_worker - QUEUE_CONNECTIONS) // 2))


def agent_env(
    url: str, args: argparse.Namespace, fake: FakeOpenRouterProcess, secret_key: str, db_pool_size: int
) -> dict[str, str]:
    """The settings every agent process of the run gets (nothing else from this environment but PATH-like basics)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
    }
    env.update(
        DATABASE_URL=url,
        OPENROUTER_API_KEY="sk-or-bench-not-a-key",
        OPENROUTER_BASE_URL=fake.base_url,
        LLM_MODEL=MODEL,
        LLM_REQUESTS_PER_MINUTE="10000000",
        LLM_MAX_CONCURRENCY="1000",  # on PostgreSQL one llm_slots row per slot
        LLM_MAX_ATTEMPTS="1",  # a failed call is a failure in the figures, not a retry hidden in the time
        MARKET_SOURCE="simulated",
        SIM_SPEED=str(args.sim_speed),
        ASSETS="BTC,ETH,SOL",
        INTERVAL="5m",
        SECRET_KEY=secret_key,
        DB_POOL_SIZE=str(db_pool_size),
    )
    if args.log_level:
        env["LOG_LEVEL"] = args.log_level
    return env


async def _decided(conn: asyncpg.Connection) -> int:
    """Loop decisions of the first candle stored with their outcome (a `pending` one is still in flight)."""
    decided = await conn.fetchval(
        "SELECT count(*) FROM decisions WHERE trigger = 'loop' AND status <> ALL($1::text[])"
        " AND cycle_time = (SELECT min(cycle_time) FROM decisions WHERE trigger = 'loop')",
        list(DONE),
    )
    return int(decided)


async def _wait_workers_up(conn: asyncpg.Connection, workers: list[Proc], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    names = [w.name for w in workers]
    while True:
        for proc in workers:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            up = await conn.fetchval("SELECT count(*) FROM worker_stats WHERE name = ANY($1::text[])", names)
        except asyncpg.UndefinedTableError:
            up = 0
        if up == len(workers):
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}:\n{w.tail()}" for w in workers)
            raise RuntimeError(f"{len(workers) - up} worker(s) not up (no worker_stats row) in {timeout_s:g} s\n{logs}")
        await asyncio.sleep(0.25)


@dataclass
class Snapshot:
    """CPU seconds so far of every process measured, at one moment."""

    workers: dict[str, float]
    scheduler: float
    fake: float
    fake_calls: int
    machine_busy: float
    machine_total: float
    own: float

    @classmethod
    def take(cls, workers: list[Proc], scheduler: Proc, fake: FakeOpenRouterProcess) -> Snapshot:
        for proc in [*workers, scheduler, fake.proc]:
            proc.sample()
        busy, total = machine_cpu()
        return cls(
            {p.name: p.cpu_last for p in workers},
            scheduler.cpu_last,
            fake.proc.cpu_last,
            int(fake.stats()["calls"]),
            busy,
            total,
            time.process_time(),
        )


async def _first_decide_job(conn: asyncpg.Connection) -> bool:
    try:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = $1)", DECIDE)
        )
    except asyncpg.UndefinedTableError:  # the first scheduler or worker installs the queue's tables
        return False


async def run_once(
    workers: int, args: argparse.Namespace, fake: FakeOpenRouterProcess, folder: Path, secret_key: str
) -> RunResult:
    name = f"bench_workers_{os.getpid()}_{workers}"
    url = database_url(args.postgres_url, name)
    await create_database(args.postgres_url, name)
    run_dir = folder / f"run-{workers}"
    run_dir.mkdir()
    procs: list[Proc] = []
    try:
        seed_s = await seed(url, args.accounts, secret_key, run_dir)
        result = RunResult(workers, args.concurrency, args.accounts, name, round(seed_s, 2))
        result.db_pool_size = pool_size(args, workers)
        env = agent_env(url, args, fake, secret_key, result.db_pool_size)
        worker_procs = [
            spawn(
                f"bench-worker-{i}",
                [args.agent, "worker", "--concurrency", str(args.concurrency), "--name", f"bench-worker-{i}"],
                env,
                run_dir,
            )
            for i in range(1, workers + 1)
        ]
        procs.extend(worker_procs)
        conn = await asyncpg.connect(url)
        try:
            await _wait_workers_up(conn, worker_procs, args.startup_timeout)
            pg = BackendCPU(own_pid=conn.get_server_pid())
            started = time.time()
            scheduler_env = {**env, "DB_POOL_SIZE": str(SCHEDULER_POOL)}
            scheduler = spawn("scheduler", [args.agent, "scheduler", "--cycles", "1"], scheduler_env, run_dir)
            procs.append(scheduler)
            # the start-up: the scheduler's own, then a check job per account (venue reconciled, stops checked),
            # all done before the first candle's jobs are queued; the window opens when the first of those appears
            while not await _first_decide_job(conn):
                if problem := _stopped(worker_procs, scheduler) or _late(started, args.timeout):
                    raise RuntimeError(f"the cycle was never queued: {problem}")
                await pg.sample(conn, name)
                await asyncio.sleep(0.1)
            await pg.sample(conn, name)
            pg.baseline()
            before = Snapshot.take(worker_procs, scheduler, fake)
            opened = time.time()
            all_done_at: float | None = None
            last_progress, last_decided = time.monotonic(), -1
            while True:
                await asyncio.sleep(args.poll)
                decided = await _decided(conn)
                await pg.sample(conn, name)
                for proc in [*worker_procs, scheduler]:
                    proc.sample()
                if decided != last_decided:
                    last_progress, last_decided = time.monotonic(), decided
                if decided >= args.accounts:
                    all_done_at = time.time()
                    break
                if problem := _stopped(worker_procs, scheduler) or _late(started, args.timeout):
                    result.notes.append(problem)
                    result.timed_out = True
                    break
                if time.monotonic() - last_progress > args.stall_timeout:
                    result.notes.append(f"no decision stored for {args.stall_timeout:g} s")
                    result.timed_out = True
                    break
            await pg.sample(conn, name)
            after = Snapshot.take(worker_procs, scheduler, fake)
            if result.timed_out:
                result.notes.append(f"stopped with {last_decided} of {args.accounts} decided")
            while True:  # the scheduler exits once its cycle is done; sampled before it is reaped (a zombie's
                scheduler.sample()  # /proc entry still holds its final CPU time)
                if scheduler.popen.poll() is not None:
                    break
                if time.time() - (all_done_at or started) > 30:
                    result.notes.append("the scheduler had not exited 30 s after the cycle was decided: stopped")
                    break
                await asyncio.sleep(0.2)
            await _collect(conn, result)
            _figures(result, before, after, pg, scheduler)
            result.wall_from_scheduler_start_s = round(all_done_at - started, 2) if all_done_at else None
            result.queued_after_scheduler_start_s = round(opened - started, 2)
            result.max_calls_in_flight = int(fake.stats()["max_in_flight"])
        finally:
            await conn.close()
        stop(procs)
        return result
    finally:
        stop(procs, grace_s=10)
        if not args.keep_db:
            await drop_database(args.postgres_url, name)


def _stopped(workers: list[Proc], scheduler: Proc) -> str | None:
    """Why the run cannot go on: a worker that exited, or a scheduler that failed."""
    for proc in workers:
        if proc.popen.poll() is not None:
            return f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail(10)}"
    if scheduler.popen.poll() not in (None, 0):
        return f"the scheduler exited with {scheduler.popen.returncode}:\n{scheduler.tail(15)}"
    return None


def _late(started: float, timeout: float) -> str | None:
    return f"gave up after {timeout:g} s (--timeout)" if time.time() - started > timeout else None


def _figures(result: RunResult, before: Snapshot, after: Snapshot, pg: BackendCPU, scheduler: Proc) -> None:
    """CPU over the window (the first decide job queued -> every decision of the cycle stored), per decision."""
    worker_cpu = {name: after.workers[name] - cpu for name, cpu in before.workers.items()}
    result.worker_cpu_s = round(sum(worker_cpu.values()), 2)
    result.postgres_cpu_s = round(pg.used, 2)
    result.most_connections = pg.most_connections
    result.scheduler_cpu_s = round(after.scheduler - before.scheduler, 2)
    result.scheduler_cpu_total_s = round(scheduler.cpu_last, 2)
    result.fake_cpu_s = round(after.fake - before.fake, 2)
    result.bench_cpu_s = round(after.own - before.own, 2)
    result.machine_busy_s = round(after.machine_busy - before.machine_busy, 2)
    result.machine_capacity_s = round(after.machine_total - before.machine_total, 2)
    result.other_cpu_s = round(
        result.machine_busy_s
        - result.worker_cpu_s
        - result.postgres_cpu_s
        - result.scheduler_cpu_s
        - result.fake_cpu_s
        - result.bench_cpu_s,
        2,
    )
    result.model_calls = after.fake_calls - before.fake_calls
    if result.decided:
        result.worker_cpu_ms_per_decision = round(result.worker_cpu_s / result.decided * 1000, 2)
        result.postgres_cpu_ms_per_decision = round(result.postgres_cpu_s / result.decided * 1000, 2)
    if result.cycle_wall_s:
        result.decisions_per_s = round(result.decided / result.cycle_wall_s, 1)
        result.worker_cpu_utilisation = [round(cpu / result.cycle_wall_s, 2) for cpu in worker_cpu.values()]


async def _collect(conn: asyncpg.Connection, result: RunResult) -> None:
    """The cycle's figures as the database recorded them: its decisions, worker_stats, the decide jobs of the first
    candle and their events (procrastinate's table of state changes, stamped by PostgreSQL's clock), the start-up's
    check jobs."""
    first = await conn.fetchval("SELECT min(cycle_time) FROM decisions WHERE trigger = 'loop'")
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM decisions WHERE trigger = 'loop' AND cycle_time = $1 GROUP BY status", first
    )
    result.cycle_time = first.isoformat() if first else None
    result.decision_statuses = {r["status"]: int(r["n"]) for r in rows}
    result.decided = sum(n for s, n in result.decision_statuses.items() if s not in DONE)
    result.decision_errors = result.decision_statuses.get("error", 0)
    result.later_cycles = int(
        await conn.fetchval("SELECT count(DISTINCT cycle_time) FROM decisions WHERE trigger = 'loop'") or 0
    ) - (1 if first else 0)
    rows = await conn.fetch(
        "SELECT name, jobs, decisions, failures, cpu_s, concurrency FROM worker_stats ORDER BY name"
    )
    result.worker_stats_rows = [dict(r) for r in rows]
    rows = await conn.fetch(
        "SELECT task_name, status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1, 2"
    )
    result.job_statuses = {f"{r['task_name']}:{r['status']}": int(r["n"]) for r in rows}
    first_cycle = await conn.fetchval(
        "SELECT min(args->>'cycle_time') FROM procrastinate_jobs WHERE task_name = $1", DECIDE
    )
    events = (
        "SELECT e.job_id, e.type, e.at FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id"
        " WHERE j.task_name = $1 AND ($2::text IS NULL OR j.args->>'cycle_time' = $2)"
    )
    span = (
        f"WITH e AS ({events}) SELECT min(at) FILTER (WHERE type = 'deferred') AS first_queued,"
        " max(at) FILTER (WHERE type IN ('succeeded', 'failed')) AS last_done FROM e"
    )
    decide = await conn.fetchrow(span, DECIDE, first_cycle)
    if decide is not None and decide["first_queued"] and decide["last_done"]:
        result.cycle_wall_s = round((decide["last_done"] - decide["first_queued"]).total_seconds(), 2)
    check = await conn.fetchrow(span, CHECK, None)
    if check is not None and check["first_queued"] and check["last_done"]:
        result.startup_checks_s = round((check["last_done"] - check["first_queued"]).total_seconds(), 2)
    durations = await conn.fetch(
        f"WITH e AS ({events}) SELECT extract(epoch FROM max(at) FILTER (WHERE type IN ('succeeded', 'failed'))"
        " - max(at) FILTER (WHERE type = 'started')) AS s FROM e GROUP BY job_id",
        DECIDE,
        first_cycle,
    )
    seconds = sorted(float(r["s"]) for r in durations if r["s"] is not None)
    if seconds:
        result.job_seconds_median = round(statistics.median(seconds), 2)
        result.job_seconds_p95 = round(seconds[max(0, int(0.95 * len(seconds)) - 1)], 2)


# ------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[RunResult], args: argparse.Namespace) -> dict[str, Any]:
    base = next((r for r in results if r.workers == 1 and r.cycle_wall_s and not r.timed_out), None)
    speedups = {
        f"1->{r.workers}": round(base.cycle_wall_s / r.cycle_wall_s, 2)
        for r in results
        if base is not None and base.cycle_wall_s and r.cycle_wall_s and not r.timed_out and r.workers != 1
    }
    print(
        f"one cycle of {args.accounts:,} paper accounts on PostgreSQL, model answering in {args.delay:g} s (fake "
        f"OpenRouter), {args.concurrency} jobs at once per worker, "
        f"{os.cpu_count()} cores"
    )
    header = (
        f"  {'workers':>7} {'decided':>8} {'errors':>6} {'cycle s':>8} {'dec/s':>7} {'worker CPU ms/dec':>17}"
        f" {'PG CPU ms/dec':>13} {'worker util':>12} {'machine busy':>12} {'speed-up':>8}"
    )
    print(header)
    for r in results:
        util = "/".join(f"{u:.2f}" for u in r.worker_cpu_utilisation) or "-"
        busy = f"{r.machine_busy_s / r.machine_capacity_s:.0%}" if r.machine_capacity_s else "-"
        speed = (
            "1.00" if r is base else (f"{speedups[f'1->{r.workers}']:.2f}" if f"1->{r.workers}" in speedups else "-")
        )
        print(
            f"  {r.workers:>7} {r.decided:>8} {r.decision_errors:>6} {_fmt(r.cycle_wall_s):>8}"
            f" {_fmt(r.decisions_per_s):>7} {_fmt(r.worker_cpu_ms_per_decision):>17}"
            f" {_fmt(r.postgres_cpu_ms_per_decision):>13} {util:>12} {busy:>12} {speed:>8}"
        )
    for r in results:
        print(
            f"  {r.workers} worker(s): seeded in {r.seed_s:.1f} s; scheduler start -> cycle queued "
            f"{_fmt(r.queued_after_scheduler_start_s)} s (start-up checks of every account {_fmt(r.startup_checks_s)}"
            f" s) -> all decided {_fmt(r.wall_from_scheduler_start_s)} s; job time median "
            f"{_fmt(r.job_seconds_median, '.2f')} s, p95 {_fmt(r.job_seconds_p95, '.2f')} s; model calls "
            f"{r.model_calls}, at most {r.max_calls_in_flight} in "
            f"flight; DB_POOL_SIZE {r.db_pool_size}, at most {r.most_connections} connections to the database"
        )
        print(
            f"    CPU s over the cycle: workers {r.worker_cpu_s}, PostgreSQL {r.postgres_cpu_s}, scheduler "
            f"{r.scheduler_cpu_s}, fake {r.fake_cpu_s}, this bench {r.bench_cpu_s}, other load {r.other_cpu_s} ("
            f"machine busy {r.machine_busy_s} of {r.machine_capacity_s})"
        )
        print(f"    jobs {r.job_statuses}; decisions of candle {r.cycle_time}: {r.decision_statuses}")
        if r.later_cycles:
            print(f"    the scheduler went on to {r.later_cycles} more candle(s) (not measured)")
        for note in r.notes:
            print(f"    note: {note}")
    return {
        "benchmark": "bench_workers",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "accounts": args.accounts,
        "model_delay_s": args.delay,
        "concurrency_per_worker": args.concurrency,
        "sim_speed": args.sim_speed,
        "cores": os.cpu_count(),
        "speedups": speedups,
        "runs": [asdict(r) for r in results],
    }


def copy_logs(folder: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in folder.rglob("*.log"):
        (target / f"{log.parent.name}-{log.name}").write_bytes(log.read_bytes())


async def postgres_reachable(url: str) -> str | None:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def main(args: argparse.Namespace) -> int:
    why = await postgres_reachable(args.postgres_url)
    if why is not None:
        print(f"bench_workers skipped: no PostgreSQL at {args.postgres_url} ({why}); set BENCH_POSTGRES_URL")
        return 0
    secret_key = Fernet.generate_key().decode()
    results: list[RunResult] = []
    # SIGTERM (and SIGINT, which a background job ignores) cancel the run: the `finally` blocks stop the processes
    # started here and drop the database
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        folder = Path(tmp)
        fake = FakeOpenRouterProcess(args.delay, folder)
        try:
            for workers in args.workers:
                result = await run_once(workers, args, fake, folder, secret_key)
                results.append(result)
                print(
                    f"  ... {workers} worker(s): {result.decided} decided, cycle {_fmt(result.cycle_wall_s)} s",
                    flush=True,
                )
        finally:
            fake.close()
            if args.keep_logs:
                copy_logs(folder, Path(args.keep_logs))
    summary = report(results, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2, default=str))
    print(f"  results: {args.json}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One cycle of many accounts decided by 1, 2 and 4 worker processes.")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts in the cycle (default 10,000)")
    parser.add_argument(
        "--workers", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2, 4], help="e.g. 1,2,4"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="jobs at once per worker (default 100)")
    parser.add_argument("--delay", type=float, default=1.0, help="the fake model's answer time in s (default 1.0)")
    parser.add_argument(
        "--db-pool-size", type=int, default=0, help="DB_POOL_SIZE of each agent process (0: by workers)"
    )
    parser.add_argument(
        "--sim-speed", type=float, default=0.01, help="SIM_SPEED (default 0.01: no second candle closes in a run)"
    )
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many s")
    parser.add_argument("--stall-timeout", type=float, default=120.0, help="give up after this many s with no decision")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="wait this long for the workers to be up")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between counts of the stored decisions")
    parser.add_argument("--log-level", default=None, help="LOG_LEVEL of the agent processes (default: theirs, INFO)")
    parser.add_argument("--agent", default=str(AGENT), help="the trading-agent program (default: the venv's)")
    parser.add_argument("--keep-db", action="store_true", help="keep each run's database")
    parser.add_argument("--keep-logs", default=None, help="copy the processes' logs into this folder")
    parser.add_argument("--json", type=Path, default=BACKEND / "data" / "bench_workers.json", help="results file")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except asyncio.CancelledError:  # SIGTERM or SIGINT: what it started is stopped, its database dropped
        print("bench_workers: stopped", file=sys.stderr)
        sys.exit(1)
