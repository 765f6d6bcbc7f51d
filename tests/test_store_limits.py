"""Claims under rate limits and concurrency on a real store (each backend): limited jobs wait (never
dropped), priority order holds among what is allowed, buckets persist across a new store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from timeos.model import ActionResult, Event, JobStatus, NewJob, Outcome, RateLimit, Verdict, new_id
from timeos.rules.limits import Limit
from timeos.store.sqlite.limits import MAX_MERGE_ARMS
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


def _jobs(store: SqliteStore, rule: str, count: int, *, priority: int = 0, action: str = "act",
          at: datetime = T0) -> list[str]:  # fmt: skip
    event = Event(new_id(T0), "e", {}, T0, T0)
    jobs = [NewJob(rule, action, at, priority, 3, {}, event.id)
            for i in range(count)]  # fmt: skip
    return list(store.emit(event, jobs, T0).job_ids)


def _rate(key: str, count: int, unit: str = "minute", burst: int | None = None) -> dict:
    return {key: Limit(key, RateLimit(count, unit, burst or count), None)}


def _ids(jobs) -> list[str]:
    return [j.id for j in jobs]


def test_a_rate_limited_rule_gets_its_burst_then_waits_for_tokens(store):
    limited = _jobs(store, "slow", 5)
    limits = _rate("rule:slow", 2)
    assert _ids(store.claim_due(T0, 10, limits=limits)) == limited[:2]
    assert store.claim_due(T0 + 29 * SECOND, 10, limits=limits) == []
    assert _ids(store.claim_due(T0 + 30 * SECOND, 10, limits=limits)) == limited[2:3]
    # Nothing was dropped: the rest still wait.
    assert {store.get_job(i).status for i in limited[3:]} == {JobStatus.PENDING}


def test_a_limited_rule_never_blocks_other_rules_due_jobs(store):
    _jobs(store, "slow", 50, priority=5)  # the saturated rule's backlog, first in line
    busy = _jobs(store, "busy", 30, at=T0 + SECOND)
    limits = _rate("rule:slow", 1)
    first = store.claim_due(T0 + 2 * SECOND, 20, limits=limits)
    assert [j.rule for j in first] == ["slow"] + ["busy"] * 19
    assert _ids(store.claim_due(T0 + 2 * SECOND, 20, limits=limits)) == busy[19:]


def test_priority_order_is_kept_among_what_is_allowed(store):
    low = _jobs(store, "low", 3, priority=1)
    high = _jobs(store, "high", 3, priority=9, at=T0 + SECOND)
    limits = _rate("rule:high", 1)
    claimed = store.claim_due(T0 + 2 * SECOND, 10, limits=limits)
    assert _ids(claimed) == [high[0], *low]
    # When the token frees, the waiting high-priority job goes before anything else due.
    more = _jobs(store, "low", 2, priority=1, at=T0 + 30 * SECOND)
    assert _ids(store.claim_due(T0 + 62 * SECOND, 1, limits=limits)) == [high[1]]
    assert _ids(store.claim_due(T0 + 62 * SECOND, 5, limits=limits)) == more


def test_an_action_limit_is_shared_by_every_rule_that_performs_it(store):
    a = _jobs(store, "a", 3, action="mail")
    b = _jobs(store, "b", 3, action="mail", at=T0 + SECOND)
    _jobs(store, "c", 1, action="other", at=T0 + 2 * SECOND)
    limits = _rate("action:mail", 2)
    claimed = store.claim_due(T0 + 3 * SECOND, 10, limits=limits)
    assert [(j.rule, j.action) for j in claimed] == [("a", "mail"), ("a", "mail"), ("c", "other")]
    assert _ids(store.claim_due(T0 + 33 * SECOND, 10, limits=limits)) == [a[2]]
    assert _ids(store.claim_due(T0 + 63 * SECOND, 10, limits=limits)) == [b[0]]


def test_concurrency_counts_running_jobs_and_frees_a_slot_when_one_ends(store):
    jobs = _jobs(store, "single", 3)
    limits = {"rule:single": Limit("rule:single", None, 1)}
    (first,) = store.claim_due(T0, 10, limits=limits)
    assert store.claim_due(T0 + SECOND, 10, limits=limits) == []
    verdict = Verdict(JobStatus.SUCCEEDED, T0 + SECOND, 3, 0)
    store.finish(first, ActionResult(Outcome.SUCCEEDED), T0 + SECOND, verdict)
    assert _ids(store.claim_due(T0 + 2 * SECOND, 10, limits=limits)) == [jobs[1]]


def test_buckets_persist_across_a_new_store_over_the_same_database(backend, tmp_path):
    path = tmp_path / "t.db"
    first = backend.open(path)
    jobs = _jobs(first, "slow", 20)
    limits = _rate("rule:slow", 10)
    assert len(first.claim_due(T0, 20, limits=limits)) == 10
    first.close()
    again = backend.open(path)  # a restart: no fresh full bucket
    try:
        assert again.claim_due(T0 + SECOND, 20, limits=limits) == []
        assert _ids(again.claim_due(T0 + 6 * SECOND, 20, limits=limits)) == [jobs[10]]
    finally:
        again.close()


def test_a_held_back_job_records_how_long_and_by_which_limit(store):
    jobs = _jobs(store, "slow", 2)
    limits = _rate("rule:slow", 1)
    store.claim_due(T0, 10, limits=limits)
    assert store.attempts(jobs[0])[0].delayed_ms is None  # it had a token: not delayed
    store.claim_due(T0 + 60 * SECOND, 10, limits=limits)
    (attempt,) = store.attempts(jobs[1])
    assert attempt.delayed_ms == 60_000
    assert attempt.delayed_by == "rule 'slow' (rate_limit 1/minute, burst 1)"


def test_a_job_due_while_the_bucket_was_empty_is_recorded_delayed_without_a_pass_then(store):
    (first,) = _jobs(store, "slow", 1)
    (late,) = _jobs(store, "slow", 1, at=T0 + 20 * SECOND)
    limits = _rate("rule:slow", 1)
    store.claim_due(T0, 10, limits=limits)
    # No claim ran at 09:00:20; the one at 09:01 knows the bucket was empty then.
    store.claim_due(T0 + 60 * SECOND, 10, limits=limits)
    assert store.attempts(late)[0].delayed_ms == 40_000
    assert store.attempts(first)[0].delayed_ms is None


def test_next_due_at_skips_held_back_jobs_and_wakes_when_a_token_frees(store):
    _jobs(store, "slow", 3)
    later = T0 + 5 * timedelta(minutes=1)
    _jobs(store, "other", 1, at=later)
    limits = _rate("rule:slow", 1)
    store.claim_due(T0, 10, limits=limits)
    assert store.next_due_at(limits=limits, now=T0) == T0 + 60 * SECOND
    # With nothing limited, the plain answer: the held job itself, already due.
    assert store.next_due_at() == T0


def test_many_groups_fall_back_to_walking_the_claim_index(store):
    for i in range(MAX_MERGE_ARMS + 5):
        _jobs(store, f"r{i:04d}", 1)
    slow = _jobs(store, "slow", 3)
    limits = _rate("rule:slow", 1)
    claimed = store.claim_due(T0 + SECOND, 1000, limits=limits)
    assert len(claimed) == MAX_MERGE_ARMS + 6
    assert slow[0] in _ids(claimed) and slow[1] not in _ids(claimed)
