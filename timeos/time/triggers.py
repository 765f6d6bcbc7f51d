"""Turns time-based rules (cron, every) into jobs: one per occurrence, each one recorded.

Decides what is due, what was missed (daemon down, rule disabled, suspend), and applies the
rule's on_missed / grace / overlap policies. Schedule state lives in the store, so a restart or a
reload keeps each rule's phase and history.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from timeos.model import (
    CronTrigger,
    GapPolicy,
    IntervalTrigger,
    MissedPolicy,
    NewJob,
    Occurrence,
    OverlapPolicy,
    Rule,
    RuleSet,
    RuleState,
    effective_retry,
)
from timeos.store.sqlite.store import Store, occurrence_key
from timeos.time import cron as schedule
from timeos.timefmt import format_duration

log = logging.getLogger("timeos.occurrences")

# A fire later than this while the daemon ran (suspend/resume, a forward clock step) counts as
# missed, so it follows on_missed instead of bursting.
LATE_AS_MISSED = timedelta(minutes=1)
MISSED_ALL_CAP = 100  # on_missed: all runs at most this many of the missed occurrences
MAX_RECORDS_PER_PASS = 1000  # a long outage of a minutely rule is summarised past this
TAIL_WALK_LIMIT = 100_000  # safety bound on one look-back window


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


def fingerprint_of(rule: Rule) -> str:
    """The schedule fingerprint of a time-based rule (anchor-independent)."""
    return RuleClock(rule, datetime.min.replace(tzinfo=UTC)).fingerprint()


class OccurrencePlanner:
    """Called by the scheduler loop: creates due occurrences' jobs, returns the next deadline."""

    def __init__(self, *, store: Store, rules: Callable[[], RuleSet]) -> None:
        self.store = store
        self.rules = rules
        self.states: dict[str, RuleState] = store.rule_states()
        self.clocks: dict[str, RuleClock] = {}
        self.enabled_since: dict[str, datetime] = {}
        self.loaded: set[str] | None = None  # time-based rules in the previous pass
        self.removed: set[str] = set()
        self.failures: dict[str, str] = {}
        self.stale = True

    def invalidate(self) -> None:
        """Rules changed (reload) or a job finished: re-check on the next pass."""
        self.stale = True

    def plan(self, now: datetime) -> datetime | None:
        """Create jobs for every due occurrence; return the earliest next fire."""
        rules = self.rules()
        deadline: datetime | None = None
        loaded = {r.name for r in rules.rules if r.time_based}
        if self.loaded is None:
            # First pass of this process: a stored rule missing from the files was removed
            # (while we were down, or by a reload before a restart); if it returns, it is fresh.
            self.removed |= set(self.states) - loaded
        else:
            for gone in self.loaded - loaded:
                # Removed by a reload: if it comes back, it starts afresh (see _clock).
                self.removed.add(gone)
                self.enabled_since.pop(gone, None)
                self.clocks.pop(gone, None)
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
        self.stale = False
        return deadline

    def _clock(self, rule: Rule, now: datetime) -> tuple[RuleClock, RuleState]:
        state = self.states.get(rule.name)
        clock = self.clocks.get(rule.name)
        if clock is None or clock.rule is not rule:
            anchor = state.anchor if state and state.anchor else now
            clock = RuleClock(rule, anchor)
            fresh = rule.name in self.removed
            if state is None or state.fingerprint != clock.fingerprint() or fresh:
                # New rule, re-added rule, or its schedule changed: re-plan from now; the old
                # phase is gone (its history stays).
                clock = RuleClock(rule, now)
                state = RuleState(
                    rule.name, clock.fingerprint(), now, clock.next_after(now).at, None
                )
                self.store.save_rule_state(state, now)
                self.states[rule.name] = state
                self.removed.discard(rule.name)  # only once the fresh state is stored
            self.clocks[rule.name] = clock
        assert state is not None
        return clock, state

    def _plan_rule(self, rule: Rule, rules: RuleSet, now: datetime) -> datetime | None:
        if not rule.enabled:
            self.enabled_since.pop(rule.name, None)
            return None  # state stays put: what it misses while disabled follows on_missed
        clock, state = self._clock(rule, now)
        since = self.enabled_since.setdefault(rule.name, now)
        if state.next_fire is None or state.next_fire > now:
            return state.next_fire
        due = clock.next_after(state.next_fire - timedelta(microseconds=1))
        if due.at != state.next_fire:  # stored before a tzdata change: honour what was promised
            due = Due(state.next_fire, None)
        listed, due = _walk(clock, due, now, MAX_RECORDS_PER_PASS)
        occurrences: list[Occurrence] = []
        if due.at <= now:
            # A long outage: more occurrences than one pass lists. Record the first ones, one
            # summary line, and the most recent ones, which are what on_missed chooses from.
            tail = _tail(clock, listed[-1].at, now, MISSED_ALL_CAP)
            if tail and tail[0].at > due.at:
                occurrences.append(
                    _occ(
                        rule,
                        due,
                        "missed",
                        "more occurrences than one pass records",
                        now,
                        f"occurrences from here to {tail[0].at.isoformat()} not listed",
                    )
                )
            listed += tail
            due = clock.next_after(now)
        missed: list[Due] = []
        current: list[Due] = []
        for fire in listed:
            is_missed = fire.at < since or now - fire.at > LATE_AS_MISSED
            (missed if is_missed else current).append(fire)
        jobs: list[NewJob] = []
        running, waiting = self.store.rule_activity(rule.name)
        # An on-time run about to start stands in for what was missed (on_missed: once).
        on_time = any(not f.skip for f in current)
        blocked = _overlap(rule.overlap, running, waiting)
        self._missed(rule, rules, missed, now, blocked, on_time, occurrences, jobs)
        waiting = waiting or bool(jobs)
        for fire in current:
            if fire.skip:
                occurrences.append(_occ(rule, fire, "skipped", "DST policy (dst: gap: skip)", now))
                continue
            reason = _overlap(rule.overlap, running, waiting)
            if reason is not None:
                occurrences.append(_occ(rule, fire, "skipped", reason, now))
                continue
            jobs.append(self._job(rule, rules, fire, now))
            occurrences.append(_occ(rule, fire, "fired", None, now))
            waiting = True
        last = state.last_fire
        fired = [j.scheduled_for for j in jobs if j.scheduled_for is not None]
        if fired:
            last = max(fired) if last is None else max(last, *fired)
        new_state = RuleState(rule.name, state.fingerprint, state.anchor, due.at, last)
        self.store.save_rule_state(new_state, now, occurrences, jobs)
        self.states[rule.name] = new_state
        return due.at

    def _missed(
        self,
        rule: Rule,
        rules: RuleSet,
        missed: list[Due],
        now: datetime,
        blocked: str | None,
        on_time: bool,
        occurrences: list[Occurrence],
        jobs: list[NewJob],
    ) -> None:
        if not missed:
            return
        eligible = [
            d for d in missed if not d.skip and (rule.grace is None or now - d.at <= rule.grace)
        ]
        run: list[Due] = []
        if rule.on_missed is MissedPolicy.ONCE and eligible and not on_time:
            run = eligible[-1:]
        elif rule.on_missed is MissedPolicy.ALL:
            run = eligible[-MISSED_ALL_CAP:]
        chosen = {d.at for d in run if not d.skip}
        for due in missed:
            if due.skip:
                occurrences.append(_occ(rule, due, "skipped", "DST policy (dst: gap: skip)", now))
            elif due.at in chosen and blocked is not None:
                occurrences.append(_occ(rule, due, "skipped", blocked, now))
            elif due.at in chosen:
                jobs.append(self._job(rule, rules, due, now))
                occurrences.append(
                    _occ(rule, due, "fired", f"late run (on_missed: {rule.on_missed})", now)
                )
            elif rule.on_missed is MissedPolicy.SKIP:
                occurrences.append(
                    _occ(rule, due, "missed", "daemon down or rule disabled (on_missed: skip)", now)
                )
            elif rule.grace is not None and now - due.at > rule.grace:
                occurrences.append(
                    _occ(
                        rule, due, "missed", f"older than grace {format_duration(rule.grace)}", now
                    )
                )
            elif rule.on_missed is MissedPolicy.ONCE:
                occurrences.append(
                    _occ(
                        rule,
                        due,
                        "missed",
                        "coalesced into the latest missed run (on_missed: once)",
                        now,
                    )
                )
            else:
                occurrences.append(
                    _occ(
                        rule,
                        due,
                        "missed",
                        f"over the cap of {MISSED_ALL_CAP} (on_missed: all)",
                        now,
                    )
                )

    def _job(self, rule: Rule, rules: RuleSet, due: Due, now: datetime) -> NewJob:
        action = rules.actions[rule.action]
        return NewJob(
            rule=rule.name,
            action=rule.action,
            perform_at=due.at,  # already due: claimed at once, in scheduled order
            priority=rule.priority,
            max_attempts=effective_retry(rule, action).max_attempts,
            payload={"rule": rule.name, "scheduled_for": due.at.isoformat()},
            scheduled_for=due.at,
            occurrence_key=occurrence_key(rule.name, due.at),
        )

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


