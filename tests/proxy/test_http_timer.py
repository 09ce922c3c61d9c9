"""The listener's lazy deadline timer (:mod:`agentguard.proxy.http_timer`): it calls back
once, never before the latest deadline, and not at all once disarmed or closed."""

from __future__ import annotations

import asyncio

import pytest

from agentguard.proxy.http_timer import LazyTimer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_deadline_moved_later_is_kept_not_the_first() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = LazyTimer(loop, lambda: fired.append(loop.time()))
    timer.arm(0.05)
    await asyncio.sleep(0.02)
    timer.arm(0.1)  # moved on: one handle, re-scheduled when the first time passes
    deadline = loop.time() + 0.1
    while not fired:
        await asyncio.sleep(0.01)
    assert fired[0] >= deadline - 0.001
    assert not timer.armed
    await asyncio.sleep(0.1)
    assert len(fired) == 1  # once


async def test_a_deadline_moved_earlier_fires_at_the_earlier_time() -> None:
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    timer = LazyTimer(loop, fired.set)
    timer.arm(60)
    timer.arm(0.02)
    await asyncio.wait_for(fired.wait(), 10)


async def test_disarmed_or_closed_it_never_calls_back() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    disarmed = LazyTimer(loop, lambda: fired.append("disarmed"))
    disarmed.arm(0.02)
    disarmed.disarm()
    closed = LazyTimer(loop, lambda: fired.append("closed"))
    closed.arm(0.02)
    closed.close()
    await asyncio.sleep(0.1)
    assert fired == [] and not disarmed.armed and not closed.armed
    disarmed.arm(0.01)  # armed again after a disarm: calls back as usual
    await asyncio.sleep(0.1)
    assert fired == ["disarmed"]
