"""Next fire times for cron / every / weekday rules and the DST policy on top of croniter.

Pure: no I/O, never reads the clock. Every function takes the instant to compute from.
INTERFACE DRAFT: bodies are being written (see tests/test_schedule.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from timeos.model import DstPolicy


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time: the UTC instant, its local wall time, and a DST note when moved/doubled."""

    at: datetime  # aware, UTC
    local: datetime  # aware, in the schedule's zone (fold set for the second copy of an hour)
    note: str | None = None  # e.g. "moved from 02:30 by the DST gap", "first of two 01:30s"


class CronSchedule:
    """A validated cron expression evaluated in one IANA zone with a DST policy."""

    def __init__(self, expression: str, zone: ZoneInfo, dst: DstPolicy = DstPolicy()) -> None:
        raise NotImplementedError  # being written

    def next_fire(self, after: datetime) -> Fire:
        """Return the first fire strictly after `after` (aware)."""
        raise NotImplementedError  # being written


def compile_cron(expression: str, zone: ZoneInfo, dst: DstPolicy = DstPolicy()) -> CronSchedule:
    """Validate and compile; raise ScheduleError naming the bad field."""
    return CronSchedule(expression, zone, dst)


def weekday_cron(days: Sequence[str], at: time) -> str:
    """`every: monday` / [monday, friday] / weekday / weekend + `at` -> the fixed-time cron."""
    raise NotImplementedError  # being written


def next_interval(anchor: datetime, every: timedelta, after: datetime) -> datetime:
    """First `anchor + k*every` strictly after `after` (elapsed time, k >= 0)."""
    raise NotImplementedError  # being written


def next_local_time(after: datetime, at: time, zone: ZoneInfo, dst: DstPolicy = DstPolicy()) -> Fire:
    """First wall-clock `at` in `zone` at or after `after` (event rules' `at:`), DST policy applied."""
    raise NotImplementedError  # being written


def upcoming(schedule: CronSchedule, after: datetime, count: int) -> list[Fire]:
    """The next `count` fires strictly after `after`."""
    raise NotImplementedError  # being written
