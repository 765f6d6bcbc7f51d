"""The last hour of activity for the overview's charts, binned by minute from the lifecycle
event bus (the same stream as `GET /v1/watch`): jobs finished, failures, firing lateness.

Kept in memory: after a restart the charts start empty and fill as the daemon works.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from timeos.daemon.telemetry import Lifecycle

WINDOW_MINUTES = 60
FAILED_KINDS = frozenset({"job.failed"})  # each failed attempt once (job.dead follows one)


@dataclass(slots=True)
class Minute:
    """What happened during one minute."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    started: int = 0
    lateness_ms_max: int = 0


@dataclass(slots=True)
class Activity:
    """A sink for the event bus: counts per minute, the last WINDOW_MINUTES kept."""

    minutes: deque[Minute] = field(default_factory=lambda: deque(maxlen=WINDOW_MINUTES))

    def observe(self, event: Lifecycle) -> None:
        """Count one lifecycle event in its minute (called on the publisher's thread: cheap)."""
        if event.kind not in FAILED_KINDS and event.kind not in ("job.succeeded", "job.started"):
            return
        start = event.at.replace(second=0, microsecond=0)
        if not self.minutes or self.minutes[-1].start < start:
            self.minutes.append(Minute(start))
        minute = self.minutes[-1] if self.minutes[-1].start <= start else None
        if minute is None:  # the clock went back (a test's fake clock): drop, do not misfile
            return
        if event.kind == "job.succeeded":
            minute.succeeded += 1
        elif event.kind in FAILED_KINDS:
            minute.failed += 1
        else:
            minute.started += 1
            late = event.fields.get("lateness_ms")
            if isinstance(late, int | float):
                minute.lateness_ms_max = max(minute.lateness_ms_max, int(late))

    def series(self, now: datetime) -> list[Minute]:
        """One Minute per minute of the hour before `now`, oldest first (empty ones filled in)."""
        end = now.replace(second=0, microsecond=0)
        by_start = {m.start: m for m in self.minutes}
        return [
            by_start.get(t, Minute(t))
            for t in (end - timedelta(minutes=n) for n in range(WINDOW_MINUTES - 1, -1, -1))
        ]
