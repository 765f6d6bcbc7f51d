"""The occurrence planner on a real store: what is due, missed, skipped, and what gets a job."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from harness import verdict

from timeos.daemon.planner import OccurrencePlanner
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    CommandSpec,
    CronTrigger,
    DstPolicy,
    GapPolicy,
    IntervalTrigger,
    JobStatus,
    MissedPolicy,
    Outcome,
    OverlapPolicy,
    Rule,
    RuleSet,
)
from timeos.store.sqlite.store import SqliteStore
from timeos.time.planning import MAX_RECORDS_PER_PASS, MISSED_ALL_CAP

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


class Rules:
    """A settable rule set, like the daemon's reloadable one."""

    def __init__(self, *rules: Rule) -> None:
        self.set(*rules)

    def set(self, *rules: Rule) -> None:
        act = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))
        self.value = RuleSet(tuple(rules), {"act": act})

    def __call__(self) -> RuleSet:
        return self.value


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


def _cron(expr: str, **kw) -> Rule:
    return Rule("r", CronTrigger(expr), "act", **kw)


def _outcomes(store: SqliteStore) -> list[tuple[str, str]]:
    return [(o.scheduled_for.strftime("%H:%M"), o.outcome) for o in reversed(store.history("r"))]


def test_first_sight_plans_from_now_and_fires_when_due(store):
    planner = OccurrencePlanner(store=store, rules=Rules(_cron("*/15 * * * *")))
    assert planner.plan(T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=15)
    assert store.list_jobs() == []
    assert planner.plan(T0 + timedelta(minutes=15)) == T0 + timedelta(minutes=30)
    (job,) = store.list_jobs()
    assert job.scheduled_for == T0 + timedelta(minutes=15)
    assert job.perform_at == T0 + timedelta(minutes=15)
    assert _outcomes(store) == [("09:15", "fired")]


def test_state_survives_a_new_planner_like_a_restart(store):
    rules = Rules(_cron("0 * * * *", on_missed=MissedPolicy.ALL, overlap=OverlapPolicy.ALLOW))
    OccurrencePlanner(store=store, rules=rules).plan(T0 + timedelta(minutes=30))
    later = OccurrencePlanner(store=store, rules=rules)
    later.plan(T0 + timedelta(hours=3, minutes=30))
    assert [j.scheduled_for.hour for j in store.list_jobs()] == [10, 11, 12]


def test_gap_skip_policy_records_the_dropped_occurrence(store):
    ny = ZoneInfo("America/New_York")
    rule = _cron("30 2 * * *", timezone=ny, dst=DstPolicy(gap=GapPolicy.SKIP))
    planner = OccurrencePlanner(store=store, rules=Rules(rule))
    start = datetime(2025, 3, 8, 17, 0, tzinfo=UTC)
    planner.plan(start)
    planner.plan(datetime(2025, 3, 9, 7, 0, tzinfo=UTC))  # the jump: 03:00 EDT
    (occ,) = store.history("r")
    assert occ.outcome == "skipped" and "DST" in (occ.reason or "")
    assert store.list_jobs() == []
    nxt = planner.plan(datetime(2025, 3, 9, 7, 1, tzinfo=UTC))
    assert nxt == datetime(2025, 3, 10, 6, 30, tzinfo=UTC)  # 02:30 EDT the next day


def test_fire_more_than_a_minute_late_while_running_counts_as_missed(store):
    planner = OccurrencePlanner(store=store, rules=Rules(_cron("*/10 * * * *")))
    planner.plan(T0)
    planner.plan(T0 + timedelta(hours=1, minutes=5))  # suspend/resume across six fires
    assert [j.scheduled_for for j in store.list_jobs()] == [T0 + timedelta(hours=1)]
    assert [o for _, o in _outcomes(store)] == ["missed"] * 5 + ["fired"]


def test_disabled_rule_makes_up_once_when_enabled_again(store):
    rules = Rules(_cron("0 * * * *"))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    rules.set(_cron("0 * * * *", enabled=False))
    assert planner.plan(T0 + timedelta(hours=2)) is None
    assert store.list_jobs() == []
    rules.set(_cron("0 * * * *"))
    planner.plan(T0 + timedelta(hours=3, minutes=30))
    assert [j.scheduled_for for j in store.list_jobs()] == [T0 + timedelta(hours=3)]
    reasons = {o.reason for o in store.history("r") if o.outcome == "missed"}
    assert reasons == {"coalesced into the latest missed run (on_missed: once)"}


