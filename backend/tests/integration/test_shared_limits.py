"""Limits shared through the database, across real OS processes (each its own engine and connections): a leaky bucket
accepts exactly its capacity whoever races for it, the model-call cap holds in total, and a slot leased by a process
killed with SIGKILL is free again once its lease ends.

The children are this file's `child()`, run with `python -c`. In-flight calls are counted by a TCP server in the
test's own process: each call holds one connection open for the whole of its slot, and the server counts the
connections open at once (a call's connection is accepted after it took its slot and closed before it frees it, so
the server never counts more than the slots held).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import ManualClock, WallClock
from app.db.models import LLMSlot
from app.db.session import create_engine, create_session_factory
from app.services.limits import SharedBuckets
from app.services.limits.llm_gate import SharedLLMGate

pytestmark = pytest.mark.db

BACKEND = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 120  # a child that has not finished by then is a failure, not a slow machine
START_DELAY_S = 1.5  # the children start at one moment, once their engines are connected
NOW = datetime(2031, 7, 14, 6, 0, tzinfo=UTC)  # the buckets' wall time: fixed, so nothing drains during the race
CALL_HOLD_S = 0.1  # how long the counting server holds each call's connection


# ------------------------------------------------------------------------------------------------------ the children
async def _race_bucket(url: str, start_at: float, attempts: int, capacity: float) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect():
            pass  # connected before the start: the race is between the takes, not the connects
        buckets = SharedBuckets(create_session_factory(engine))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        answers = await asyncio.gather(
            *(buckets.take("race", capacity=capacity, per_second=1e-3, now=NOW) for _ in range(attempts))
        )
        return {"accepted": sum(a is None for a in answers)}
    finally:
        await engine.dispose()


async def _make_calls(url: str, start_at: float, calls: int, port: int, max_concurrency: int) -> dict[str, int]:
    engine = create_engine(url)
    try:
        gate = SharedLLMGate(
            create_session_factory(engine),
            WallClock(),
            requests_per_minute=1e6,
            max_concurrency=max_concurrency,
            holder=f"child-{os.getpid()}",
        )

        async def call() -> None:
            async with gate.slot(shadow=False):
                await gate.pace()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await reader.read()  # the server closes the connection once it has held it
                writer.close()
                await writer.wait_closed()

        async with engine.connect():
            pass
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(call() for _ in range(calls)))
        return {"calls": calls}
    finally:
        await engine.dispose()


async def _hold_a_slot(url: str, lease_s: float) -> None:
    engine = create_engine(url)
    gate = SharedLLMGate(
        create_session_factory(engine),
        WallClock(),
        requests_per_minute=60,
        max_concurrency=1,
        holder=f"child-{os.getpid()}",
        lease_s=lease_s,
    )
    async with gate.slot(shadow=False):
        print(json.dumps({"holding": True}), flush=True)
        await asyncio.sleep(3600)  # until killed


def child() -> None:
    """`python -c "from tests.integration.test_shared_limits import child; child()" <role> <json args>`."""
    role, args = sys.argv[1], json.loads(sys.argv[2])
    if role == "bucket":
        print(json.dumps(asyncio.run(_race_bucket(**args))), flush=True)
    elif role == "calls":
        print(json.dumps(asyncio.run(_make_calls(**args))), flush=True)
    elif role == "hold":
        asyncio.run(_hold_a_slot(**args))


async def spawn(role: str, **args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tests.integration.test_shared_limits import child; child()",
        role,
        json.dumps(args),
        cwd=BACKEND,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def result(proc: asyncio.subprocess.Process) -> dict[str, int]:
    out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD_S)
    assert proc.returncode == 0, err.decode()
    answer: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


# --------------------------------------------------------------------------------------------------------- the tests
async def test_processes_racing_on_one_bucket_accept_exactly_its_capacity(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Four processes, 15 takes at once each, on a bucket of 25 (on SQLite too: one file, four processes)."""
    start_at = time.time() + START_DELAY_S
    children = [await spawn("bucket", url=database_url, start_at=start_at, attempts=15, capacity=25) for _ in range(4)]
    accepted = [(await result(c))["accepted"] for c in children]
    assert sum(accepted) == 25, accepted
    assert await SharedBuckets(sessions).take("race", capacity=25, per_second=1e-3, now=NOW) == pytest.approx(1000.0)


@dataclass
class Counter:
    """Connections open at once, the most seen, and how many in all."""

    open: int = 0
    most: int = 0
    total: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.total += 1
        self.most = max(self.most, self.open)
        await asyncio.sleep(CALL_HOLD_S)
        self.open -= 1
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_model_call_cap_holds_across_processes(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two processes, ten slow calls each at once, a cap of 3 in all: never more than 3 in flight together."""
    counter = Counter()
    server = await asyncio.start_server(counter.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        start_at = time.time() + START_DELAY_S
        children = [
            await spawn("calls", url=database_url, start_at=start_at, calls=10, port=port, max_concurrency=3)
            for _ in range(2)
        ]
        for c in children:
            assert (await result(c))["calls"] == 10
    finally:
        server.close()
        await server.wait_closed()
    assert counter.total == 20
    assert counter.most == 3, f"at most 3 calls at once in all (and the cap was reached): {counter.most}"
    async with sessions() as session:
        leased = await session.scalar(select(LLMSlot.slot).where(LLMSlot.until.is_not(None)).limit(1))
    assert leased is None, "every slot freed"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_slot_held_by_a_killed_process_is_free_after_its_lease(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    holder = await spawn("hold", url=database_url, lease_s=30.0)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), HANG_GUARD_S)
        assert json.loads(line) == {"holding": True}, line
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    assert holder.returncode == -signal.SIGKILL
    async with sessions() as session:
        row = await session.get(LLMSlot, 0)
    assert row is not None and row.until is not None and row.holder == f"child-{holder.pid}#1", "left leased"

    clock = ManualClock(row.until - timedelta(seconds=1))
    gate = SharedLLMGate(sessions, clock, requests_per_minute=60, max_concurrency=1, holder="after")
    assert await gate._try_take("after#early", shadow=False) is None, "still leased until its end"
    clock.set(row.until)
    async with asyncio.timeout(HANG_GUARD_S), gate.slot(shadow=False):
        async with sessions() as session:
            taken = await session.get(LLMSlot, 0)
        assert taken is not None and taken.holder == "after#1"
