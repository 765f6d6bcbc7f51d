"""Clock protocol, SystemClock and FakeClock: the only module that reads real time.

Everything that decides something about time takes `now` or a Clock; tests advance a FakeClock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio


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
    """Real time. A sleep longer than `max_sleep` waits on a Linux timerfd set to the deadline
    on the wall clock, which also fires when the wall clock is set (a step, a resume from
    suspend), so an idle daemon wakes exactly when something is due and never in between.
    Shorter sleeps (the busy case) use the event loop's own timer; where there is no timerfd,
    long sleeps are cut into `max_sleep` pieces so a wall-clock step is noticed within one.
    """

    def __init__(self, max_sleep: float = 30.0) -> None:
        self.max_sleep = max_sleep

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: datetime | None, wake: asyncio.Event) -> None:
        if wake.is_set():  # woken during the pass (a run ended): no task, no timer
            return
        timeout = self.max_sleep
        if deadline is not None:
            left = (deadline - self.now()).total_seconds()
            if left <= 0:
                return
            timeout = min(timeout, left)
        # Imported where it is used: the CLI reads this clock, and asyncio (with ssl) is most
        # of what `timeos next` would otherwise spend starting up.
        import asyncio

        if timeout == self.max_sleep and await _sleep_on_wall_clock(deadline, wake):
            return
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass


async def _sleep_on_wall_clock(deadline: datetime | None, wake: asyncio.Event) -> bool:
    """Wait for `deadline` on a timerfd (None: only for a wall-clock step), or for `wake`.

    False when there is no timerfd here (not Linux, no libc): the caller sleeps as before.
    """
    import asyncio

    alarm = _wall_alarm(deadline)
    if alarm is None:
        return False
    loop = asyncio.get_running_loop()
    rang: asyncio.Future[None] = loop.create_future()

    def ring() -> None:
        if not rang.done():
            rang.set_result(None)

    loop.add_reader(alarm, ring)
    woken: asyncio.Future[None] = asyncio.ensure_future(_waited(wake))
    try:
        await asyncio.wait({rang, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        loop.remove_reader(alarm)
        os.close(alarm)
    return True


async def _waited(event: asyncio.Event) -> None:
    await event.wait()


_TFD_CLOEXEC, _TFD_NONBLOCK = 0o2000000, 0o4000
_TFD_TIMER_ABSTIME, _TFD_TIMER_CANCEL_ON_SET = 1, 2
_FAR = 4102444800  # 2100-01-01: "no deadline", still told of every wall-clock step


def _wall_alarm(deadline: datetime | None) -> int | None:
    """A non-blocking timerfd (CLOCK_REALTIME) that becomes readable at `deadline` or when the
    wall clock is set; None where timerfds are not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

    fd = create(0, _TFD_CLOEXEC | _TFD_NONBLOCK)  # 0: CLOCK_REALTIME
    if fd < 0:
        return None
    at = deadline.timestamp() if deadline is not None else _FAR
    seconds = int(at)
    nanoseconds = min(999_999_999, max(1, int((at - seconds) * 1e9)))  # (0, 0) disarms it
    value = Timespec(seconds, nanoseconds)
    flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
    if settime(fd, flags, ctypes.byref(Itimerspec(Timespec(0, 0), value)), None) != 0:
        os.close(fd)
        return None
    return fd


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
        import asyncio

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


def system_zone(environ: Mapping[str, str]) -> tzinfo:
    """The user's zone: $TZ when it names an IANA zone, else the system's (/etc/localtime).

    A $TZ that is not a zone name (a POSIX rule such as `EST5EDT4`) falls back to the C
    library's offset at this instant, which honours it.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = environ.get("TZ", "").removeprefix(":")
    candidates = [name] if name else []
    if not name:
        # Debian/Ubuntu: /etc/localtime links into /usr/share/zoneinfo/<name>.
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    if not name:
        try:
            with open("/etc/localtime", "rb") as file:
                return ZoneInfo.from_file(file, key="localtime")
        except (OSError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or UTC  # the C library's zone, honouring $TZ


def zone_label(zone: tzinfo) -> str:
    """A zone's IANA name when it has one (`America/New_York`), else its fixed offset."""
    key = getattr(zone, "key", None)
    if key:
        return str(key)
    if zone is UTC:
        return "UTC"
    return datetime(2000, 1, 1, tzinfo=UTC).astimezone(zone).strftime("UTC%z")