def _occ(
    rule: Rule, due: Due, outcome: str, reason: str | None, now: datetime, note: str | None = None
) -> Occurrence:
    return Occurrence(rule.name, due.at, outcome, reason, None, note or due.note, now)


def _overlap(policy: OverlapPolicy, running: bool, waiting: bool) -> str | None:
    """Why an occurrence gets no job (None: it gets one)."""
    if policy is OverlapPolicy.SKIP and (running or waiting):
        return "overlap: previous job still waiting or running"
    if policy is OverlapPolicy.QUEUE and waiting:
        # One run may wait behind the running one; more would let a backlog grow without bound.
        return "overlap: a run is already queued behind the running one"
    return None


def _walk(clock: RuleClock, due: Due, now: datetime, limit: int) -> tuple[list[Due], Due]:
    """Fires from `due` up to `now`, at most `limit`; also the first fire not taken."""
    taken: list[Due] = []
    while due.at <= now and len(taken) < limit:
        taken.append(due)
        due = clock.next_after(due.at)
    return taken, due


def _tail(clock: RuleClock, after: datetime, now: datetime, want: int) -> list[Due]:
    """The last `want` fires in (after, now], found by widening a window back from now.

    Schedules only step forward, so look back 1 minute, then 4, 16, ... until the window holds
    enough fires or reaches `after`: cost stays proportional to `want`, not to the outage.
    """
    span = timedelta(minutes=1)
    while True:
        start = max(after, now - span)
        last: deque[Due] = deque(maxlen=want)
        count = 0
        due = clock.next_after(start)
        while due.at <= now and count < TAIL_WALK_LIMIT:
            last.append(due)
            count += 1
            due = clock.next_after(due.at)
        if count >= want or start == after or count >= TAIL_WALK_LIMIT:
            return list(last)
        span *= 4
