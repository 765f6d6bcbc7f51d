"""Clock protocol, SystemClock and FakeClock: the only module that reads real time.

Everything that decides something about time takes `now` or a Clock; tests advance a FakeClock.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, deadline: datetime | None, wake: asyncio.Event) -> None:
        """Return at `deadline` (None: never), or earlier when `wake` is set."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic reading in seconds, for measuring elapsed time."""
        ...


class SystemClock:
    """Real time. Sleeps are capped so a wall-clock step is noticed within `max_sleep`."""

    def __init__(self, max_sleep: float = 30.0) -> None:
        self.max_sleep = max_sleep

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: datetime | None, wake: asyncio.Event) -> None:
        timeout = self.max_sleep
        if deadline is not None:
            timeout = min(timeout, max(0.0, (deadline - self.now()).total_seconds()))
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass


class FakeClock:
    """A clock that moves only when told to. `advance`/`set` wake every sleeper."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._moved: asyncio.Event | None = None

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, when: datetime) -> None:
        """Jump to `when` (forwards or backwards, like a wall-clock step)."""
        self._now = when.astimezone(UTC)
        self._notify()

    def advance(self, delta: timedelta) -> None:
        """Move forward by `delta`."""
        self._now += delta
        self._mono += delta.total_seconds()
        self._notify()

    def _notify(self) -> None:
        if self._moved is not None:
            self._moved.set()

    async def sleep_until(self, deadline: datetime | None, wake: asyncio.Event) -> None:
        if deadline is not None and deadline <= self._now:
            return
        if self._moved is None:
            self._moved = asyncio.Event()
        self._moved.clear()
        moved = asyncio.ensure_future(self._moved.wait())
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            woken.cancel()
