"""Compiled triggers of time-based rules: where a cron or interval schedule fires next.

Pure: a RuleClock is built from a Rule and its stored anchor; no store, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from timeos.model import CronTrigger, GapPolicy, IntervalTrigger, Rule
from timeos.time import cron as schedule
from timeos.timefmt import format_duration


@dataclass(frozen=True, slots=True)
class Due:
    at: datetime
    note: str | None
    skip: bool = False  # an occurrence the DST policy drops: recorded, never run


class RuleClock:
    """Where one time-based rule's schedule is: compiled trigger plus its stored anchor."""

    def __init__(self, rule: Rule, anchor: datetime) -> None:
        self.rule = rule
        self.anchor = anchor
        trigger = rule.trigger
        if isinstance(trigger, CronTrigger):
            self.cron: schedule.CronSchedule | None = schedule.compile_cron(
                trigger.expression, rule.timezone, rule.dst
            )
            self.every: timedelta | None = None
            # With `gap: skip`, a twin with `run_after` reveals the occurrences the gap ate,
            # so each one is recorded as skipped instead of silently vanishing.
            self.gap_twin = (
                schedule.compile_cron(
                    trigger.expression, rule.timezone, replace(rule.dst, gap=GapPolicy.RUN_AFTER)
                )
                if rule.dst.gap is GapPolicy.SKIP
                else None
            )
        else:
            assert isinstance(trigger, IntervalTrigger)
            self.cron = None
            self.gap_twin = None
            self.every = trigger.every

    def fingerprint(self) -> str:
        """Changes exactly when the schedule changes (not on priority or action edits)."""
        if self.cron is not None:
            return "cron:" + self.cron.fingerprint()
        assert self.every is not None
        return f"every:{format_duration(self.every)}"

    def next_after(self, after: datetime) -> Due:
        """The first fire strictly after `after`."""
        if self.cron is not None:
            fire = self.cron.next_fire(after)
            if self.gap_twin is not None:
                twin = self.gap_twin.next_fire(after)
                if twin.at < fire.at:
                    return Due(twin.at, f"{twin.note} (skipped: dst gap: skip)", skip=True)
            return Due(fire.at, fire.note)
        assert self.every is not None
        return Due(schedule.next_interval(self.anchor + self.every, self.every, after), None)
