"""Runtime rule control, the service's API calls for it: disable/enable (optionally for a
while), set/reset overrides, run a rule now, and the override and LAST fields of `rules list/show`.

A mixin of Service (service.py), so the API still talks to one object. The decisions are pure,
in rules/overrides.py and engine.manual_run; this module stores them and recomposes the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from timeos.clock import Clock
from timeos.daemon.logs import fields
from timeos.engine import manual_run
from timeos.errors import NotFound
from timeos.model import Job, Rule, RuleOverride, RuleSet
from timeos.rules import chains, overrides
from timeos.store.protocol import Store

log = logging.getLogger("timeos.service")


class RuleControl:
    """What Service does for `timeos rules disable/enable/set/reset/run`."""

    store: Store
    clock: Clock
    on_change: Callable[[], None]
    _file_rules: RuleSet
    _overrides: dict[str, RuleOverride]
    _rules: RuleSet
    _recompose_at: datetime | None

    def _compose(self) -> None:
        """Recompute the effective rules from the files' rules and the overrides, at now."""
        now = self.clock.now()
        self._rules = overrides.apply_overrides(self._file_rules, self._overrides, now)
        self._recompose_at = overrides.next_change(self._overrides, now)

    def _file_rule(self, name: str) -> Rule:
        rule = self._file_rules.rule(name)
        if rule is None:
            raise NotFound(f"no rule named {name!r} is loaded")
        return rule

    def _store_override(self, override: RuleOverride, what: str, **extra: Any) -> None:
        self.store.save_rule_override(override)
        self._overrides[override.rule] = override
        self._compose()
        log.info(what, extra=fields(rule=override.rule, **extra))
        self.on_change()  # the planner and scheduler look again (and wake for a --for)

    def disable_rule(self, name: str, duration: timedelta | None) -> Rule:
        """Disable a rule now, for `duration` (None: until enabled); return it as in force."""
        self._file_rule(name)
        now = self.clock.now()
        changed = overrides.disable(self._overrides.get(name), name, now, duration)
        until = changed.disabled_until.isoformat() if changed.disabled_until else None
        self._store_override(changed, "rule disabled", until=until)
        return self._effective(name)

    def enable_rule(self, name: str) -> Rule:
        """Enable a rule now (ending a runtime disable); return it as in force."""
        file_rule = self._file_rule(name)
        changed = overrides.enable(self._overrides.get(name), file_rule, self.clock.now())
        self._store_override(changed, "rule enabled")
        return self._effective(name)

    def set_rule(
        self,
        name: str,
        *,
        priority: int | None = None,
        rate_limit: str | None = None,
        concurrency: int | None = None,
    ) -> Rule:
        """Override a rule's priority (and store a rate limit or concurrency, not enforced)."""
        self._file_rule(name)
        changed = overrides.set_values(
            self._overrides.get(name),
            name,
            self.clock.now(),
            priority=priority,
            rate_limit=rate_limit,
            concurrency=concurrency,
        )
        self._store_override(
            changed, "rule overrides set", priority=priority, rate_limit=rate_limit
        )
        return self._effective(name)

    def reset_rule(self, name: str) -> Rule:
        """Drop a rule's runtime overrides (a runtime disable ends now): the file's values."""
        file_rule = self._file_rule(name)
        changed = overrides.reset(self._overrides.get(name), file_rule, self.clock.now())
        self._store_override(changed, "rule overrides reset")
        return self._effective(name)

    def run_rule(self, name: str, payload: Mapping[str, Any] | None) -> Job:
        """Create a job for a rule's action at once, recorded as a manual run."""
        rules = self._current()
        rule = rules.rule(name)
        if rule is None:
            raise NotFound(f"no rule named {name!r} is loaded")
        now = self.clock.now()
        job, occurrence = manual_run(rule, rules, dict(payload) if payload else None, now)
        steps = chains.steps(job, rule, rules)  # a perform list runs whole; `after:` is not waited
        job_id = self.store.record_run(job, occurrence, now, steps)
        log.info("rule run by hand", extra=fields(rule=name, job_id=job_id))
        self.on_change()
        return self.store.get_job(job_id)

    def rule_control(self, rule: Rule) -> dict[str, Any]:
        """The `rules list/show` fields of runtime control: overrides and the last job made."""
        file_rule = self._file_rules.rule(rule.name) or rule
        now = self.clock.now()
        described = overrides.describe(file_rule, self._overrides.get(rule.name), now)
        enabled = described["enabled"]
        last = self.store.last_job_created(rule.name)
        return {
            "enabled_from": enabled["from"],
            "disabled_until": enabled["disabled_until"],
            "overrides": described,
            "last_run": last.isoformat() if last else None,
        }

    def _current(self) -> RuleSet:
        """The effective rules, recomposed first when a `rules disable --for` has run out."""
        if self._recompose_at is not None and self.clock.now() >= self._recompose_at:
            self._compose()
        return self._rules

    def _effective(self, name: str) -> Rule:
        rule = self._rules.rule(name)
        assert rule is not None
        return rule