def test_on_missed_all_is_capped(store):
    rule = _cron("* * * * *", on_missed=MissedPolicy.ALL, overlap=OverlapPolicy.ALLOW)
    rules = Rules(rule)
    OccurrencePlanner(store=store, rules=rules).plan(T0)
    OccurrencePlanner(store=store, rules=rules).plan(T0 + timedelta(hours=5))
    # the cap on the 299 missed, plus 14:00 itself, which is on time
    assert len(store.list_jobs(limit=1000)) == MISSED_ALL_CAP + 1
    assert len(store.history("r", limit=1000)) == 300


def test_a_long_outage_is_summarised_not_listed_forever(store):
    rules = Rules(_cron("* * * * *"))
    OccurrencePlanner(store=store, rules=rules).plan(T0)
    planner = OccurrencePlanner(store=store, rules=rules)
    nxt = planner.plan(T0 + timedelta(days=30))
    assert nxt == T0 + timedelta(days=30, minutes=1)
    history = store.history("r", limit=2000)
    # the first 1000, one summary line, and the most recent 100 (what on_missed picks from)
    assert len(history) == MAX_RECORDS_PER_PASS + 1 + MISSED_ALL_CAP
    assert any("not listed" in (o.note or "") for o in history)
    (job,) = store.list_jobs()
    assert job.scheduled_for == T0 + timedelta(days=30)  # the on-time one stands in for all


@pytest.mark.parametrize(
    ("policy", "grace", "expected"),
    [
        (MissedPolicy.ONCE, timedelta(hours=1), [timedelta(days=2)]),
        (MissedPolicy.ONCE, None, [timedelta(days=2)]),
        (MissedPolicy.ALL, None, [timedelta(days=2, minutes=-2 * k) for k in range(99, -1, -1)]),
    ],
    ids=["once-with-grace", "once", "all-most-recent-100"],
)
def test_after_a_long_outage_the_most_recent_occurrences_run(store, policy, grace, expected):
    rule = _cron("*/2 * * * *", on_missed=policy, grace=grace, overlap=OverlapPolicy.ALLOW)
    rules = Rules(rule)
    OccurrencePlanner(store=store, rules=rules).plan(T0)
    # two days (1,440 occurrences) later, 90 s after the last one: all of them were missed
    OccurrencePlanner(store=store, rules=rules).plan(T0 + timedelta(days=2, seconds=90))
    ran = [j.scheduled_for - T0 for j in store.list_jobs(limit=1000)]
    assert ran == expected


def test_overlap_skip_skips_while_a_job_waits_or_runs(store):
    planner = OccurrencePlanner(store=store, rules=Rules(_cron("*/5 * * * *")))
    planner.plan(T0)
    planner.plan(T0 + timedelta(minutes=5))
    planner.plan(T0 + timedelta(minutes=10))  # first job still pending: skipped
    (job,) = store.claim_due(T0 + timedelta(minutes=10), 5)
    planner.plan(T0 + timedelta(minutes=15))  # now running: skipped too
    store.finish(job, ActionResult(Outcome.SUCCEEDED), T0, verdict(job, JobStatus.SUCCEEDED))
    assert planner.plan(T0 + timedelta(minutes=20)) == T0 + timedelta(minutes=25)
    assert [o for _, o in _outcomes(store)] == ["fired", "skipped", "skipped", "fired"]


def test_overlap_queue_lets_one_run_wait_and_skips_the_rest(store):
    rules = Rules(_cron("*/5 * * * *", overlap=OverlapPolicy.QUEUE))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    planner.plan(T0 + timedelta(minutes=5))
    exclusive = {"r"}
    (first,) = store.claim_due(T0 + timedelta(minutes=5), 5, exclusive=exclusive)
    # while the first runs, 09:10 is queued; 09:15 finds a run already queued
    assert planner.plan(T0 + timedelta(minutes=10)) == T0 + timedelta(minutes=15)
    assert planner.plan(T0 + timedelta(minutes=15)) == T0 + timedelta(minutes=20)
    assert [o for _, o in _outcomes(store)] == ["fired", "fired", "skipped"]
    # the queued job is not claimed while its rule runs, nor does it count as due
    assert store.claim_due(T0 + timedelta(minutes=16), 5, blocked={"r"}, exclusive=exclusive) == []
    assert store.next_due_at(blocked={"r"}) is None
    store.finish(first, ActionResult(Outcome.SUCCEEDED), T0, verdict(first, JobStatus.SUCCEEDED))
    (second,) = store.claim_due(T0 + timedelta(minutes=16), 5, exclusive=exclusive)
    assert second.scheduled_for == T0 + timedelta(minutes=10)


