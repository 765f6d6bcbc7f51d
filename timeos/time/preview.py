"""Upcoming fire times of a rule or a cron expression, as the API and `timeos next` render them.

Pure: takes the instants to count from; no clock, no store, no socket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from timeos.errors import UsageError
from timeos.model import Rule
from timeos.time.cron import compile_cron, upcoming
from timeos.time.triggers import RuleClock


def fire_json(at: datetime, zone: ZoneInfo, note: str | None) -> dict[str, Any]:
    """One fire time as the API and `--json` render it."""
    local = at.astimezone(zone)
    return {
        "at": at.isoformat(),
        "at_local": local.isoformat(),
        "local": local.isoformat(),
        "zone": zone.key,
        "note": note,
    }


def rule_fires(rule: Rule, anchor: datetime, after: datetime, count: int) -> list[dict[str, Any]]:
    """The next `count` fires of a time-based rule strictly after `after`."""
    if not rule.time_based:
        raise UsageError(f"rule {rule.name!r} is triggered by events, not by time")
    clock = RuleClock(rule, anchor)
    fires: list[dict[str, Any]] = []
    cursor = after
    while len(fires) < count:
        due = clock.next_after(cursor)
        if not due.skip:  # occurrences the DST policy drops are not fire times
            fires.append(fire_json(due.at, rule.timezone, due.note))
        cursor = due.at
    return fires


def cron_fires(
    expression: str, zone: ZoneInfo, after: datetime, count: int
) -> list[dict[str, Any]]:
    """The next `count` fires of a cron expression in `zone`, strictly after `after`."""
    return [
        fire_json(f.at, zone, f.note)
        for f in upcoming(compile_cron(expression, zone), after, count)
    ]
