"""Pure engine decisions: matching, perform_at, retry arithmetic, payload limits."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from timeos.engine import (
    AttemptEnd,
    Limits,
    after_attempt,
    check_event_type,
    check_payload,
    plan_event,
    renewal,
    retry_delay,
    retry_policy_for,
)
from timeos.errors import ConditionFailed, PayloadError
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    CommandSpec,
    Event,
    EventTrigger,
    Job,
    JobStatus,
    Outcome,
    RetryPolicy,
    Rule,
    RuleSet,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _job(attempts: int, max_attempts: int = 3, backoff_base: int = 0) -> Job:
    """A job that has just run attempt number `attempts`."""
    return Job(
        id="J",
        rule="r",
        action="a",
        status=JobStatus.RUNNING,
        priority=0,
        perform_at=T0 - timedelta(hours=1),
        attempts=attempts,
        max_attempts=max_attempts,
        payload={},
        created_at=T0,
        updated_at=T0,
        backoff_base=backoff_base,
    )


class AmountOver:
    """A hand-written condition fake: payload.amount > limit; missing field raises."""

    source = "payload.amount > 1000"

    def evaluate(self, payload, event):
        if "amount" not in payload:
            raise ConditionFailed("no such key: amount")
        return payload["amount"] > 1000

    def evaluate_value(self, payload, event):
        return self.evaluate(payload, event)


def _rules(*rules: Rule) -> RuleSet:
    act = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))
    return RuleSet(tuple(rules), {"act": act})


def _event(payload, occurred_at=T0) -> Event:
    return Event("ev1", "payment_received", payload, occurred_at, occurred_at)


def test_event_creates_one_job_per_matching_enabled_rule():
    rules = _rules(
        Rule("a", EventTrigger("payment_received", timedelta(hours=24)), "act", priority=5),
        Rule("b", EventTrigger("payment_received"), "act", enabled=False),
        Rule("c", EventTrigger("other"), "act"),
        Rule("d", EventTrigger("payment_received"), "act", retry=RetryPolicy(max_attempts=7)),
    )
    jobs = plan_event(_event({"amount": 5}), rules)
    assert [(j.rule, j.perform_at, j.priority, j.max_attempts) for j in jobs] == [
        ("a", T0 + timedelta(hours=24), 5, 3),
        ("d", T0, 0, 7),
    ]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({"amount": 1500}, ["big"]), ({"amount": 10}, []), ({}, [])],
    ids=["condition-true", "condition-false", "missing-field-counts-as-false"],
)
def test_condition_filters_events(payload, expected):
    rules = _rules(Rule("big", EventTrigger("payment_received"), "act", condition=AmountOver()))
    assert [j.rule for j in plan_event(_event(payload), rules)] == expected


def test_event_in_the_past_is_due_at_once():
    past = T0 - timedelta(days=3)
    rules = _rules(Rule("a", EventTrigger("payment_received", timedelta(days=2)), "act"))
    (job,) = plan_event(_event({}, occurred_at=past), rules)
    assert job.perform_at == past + timedelta(days=2) < T0


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (20, 3600)],
    ids=["first", "second", "third", "seventh", "capped", "far-capped"],
)
def test_retry_delay_doubles_up_to_max_backoff(attempt, expected):
    policy = RetryPolicy(5, timedelta(seconds=30), timedelta(hours=1), jitter=0.0)
    assert retry_delay(policy, attempt, random.Random(1)).total_seconds() == expected


def test_retry_jitter_stays_within_bounds_and_under_cap():
    policy = RetryPolicy(5, timedelta(seconds=100), timedelta(seconds=150), jitter=0.2)
    rng = random.Random(7)
    delays = [retry_delay(policy, 1, rng).total_seconds() for _ in range(200)]
    assert min(delays) >= 80 and max(delays) <= 120
    assert len(set(delays)) > 100
    capped = [retry_delay(policy, 5, rng).total_seconds() for _ in range(50)]
    assert max(capped) <= 150


@pytest.mark.parametrize(
    ("outcome", "attempts", "status"),
    [
        (Outcome.SUCCEEDED, 1, JobStatus.SUCCEEDED),
        (Outcome.FAILED, 1, JobStatus.RETRYING),
        (Outcome.TIMEOUT, 2, JobStatus.RETRYING),
        (Outcome.FAILED, 3, JobStatus.DEAD),
        (Outcome.PERMANENT, 1, JobStatus.DEAD),
    ],
    ids=["success", "failure-retries", "timeout-retries", "exhausted", "permanent"],
)
def test_after_attempt(outcome, attempts, status):
    policy = RetryPolicy(3, timedelta(seconds=10), timedelta(minutes=1), jitter=0.0)
    job = _job(attempts)
    verdict = after_attempt(job, ActionResult(outcome), policy, T0, random.Random(0))
    assert verdict.status is status
    assert (verdict.max_attempts, verdict.backoff_base) == (3, 0)
    if status is JobStatus.RETRYING:
        assert verdict.retry_at == T0 + timedelta(seconds=10 * 2 ** (attempts - 1))
    else:
        assert verdict.retry_at is None and verdict.perform_at == job.perform_at


POLICY = RetryPolicy(3, timedelta(seconds=10), timedelta(minutes=1), jitter=0.0)
INTERRUPTED = ActionResult(Outcome.INTERRUPTED, "interrupted")


def test_an_interrupted_attempt_is_retried_at_once_and_counts():
    verdict = after_attempt(_job(1), INTERRUPTED, POLICY, T0, random.Random(0))
    assert verdict.status is JobStatus.RETRYING and verdict.retry_at == T0
    assert verdict.max_attempts == 3


def test_a_crash_on_the_last_attempt_dead_letters_the_job():
    verdict = after_attempt(_job(3), INTERRUPTED, POLICY, T0, random.Random(0), AttemptEnd.CRASHED)
    assert verdict.status is JobStatus.DEAD


def test_our_own_shutdown_does_not_charge_an_attempt_even_the_last():
    verdict = after_attempt(_job(3), INTERRUPTED, POLICY, T0, random.Random(0), AttemptEnd.SHUTDOWN)
    assert verdict.status is JobStatus.RETRYING and verdict.retry_at == T0
    assert (verdict.max_attempts, verdict.backoff_base) == (4, 1)


def test_backoff_counts_from_the_last_renewal():
    # Attempt 5 of a job renewed after 4 attempts is the first since renewal: base backoff.
    verdict = after_attempt(
        _job(5, 7, 4), ActionResult(Outcome.FAILED), POLICY, T0, random.Random(0)
    )
    assert verdict.retry_at == T0 + timedelta(seconds=10)


def test_renewal_gives_a_fresh_budget_on_top_and_restarts_backoff():
    verdict = renewal(_job(3), POLICY, T0)
    assert verdict.status is JobStatus.PENDING and verdict.perform_at == T0
    assert (verdict.max_attempts, verdict.backoff_base) == (6, 3)


def test_retry_policy_falls_back_from_rule_to_action_to_default():
    action_policy = RetryPolicy(7)
    rule_policy = RetryPolicy(2)
    action = Action("a", ActionKind.COMMAND, CommandSpec(("true",)), retry=action_policy)
    rule = Rule("r", EventTrigger("e"), "a", retry=rule_policy)
    job = _job(1)
    assert retry_policy_for(RuleSet((rule,), {"a": action}), job) is rule_policy
    assert retry_policy_for(RuleSet((), {"a": action}), job) is action_policy  # rule removed
    assert retry_policy_for(RuleSet((), {}), job) == RetryPolicy()  # both removed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{bad", "invalid JSON at line 1 column 2"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"text"', "must be a JSON object, got str"),
        ("[" * 65 + "]" * 65, "nested 65 levels deep, over the limit of 64"),
        ("[" * 20000 + "]" * 20000, "nested 20000 levels deep"),
        ('{"a": "' + "x" * (1024 * 1024) + '"}', "over the limit of 1048576 bytes"),
    ],
    ids=["invalid-json", "list", "string", "too-deep", "hostile-depth", "too-big"],
)
def test_bad_payloads_are_rejected_with_a_clear_message(raw, message):
    with pytest.raises(PayloadError, match=message.replace("[", r"\[")):
        check_payload(raw, Limits())


def test_depth_counter_ignores_brackets_inside_strings():
    assert check_payload(
        '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', Limits()
    )


@pytest.mark.parametrize(
    "name", ["", "has space", "semi;colon", "x" * 201], ids=["empty", "space", "semicolon", "long"]
)
def test_bad_event_types_are_rejected(name):
    with pytest.raises(PayloadError):
        check_event_type(name, Limits())


def _at_rule(tz_expr: str | None) -> Rule:
    from datetime import time

    from timeos.rules.conditions import compile_condition

    trigger = EventTrigger(
        "order_shipped",
        timedelta(days=7),
        at=time(10, 0),
        timezone_expr=compile_condition(tz_expr) if tz_expr else None,
    )
    return Rule("follow-up", trigger, "act")


@pytest.mark.parametrize(
    ("payload", "tz_expr", "expected"),
    [
        # 2026-03-02 09:00Z + 7d = 2026-03-09 09:00Z; next 10:00 in Tokyo is 2026-03-10 01:00Z
        ({"tz": "Asia/Tokyo"}, "payload.tz", datetime(2026, 3, 10, 1, 0, tzinfo=UTC)),
        # New York is on EDT from 2026-03-08: 10:00 EDT on the 9th = 14:00Z
        ({"tz": "America/New_York"}, "payload.tz", datetime(2026, 3, 9, 14, 0, tzinfo=UTC)),
        # missing or unknown zone: the rule's zone (UTC) -> 10:00Z the same day
        ({}, "payload.tz", datetime(2026, 3, 9, 10, 0, tzinfo=UTC)),
        ({"tz": "Mars/Olympus"}, "payload.tz", datetime(2026, 3, 9, 10, 0, tzinfo=UTC)),
        ({}, None, datetime(2026, 3, 9, 10, 0, tzinfo=UTC)),
    ],
    ids=["tokyo", "new-york-after-dst", "missing-zone", "unknown-zone", "rule-zone"],
)
def test_offset_then_next_local_time_in_the_payloads_zone(payload, tz_expr, expected):
    (job,) = plan_event(Event("ev", "order_shipped", payload, T0, T0), _rules(_at_rule(tz_expr)))
    assert job.perform_at == expected


@pytest.mark.parametrize(
    "tz",
    ["America", "Etc", "x" * 5000, "../../etc/passwd", "Europe/../UTC", "zone.tab", "", 42],
    ids=[
        "directory",
        "etc-directory",
        "too-long",
        "traversal",
        "dotdot",
        "not-tzif",
        "empty",
        "int",
    ],
)
def test_payload_zone_that_is_not_a_zone_falls_back_to_the_rules_zone_with_a_note(tz):
    event = Event("ev", "order_shipped", {"tz": tz}, T0, T0)
    (job,) = plan_event(event, _rules(_at_rule("payload.tz")))
    assert job.perform_at == datetime(2026, 3, 9, 10, 0, tzinfo=UTC)  # 10:00 in UTC
    assert job.note is not None and "used UTC" in job.note
    assert len(job.note) < 200 and "site-packages" not in job.note


def test_payload_zone_that_is_a_zone_leaves_no_note():
    event = Event("ev", "order_shipped", {"tz": "Asia/Tokyo"}, T0, T0)
    (job,) = plan_event(event, _rules(_at_rule("payload.tz")))
    assert job.note is None


def test_a_servers_retry_after_wins_over_a_shorter_backoff():
    policy = RetryPolicy(5, timedelta(seconds=10), timedelta(hours=1), jitter=0.0)
    result = ActionResult(Outcome.FAILED, "HTTP 429", retry_after=timedelta(minutes=2))
    verdict = after_attempt(_job(1, 5), result, policy, T0, random.Random(0))
    assert verdict.retry_at == T0 + timedelta(minutes=2)
    short = ActionResult(Outcome.FAILED, "HTTP 503", retry_after=timedelta(seconds=1))
    assert after_attempt(_job(1, 5), short, policy, T0, random.Random(0)).retry_at == (
        T0 + timedelta(seconds=10)
    )
