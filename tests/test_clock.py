"""SystemClock's sleeps: real time, so these tests wait (briefly) for real."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from timeos.clock import SystemClock


def test_a_long_sleep_ends_at_its_deadline_with_no_timer_on_the_loop() -> None:
    # max_sleep 0.05 s makes 0.3 s a "long" sleep: it waits on a timerfd, not the loop's timers.
    async def go() -> None:
        clock = SystemClock(max_sleep=0.05)
        deadline = clock.now() + timedelta(seconds=0.3)
        sleeping = asyncio.create_task(clock.sleep_until(deadline, asyncio.Event()))
        await asyncio.sleep(0)  # let it start waiting
        loop = asyncio.get_running_loop()
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
        await sleeping
        assert clock.now() >= deadline

    asyncio.run(go())


def test_a_sleep_with_no_deadline_wakes_only_when_woken() -> None:
    async def go() -> None:
        clock, wake = SystemClock(max_sleep=0.01), asyncio.Event()
        sleeping = asyncio.create_task(clock.sleep_until(None, wake))
        await asyncio.sleep(0.1)  # ten of the old capped sleeps
        assert not sleeping.done()
        started = time.monotonic()
        wake.set()
        await sleeping
        assert time.monotonic() - started < 1.0

    asyncio.run(go())


def test_a_short_sleep_still_ends_at_its_deadline() -> None:
    async def go() -> None:
        clock = SystemClock()
        deadline = clock.now() + timedelta(seconds=0.05)
        await clock.sleep_until(deadline, asyncio.Event())
        assert clock.now() >= deadline

    asyncio.run(go())
