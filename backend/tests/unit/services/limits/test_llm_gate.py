"""The model-call gate: the concurrency cap (executed decisions first) and the request rate, in this process's memory
(`LocalLLMGate`) and in the database (`SharedLLMGate`, here within one process; across real processes:
tests/integration/test_shared_limits.py). `LLMService` calls through whichever gate it is given."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import ManualClock
from app.db.models import LLMSlot
from app.services.limits.llm_gate import LLMGate, LocalLLMGate, SharedLLMGate
from app.services.llm.circuit_breaker import CircuitBreakerRegistry
from app.services.llm.llm_service import LLMService
from app.services.llm.prompts.builder import PromptBuilder
from app.services.llm.providers.base import ModelRequest, ModelResponse

T0 = datetime(2031, 7, 14, 6, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


def shared(sessions: Sessions, clock: ManualClock, *, holder: str = "p1", **kw: float) -> SharedLLMGate:
    settings = {"requests_per_minute": 1000.0, "max_concurrency": 2, "lease_s": 60.0, **kw}
    return SharedLLMGate(
        sessions,
        clock,
        requests_per_minute=settings["requests_per_minute"],
        max_concurrency=int(settings["max_concurrency"]),
        holder=holder,
        lease_s=settings["lease_s"],
    )


async def most_in_flight(gate: LLMGate, calls: list[bool], cap: int) -> int:
    """Run a call per entry (True: a shadow) at once; the most that were inside their slot together. A call stays in
    its slot until `cap` calls are inside together (or 1 s has passed): on a busy machine the calls still overlap, and
    a gate that lets more in shows it."""
    inside = most = 0
    full = asyncio.Event()

    async def call(shadow: bool) -> None:
        nonlocal inside, most
        async with gate.slot(shadow=shadow):
            inside += 1
            most = max(most, inside)
            if inside >= cap:
                full.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(full.wait(), 1.0)
            await asyncio.sleep(0.001)
            inside -= 1
            if inside == 0:
                full.clear()

    await asyncio.gather(*(call(s) for s in calls))
    assert inside == 0
    return most


async def rows(sessions: Sessions) -> list[tuple[int, str | None, datetime | None]]:
    async with sessions() as session:
        found = await session.execute(select(LLMSlot.slot, LLMSlot.holder, LLMSlot.until).order_by(LLMSlot.slot))
    return [(r.slot, r.holder, r.until) for r in found]


async def test_the_local_gate_caps_calls() -> None:
    assert await most_in_flight(LocalLLMGate(1000, 2), [i % 3 == 0 for i in range(12)], 2) == 2


@pytest.mark.db
async def test_the_shared_gate_caps_calls_and_frees_its_slots(sessions: Sessions) -> None:
    gate = shared(sessions, ManualClock(T0), max_concurrency=2)
    assert await most_in_flight(gate, [False] * 8, 2) == 2
    assert await rows(sessions) == [(0, None, None), (1, None, None)], "every slot freed after its call"


@pytest.mark.db
async def test_a_shadow_leaves_one_slot_for_executed_calls(sessions: Sessions) -> None:
    gate = shared(sessions, ManualClock(T0), max_concurrency=3)
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(gate.slot(shadow=False))
        assert await gate._try_take("shadow-1", shadow=True) is not None, "two of three free: a shadow may take one"
        assert await gate._try_take("shadow-2", shadow=True) is None, "the last free slot is kept for executed calls"
        assert await gate._try_take("executed", shadow=False) is not None, "an executed call takes the last one"
        assert await gate._try_take("executed-2", shadow=False) is None, "the cap holds"


@pytest.mark.db
async def test_with_one_slot_a_shadow_takes_it_when_free(sessions: Sessions) -> None:
    gate = shared(sessions, ManualClock(T0), max_concurrency=1)
    assert await most_in_flight(gate, [True, True, True], 1) == 1


@pytest.mark.db
async def test_an_executed_call_of_this_process_goes_before_a_waiting_shadow(sessions: Sessions) -> None:
    gate = shared(sessions, ManualClock(T0), max_concurrency=1)
    order: list[str] = []

    async def take(name: str, shadow: bool) -> None:
        async with gate.slot(shadow=shadow):
            order.append(name)

    async with gate.slot(shadow=False):  # the only slot is busy
        shadow = asyncio.create_task(take("shadow", True))
        await asyncio.sleep(0.1)  # the shadow polls first
        executed = asyncio.create_task(take("executed", False))
        await asyncio.sleep(0.1)
        assert order == []
    await asyncio.gather(shadow, executed)
    assert order == ["executed", "shadow"]


@pytest.mark.db
async def test_a_lease_past_its_end_is_free_and_a_call_frees_only_its_own(sessions: Sessions) -> None:
    """A process killed during a call leaves its slot leased until `until`; then another process takes it, and the
    late call's release (it was not killed after all) leaves the new lease alone."""
    clock = ManualClock(T0)
    first, second = (shared(sessions, clock, holder=h, max_concurrency=1) for h in ("p1", "p2"))
    async with contextlib.AsyncExitStack() as late:
        await late.enter_async_context(first.slot(shadow=False))
        assert await rows(sessions) == [(0, "p1#1", T0 + timedelta(seconds=60))]
        clock.advance(timedelta(seconds=59))
        assert await second._try_take("p2#x", shadow=False) is None, "leased until T0 + 60 s"
        clock.advance(timedelta(seconds=1))
        async with second.slot(shadow=False):
            await late.aclose()  # the first call ends now, its lease long over
            assert await rows(sessions) == [(0, "p2#1", T0 + timedelta(seconds=120))], "the new lease stays"
    assert await rows(sessions) == [(0, None, None)]


