"""Runtime rule overrides (`timeos rules disable/enable/set/reset`): the changes they make to a
stored RuleOverride, and the effective RuleSet = the files' rules with the overrides applied.

Pure: every function takes `now`. The service composes the effective rules here whenever the
rules load or an override changes (or a `--for` runs out), so engine, planner and scheduler keep
reading one RuleSet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from timeos.errors import UsageError
from timeos.model import Rule, RuleOverride, RuleSet

RATE_UNITS = ("second", "minute", "hour", "day")
_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*(second|minute|hour|day)s?\s*$")
MAX_CONCURRENCY = 10_000
PRIORITY_RANGE = (-1_000_000, 1_000_000)
NOT_ENFORCED = "stored, not yet enforced"


def parse_rate_limit(spec: str) -> str:
    """Check a rate limit such as `10/minute` and return it in its canonical form."""
    match = _RATE.match(spec)
    if match is None or int(match.group(1)) < 1:
        raise UsageError(
            f"bad rate limit {spec!r}: use COUNT/UNIT with a positive count and a unit of"
            f" {', '.join(RATE_UNITS)}, e.g. 10/minute"
        )
    return f"{int(match.group(1))}/{match.group(2)}"


def check_priority(priority: int) -> int:
    """Refuse a priority outside the range the store sorts."""
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise UsageError(f"priority must be {low}..{high}, got {priority}")
    return priority


def check_concurrency(concurrency: int) -> int:
    """Refuse a concurrency below 1 or absurdly high."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    return concurrency


def disabling(override: RuleOverride, now: datetime) -> bool:
    """True while the override keeps its rule disabled (a `--for` ends at disabled_until)."""
    return override.enabled is False and (
        override.disabled_until is None or now < override.disabled_until
    )


def disable(
    override: RuleOverride | None, rule: str, now: datetime, duration: timedelta | None
) -> RuleOverride:
    """Disable `rule` from now, for `duration` (None: until enabled)."""
    if duration is not None and duration <= timedelta(0):
        raise UsageError(f"--for must be a positive duration, got {duration}")
    current = override or RuleOverride(rule)
    # Disabling a disabled rule again keeps when it started: the planner's window stays whole.
    since = current.disabled_at if current.disabled_at and disabling(current, now) else now
    return replace(
        current,
        enabled=False,
        disabled_at=since,
        disabled_until=now + duration if duration is not None else None,
        updated_at=now,
    )


def enable(override: RuleOverride | None, file_rule: Rule, now: datetime) -> RuleOverride:
    """Enable a rule now: end a runtime disable; override the file when the file disables it."""
    current = override or RuleOverride(file_rule.name)
    until = current.disabled_until
    if disabling(current, now):
        until = now  # the window ends now; kept so the planner knows what it held back
    return replace(
        current,
        enabled=None if file_rule.enabled else True,
        disabled_until=until,
        updated_at=now,
    )


def set_values(
    override: RuleOverride | None,
    rule: str,
    now: datetime,
    *,
    priority: int | None = None,
    rate_limit: str | None = None,
    concurrency: int | None = None,
) -> RuleOverride:
    """Override the given values (None leaves a value as it is)."""
    current = override or RuleOverride(rule)
    return replace(
        current,
        priority=check_priority(priority) if priority is not None else current.priority,
        rate_limit=parse_rate_limit(rate_limit) if rate_limit is not None else current.rate_limit,
        concurrency=(
            check_concurrency(concurrency) if concurrency is not None else current.concurrency
        ),
        updated_at=now,
    )


def reset(override: RuleOverride | None, file_rule: Rule, now: datetime) -> RuleOverride:
    """Drop every override: the file's values again (a runtime disable ends now)."""
    ended = enable(override, file_rule, now)
    return replace(
        ended, enabled=None, priority=None, rate_limit=None, concurrency=None, updated_at=now
    )


def apply_overrides(
    rules: RuleSet, overrides: Mapping[str, RuleOverride], now: datetime
) -> RuleSet:
    """The effective rules: each rule of the files with its override (if any) applied at `now`."""
    if not overrides:
        return rules
    changed: list[Rule] = []
    for rule in rules.rules:
        override = overrides.get(rule.name)
        changed.append(_applied(rule, override, now) if override else rule)
    return replace(rules, rules=tuple(changed))


def _applied(rule: Rule, override: RuleOverride, now: datetime) -> Rule:
    enabled = rule.enabled
    if disabling(override, now):
        enabled = False
    elif override.enabled is True:
        enabled = True
    return replace(
        rule,
        enabled=enabled,
        priority=override.priority if override.priority is not None else rule.priority,
        disabled_at=override.disabled_at,
        disabled_until=override.disabled_until,
    )


def next_change(overrides: Mapping[str, RuleOverride], now: datetime) -> datetime | None:
    """When the effective rules next change by themselves: the earliest `--for` to run out."""
    ends = [
        o.disabled_until
        for o in overrides.values()
        if disabling(o, now) and o.disabled_until is not None
    ]
    return min(ends) if ends else None


def describe(file_rule: Rule, override: RuleOverride | None, now: datetime) -> dict[str, Any]:
    """`rules show`: each overridable value in force, where it came from, and the file's value."""
    o = override or RuleOverride(file_rule.name)
    if disabling(o, now):
        enabled: dict[str, Any] = {"value": False, "from": "override", "file": file_rule.enabled}
    elif o.enabled is True and not file_rule.enabled:
        enabled = {"value": True, "from": "override", "file": file_rule.enabled}
    else:
        enabled = {"value": file_rule.enabled, "from": "file", "file": file_rule.enabled}
    enabled["disabled_until"] = (
        o.disabled_until.isoformat() if disabling(o, now) and o.disabled_until else None
    )
    return {
        "enabled": enabled,
        "priority": _value(o.priority, file_rule.priority),
        # Not in the rule files yet: an override is the only source, and nothing enforces it.
        "rate_limit": _unenforced(o.rate_limit),
        "concurrency": _unenforced(o.concurrency),
    }


def _value(override: Any, file: Any) -> dict[str, Any]:
    if override is None:
        return {"value": file, "from": "file", "file": file}
    return {"value": override, "from": "override", "file": file}


def _unenforced(override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "value": override,
        "from": "file" if override is None else "override",
        "file": None,
    }
    if override is not None:
        body["enforced"] = False
        body["note"] = NOT_ENFORCED
    return body
