"""Retention: the pure cutoffs, the store's batched pruning, the daemon's pruner on a fake clock,
and `POST /v1/cleanup`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from timeos.clock import FakeClock
from timeos.daemon.retention import Pruner, keep_time, retention_from
from timeos.engine import Cutoff, Retention, prune_plan
from timeos.errors import UsageError
from timeos.model import (
    FOREVER,
    Action,
    ActionKind,
    ActionResult,
    CommandSpec,
    Event,
    EventTrigger,
    IntervalTrigger,
    JobStatus,
    NewJob,
    Occurrence,
    OccurrenceOutcome,
    Outcome,
    PruneCounts,
    Rule,
    RuleSet,
    RuleState,
    Verdict,
    new_id,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)

ACT = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))


def _rules(*rules: Rule) -> RuleSet:
    return RuleSet(rules or (Rule("r", EventTrigger("e"), "act"),), {"act": ACT})


# ---- pure cutoffs -----------------------------------------------------------------------------


def test_default_plan_keeps_events_90_days_finished_jobs_30_and_dead_jobs_forever() -> None:
    plan = prune_plan(Retention(), _rules(), T0)
    assert plan.events_before == T0 - 90 * DAY
    assert plan.jobs == (
        Cutoff(T0 - 30 * DAY, (JobStatus.SUCCEEDED, JobStatus.CANCELLED), except_rules=()),
    )
    assert plan.occurrences == plan.jobs  # jobless occurrences age like the rule's jobs


def test_a_rules_retention_overrides_the_global_one_for_its_jobs_and_never_keeps_them() -> None:
    rules = _rules(
        Rule("short", EventTrigger("e"), "act", retention=7 * DAY),
        Rule("kept", IntervalTrigger(timedelta(seconds=1)), "act", retention=FOREVER),
        Rule("plain", EventTrigger("e"), "act"),
    )
    plan = prune_plan(Retention(), rules, T0)
    live = (JobStatus.SUCCEEDED, JobStatus.CANCELLED)
    assert plan.jobs == (
        Cutoff(T0 - 30 * DAY, live, except_rules=("kept", "short")),
        Cutoff(T0 - 7 * DAY, live, rules=("short",)),
    )


@pytest.mark.parametrize(
    ("kwargs", "jobs", "events"),
    [
        ({"older_than": DAY}, (Cutoff(T0 - DAY, (JobStatus.SUCCEEDED,)),), T0 - DAY),
        ({"older_than": DAY, "events": False}, (Cutoff(T0 - DAY, (JobStatus.SUCCEEDED,)),), None),
        ({"older_than": DAY, "statuses": (), "events": True}, (), T0 - DAY),
        (
            {"older_than": 2 * DAY, "statuses": (JobStatus.DEAD,), "events": False},
            (Cutoff(T0 - 2 * DAY, (JobStatus.DEAD,)),),
            None,
        ),
    ],
    ids=["older-than-all", "jobs-only", "events-only", "dead-with-older-than"],
)
def test_older_than_replaces_every_keep_time(kwargs, jobs, events) -> None:
    kwargs.setdefault("statuses", (JobStatus.SUCCEEDED,))
    plan = prune_plan(
        Retention(), _rules(Rule("r", EventTrigger("e"), "act", retention=DAY)), T0, **kwargs
    )
    assert plan.jobs == jobs and plan.events_before == events


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statuses": (JobStatus.PENDING,)}, "cannot clean up pending jobs"),
        ({"statuses": (JobStatus.RUNNING,), "older_than": DAY}, "cannot clean up running jobs"),
        ({"statuses": (JobStatus.DEAD,)}, "dead jobs are kept until deleted"),
    ],
    ids=["waiting", "running", "dead-without-older-than"],
)
def test_waiting_jobs_are_never_pruned_and_dead_ones_only_when_asked(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        prune_plan(Retention(), _rules(), T0, **kwargs)


@pytest.mark.parametrize(
    ("text", "keep"),
    [("90d", 90 * DAY), ("1h30m", timedelta(minutes=90)), ("never", FOREVER), ("NEVER", FOREVER)],
    ids=["days", "mixed", "never", "never-upper"],
)
def test_keep_time_reads_durations_and_never(text, keep) -> None:
    assert keep_time(text, "--keep-jobs") == keep


def test_retention_flags_fill_the_one_settings_value_and_reject_nonsense() -> None:
    found = retention_from(keep_events="7d", keep_jobs="never")
    assert (found.events, found.jobs, found.dead) == (7 * DAY, FOREVER, FOREVER)
    with pytest.raises(UsageError, match="--keep-events: bad duration"):
        retention_from(keep_events="soon")
    with pytest.raises(UsageError, match="--keep-jobs: must be positive"):
        retention_from(keep_jobs="0s")


# ---- the store --------------------------------------------------------------------------------


def _job(store: SqliteStore, at: datetime, status: JobStatus, rule: str = "r", **kw) -> str:
    """An event and its job, run at `at` to `status` (waiting statuses are left as they are)."""
    event = Event(new_id(at), "e", {}, at, at)
    job_id = store.emit(event, [NewJob(rule, "act", at, 0, 1, {}, event.id, **kw)], at).job_ids[0]
    if status in (JobStatus.SUCCEEDED, JobStatus.DEAD):
        (job,) = store.claim_due(at, 1)
        result = ActionResult(
            Outcome.SUCCEEDED if status is JobStatus.SUCCEEDED else Outcome.FAILED
        )
        store.finish(job, result, at, Verdict(status, at, 1, 0))
    elif status is JobStatus.CANCELLED:
        store.cancel(job_id, at)
    return job_id


def _counts(store: SqliteStore) -> tuple[int, ...]:
    return tuple(
        store._read(f"SELECT COUNT(*) FROM {t}")[0][0]
        for t in ("events", "jobs", "attempts", "occurrences")
    )


def test_pruning_removes_old_finished_jobs_with_attempts_and_occurrences_and_keeps_the_rest(
    backend,
    tmp_path,
) -> None:
    store = backend.open(tmp_path / "t.db")
    old, new = T0 - 40 * DAY, T0 - DAY
    gone = _job(store, old, JobStatus.SUCCEEDED)
    _job(store, old, JobStatus.CANCELLED)
    dead = _job(store, old, JobStatus.DEAD)
    recent = _job(store, new, JobStatus.SUCCEEDED)
    waiting = _job(store, old, JobStatus.PENDING)  # due long ago, still waiting: its event stays
    # The dead job's event stays too: `dlq retry` may send the job back to run.
    state = RuleState("r", "f", old, None, old)
    occurrences = [
        Occurrence("r", old, OccurrenceOutcome.FIRED, None, gone, None, old),
        Occurrence(
            "r", old + timedelta(seconds=1), OccurrenceOutcome.MISSED, "down", None, None, old
        ),
        Occurrence("r", new, OccurrenceOutcome.SKIPPED, "overlap", None, None, new),
    ]
    store.save_rule_state(state, old, occurrences)
    plan = prune_plan(Retention(events=30 * DAY), _rules(), T0)

    dry = store.count_prunable(plan)
    counts, more = store.prune_batch(plan, 500)

    assert counts == dry == PruneCounts(events=2, jobs=2, attempts=1, occurrences=2)
    assert more is False
    left = {j.id for j in store.list_jobs(limit=50)}
    assert left == {dead, recent, waiting}
    assert store.get_event(store.get_job(waiting).event_id or "").type == "e"
    assert [o.reason for o in store.history("r")] == ["overlap"]
    store.close()


def test_pruning_goes_in_batches_of_the_given_size(backend, tmp_path) -> None:
    store = backend.open(tmp_path / "t.db")
    for i in range(7):
        _job(store, T0 - 40 * DAY + timedelta(seconds=i), JobStatus.SUCCEEDED)
    plan = prune_plan(Retention(events=FOREVER), _rules(), T0)
    batches = []
    more = True
    while more:
        counts, more = store.prune_batch(plan, 3)
        batches.append(counts.jobs)
    assert batches == [3, 3, 1]
    assert _counts(store) == (7, 0, 0, 0)
    store.close()


def test_a_dead_job_with_a_waiting_notification_is_kept_until_the_notification_ran(
    backend,
    tmp_path,
) -> None:
    store = backend.open(tmp_path / "t.db")
    old = T0 - 40 * DAY
    dead = _job(store, old, JobStatus.DEAD)
    notice = _job(store, T0 + DAY, JobStatus.PENDING, rule="r/on_failure", failure_of=dead)
    plan = prune_plan(Retention(), _rules(), T0, older_than=DAY, statuses=(JobStatus.DEAD,))
    assert store.prune_batch(plan, 500)[0].jobs == 0
    store.cancel(notice, T0)
    assert store.prune_batch(plan, 500)[0].jobs == 1
    store.close()


def test_pruning_walks_the_partial_index_of_finished_jobs(tmp_path) -> None:
    from timeos.store.sqlite.pruning import _jobs_where

    store = SqliteStore(tmp_path / "t.db")
    where, args = _jobs_where(Cutoff(T0, (JobStatus.SUCCEEDED,)))
    sql = f"SELECT id FROM jobs WHERE {where} ORDER BY updated_at LIMIT 5"
    plan = store._read(
        f"EXPLAIN QUERY PLAN {sql}".replace(
            "FROM jobs WHERE", "FROM jobs INDEXED BY jobs_finished WHERE", 1
        ),
        args,
    )
    assert any("jobs_finished" in row[-1] for row in plan), plan
    assert not any("TEMP B-TREE" in row[-1] for row in plan), plan  # in index order: no sort
    store.close()


# ---- the pruner on a fake clock ---------------------------------------------------------------


def test_the_daemon_prunes_a_minute_after_start_then_every_ten_minutes(backend, tmp_path) -> None:
    store = backend.open(tmp_path / "t.db")
    clock = FakeClock(T0)
    keep = Retention(jobs=timedelta(hours=1), events=timedelta(hours=1))
    pruner = Pruner(store=store, clock=clock, rules=_rules, retention=keep)
    _job(store, T0 - timedelta(hours=2), JobStatus.SUCCEEDED)

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def go() -> None:
        task = asyncio.create_task(pruner.run())
        await settle()
        assert _counts(store) == (1, 1, 1, 0)  # nothing yet: the first pass is 1 min after start
        clock.advance(timedelta(seconds=59))
        await settle()
        assert _counts(store)[1] == 1
        clock.advance(timedelta(seconds=1))
        await settle()
        assert _counts(store) == (0, 0, 0, 0)
        assert pruner.last_counts == PruneCounts(events=1, jobs=1, attempts=1)
        _job(store, clock.now() - timedelta(hours=2), JobStatus.SUCCEEDED)
        clock.advance(timedelta(minutes=9, seconds=59))
        await settle()
        assert _counts(store)[1] == 1  # the next pass is due 10 min after the first
        clock.advance(timedelta(seconds=1))
        await settle()
        assert _counts(store)[1] == 0
        pruner.stop()
        await task

    asyncio.run(go())
    store.close()


def test_pruning_yields_to_the_event_loop_between_batches(backend, tmp_path) -> None:
    store = backend.open(tmp_path / "t.db")
    for i in range(5):
        _job(store, T0 - 40 * DAY + timedelta(seconds=i), JobStatus.SUCCEEDED)
    pruner = Pruner(store=store, clock=FakeClock(T0), rules=_rules, retention=Retention(batch=2))
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(_counts(store)[1])
            await asyncio.sleep(0)

    async def go() -> PruneCounts:
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        counts = await pruner.prune(pruner.plan(T0))
        watcher.cancel()
        return counts

    assert asyncio.run(go()).jobs == 5
    assert 3 in seen and 1 in seen  # another task ran between the batches
    store.close()
