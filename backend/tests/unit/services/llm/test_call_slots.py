"""The model-call concurrency cap serves executed decisions first: a shadow call (an experiment's variant that is
only recorded) never takes a slot an executed decision is waiting for."""

from __future__ import annotations

import asyncio

from app.services.llm.llm_service import _Slots


async def _take(slots: _Slots, name: str, shadow: bool, order: list[str]) -> None:
    async with slots.slot(shadow=shadow):
        order.append(name)
        await asyncio.sleep(0)


async def test_an_executed_call_goes_before_a_shadow_that_queued_first() -> None:
    slots = _Slots(1)
    order: list[str] = []
    async with slots.slot(shadow=False):  # the only slot is busy
        shadow = asyncio.create_task(_take(slots, "shadow", True, order))
        await asyncio.sleep(0)  # the shadow is waiting first
        executed = asyncio.create_task(_take(slots, "executed", False, order))
        await asyncio.sleep(0)
        assert order == []
    await asyncio.gather(shadow, executed)
    assert order == ["executed", "shadow"]


async def test_shadows_use_free_slots_and_the_cap_holds() -> None:
    slots = _Slots(2)
    inside = 0
    most = 0

    async def call(shadow: bool) -> None:
        nonlocal inside, most
        async with slots.slot(shadow=shadow):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(call(i % 3 == 0) for i in range(12)))
    assert most == 2 and inside == 0


async def test_a_cancelled_executed_waiter_does_not_block_shadows() -> None:
    slots = _Slots(1)
    order: list[str] = []
    async with slots.slot(shadow=False):
        waiting = asyncio.create_task(_take(slots, "executed", False, order))
        await asyncio.sleep(0)
        shadow = asyncio.create_task(_take(slots, "shadow", True, order))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.wait_for(shadow, timeout=5)
    assert order == ["shadow"]
