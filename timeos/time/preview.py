"""Previews for `timeos next`: upcoming fire times of a cron expression or a rule.

Offline for `--cron` and `--rules`; otherwise the running daemon answers (it knows each rule's
stored anchor and state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from timeos.cli.client import Client, segment
from timeos.clock import SystemClock
from timeos.errors import NotFound, UsageError
from timeos.model import Rule
from timeos.timefmt import parse_instant


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
    from timeos.time.triggers import RuleClock

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


def preview(
    *,
    rule: str | None,
    cron: str | None,
    tz: str,
    after: str | None,
    count: int,
    rules_path: Sequence[Path] | None,
    client: Client,
    environ: Mapping[str, str],
) -> tuple[list[dict[str, Any]], datetime]:
    """Resolve what to preview and return (fires, now)."""
    now = SystemClock().now()
    try:
        start = parse_instant(after) if after else now
    except ValueError as exc:
        raise UsageError(f"--after: {exc}") from None
    if (rule is None) == (cron is None):
        raise UsageError("give either a RULE name or --cron EXPR")
    if cron is not None and rules_path:
        raise UsageError("--rules goes with a RULE name, not with --cron")
    if cron is not None:
        from timeos.time.cron import compile_cron

        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"--tz: unknown time zone {tz!r}") from None
        schedule = compile_cron(cron, zone)
        fires = []
        cursor = start
        for _ in range(count):
            fire = schedule.next_fire(cursor)
            fires.append(fire_json(fire.at, zone, fire.note))
            cursor = fire.at
        return fires, now
    assert rule is not None
    if rules_path:
        from timeos.rules.loader import load_rules

        found = load_rules(rules_path, environ).rule(rule)
        if found is None:
            raise NotFound(f"no rule named {rule!r} in {', '.join(map(str, rules_path))}")
        return rule_fires(found, start, start, count), now
    # Without --after the daemon counts from its own clock (the one its schedule runs on).
    query = {"count": count, "after": start.isoformat() if after else None}
    answer = client.call("GET", f"/v1/rules/{segment(rule)}/next", query=query)
    return answer["fires"], now