def test_exclusive_claim_takes_one_job_per_rule(store):
    rule = _cron("* * * * *", on_missed=MissedPolicy.ALL, overlap=OverlapPolicy.QUEUE)
    rules = Rules(rule)
    OccurrencePlanner(store=store, rules=rules).plan(T0)
    OccurrencePlanner(store=store, rules=rules).plan(T0 + timedelta(minutes=5, seconds=30))
    assert len(store.list_jobs()) == 5  # make-up runs of `all`, to run one after another
    claimed = store.claim_due(T0 + timedelta(minutes=6), 10, exclusive={"r"})
    assert [j.scheduled_for for j in claimed] == [T0 + timedelta(minutes=1)]


def test_a_forward_jump_on_a_queue_rule_follows_on_missed(store):
    planner = OccurrencePlanner(
        store=store, rules=Rules(_cron("*/10 * * * *", overlap=OverlapPolicy.QUEUE))
    )
    planner.plan(T0)
    planner.plan(T0 + timedelta(hours=6, minutes=5))
    assert len(store.list_jobs()) == 1
    assert sum(o == "missed" for _, o in _outcomes(store)) == 35


def test_interval_phase_is_kept_when_only_priority_changes_and_replanned_on_change(store):
    rule = Rule("r", IntervalTrigger(timedelta(minutes=30)), "act")
    rules = Rules(rule)
    planner = OccurrencePlanner(store=store, rules=rules)
    assert planner.plan(T0) == T0 + timedelta(minutes=30)
    rules.set(replace(rule, priority=9))
    assert planner.plan(T0 + timedelta(minutes=10)) == T0 + timedelta(minutes=30)
    rules.set(replace(rule, trigger=IntervalTrigger(timedelta(minutes=20))))
    assert planner.plan(T0 + timedelta(minutes=10)) == T0 + timedelta(minutes=30)
    assert store.rule_states()["r"].anchor == T0 + timedelta(minutes=10)


def test_describe_reports_next_and_last_fire(store):
    rules = Rules(_cron("0 * * * *"))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0 + timedelta(minutes=1))
    planner.plan(T0 + timedelta(hours=1))
    info = planner.describe(rules().rules[0])
    assert info == {
        "next_fire": (T0 + timedelta(hours=2)).isoformat(),
        "last_fire": (T0 + timedelta(hours=1)).isoformat(),
    }


def test_a_backward_clock_step_fires_nothing_twice(store):
    planner = OccurrencePlanner(store=store, rules=Rules(_cron("*/15 * * * *")))
    planner.plan(T0)
    planner.plan(T0 + timedelta(minutes=15))
    assert planner.plan(T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=30)  # stepped back
    planner.plan(T0 + timedelta(minutes=15))  # the wall clock passes 09:15 a second time
    assert [j.scheduled_for for j in store.list_jobs()] == [T0 + timedelta(minutes=15)]


def test_a_rule_removed_and_added_again_starts_afresh(store):
    rules = Rules(_cron("0 * * * *"))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    rules.value = RuleSet((), rules.value.actions)
    planner.plan(T0 + timedelta(hours=1, minutes=30))
    rules.set(_cron("0 * * * *"))
    assert planner.plan(T0 + timedelta(hours=5, minutes=30)) == T0 + timedelta(hours=6)
    assert store.list_jobs() == [] and store.history("r") == []


def test_a_rule_that_cannot_be_planned_does_not_stop_the_others(store):
    far = datetime(9950, 1, 1, tzinfo=UTC)  # a century interval from here overflows datetime
    broken = Rule("broken", IntervalTrigger(timedelta(days=36500)), "act")
    planner = OccurrencePlanner(store=store, rules=Rules(broken, _cron("*/5 * * * *")))
    assert planner.plan(far) == far + timedelta(minutes=5)
    assert "OverflowError" in planner.failures["broken"]


