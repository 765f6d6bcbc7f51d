"""The occurrence planner the scheduler loop calls: reads each time-based rule's stored state and
activity, asks the pure planner (time/planning.py) what is due, and writes the answer.

Each rule's plan is written in one transaction (state, occurrences and jobs together), so no path
can advance a schedule without recording what became of its occurrences. Of several daemons
sharing a database, one plans at a time (Store.leads_planning); the others follow, and the first
to get the lead after the leader dies plans from the stored states.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from timeos.daemon.telemetry import Publish, no_publish
from timeos.model import (
    OccurrenceOutcome,
    Rule,
    RuleSet,
    RuleState,
    effective_retry,
    occurrence_key,
)
from timeos.rules import chains
from timeos.store.protocol import Store
from timeos.time.planning import Plan, is_due, plan, resume
from timeos.time.triggers import RuleClock

log = logging.getLogger("timeos.occurrences")
# A daemon that does not plan (another one leads) asks for the lead this often, so a dead
# leader's rules are planned again within seconds.
FOLLOW_EVERY = timedelta(seconds=2)
# The leader of daemons sharing a database rescues the jobs of dead ones this often.
RESCUE_EVERY = timedelta(seconds=10)


class OccurrencePlanner:
    """Creates due occurrences' jobs for every time-based rule; returns the next deadline."""

    def __init__(
        self,
        *,
        store: Store,
        rules: Callable[[], RuleSet],
        publish: Publish = no_publish,
        rescue: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        # Daemons sharing a database: the leader calls this (crash recovery: the jobs left
        # running by daemons that stopped beating) every RESCUE_EVERY.
        self.rescue = rescue
        self.next_rescue: datetime | None = None
        self.rules = rules
        self.publish = publish
        self.states: dict[str, RuleState] = store.rule_states()
        self.clocks: dict[str, RuleClock] = {}
        self.enabled_since: dict[str, datetime] = {}
        self.loaded: set[str] | None = None  # time-based rules in the previous pass
        self.removed: set[str] = set()
        self.failures: dict[str, str] = {}
        # A rule the files disable has no stored disable time: when this process first saw it
        # disabled, then the window it was disabled in (runtime disables carry theirs on Rule).
        self.disabled_from: dict[str, datetime] = {}
        self.windows: dict[str, tuple[datetime, datetime]] = {}
        self.following = False  # another daemon led the last pass

    def plan(self, now: datetime) -> datetime | None:
        """Create jobs for every due occurrence; return the earliest next fire."""
        rules = self.rules()
        if not self.store.leads_planning():
            return self._follow(rules, now)
        if self.following:
            # Just took the lead: the last leader's plans are in the store, not in our memory.
            self.states = self.store.rule_states()
            self.clocks.clear()
            self.following = False
        if self.rescue is not None:
            if self.next_rescue is None or now >= self.next_rescue:
                self.next_rescue = now + RESCUE_EVERY
                self.rescue()
            deadline: datetime | None = self.next_rescue
        else:
            deadline = None
        loaded = {r.name for r in rules.rules if r.time_based}
        if self.loaded is None:
            # First pass of this process: a stored rule missing from the files was removed
            # (while we were down, or by a reload before a restart); if it returns, it is fresh.
            self.removed |= set(self.states) - loaded
        else:
            for gone in self.loaded - loaded:
                # Removed by a reload: if it comes back, it starts afresh (see resume()).
                self.removed.add(gone)
                self.enabled_since.pop(gone, None)
                self.clocks.pop(gone, None)
                self.disabled_from.pop(gone, None)
                self.windows.pop(gone, None)
        self.loaded = loaded
        for rule in rules.rules:
            if not rule.time_based:
                continue
            try:
                nxt = self._plan_rule(rule, rules, now)
            except Exception as exc:  # one broken rule must not stop the others
                message = f"{type(exc).__name__}: {exc}"
                if self.failures.get(rule.name) != message:  # log a failure once, not per pass
                    log.error("rule %r: planning failed: %s", rule.name, message)
                self.failures[rule.name] = message
                continue
            self.failures.pop(rule.name, None)
            if nxt is not None and (deadline is None or nxt < deadline):
                deadline = nxt
        return deadline

    def _follow(self, rules: RuleSet, now: datetime) -> datetime:
        """Another daemon plans: keep what `rules list` shows and when each rule was enabled
        current (a fire after that is late, not missed, if this daemon takes the lead), and ask
        for the lead again soon."""
        self.following = True
        self.states = self.store.rule_states()
        for rule in rules.rules:
            if rule.time_based:
                self._watch(rule, now)
        return now + FOLLOW_EVERY

    def _watch(self, rule: Rule, now: datetime) -> bool:
        """Note whether `rule` is enabled at `now` (when it was enabled, its disabled window);
        return whether it is."""
        if not rule.enabled:
            self.enabled_since.pop(rule.name, None)
            if rule.disabled_at is None:
                self.disabled_from.setdefault(rule.name, now)
            return False
        start = self.disabled_from.pop(rule.name, None)
        if start is not None:
            self.windows[rule.name] = (start, now)
        self.enabled_since.setdefault(rule.name, now)
        return True

    def _plan_rule(self, rule: Rule, rules: RuleSet, now: datetime) -> datetime | None:
        if not self._watch(rule, now):
            # State stays put: what it misses while disabled follows on_missed on its return,
            # which a `disable --for` schedules: wake then.
            until = rule.disabled_until
            return until if until is not None and until > now else None
        stored = self.states.get(rule.name)
        clock = self.clocks.get(rule.name)
        state = stored
        if clock is None or clock.rule is not rule or stored is None:
            clock, state = resume(rule, stored, now, fresh=rule.name in self.removed)
        assert state is not None
        since = self.enabled_since[rule.name]
        if not is_due(state, now):
            if state is not stored:  # a fresh start: store the new phase
                self._save(rule, state, now)
            self.clocks[rule.name] = clock
            return state.next_fire
        running, waiting = self.store.rule_activity(rule.name)
        result = plan(
            rule,
            clock,
            state,
            now=now,
            since=since,
            running=running,
            waiting=waiting,
            max_attempts=effective_retry(rule, rules.actions[rule.action]).max_attempts,
            disabled=self._window(rule, now),
        )
        if rule.then:  # a perform list: each fire's job is followed by its blocked steps
            result = replace(result, jobs=tuple(chains.with_steps(result.jobs, rule, rules)))
        ids = self.store.save_rule_state(result.state, now, result.occurrences, result.jobs)
        self.states[rule.name] = result.state
        self._announce(result, ids)
        self.removed.discard(rule.name)
        self.clocks[rule.name] = clock
        return result.state.next_fire

    def _window(self, rule: Rule, now: datetime) -> tuple[datetime, datetime] | None:
        """The rule's latest disabled window, runtime or by the files."""
        window = self.windows.get(rule.name)
        if rule.disabled_at is not None:
            runtime = (rule.disabled_at, rule.disabled_until or now)
            if window is None or runtime[0] > window[0]:
                window = runtime
        return window

    def _save(self, rule: Rule, state: RuleState, now: datetime) -> None:
        self.store.save_rule_state(state, now)
        self.states[rule.name] = state
        self.removed.discard(rule.name)  # only once the fresh state is stored

    def _announce(self, result: Plan, ids: list[str | None]) -> None:
        """Publish each occurrence's fate and each job created, once they are stored."""
        by_key = {j.occurrence_key: i for j, i in zip(result.jobs, ids, strict=False)}
        for job, job_id in zip(result.jobs, ids, strict=False):
            if job_id is not None:
                self.publish(
                    "job.created",
                    job_id=job_id,
                    rule=job.rule,
                    perform_at=job.perform_at.isoformat(),
                    scheduled_for=job.scheduled_for.isoformat() if job.scheduled_for else None,
                )
        for occ in result.occurrences:
            job_id = occ.job_id
            if job_id is None and occ.outcome is OccurrenceOutcome.FIRED:
                job_id = by_key.get(occurrence_key(occ.rule, occ.scheduled_for))
            self.publish(
                f"occurrence.{occ.outcome}",
                rule=occ.rule,
                job_id=job_id,
                scheduled_for=occ.scheduled_for.isoformat(),
                reason=occ.reason,
            )

    def next_fires(self) -> dict[str, datetime | None]:
        """Each loaded time-based rule's next fire as planned (None: disabled or never)."""
        return {
            rule.name: (state.next_fire if rule.enabled else None)
            if (state := self.states.get(rule.name))
            else None
            for rule in self.rules().rules
            if rule.time_based
        }

    def describe(self, rule: Rule) -> dict[str, Any]:
        """Extra fields for `rules list/show`: next and last fire of a time-based rule."""
        if not rule.time_based:
            return {}
        state = self.states.get(rule.name)
        return {
            "next_fire": state.next_fire.isoformat()
            if state and state.next_fire and rule.enabled
            else None,
            "last_fire": state.last_fire.isoformat() if state and state.last_fire else None,
        }