@pytest.mark.db
async def test_pace_waits_what_the_shared_bucket_says(sessions: Sessions) -> None:
    """Two gates (two processes) share the rate: 2 a minute in all; the third request waits 30 s of wall time."""
    clock = ManualClock(T0)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    one, two = (
        SharedLLMGate(sessions, clock, requests_per_minute=2, max_concurrency=1, holder=h, sleep=sleep) for h in "ab"
    )
    await one.pace()
    await two.pace()
    assert waits == []
    await one.pace()
    assert waits == [pytest.approx(30.0)] and clock.now() == T0 + timedelta(seconds=30)


class Recorder:
    """A gate that records how it is used, and a remote (not simulated) provider that records its calls."""

    name = "test/recorder"
    is_simulated = False

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def slot(self, *, shadow: bool):  # type: ignore[no-untyped-def]
        self.events.append(f"slot shadow={shadow}")
        yield
        self.events.append("freed")

    async def pace(self) -> None:
        self.events.append("paced")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.events.append(f"asked {request.model}")
        return ModelResponse(None, None, request.model, request.model, self.name, 1.0)


async def test_the_service_calls_through_its_gate() -> None:
    recorder = Recorder()
    common = {
        "provider": recorder,
        "models": ["test/model"],
        "prompts": PromptBuilder(interval="5m", long_interval="1h"),
        "breakers": CircuitBreakerRegistry(),
    }
    assert isinstance(LLMService(**common).gate, LocalLLMGate), "by default: this process's memory, as before"
    service = LLMService(**common, gate=recorder)
    request = ModelRequest(["BTC"], None, None, "system", "user", "test/model")  # type: ignore[arg-type]
    await service.generate(request, shadow=True)
    assert recorder.events == ["slot shadow=True", "paced", "asked test/model", "freed"]


@pytest.mark.db
async def test_the_one_process_of_a_database_frees_at_start_the_slots_its_killed_predecessor_held(
    sessions: Sessions,
) -> None:
    killed = shared(sessions, ManualClock(T0), holder="killed", max_concurrency=2)
    await killed._make_rows()
    assert await killed._try_take("call-1", shadow=False) is not None
    assert await killed._try_take("call-2", shadow=False) is not None  # never freed: the process died
    restarted = shared(sessions, ManualClock(T0), holder="restarted", max_concurrency=2)
    assert await restarted._try_take("call-3", shadow=False) is None
    await restarted.release_all()
    assert await rows(sessions) == [(0, None, None), (1, None, None)]
    assert await restarted._try_take("call-3", shadow=False) is not None
