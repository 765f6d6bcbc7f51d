"""Chains: perform lists and `after:` (rules/chains.py, engine planning, store/sqlite/deps.py).

Pure validation of rule files, planning of events into chained jobs, and the service over a real
SQLite store and a FakeClock: a parent's success releases its children, a dead or cancelled
parent cancels them, `dlq retry` revives them, and recovery settles what a crash left blocked.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.engine import (
    Limits,
    MatchReason,
    after_attempt,
    explain_event,
    plan_event,
    retry_policy_for,
)
from timeos.errors import RulesError
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    Event,
    EventTrigger,
    Job,
    JobStatus,
    Outcome,
    PythonSpec,
    RetryPolicy,
    Rule,
    RuleSet,
)
from timeos.rules import chains
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
HEAD = "actions:\n  charge: {command: [echo]}\n  receipt: {command: [echo]}\nrules:\n"


def _load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + text)
    return load_rules([path], {}, import_python=False)


def _act(name: str, attempts: int = 3) -> Action:
    return Action(
        name,
        ActionKind.PYTHON,
        PythonSpec(f"t:{name}", lambda payload, ctx: None),
        retry=RetryPolicy(max_attempts=attempts),
    )


# ---- loading and validation (pure) --------------------------------------------------------------


def test_a_perform_list_and_after_load_into_the_rule(tmp_path) -> None:
    rules = _load(
        tmp_path,
        "  - {name: pay, on_event: paid, perform: [charge, receipt]}\n"
        "  - {name: thank, on_event: paid, after: pay, offset: 1h, perform: receipt}\n",
    )
    pay, thank = rules.rules
    assert (pay.action, pay.then, pay.performs) == ("charge", ("receipt",), ("charge", "receipt"))
    assert (thank.after, thank.then) == ("pay", ())


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RulesError) as caught:
        _load(tmp_path, text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "  - {name: a, on_event: paid, after: pya, perform: charge}\n"
            "  - {name: pay, on_event: paid, perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after: unknown rule 'pya' (did you mean 'pay'?)",
        ),
        (
            "  - {name: a, on_event: paid, after: b, perform: charge}\n"
            "  - {name: b, on_event: paid, after: a, perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after: cycle a -> b -> a",
        ),
        (
            "  - {name: a, on_event: paid, after: a, perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after names the rule itself",
        ),
        (
            "  - {name: a, every: 1h, after: b, perform: charge}\n"
            "  - {name: b, on_event: paid, perform: charge}\n",
            "rules.yaml:5:33: rule 'a': after applies only to on_event rules",
        ),
        (
            "  - {name: a, on_event: paid, after: b, perform: charge}\n"
            "  - {name: b, cron: '0 9 * * *', perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after: rule 'b' is time-based",
        ),
        (
            "  - {name: a, on_event: paid, after: b, perform: charge}\n"
            "  - {name: b, on_event: refunded, perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after: rule 'b' listens for 'refunded', not 'paid'",
        ),
        (
            "  - {name: a, on_event: paid, perform: [charge, reciept]}\n",
            "rules.yaml:5:49: rule 'a': unknown action 'reciept' (did you mean 'receipt'?)",
        ),
        (
            "  - {name: a, on_event: paid, after: b, at: '09:00', perform: charge}\n"
            "  - {name: b, on_event: paid, perform: charge}\n",
            "rules.yaml:5:38: rule 'a': after and at cannot be combined",
        ),
        (
            "  - {name: a, on_event: paid, perform: []}\n",
            "rules.yaml:5:40: rule 'a': perform: the list of actions is empty",
        ),
    ],
    ids=[
        "unknown-rule",
        "cycle",
        "self",
        "after-on-time-rule",
        "after-a-time-rule",
        "other-event",
        "after-with-at",
        "unknown-action-in-list",
        "empty-list",
    ],
)
def test_bad_chains_are_load_errors_with_file_line_col(tmp_path, text, expected) -> None:
    message = _error(tmp_path, text)
    assert any(line.startswith(str(tmp_path / expected)) for line in message.splitlines()), message


def test_a_longer_cycle_is_reported_once_with_its_path(tmp_path) -> None:
    message = _error(
        tmp_path,
        "  - {name: a, on_event: paid, after: c, perform: charge}\n"
        "  - {name: b, on_event: paid, after: a, perform: charge}\n"
        "  - {name: c, on_event: paid, after: b, perform: charge}\n",
    )
    assert message.count("after: cycle") == 1 and "after: cycle a -> c -> b -> a" in message, (
        message
    )


def test_ordered_puts_parents_first_and_keeps_file_order_otherwise() -> None:
    trig = EventTrigger("paid")
    rules = [
        Rule("c", trig, "x", after="b"),
        Rule("b", trig, "x", after="a"),
        Rule("solo", trig, "x"),
        Rule("a", trig, "x"),
    ]
    assert [r.name for r in chains.ordered(rules)] == ["solo", "a", "b", "c"]


# ---- planning (pure) ----------------------------------------------------------------------------

PAID = "paid"
RULES = RuleSet(
    (
        Rule("pay", EventTrigger(PAID), "charge", then=("receipt", "ledger")),
        Rule("thank", EventTrigger(PAID, offset=timedelta(hours=1)), "mail", after="pay"),
        Rule("big", EventTrigger(PAID), "mail", condition=None),
    ),
    {
        "charge": _act("charge", 5),
        "receipt": _act("receipt", 2),
        "ledger": _act("ledger"),
        "mail": _act("mail"),
    },
)


def _event(payload: dict | None = None) -> Event:
    return Event("01EVENT", PAID, payload or {}, T0, T0)


def test_an_event_plans_a_perform_list_and_after_as_linked_jobs() -> None:
    jobs = plan_event(_event(), RULES)
    assert [(j.rule, j.action, j.after, j.wait) for j in jobs] == [
        ("pay", "charge", 0, timedelta(0)),
        ("pay", "receipt", 1, timedelta(0)),
        ("pay", "ledger", 1, timedelta(0)),
        ("thank", "mail", 1, timedelta(hours=1)),  # waits for the end of pay's chain
        ("big", "mail", 0, timedelta(0)),
    ]
    # Blocked jobs show the earliest they can be due: their parent's, plus their own wait.
    assert [j.perform_at for j in jobs] == [T0, T0, T0, T0 + timedelta(hours=1), T0]
    # Each step keeps its own action's attempt budget.
    assert [j.max_attempts for j in jobs[:3]] == [5, 2, 3]


def test_after_a_rule_that_did_not_match_makes_no_job_and_explains_why() -> None:
    from timeos.rules.conditions import compile_condition

    rules = RuleSet(
        (
            Rule("pay", EventTrigger(PAID), "charge", condition=compile_condition("payload.ok")),
            Rule("thank", EventTrigger(PAID), "mail", after="pay"),
        ),
        RULES.actions,
    )
    assert plan_event(_event({"ok": False}), rules) == []
    verdicts = {m.rule: m for m in explain_event(_event({"ok": False}), rules)}
    assert verdicts["thank"].reason is MatchReason.AFTER_UNMATCHED
    assert verdicts["thank"].detail == "pay" and not verdicts["thank"].matched
    assert [j.rule for j in plan_event(_event({"ok": True}), rules)] == ["pay", "thank"]


# ---- service over a real store ------------------------------------------------------------------


class Rig:
    """A Service over a real SQLite store and a FakeClock; runs jobs by claim and finish."""

    def __init__(self, store: SqliteStore, rules: RuleSet = RULES) -> None:
        self.store = store
        self.rules = rules
        self.clock = FakeClock(T0)
        self.service = Service(
            store=store,
            clock=self.clock,
            rules=rules,
            rule_paths=[Path("rules.yaml")],
            loader=lambda paths: rules,
            limits=Limits(),
            on_change=lambda: None,
            info={"version": "test", "pid": 1},
        )

    def run(self, job_id: str, outcome: Outcome = Outcome.SUCCEEDED) -> Job:
        """Claim `job_id` (it must be due) and end its attempt with `outcome`."""
        job = self.store.get_job(job_id)
        assert job.status in (JobStatus.PENDING, JobStatus.RETRYING), job
        now = self.clock.now()
        others = [r.name for r in self.rules.rules if r.name != job.rule]
        claimed = {j.id: j for j in self.store.claim_due(now, 100, blocked=others)}
        running = claimed[job_id]
        result = ActionResult(outcome, None if outcome is Outcome.SUCCEEDED else "boom")
        policy = retry_policy_for(self.rules, running)
        verdict = after_attempt(running, result, policy, now, random.Random(1))
        return self.store.finish(running, result, now, verdict)

    def status(self, job_id: str) -> JobStatus:
        return self.store.get_job(job_id).status


@pytest.fixture
def rig(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")
    yield Rig(store)
    store.close()


def test_jobs_of_a_chain_start_blocked_with_their_parents_listed(rig) -> None:
    charge, receipt, ledger, thank, big = rig.service.emit(PAID, {}).job_ids
    statuses = [rig.status(i) for i in (charge, receipt, ledger, thank, big)]
    assert statuses == [JobStatus.PENDING, *[JobStatus.BLOCKED] * 3, JobStatus.PENDING]
    assert rig.store.get_job(receipt).depends_on == (charge,)
    assert rig.store.get_job(thank).depends_on == (ledger,)
    assert rig.store.chain_ids(receipt) == ([charge], [ledger])
    # The scheduler never claims a blocked job, however late it is.
    rig.clock.advance(timedelta(days=30))
    claimed = {j.id for j in rig.store.claim_due(rig.clock.now(), 100)}
    assert claimed == {charge, big}


def test_a_parents_success_releases_its_child_offset_from_then(rig) -> None:
    charge, receipt, ledger, thank, _ = rig.service.emit(PAID, {}).job_ids
    rig.clock.advance(timedelta(minutes=5))
    rig.run(charge)
    released = rig.store.get_job(receipt)
    assert released.status is JobStatus.PENDING and released.perform_at == rig.clock.now()
    assert rig.status(ledger) is JobStatus.BLOCKED  # waits for receipt, not charge
    rig.run(receipt)
    rig.clock.advance(timedelta(minutes=10))
    rig.run(ledger)
    waiting = rig.store.get_job(thank)
    # `after:` with offset 1h: an hour after its parent succeeded, not after the event.
    assert waiting.status is JobStatus.PENDING
    assert waiting.perform_at == T0 + timedelta(minutes=15, hours=1)


def test_a_retrying_parent_keeps_its_child_blocked(rig) -> None:
    charge, receipt, *_ = rig.service.emit(PAID, {}).job_ids
    assert rig.run(charge, Outcome.FAILED).status is JobStatus.RETRYING
    assert rig.status(receipt) is JobStatus.BLOCKED


def test_a_dead_parent_cancels_its_chain_naming_the_parent_and_dlq_retry_revives_it(rig) -> None:
    charge, receipt, ledger, thank, big = rig.service.emit(PAID, {}).job_ids
    assert rig.run(charge, Outcome.PERMANENT).status is JobStatus.DEAD
    for child, parent in ((receipt, charge), (ledger, receipt), (thank, ledger)):
        job = rig.store.get_job(child)
        assert job.status is JobStatus.CANCELLED
        assert job.last_error is not None and parent in job.last_error, job.last_error
    assert rig.store.get_job(receipt).last_error == f"parent job {charge} ended dead"
    assert rig.status(big) is JobStatus.PENDING  # not part of the chain

    revived = rig.service.dlq_retry(charge)
    assert revived.status is JobStatus.PENDING
    for child in (receipt, ledger, thank):
        job = rig.store.get_job(child)
        assert (job.status, job.last_error) == (JobStatus.BLOCKED, None)
    rig.run(charge)
    assert rig.status(receipt) is JobStatus.PENDING


def test_dlq_retry_all_revives_too(rig) -> None:
    charge, receipt, *_ = rig.service.emit(PAID, {}).job_ids
    rig.run(charge, Outcome.PERMANENT)
    (outcome,) = rig.service.dlq_retry_many(None, None)
    assert outcome.ok
    assert rig.status(receipt) is JobStatus.BLOCKED


def test_cancelling_a_blocked_job_cascades_but_a_manual_cancel_is_never_revived(rig) -> None:
    charge, receipt, ledger, thank, _ = rig.service.emit(PAID, {}).job_ids
    (outcome,) = rig.service.cancel([receipt])
    assert outcome.cancelled
    assert [rig.status(i) for i in (receipt, ledger, thank)] == [JobStatus.CANCELLED] * 3
    assert rig.store.get_job(receipt).last_error is None  # cancelled by hand
    assert rig.store.get_job(ledger).last_error == f"parent job {receipt} ended cancelled"
    rig.run(charge, Outcome.PERMANENT)
    rig.service.dlq_retry(charge)
    assert rig.status(receipt) is JobStatus.CANCELLED  # its own cancel stands


def test_cancelling_a_pending_parent_cancels_its_children(rig) -> None:
    charge, receipt, *_ = rig.service.emit(PAID, {}).job_ids
    rig.service.cancel([charge])
    job = rig.store.get_job(receipt)
    assert job.status is JobStatus.CANCELLED
    assert job.last_error == f"parent job {charge} ended cancelled"


def _recover(rig: Rig) -> int:
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(store=rig.store, clock=rig.clock, runner=runner, rules=lambda: rig.rules)
    return scheduler.recover()


def _crash_between_writes(rig: Rig, job_id: str, status: str, at: datetime) -> None:
    """A parent's end written without its chain's (as if by a crash between two writes)."""
    rig.store.conn.execute(
        "UPDATE jobs SET status = ?, updated_at = ? WHERE id = ?",
        (status, int(at.timestamp() * 1_000_000), job_id),
    )


def test_recovery_releases_children_of_a_parent_that_already_succeeded(rig) -> None:
    charge, receipt, *_ = rig.service.emit(PAID, {}).job_ids
    _crash_between_writes(rig, charge, "succeeded", T0 + timedelta(minutes=1))
    rig.clock.advance(timedelta(hours=1))
    _recover(rig)
    job = rig.store.get_job(receipt)
    assert job.status is JobStatus.PENDING
    assert job.perform_at == T0 + timedelta(minutes=1)  # the parent's end + its wait (0)


def test_recovery_cancels_children_of_a_dead_parent_and_of_a_removed_one(rig) -> None:
    first = rig.service.emit(PAID, {}).job_ids
    second = rig.service.emit(PAID, {}).job_ids
    _crash_between_writes(rig, first[0], "dead", T0)
    rig.store.conn.execute("DELETE FROM jobs WHERE id = ?", (second[0],))  # dlq delete, say
    _recover(rig)
    assert [rig.status(i) for i in first[1:4]] == [JobStatus.CANCELLED] * 3
    assert rig.store.get_job(first[1]).last_error == f"parent job {first[0]} ended dead"
    assert [rig.status(i) for i in second[1:4]] == [JobStatus.CANCELLED] * 3
    assert rig.store.get_job(second[1]).last_error == f"parent job {second[0]} no longer exists"
    assert rig.store.count_jobs(status=JobStatus.BLOCKED) == 0  # nothing waits forever


def test_emit_batch_and_replay_create_chains_like_emit(rig) -> None:
    (result,) = rig.service.emit_batch([{"type": PAID, "payload": {}}])
    assert [rig.status(i) for i in result.job_ids[:2]] == [JobStatus.PENDING, JobStatus.BLOCKED]
    _, _, jobs = rig.service.replay(result.event_id, dry_run=False)
    ids = [j.id for j in jobs]
    assert rig.store.get_job(ids[1]).depends_on == (ids[0],)
    assert rig.status(ids[1]) is JobStatus.BLOCKED


def test_a_manual_run_runs_the_whole_perform_list(rig) -> None:
    head = rig.service.run_rule("pay", None)
    _, children = rig.store.chain_ids(head.id)
    (receipt,) = children
    assert rig.store.get_job(receipt).action == "receipt"
    assert rig.status(receipt) is JobStatus.BLOCKED
    rig.run(head.id)
    assert rig.status(receipt) is JobStatus.PENDING


def test_counts_and_health_list_blocked(rig) -> None:
    rig.service.emit(PAID, {})
    assert rig.store.counts_by_status()["blocked"] == 3
    assert rig.service.health()["jobs"]["blocked"] == 3
    assert 'timeos_jobs{status="blocked"} 3.0' in rig.service.metrics().decode()


def test_a_time_based_rule_with_a_perform_list_chains_each_fire(backend, tmp_path) -> None:
    from timeos.daemon.planner import OccurrencePlanner
    from timeos.model import CronTrigger

    store = backend.open(tmp_path / "t.db")
    rules = RuleSet(
        (Rule("nightly", CronTrigger("0 * * * *"), "charge", then=("receipt",)),),
        RULES.actions,
    )
    planner = OccurrencePlanner(store=store, rules=lambda: rules)
    planner.plan(T0 + timedelta(minutes=1))
    planner.plan(T0 + timedelta(hours=1))
    head, step = sorted(store.list_jobs(), key=lambda j: j.action)
    assert (head.action, head.status, step.action, step.status) == (
        "charge",
        JobStatus.PENDING,
        "receipt",
        JobStatus.BLOCKED,
    )
    assert step.depends_on == (head.id,) and step.occurrence_key is None
    (occurrence,) = store.history("nightly")
    assert occurrence.job_id == head.id  # the fire is the chain's first job
    store.close()


def test_a_duplicate_event_in_a_batch_drops_its_whole_chain(rig) -> None:
    item = {"type": PAID, "payload": {}, "idempotency_key": "k1"}
    (first,) = rig.service.emit_batch([item])
    (again,) = rig.service.emit_batch([item])
    assert again.duplicate and again.job_ids == ()
    assert rig.store.count_jobs() == len(first.job_ids) == 5


def test_retention_keeps_the_event_a_blocked_job_still_needs(rig) -> None:
    from timeos.engine import PrunePlan

    result = rig.service.emit(PAID, {})
    charge, _, _, _, big = result.job_ids
    rig.service.cancel([big])
    _crash_between_writes(rig, charge, "succeeded", T0)  # only blocked jobs are left
    plan = PrunePlan(events_before=T0 + timedelta(days=365))
    counts, _ = rig.store.prune_batch(plan, 500)
    assert counts.events == 0
    assert rig.store.get_event(result.event_id).id == result.event_id


def test_jobs_show_renders_a_chain_table_and_rules_show_the_perform_list() -> None:
    from timeos.cli.render import job_panel, rule_panel
    from timeos.daemon.api import rule_json

    job = {
        "id": "01B", "rule": "pay", "action": "receipt", "status": "blocked", "priority": 0,
        "perform_at": T0.isoformat(), "attempts": 0, "max_attempts": 3, "attempt_history": [],
        "parents": [{"id": "01A", "rule": "pay", "action": "charge", "status": "retrying"}],
        "children": [{"id": "01C", "rule": "pay", "action": "ledger", "status": "blocked"}],
    }  # fmt: skip
    chain = job_panel(job).sheets[0]
    assert chain.title == "Chain"
    assert chain.rows == [
        ["parent", "01A", "pay", "charge", "retrying"],
        ["child", "01C", "pay", "ledger", "blocked"],
    ]
    body = rule_json(RULES.rules[0])
    assert body["perform"] == ["charge", "receipt", "ledger"] and body["action"] == "charge"
    assert rule_json(RULES.rules[1])["after"] == "pay"
    fields = {name: value for name, _, value in rule_panel(body).fields}
    assert fields["perform"] == "charge -> receipt -> ledger"


def test_watchers_hear_of_every_job_a_cancel_takes_with_it(rig) -> None:
    heard: list[tuple[str, str]] = []
    rig.service.bus.subscribe(lambda event: heard.append((event.kind, event.fields["job_id"])))
    charge, receipt, ledger, thank, _ = rig.service.emit(PAID, {}).job_ids
    heard.clear()
    rig.service.cancel([charge])
    assert sorted(heard) == sorted(("job.cancelled", i) for i in (charge, receipt, ledger, thank))
    assert 'timeos_jobs_finished_total{outcome="cancelled",rule="pay"} 3.0' in (
        rig.service.metrics().decode()
    )
