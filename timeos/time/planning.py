"""Pure occurrence planning for time-based rules: given a rule's compiled trigger, its stored
state, `now` and whether a job of it is running or waiting, decide which occurrences fire, which are
skipped or missed (on_missed, grace, overlap, DST skip, late as missed), and the next state.

No store, no clock: daemon/planner.py reads the inputs, calls plan(), and writes the Plan in one
transaction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from timeos.model import (
    MissedPolicy,
    NewJob,
    Occurrence,
    OccurrenceOutcome,
    OverlapPolicy,
    Rule,
    RuleState,
    occurrence_key,
)
from timeos.time.triggers import Due, RuleClock
from timeos.timefmt import format_duration

FIRED, SKIPPED, MISSED = (
    OccurrenceOutcome.FIRED,
    OccurrenceOutcome.SKIPPED,
    OccurrenceOutcome.MISSED,
)

# A fire later than this while the daemon ran (suspend/resume, a forward clock step) counts as
# missed, so it follows on_missed instead of bursting.
LATE_AS_MISSED = timedelta(minutes=1)
MISSED_ALL_CAP = 100  # on_missed: all runs at most this many of the missed occurrences
MAX_RECORDS_PER_PASS = 1000  # a long outage of a minutely rule is summarised past this
TAIL_WALK_LIMIT = 100_000  # safety bound on one look-back window
DST_SKIP = "DST policy (dst: gap: skip)"
RULE_DISABLED = "rule disabled"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one planning pass decided for one rule: all of it is written together."""

    state: RuleState
    occurrences: tuple[Occurrence, ...]
    jobs: tuple[NewJob, ...]


def resume(
    rule: Rule, stored: RuleState | None, now: datetime, *, fresh: bool
) -> tuple[RuleClock, RuleState]:
    """The rule's compiled trigger and the state to plan from.

    A new rule, a re-added one (`fresh`) or one whose schedule changed starts again from `now`:
    the old phase is gone (its history stays). Otherwise the stored anchor keeps the phase.
    """
    clock = RuleClock(rule, stored.anchor if stored and stored.anchor else now)
    if stored is None or stored.fingerprint != clock.fingerprint() or fresh:
        clock = RuleClock(rule, now)
        return clock, RuleState(rule.name, clock.fingerprint(), now, clock.next_after(now).at, None)
    return clock, stored


def is_due(state: RuleState, now: datetime) -> bool:
    """True when the rule has an occurrence at or before `now` to plan."""
    return state.next_fire is not None and state.next_fire <= now


def plan(
    rule: Rule,
    clock: RuleClock,
    state: RuleState,
    *,
    now: datetime,
    since: datetime,
    running: bool,
    waiting: bool,
    max_attempts: int,
    disabled: tuple[datetime, datetime] | None = None,
) -> Plan:
    """Decide every occurrence from `state.next_fire` up to `now`; return the whole Plan.

    `since`: when this process started planning the rule (earlier fires were missed while the
    daemon was down or the rule disabled); `running`/`waiting`: a job of the rule is running, or
    waiting to run (the overlap check); `disabled`: the rule's latest disabled window [from,
    until): its fires there that on_missed does not run are skipped as "rule disabled".
    """
    if not is_due(state, now):
        return Plan(state, (), ())
    assert state.next_fire is not None
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
                    MISSED,
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
    # An on-time run about to start stands in for what was missed (on_missed: once).
    on_time = any(not f.skip for f in current)
    blocked = _overlap(rule.overlap, running, waiting)
    late_occ, jobs = _missed(rule, missed, now, blocked, on_time, max_attempts, disabled)
    occurrences += late_occ
    waiting = waiting or bool(jobs)
    for fire in current:
        if fire.skip:
            occurrences.append(_occ(rule, fire, SKIPPED, DST_SKIP, now))
            continue
        reason = _overlap(rule.overlap, running, waiting)
        if reason is not None:
            occurrences.append(_occ(rule, fire, SKIPPED, reason, now))
            continue
        jobs.append(_job(rule, fire, max_attempts))
        occurrences.append(_occ(rule, fire, FIRED, None, now))
        waiting = True
    last = state.last_fire
    fired = [j.scheduled_for for j in jobs if j.scheduled_for is not None]
    if fired:
        last = max(fired) if last is None else max(last, *fired)
    next_state = RuleState(rule.name, state.fingerprint, state.anchor, due.at, last)
    return Plan(next_state, tuple(occurrences), tuple(jobs))


def _missed(
    rule: Rule,
    missed: list[Due],
    now: datetime,
    blocked: str | None,
    on_time: bool,
    max_attempts: int,
    disabled: tuple[datetime, datetime] | None = None,
) -> tuple[list[Occurrence], list[NewJob]]:
    """Apply on_missed and grace to the missed fires: which run late, and why the rest do not."""
    occurrences: list[Occurrence] = []
    jobs: list[NewJob] = []
    eligible = [
        d for d in missed if not d.skip and (rule.grace is None or now - d.at <= rule.grace)
    ]
    run: list[Due] = []
    if rule.on_missed is MissedPolicy.ONCE and eligible and not on_time:
        run = eligible[-1:]
    elif rule.on_missed is MissedPolicy.ALL:
        run = eligible[-MISSED_ALL_CAP:]
    chosen = {d.at for d in run}
    for due in missed:
        if due.skip:
            occurrences.append(_occ(rule, due, SKIPPED, DST_SKIP, now))
        elif due.at in chosen and blocked is not None:
            occurrences.append(_occ(rule, due, SKIPPED, blocked, now))
        elif due.at in chosen:
            jobs.append(_job(rule, due, max_attempts))
            occurrences.append(
                _occ(rule, due, FIRED, f"late run (on_missed: {rule.on_missed})", now)
            )
        elif disabled is not None and disabled[0] <= due.at < disabled[1]:
            # Held back on purpose, not lost to an outage: on_missed chose the late run above.
            occurrences.append(_occ(rule, due, SKIPPED, RULE_DISABLED, now))
        else:
            occurrences.append(_occ(rule, due, MISSED, _why_missed(rule, due, now), now))
    return occurrences, jobs


def _why_missed(rule: Rule, due: Due, now: datetime) -> str:
    if rule.on_missed is MissedPolicy.SKIP:
        return "daemon down or rule disabled (on_missed: skip)"
    if rule.grace is not None and now - due.at > rule.grace:
        return f"older than grace {format_duration(rule.grace)}"
    if rule.on_missed is MissedPolicy.ONCE:
        return "coalesced into the latest missed run (on_missed: once)"
    return f"over the cap of {MISSED_ALL_CAP} (on_missed: all)"


def _job(rule: Rule, due: Due, max_attempts: int) -> NewJob:
    return NewJob(
        rule=rule.name,
        action=rule.action,
        perform_at=due.at,  # already due: claimed at once, in scheduled order
        priority=rule.priority,
        max_attempts=max_attempts,
        payload={"rule": rule.name, "scheduled_for": due.at.isoformat()},
        scheduled_for=due.at,
        occurrence_key=occurrence_key(rule.name, due.at),
    )


def _occ(
    rule: Rule,
    due: Due,
    outcome: OccurrenceOutcome,
    reason: str | None,
    now: datetime,
    note: str | None = None,
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
