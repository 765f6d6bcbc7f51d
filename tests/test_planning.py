"""The pure occurrence planner: plan() decides from its arguments alone, no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from timeos.model import (
    CronTrigger,
    DstPolicy,
    GapPolicy,
    IntervalTrigger,
    MissedPolicy,
    OccurrenceOutcome,
    OverlapPolicy,
    Rule,
    RuleState,
)
from timeos.time.planning import LATE_AS_MISSED, Plan, is_due, plan, resume

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
FIRED, SKIPPED, MISSED = (
    OccurrenceOutcome.FIRED,
    OccurrenceOutcome.SKIPPED,
    OccurrenceOutcome.MISSED,
)


def _rule(expr: str = "*/10 * * * *", **kw) -> Rule:
    return Rule("r", CronTrigger(expr), "act", **kw)


def _plan(
    rule: Rule,
    *,
    start: datetime,
    now: datetime,
    since: datetime | None = None,
    running: bool = False,
    waiting: bool = False,
) -> Plan:
    """Plan `rule` as first planned at `start`, with the process running since `since`."""
    clock, state = resume(rule, None, start, fresh=False)
    return plan(
        rule,
        clock,
        state,
        now=now,
        since=since or start,
        running=running,
        waiting=waiting,
        max_attempts=3,
    )


def _summary(result: Plan) -> list[tuple[str, OccurrenceOutcome]]:
    return [(o.scheduled_for.strftime("%H:%M"), o.outcome) for o in result.occurrences]


def test_resume_starts_a_new_rule_at_its_first_fire_after_now():
    clock, state = resume(_rule(), None, T0, fresh=False)
    assert state.anchor == T0 and state.next_fire == T0 + 10 * MIN and state.last_fire is None
    assert not is_due(state, T0)


def test_resume_keeps_a_stored_phase_and_restarts_a_changed_or_fresh_rule():
    rule = Rule("r", IntervalTrigger(timedelta(minutes=7)), "act")
    _, stored = resume(rule, None, T0, fresh=False)
    later = T0 + timedelta(hours=1)
    assert resume(rule, stored, later, fresh=False)[1] is stored
    assert resume(rule, stored, later, fresh=True)[1].anchor == later
    changed = Rule("r", IntervalTrigger(timedelta(minutes=8)), "act")
    assert resume(changed, stored, later, fresh=False)[1].anchor == later


def test_nothing_due_changes_nothing():
    result = _plan(_rule(), start=T0, now=T0 + 9 * MIN)
    assert result.occurrences == () and result.jobs == ()
    assert result.state.next_fire == T0 + 10 * MIN


def test_an_on_time_fire_gets_one_job_with_its_occurrence_key_and_advances_the_state():
    result = _plan(_rule(), start=T0, now=T0 + 10 * MIN)
    assert _summary(result) == [("09:10", FIRED)]
    (job,) = result.jobs
    assert job.scheduled_for == job.perform_at == T0 + 10 * MIN
    assert job.occurrence_key is not None and job.occurrence_key.startswith("r@")
    assert job.max_attempts == 3
    assert result.state.next_fire == T0 + 20 * MIN and result.state.last_fire == T0 + 10 * MIN


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MissedPolicy.SKIP, [MISSED, MISSED, MISSED, FIRED]),
        (MissedPolicy.ONCE, [MISSED, MISSED, MISSED, FIRED]),
        (MissedPolicy.ALL, [FIRED, FIRED, FIRED, FIRED]),
    ],
    ids=["skip", "once-coalesced-into-the-on-time-run", "all"],
)
def test_missed_fires_follow_on_missed_when_an_on_time_fire_is_due_too(policy, expected):
    # Down from 09:00 to 09:40: 09:10, 09:20, 09:30 were missed; 09:40 is on time.
    rule = _rule(on_missed=policy, overlap=OverlapPolicy.ALLOW)
    result = _plan(rule, start=T0, now=T0 + 40 * MIN, since=T0 + 40 * MIN)
    assert [o for _, o in _summary(result)] == expected
    assert len(result.jobs) == expected.count(FIRED)


def test_on_missed_once_runs_the_latest_missed_fire_late_when_nothing_is_on_time():
    result = _plan(_rule(), start=T0, now=T0 + 35 * MIN, since=T0 + 35 * MIN)
    assert _summary(result) == [("09:10", MISSED), ("09:20", MISSED), ("09:30", FIRED)]
    (job,) = result.jobs
    assert job.scheduled_for == T0 + 30 * MIN
    assert "late run" in (result.occurrences[-1].reason or "")


def test_grace_bounds_how_late_a_missed_fire_may_run():
    rule = _rule(grace=timedelta(minutes=3))
    result = _plan(rule, start=T0, now=T0 + 35 * MIN, since=T0 + 35 * MIN)
    assert [o for _, o in _summary(result)] == [MISSED, MISSED, MISSED]
    assert result.jobs == ()
    assert "older than grace 3m" in (result.occurrences[-1].reason or "")


def test_a_fire_later_than_a_minute_while_running_counts_as_missed():
    late = _plan(_rule(on_missed=MissedPolicy.SKIP), start=T0, now=T0 + 10 * MIN + LATE_AS_MISSED)
    assert _summary(late) == [("09:10", FIRED)]  # exactly a minute late: still on time
    later = T0 + 10 * MIN + LATE_AS_MISSED + timedelta(seconds=1)
    assert _summary(_plan(_rule(on_missed=MissedPolicy.SKIP), start=T0, now=later)) == [
        ("09:10", MISSED)
    ]


@pytest.mark.parametrize(
    ("overlap", "running", "waiting", "outcome"),
    [
        (OverlapPolicy.SKIP, True, False, SKIPPED),
        (OverlapPolicy.SKIP, False, True, SKIPPED),
        (OverlapPolicy.QUEUE, True, False, FIRED),
        (OverlapPolicy.QUEUE, True, True, SKIPPED),
        (OverlapPolicy.ALLOW, True, True, FIRED),
    ],
    ids=["skip-running", "skip-waiting", "queue-one", "queue-full", "allow"],
)
def test_overlap_decides_from_running_and_waiting(overlap, running, waiting, outcome):
    rule = _rule(overlap=overlap)
    result = _plan(rule, start=T0, now=T0 + 10 * MIN, running=running, waiting=waiting)
    assert [o for _, o in _summary(result)] == [outcome]
    assert len(result.jobs) == (1 if outcome is FIRED else 0)


def test_a_dst_gap_with_gap_skip_records_the_eaten_fire_as_skipped():
    ny = ZoneInfo("America/New_York")
    rule = _rule("30 2 * * *", timezone=ny, dst=DstPolicy(gap=GapPolicy.SKIP))
    start = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    now = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)  # 04:00 EDT on the change day
    result = _plan(rule, start=start, now=now, since=start)
    assert [o.outcome for o in result.occurrences] == [SKIPPED]
    assert result.jobs == ()
    assert "dst" in (result.occurrences[0].reason or "").lower()


def test_a_tzdata_change_keeps_the_stored_promise():
    rule = _rule()
    clock, _ = resume(rule, None, T0, fresh=False)
    promised = T0 + 10 * MIN + timedelta(seconds=7)  # not a fire of today's rule
    state = RuleState("r", clock.fingerprint(), T0, promised, None)
    result = plan(
        rule,
        clock,
        state,
        now=promised,
        since=T0,
        running=False,
        waiting=False,
        max_attempts=3,
    )
    assert [j.scheduled_for for j in result.jobs] == [promised]


def test_plan_is_pure_the_same_inputs_give_the_same_plan():
    rule = _rule(on_missed=MissedPolicy.ALL)
    first = _plan(rule, start=T0, now=T0 + 2 * 60 * MIN, since=T0 + 60 * MIN)
    again = _plan(rule, start=T0, now=T0 + 2 * 60 * MIN, since=T0 + 60 * MIN)
    assert first == again
