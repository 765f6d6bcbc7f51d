"""Runtime rule overrides (`timeos rules disable/enable/set/reset`): the changes they make to a
stored RuleOverride, and the effective RuleSet = the files' rules with the overrides applied.

Pure: every function takes `now`. The service composes the effective rules here whenever the
rules load or an override changes (or a `--for` runs out), so engine, planner and scheduler keep
reading one RuleSet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from timeos.errors import UsageError
from timeos.model import Rule, RuleOverride, RuleSet
from timeos.rules.limits import (
    MAX_CONCURRENCY,
    RATE_UNITS,
    check_concurrency,
    parse_rate_limit,
    rate_limit,
)

__all__ = ["MAX_CONCURRENCY", "RATE_UNITS", "check_concurrency", "parse_rate_limit"]

PRIORITY_RANGE = (-1_000_000, 1_000_000)


def check_priority(priority: int) -> int:
    """Refuse a priority outside the range the store sorts."""
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise UsageError(f"priority must be {low}..{high}, got {priority}")
    return priority


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
        # An overriding rate limit replaces the file's whole limit: its burst is one unit's
        # worth of the new rate, not the file's burst (which was sized for the old rate).
        rate_limit=(
            rate_limit(override.rate_limit) if override.rate_limit is not None else rule.rate_limit
        ),
        concurrency=override.concurrency if override.concurrency is not None else rule.concurrency,
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
    file_rate = file_rule.rate_limit
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
        "rate_limit": _value(o.rate_limit, file_rate.spec if file_rate else None),
        "burst": _value(
            rate_limit(o.rate_limit).burst if o.rate_limit is not None else None,
            file_rate.burst if file_rate else None,
        ),
        "concurrency": _value(o.concurrency, file_rule.concurrency),
    }


def _value(override: Any, file: Any) -> dict[str, Any]:
    if override is None:
        return {"value": file, "from": "file", "file": file}
    return {"value": override, "from": "override", "file": file}
