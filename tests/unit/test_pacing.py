"""Pacing of SampleChannel messages (grm.core.pacing): at most one per interval unless urgent.

A fake clock decides whether a turn must wait; every wait is bounded by a generous give-up
timeout and released by logic (hurry, urgency, the clock), never by waiting out the interval.
"""

from __future__ import annotations

import asyncio

from grm.core.pacing import Pacer

GIVE_UP_S = 10.0  # far above what each step takes; the interval below is a minute


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_quiet_call_sends_at_once_and_a_busy_one_waits_for_the_interval() -> None:
    clock = FakeClock()
    pacer = Pacer(60.0, clock=clock)
    await asyncio.wait_for(pacer.turn(), GIVE_UP_S)  # nothing sent yet: at once
    waiting = asyncio.ensure_future(pacer.turn())  # 0 s after the last: waits
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    pacer.hurry()  # urgent work was queued: the waiting turn goes now
    await asyncio.wait_for(waiting, GIVE_UP_S)
    await asyncio.wait_for(pacer.turn(urgent=True), GIVE_UP_S)  # urgent: never waits
    clock.now += 60.0  # the interval has passed since the last message
    await asyncio.wait_for(pacer.turn(), GIVE_UP_S)


async def test_a_cancelled_turn_leaves_nothing_behind() -> None:
    pacer = Pacer(60.0, clock=FakeClock())
    await pacer.turn()
    waiting = asyncio.ensure_future(pacer.turn())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and pacer._hold is None
    pacer.hurry()  # nothing waits: a no-op


async def test_no_interval_never_waits() -> None:
    pacer = Pacer(0.0, clock=FakeClock())
    for _ in range(3):
        await asyncio.wait_for(pacer.turn(), GIVE_UP_S)
