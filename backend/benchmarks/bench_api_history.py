"""`GET /api/v1/decisions/history` under a steady load, the way the issue states it: 100,000 stored decisions,
200 requests/s for 30 s over loopback; p50/p90/p99/max latency and the errors (target: p99 under 50 ms, none).

* database: a fresh SQLite file migrated and set up as the app does it (`build_agent`, with 4 paper accounts).
  Real decision cycles (simulated market, baseline model) give the row templates; copies of them are bulk
  inserted (executemany, with their orders and provenance) up to 100,000 decisions, ids interleaved across the
  accounts one 5m cycle apart, every column stored as the engine stores it, the context snapshot and prompt
  (about 36 kB a decision) in their own table: the temporary file is about 4.2 GB (removed at the end), and
  it is written to disk before the server starts (see `flush_to_disk`).
* server: `trading-agent serve` (API only, no trading loop) in its own process on 127.0.0.1 with a free port,
  an admin key from ADMIN_API_KEY and offline defaults (simulated market, no LLM key, `.env` not read).
* load: this process, open loop: request i is due at t0 + i/rate whatever the answers, and its latency counts
  from that due time (a stalled server shows in the tail, no coordinated omission). Keep-alive HTTP/1.1 over
  a few connections, raw asyncio streams and a hand-written response parser, so the client stays cheap.
  The mix: newest page (limit 50) of a random account; `symbol=BTC`; `before_id` pages near the top and deep
  in the history. Non-200 answers, timeouts and socket errors are errors, and so are requests still waiting
  15 s after the last one was due ("unanswered"); percentiles are over the 200 answers. A short warm-up runs
  first and is not counted. Also printed: the server's CPU per request (what bounds its rate: one event loop)
  and the load average before the run (another busy process on the machine skews every figure).

Run: make bench   (or: cd backend && .venv/bin/python benchmarks/bench_api_history.py)
Quick: BENCH_SECONDS=5 BENCH_RATE=100 .venv/bin/python benchmarks/bench_api_history.py
Knobs: BENCH_SECONDS (30), BENCH_RATE (200/s), BENCH_CONNECTIONS (8), BENCH_DECISIONS (100000), BENCH_WARMUP (2 s).
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet

from app.bootstrap import build_agent
from app.core.clock import ManualClock
from app.core.config import ExplicitSettings, Settings
from app.core.security import new_api_key
from app.db.repositories.accounts import AccountRepository
from app.services.account.new_account import new_account

SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
RATE = float(os.environ.get("BENCH_RATE", "200"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
DECISIONS = int(os.environ.get("BENCH_DECISIONS", "100000"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
HOST = "127.0.0.1"
ACCOUNTS = 4
ALL_ASSETS = ["BTC", "ETH", "SOL"]
SOME_ASSETS = ["ETH", "SOL"]  # API-triggered decisions on part of the assets: `symbol=BTC` must skip them
TEMPLATE_CYCLES = 30
START = datetime(2025, 12, 1, tzinfo=UTC)
CYCLE = timedelta(minutes=5)
REQUEST_TIMEOUT_S = 10.0
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how the UTCDateTime columns are stored on SQLite


# ------------------------------------------------------------------------------------------------ database
async def make_templates(settings: Settings) -> None:
    """Migrate and set up the database as the server would, add the accounts, and store real decisions."""
    clock = ManualClock(START)
    agent = await build_agent(settings, clock=clock)
    try:
        async with agent.sessions.begin() as session:
            repo = AccountRepository(session)
            first = (await repo.all())[0]
            for n in range(2, ACCOUNTS + 1):
                now = clock.now()
                await repo.add(
                    new_account(
                        f"paper-{n}",
                        now=now,
                        venue=first.venue,
                        strategy_id=first.strategy_id,
                        initial_balance=first.initial_balance,
                        max_position_size=first.max_position_size,
                        max_leverage=first.max_leverage,
                    ),
                    reason="benchmark account",
                    now=now,
                )
        for cycle in range(TEMPLATE_CYCLES):
            clock.advance(CYCLE)
            await agent.engine.make_trading_decision(ALL_ASSETS, 1, trigger="loop")
            if cycle % 3 == 0:
                await agent.engine.make_trading_decision(SOME_ASSETS, 2, trigger="api")
    finally:
        await agent.close()


@dataclass
class Seeded:
    decisions: int
    orders: int
    first_id: int
    last_id: int
    megabytes: float


def seed(db_path: Path, total: int) -> Seeded:
    """Copy the stored decisions (and their orders) up to `total` rows with fast bulk inserts."""
    rng = random.Random(7)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")  # the server switches back to WAL when it connects
        conn.execute("PRAGMA synchronous=OFF")
        cursor = conn.execute("SELECT * FROM decisions ORDER BY id")
        columns = [d[0] for d in cursor.description]
        templates = cursor.fetchall()
        col = {name: i for i, name in enumerate(columns)}
        full = [t for t in templates if t[col["symbols_key"]] == ",BTC,ETH,SOL,"]
        partial = [t for t in templates if t[col["symbols_key"]] != ",BTC,ETH,SOL,"]
        cursor = conn.execute("SELECT * FROM orders WHERE decision_id IS NOT NULL ORDER BY id")
        order_columns = [d[0] for d in cursor.description]
        ocol = {name: i for i, name in enumerate(order_columns)}
        orders_of: dict[int, list[tuple[object, ...]]] = {}
        for order in cursor.fetchall():
            orders_of.setdefault(int(order[ocol["decision_id"]]), []).append(order)
        provenance_of = {
            int(decision_id): (context, prompt)
            for decision_id, context, prompt in conn.execute(
                "SELECT decision_id, context_snapshot, prompt FROM decision_provenance"
            )
        }
        last_time = datetime.strptime(
            conn.execute("SELECT max(cycle_time) FROM decisions").fetchone()[0], SQLITE_TIME
        ).replace(tzinfo=UTC)
        next_id = int(conn.execute("SELECT max(id) FROM decisions").fetchone()[0]) + 1
        first_id = next_id
        to_add = max(0, total - len(templates))

        insert_decision = f"INSERT INTO decisions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        insert_order = f"INSERT INTO orders ({', '.join(order_columns)}) VALUES ({', '.join('?' * len(order_columns))})"
        insert_provenance = "INSERT INTO decision_provenance (decision_id, context_snapshot, prompt) VALUES (?, ?, ?)"
        decisions: list[list[object]] = []
        orders: list[list[object]] = []
        provenances: list[tuple[object, ...]] = []
        n_orders = 0
        conn.execute("BEGIN")
        cycle = 0
        while next_id - first_id < to_add:
            cycle += 1
            moment = last_time + cycle * CYCLE
            cycle_time = moment.strftime(SQLITE_TIME)
            for account_id in range(1, ACCOUNTS + 1):
                if next_id - first_id >= to_add:
                    break
                template = rng.choice(partial) if partial and rng.random() < 0.1 else rng.choice(full)
                row = list(template)
                row[col["id"]] = next_id
                row[col["account_id"]] = account_id
                row[col["cycle_time"]] = cycle_time
                row[col["created_at"]] = (moment + timedelta(seconds=rng.uniform(0.5, 20))).strftime(SQLITE_TIME)
                decisions.append(row)
                provenance = provenance_of.get(int(template[col["id"]]))
                if provenance is not None:
                    provenances.append((next_id, *provenance))
                for k, order in enumerate(orders_of.get(int(template[col["id"]]), []), start=1):
                    copy = list(order)
                    copy[ocol["id"]] = None
                    copy[ocol["account_id"]] = account_id
                    copy[ocol["decision_id"]] = next_id
                    copy[ocol["client_order_id"]] = f"a{account_id}-d{next_id}-{order[ocol['symbol']]}-{k}"
                    copy[ocol["created_at"]] = row[col["created_at"]]
                    copy[ocol["updated_at"]] = row[col["created_at"]]
                    orders.append(copy)
                next_id += 1
            if len(decisions) >= 2000:
                conn.executemany(insert_decision, decisions)
                conn.executemany(insert_provenance, provenances)
                conn.executemany(insert_order, orders)
                n_orders += len(orders)
                decisions, orders, provenances = [], [], []
        conn.executemany(insert_decision, decisions)
        conn.executemany(insert_provenance, provenances)
        conn.executemany(insert_order, orders)
        n_orders += len(orders)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
        count = int(conn.execute("SELECT count(*) FROM decisions").fetchone()[0])
    finally:
        conn.close()
    return Seeded(count, n_orders, first_id, next_id - 1, db_path.stat().st_size / 1e6)


def flush_to_disk(db_path: Path) -> None:
    """Write the seeded file out now. Seeding leaves gigabytes of it in the page cache, unwritten (2.2 GB was
    still dirty throughout a run), for the kernel's flusher to write whenever it sees fit, during the load as
    likely as not. Without this, 2 of 5 runs had single answers of 216 and 230 ms (p90 4.5 ms); with it, the
    slowest answers of 3 runs were 26, 42 and 79 ms. The set-up's writes are not the server's cost."""
    fd = os.open(db_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(db_path: Path, admin_key: str) -> dict[str, str]:
    """Offline defaults: every setting the environment might carry is dropped, then only ours are set."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        DATABASE_URL=f"sqlite:///{db_path}",
        ADMIN_API_KEY=admin_key,
        SECRET_KEY=Fernet.generate_key().decode(),
        MARKET_SOURCE="simulated",
        TRADING_MODE="paper",
        LOG_LEVEL="WARNING",
    )
    return env


