"""`on_failure:`: a dead job's notification, decided by the engine, written with the verdict,
run once as a job of its own, and never a notification of a notification."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.engine import after_attempt, failure_action_for, retry_policy_for
from timeos.errors import RulesError
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    Event,
    EventTrigger,
    Job,
    JobStatus,
    NewJob,
    Outcome,
    PythonSpec,
    RetryPolicy,
    Rule,
    RuleSet,
    new_id,
)
from timeos.rules.loader import load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def _action(name: str, fn=lambda payload, ctx: None, **kw) -> Action:
    return Action(name, ActionKind.PYTHON, PythonSpec(f"t:{name}", fn), **kw)


def _job(**changes) -> Job:
    base = {
        "id": "01JOB",
        "rule": "billing",
        "action": "charge",
        "status": JobStatus.RUNNING,
        "priority": 5,
        "perform_at": T0,
        "attempts": 3,
        "max_attempts": 3,
        "payload": {"amount": 10},
        "created_at": T0,
        "updated_at": T0,
    }
    return Job(**{**base, **changes})


PAGE = _action("page", retry=RetryPolicy(max_attempts=7))
RULES = RuleSet(
    (
        Rule("billing", EventTrigger("paid"), "charge", on_failure="page"),
        Rule("plain", EventTrigger("paid"), "charge"),
    ),
    {"charge": _action("charge", on_failure="log"), "page": PAGE, "log": _action("log")},
)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (_job(), "page"),
        (_job(rule="plain"), "log"),  # the action's on_failure when the rule has none
        (_job(rule="removed"), "log"),  # a removed rule's job: its action's
        (_job(failure_of="01DEAD"), None),
    ],
    ids=["rule", "action", "removed-rule", "a-notification-never-notifies"],
)
def test_the_rule_on_failure_overrides_the_actions_and_notifications_never_loop(
    job, expected
) -> None:
    found = failure_action_for(RULES, job)
    assert (found.name if found else None) == expected


def test_a_dead_verdict_carries_the_notification_job_with_the_failure_as_payload() -> None:
    job = _job()
    result = ActionResult(Outcome.FAILED, "exit 1: card declined")
    verdict = after_attempt(job, result, RetryPolicy(), T0, random.Random(1), on_failure=PAGE)
    assert verdict.status is JobStatus.DEAD
    assert verdict.notice == NewJob(
        rule="billing/on_failure",
        action="page",
        perform_at=T0,
        priority=5,
        max_attempts=7,  # its own action's retry policy
        payload={
            "job_id": "01JOB",
            "rule": "billing",
            "action": "charge",
            "error": "exit 1: card declined",
            "payload": {"amount": 10},
        },
        failure_of="01JOB",
    )


def test_a_retry_or_a_success_spawns_no_notification() -> None:
    rng = random.Random(1)
    retry = after_attempt(
        _job(attempts=1), ActionResult(Outcome.FAILED, "x"), RetryPolicy(), T0, rng, on_failure=PAGE
    )
    ok = after_attempt(
        _job(), ActionResult(Outcome.SUCCEEDED), RetryPolicy(), T0, rng, on_failure=PAGE
    )
    assert retry.status is JobStatus.RETRYING and retry.notice is None
    assert ok.status is JobStatus.SUCCEEDED and ok.notice is None


def test_a_notification_job_is_retried_by_its_own_actions_policy() -> None:
    assert retry_policy_for(RULES, _job(rule="billing/on_failure", action="page")).max_attempts == 7


def test_a_dead_job_and_its_notification_run_once_through_the_scheduler(backend, tmp_path) -> None:
    store = backend.open(tmp_path / "t.db")
    clock = FakeClock(T0)
    heard: list[dict] = []

    def charge(payload, ctx):
        raise RuntimeError("card declined")

    def page(payload, ctx):
        heard.append(dict(payload))
        raise RuntimeError("pager down too")  # its own failure must not notify again

    rules = RuleSet(
        (Rule("billing", EventTrigger("paid"), "charge", on_failure="page"),),
        {
            "charge": _action("charge", charge, retry=RetryPolicy(max_attempts=1)),
            "page": _action(
                "page", page, retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1))
            ),
        },
    )
    event = Event(new_id(T0), "paid", {"amount": 10}, T0, T0)
    (dead_id,) = store.emit(
        event, [NewJob("billing", "charge", T0, 0, 1, {"amount": 10}, event.id)], T0
    ).job_ids

    async def go() -> None:
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(store=store, clock=clock, runner=runner, rules=lambda: rules)
        task = asyncio.create_task(scheduler.run())
        for _ in range(300):
            if len(heard) == 1 and not scheduler.running:
                break
            await asyncio.sleep(0.01)
        clock.advance(timedelta(seconds=5))  # the notification's retry is due
        for _ in range(300):
            if len(heard) == 2 and not scheduler.running:
                break
            await asyncio.sleep(0.01)
        scheduler.stop()
        await task

    asyncio.run(go())
    assert store.get_job(dead_id).status is JobStatus.DEAD
    (notice,) = store.list_jobs(rule="billing/on_failure")
    assert notice.failure_of == dead_id and notice.status is JobStatus.DEAD
    assert notice.attempts == 2  # retried per its own policy, then dead, and no further notice
    assert len(store.list_jobs(limit=50)) == 2
    assert heard[0] == {
        "job_id": dead_id,
        "rule": "billing",
        "action": "charge",
        "error": "RuntimeError: card declined",
        "payload": {"amount": 10},
    }
    store.close()


def _load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules([path], {}, import_python=False)


def test_on_failure_and_retention_load_on_rules_and_actions(tmp_path) -> None:
    rules = _load(
        tmp_path,
        "actions:\n"
        "  charge: {command: [echo], on_failure: page}\n"
        "  page: {command: [echo]}\n"
        "rules:\n"
        "  - {name: a, on_event: paid, perform: charge, on_failure: page, retention: 7d}\n"
        "  - {name: b, every: 1s, perform: charge, retention: never}\n",
    )
    a, b = rules.rules
    assert (a.on_failure, a.retention, b.retention) == ("page", timedelta(days=7), timedelta.max)
    assert rules.actions["charge"].on_failure == "page"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "  - {name: a, on_event: paid, perform: charge, on_failure: pgae}\n",
            "rules.yaml:5:COL: rule 'a': on_failure: unknown action 'pgae' (did you mean 'page'?)",
        ),
        (
            "  - {name: a, on_event: paid, perform: charge, retention: 7days}\n",
            "rules.yaml:5:COL: rule 'a': retention: bad duration '7days'",
        ),
        (
            "  - {name: a, on_event: paid, perform: charge, retention: 0s}\n",
            "rules.yaml:5:COL: rule 'a': retention must be greater than 0, got '0s' (or `never`",
        ),
    ],
    ids=["unknown-action", "bad-duration", "zero"],
)
def test_bad_on_failure_and_retention_are_located_errors(tmp_path, text, message) -> None:
    head = "actions:\n  charge: {command: [echo]}\n  page: {command: [echo]}\nrules:\n"
    with pytest.raises(RulesError) as caught:
        _load(tmp_path, head + text)
    column = text.index(text.split(": ")[-1].rstrip("}\n")) + 1  # where the bad value starts
    expected = str(tmp_path / message.replace("COL", str(column)))
    assert str(caught.value).splitlines()[0].startswith(expected), caught.value