def test_a_rule_removed_before_a_restart_starts_afresh_when_it_returns(store):
    rules = Rules(_cron("0 * * * *"))
    OccurrencePlanner(store=store, rules=rules).plan(T0)
    rules.value = RuleSet((), rules.value.actions)
    after_restart = OccurrencePlanner(store=store, rules=rules)
    after_restart.plan(T0 + timedelta(hours=3))  # first pass: the rule is gone
    rules.set(_cron("0 * * * *"))
    assert after_restart.plan(T0 + timedelta(hours=5, minutes=30)) == T0 + timedelta(hours=6)
    assert store.list_jobs() == []


def test_planner_wakes_when_a_disable_for_runs_out(store):
    rules = Rules(_cron("0 * * * *"))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    off = replace(
        _cron("0 * * * *", enabled=False),
        disabled_at=T0 + timedelta(minutes=5),
        disabled_until=T0 + timedelta(hours=2, minutes=30),
    )
    rules.set(off)
    assert planner.plan(T0 + timedelta(minutes=5)) == T0 + timedelta(hours=2, minutes=30)
    assert store.list_jobs() == []
    rules.set(replace(off, enabled=True))  # what the service composes once the --for ran out
    planner.plan(T0 + timedelta(hours=2, minutes=30))
    # on_missed: once runs 11:00 late; 10:00 was held back on purpose, not lost to an outage
    assert [j.scheduled_for for j in store.list_jobs()] == [T0 + timedelta(hours=2)]
    assert [
        (o.scheduled_for.strftime("%H:%M"), o.outcome, o.reason)
        for o in reversed(store.history("r"))
    ] == [
        ("10:00", "skipped", "rule disabled"),
        ("11:00", "fired", "late run (on_missed: once)"),
    ]


def test_runtime_disabled_rule_with_on_missed_skip_runs_nothing_late(store):
    rules = Rules(_cron("0 * * * *", on_missed=MissedPolicy.SKIP))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    off = replace(
        _cron("0 * * * *", on_missed=MissedPolicy.SKIP),
        disabled_at=T0 + timedelta(minutes=5),
        disabled_until=T0 + timedelta(hours=3, minutes=10),
    )
    rules.set(replace(off, enabled=False))
    planner.plan(T0 + timedelta(hours=1))
    rules.set(off)
    planner.plan(T0 + timedelta(hours=3, minutes=10))
    assert store.list_jobs() == []
    assert {(o.outcome, o.reason) for o in store.history("r")} == {("skipped", "rule disabled")}


def test_a_rule_the_files_disable_skips_its_fires_as_rule_disabled_too(store):
    rules = Rules(_cron("0 * * * *", on_missed=MissedPolicy.SKIP))
    planner = OccurrencePlanner(store=store, rules=rules)
    planner.plan(T0)
    rules.set(_cron("0 * * * *", on_missed=MissedPolicy.SKIP, enabled=False))
    assert planner.plan(T0 + timedelta(minutes=5)) is None
    rules.set(_cron("0 * * * *", on_missed=MissedPolicy.SKIP))
    planner.plan(T0 + timedelta(hours=2, minutes=5))
    assert _outcomes(store) == [("10:00", "skipped"), ("11:00", "skipped")]
    assert {o.reason for o in store.history("r")} == {"rule disabled"}


def test_the_leader_rescues_dead_daemons_jobs_every_ten_seconds_and_wakes_for_it(store):
    from timeos.daemon.planner import RESCUE_EVERY

    calls: list[int] = []
    planner = OccurrencePlanner(store=store, rules=Rules(), rescue=lambda: calls.append(1))
    assert planner.plan(T0) == T0 + RESCUE_EVERY  # nothing else to do: wake for the next one
    assert calls == [1]
    planner.plan(T0 + RESCUE_EVERY - timedelta(seconds=1))
    assert calls == [1]
    planner.plan(T0 + RESCUE_EVERY)
    assert calls == [1, 1]
    alone = OccurrencePlanner(store=store, rules=Rules())  # SQLite, by itself: nothing to rescue
    assert alone.plan(T0) is None