def start_server(port: int, env: dict[str, str], workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("trading-agent")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [*command, "serve", "--host", HOST, "--port", str(port)],
            cwd=workdir,  # no `.env` there; relative data paths stay in the temporary folder
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from /health within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------- load
def requests_for(n: int, port: int, admin_key: str, seeded: Seeded, rng: random.Random) -> list[bytes]:
    """The request mix, as ready-to-send bytes."""
    head = f"Host: {HOST}:{port}\r\nX-API-Key: {admin_key}\r\nAccept: application/json\r\n\r\n"
    out: list[bytes] = []
    for _ in range(n):
        query = f"account_id={rng.randint(1, ACCOUNTS)}"
        pick = rng.random()
        if pick < 0.15:
            query += "&symbol=BTC"
        elif pick < 0.30:  # the next pages of a list
            query += f"&before_id={rng.randint(max(seeded.first_id, seeded.last_id - 2_000), seeded.last_id)}"
        elif pick < 0.40:  # deep in the history
            query += f"&before_id={rng.randint(seeded.first_id, seeded.last_id)}"
        elif pick < 0.45:
            query += f"&symbol=BTC&before_id={rng.randint(seeded.first_id, seeded.last_id)}"
        out.append(f"GET /api/v1/decisions/history?{query} HTTP/1.1\r\n{head}".encode())
    return out


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    answered: int = 0
    body_bytes: int = 0
    last_answer: float = 0.0
    max_send_lag_ms: float = 0.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Status, body length and whether the server closes the connection (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ValueError("chunked answer")
    if length is None:
        raise ValueError("answer without Content-Length")
    await reader.readexactly(length)
    return status, length, close


async def connection(port: int, queue: asyncio.Queue[tuple[float, bytes] | None], tally: Tally) -> None:
    """One keep-alive connection: takes due requests in order, one at a time; reconnects after an error."""
    loop = asyncio.get_running_loop()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (item := await queue.get()) is not None:
        due, payload = item
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(payload)
                tally.sent += 1
                status, length, close = await read_response(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            tally.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        now = loop.time()
        tally.answered += 1
        tally.last_answer = now
        tally.body_bytes += length
        if status == 200:
            tally.latencies_ms.append((now - due) * 1000)
        else:
            tally.errors[f"HTTP {status}"] += 1
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_load(requests: list[bytes], rate: float, port: int) -> tuple[Tally, float]:
    """Send `requests` at `rate` per second (open loop); returns the tally and the time from start to the last
    answer."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    tally = Tally()
    workers = [asyncio.create_task(connection(port, queue, tally)) for _ in range(CONNECTIONS)]
    t0 = loop.time() + 0.05
    for i, payload in enumerate(requests):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.max_send_lag_ms = max(tally.max_send_lag_ms, (loop.time() - due) * 1000)
        queue.put_nowait((due, payload))
    for _ in workers:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=REQUEST_TIMEOUT_S + 5)
    for task in pending:
        task.cancel()
    unanswered = len(requests) - tally.answered - sum(tally.errors.values())
    if unanswered:
        tally.errors["unanswered"] += unanswered
    return tally, max(tally.last_answer - t0, 1e-9)


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "bench.db"
        admin_key = new_api_key("admin")
        env = server_env(db_path, admin_key)
        start = time.perf_counter()
        settings = ExplicitSettings(
            database_url=env["DATABASE_URL"], admin_api_key=admin_key, secret_key=env["SECRET_KEY"]
        )
        asyncio.run(make_templates(settings))
        templates_s = time.perf_counter() - start
        start = time.perf_counter()
        seeded = seed(db_path, DECISIONS)
        seed_s = time.perf_counter() - start
        start = time.perf_counter()
        flush_to_disk(db_path)
        flush_s = time.perf_counter() - start
        print(
            f"decision history under load: SQLite, {seeded.decisions:,} decisions over {ACCOUNTS} accounts "
            f"({seeded.orders:,} orders, {seeded.megabytes:,.0f} MB)"
        )
        print(
            f"  set-up: real cycles for templates {templates_s:.1f} s, bulk seeding {seed_s:.1f} s, "
            f"written to disk {flush_s:.1f} s"
        )

        port = free_port()
        log = workdir / "server.log"
        server = start_server(port, env, workdir, log)
        try:
            ready_s = wait_healthy(port, server, log)
            print(f"  server: trading-agent serve on {HOST}:{port} (pid {server.pid}), healthy after {ready_s:.1f} s")
            rng = random.Random(11)
            gc.collect()
            gc.freeze()
            if WARMUP > 0:
                warm, _ = asyncio.run(
                    run_load(requests_for(int(WARMUP * RATE), port, admin_key, seeded, rng), RATE, port)
                )
                print(f"  warm-up: {warm.answered} answers, {sum(warm.errors.values())} errors (not counted)")
            requests = requests_for(int(SECONDS * RATE), port, admin_key, seeded, rng)
            load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            server_cpu = cpu_seconds(server.pid)
            own_cpu = time.process_time()
            tally, elapsed = asyncio.run(run_load(requests, RATE, port))
            own_cpu = time.process_time() - own_cpu
            after = cpu_seconds(server.pid)
            server_cpu = after - server_cpu if after is not None and server_cpu is not None else None
        finally:
            stop_server(server)

    ordered = sorted(tally.latencies_ms)
    errors = sum(tally.errors.values())
    print(
        f"  load: {RATE:g} requests/s for {SECONDS:g} s, open loop, {CONNECTIONS} keep-alive connections "
        f"(latency from the scheduled send time); {os.cpu_count()} CPUs, load average {load_average:.2f} before"
    )
    print(
        f"  requests: scheduled {len(requests)}  sent {tally.sent}  answered {tally.answered}  "
        f"ok {len(ordered)}  errors {errors}" + (f" ({dict(tally.errors)})" if errors else "")
    )
    print(
        f"  achieved: {len(ordered) / elapsed:.1f} ok answers/s, "
        f"{tally.body_bytes / max(tally.answered, 1) / 1024:.0f} KiB per answer"
    )
    print(
        f"  latency ms: p50 {percentile(ordered, 0.50):.1f}  p90 {percentile(ordered, 0.90):.1f}  "
        f"p99 {percentile(ordered, 0.99):.1f}  max {ordered[-1] if ordered else float('nan'):.1f}   "
        "(target: p99 < 50, no errors)"
    )
    answered = max(tally.answered, 1)
    if server_cpu:  # one event loop: its CPU per request bounds the rate it can serve
        per_request = server_cpu / answered * 1000
        print(f"  server: {per_request:.2f} ms CPU per request (all its threads): ~{1000 / per_request:.0f}/s per core")
    print(
        f"  load generator: {own_cpu / answered * 1000:.2f} ms CPU per request, "
        f"its latest request queued {tally.max_send_lag_ms:.1f} ms after its due time"
    )


if __name__ == "__main__":
    main()
